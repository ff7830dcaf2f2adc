#!/usr/bin/env bash
# Quantize a detector with QDrop on a SLURM cluster (8 GPUs by default, one task per GPU) and evaluate it.
# Usage: exp/slurm_test.sh Q_CONFIG WORK_DIR [extra quant_coco.py arguments]
#   e.g. exp/slurm_test.sh exp/config.yaml exp/results/w2a4/faster_rcnn_r50
# Environment: PARTITION (required), GPUS (8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), JOB_NAME, SRUN_ARGS,
#   CONFIG and CHECKPOINT (default: Faster R-CNN R50-FPN 2x and its model-zoo file under checkpoints/).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 Q_CONFIG WORK_DIR [quant_coco.py arguments]" >&2
    exit 2
fi
Q_CONFIG=$1
WORK_DIR=$2
shift 2
PARTITION=${PARTITION:?set PARTITION to the SLURM partition}
JOB_NAME=${JOB_NAME:-qdrop}
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
CONFIG=${CONFIG:-configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py}
CHECKPOINT=${CHECKPOINT:-checkpoints/faster_rcnn_r50_fpn_2x_coco_bbox_mAP-0.384_20200504_210434-a5d8aa15.pth}

cd "$(dirname "$0")/.."
# shellcheck disable=SC2086
srun -p "${PARTITION}" --job-name="${JOB_NAME}" --gres=gpu:"${GPUS_PER_NODE}" --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" --cpus-per-task="${CPUS_PER_TASK}" --kill-on-bad-exit=1 ${SRUN_ARGS} \
    python -u qdrop/solver/quant_coco.py "${CONFIG}" "${CHECKPOINT}" --launcher slurm --work-dir "${WORK_DIR}" \
    --fuse-conv-bn --eval bbox --q_config "${Q_CONFIG}" "$@"
