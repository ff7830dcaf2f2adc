#!/usr/bin/env bash
# Quantize a detector with QDrop on one machine with torchrun (one process per GPU, or gloo on CPU).
# Usage: exp/dist_test.sh Q_CONFIG WORK_DIR [extra quant_coco.py arguments]
#   e.g. GPUS=8 exp/dist_test.sh exp/config.yaml exp/results/w2a4/faster_rcnn_r50
# Environment: GPUS (processes, default 8), PORT (29500), PYTHON (python),
#   CONFIG and CHECKPOINT (default: Faster R-CNN R50-FPN 2x and its model-zoo file under checkpoints/).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 Q_CONFIG WORK_DIR [quant_coco.py arguments]" >&2
    exit 2
fi
Q_CONFIG=$1
WORK_DIR=$2
shift 2
GPUS=${GPUS:-8}
PORT=${PORT:-29500}
PYTHON=${PYTHON:-python}
CONFIG=${CONFIG:-configs/faster_rcnn/faster_rcnn_r50_fpn_2x_coco.py}
CHECKPOINT=${CHECKPOINT:-checkpoints/faster_rcnn_r50_fpn_2x_coco_bbox_mAP-0.384_20200504_210434-a5d8aa15.pth}

cd "$(dirname "$0")/.."
"${PYTHON}" -m torch.distributed.run --nproc_per_node="${GPUS}" --master_port="${PORT}" \
    qdrop/solver/quant_coco.py "${CONFIG}" "${CHECKPOINT}" --launcher pytorch --work-dir "${WORK_DIR}" \
    --fuse-conv-bn --eval bbox --q_config "${Q_CONFIG}" "$@"
