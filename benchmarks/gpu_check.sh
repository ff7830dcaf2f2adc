#!/usr/bin/env bash
# One check of the reconstruction on a GPU machine, at most 8 minutes on one GPU: the device tests (fused against
# plain quantizers, fast against plain reconstruction, cache on the device against pinned host memory, bfloat16
# autocast), recon_speed.py at 800x1344, and a two-unit reconstruction of the R50-FPN at the published batch; ends
# with one summary table. Without a GPU (or with --cpu) it runs a small, quick form of the same on the CPU.
#
#     bash benchmarks/gpu_check.sh          (GPU when present)
#     bash benchmarks/gpu_check.sh --cpu    (the CPU form that CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."

FORCE_CPU=0
if [ "${1:-}" = "--cpu" ]; then FORCE_CPU=1; fi
PY=.venv/bin/python
if [ ! -x "$PY" ]; then python3 -m venv .venv; fi
# One interpreter start answers every question (each start imports torch: seconds on a small CPU).
PROBE=$("$PY" -c "import torch, torchvision, mmdet, qdrop, pytest, scipy
print('cuda' if torch.cuda.is_available() else 'cpu', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else '')" 2>/dev/null) || {
  "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1 && "$PY" -m pip install -q -e ".[tests]"
  PROBE=$("$PY" -c "import torch
print('cuda' if torch.cuda.is_available() else 'cpu', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else '')")
}

read -r HAS_CUDA TORCH_VERSION GPU_NAME <<<"$PROBE"
if [ "$FORCE_CPU" = 0 ] && [ "$HAS_CUDA" = cuda ]; then
  DEVICE=cuda
  TESTS=(tests/test_qdrop/test_ptq/test_device_paths.py tests/test_qdrop/test_quantization/test_fast_path.py
         tests/test_qdrop/test_ptq/test_reconstruction.py)
  SPEED=(--size 800x1344 --variants plain fast fast+bf16 --steps 10 --repeats 5)
  RECON=(--size 800x1344 --reconstruct 2 --iters 500)
else
  DEVICE=cpu
  export CUDA_VISIBLE_DEVICES=""
  TESTS=(tests/test_qdrop/test_ptq/test_device_paths.py -k "fused_quantizer or cache_on_device")
  # Step timings and the two-unit reconstruction share one process (one import, one model) on the CPU.
  SPEED=(--quick --size 64x96 --steps 1 --repeats 1 --then-reconstruct 2 --iters 2)
  RECON=()
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

LOG=$(mktemp -d)
SUMMARY=()
stage() {  # stage NAME COMMAND...: run, keep its output, add a summary row
  local name=$1; shift
  local start=$SECONDS status=ok
  echo "== $name: $*"
  if ! "$@" >"$LOG/$name.txt" 2>&1; then status=FAILED; fi
  cat "$LOG/$name.txt"
  SUMMARY+=("| $name | $status | $((SECONDS - start)) |")
}

stage tests "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
stage recon_speed "$PY" benchmarks/recon_speed.py "${SPEED[@]}"
if [ ${#RECON[@]} -gt 0 ]; then
  stage two_units "$PY" benchmarks/recon_speed.py "${RECON[@]}"
else
  : >"$LOG/two_units.txt"
fi

echo
if [ "$DEVICE" = cuda ]; then WHERE="$GPU_NAME"; else WHERE=cpu; fi
echo "gpu_check on $DEVICE ($WHERE, torch $TORCH_VERSION)"
echo "| stage | status | seconds |"
echo "|---|---|---|"
printf '%s\n' "${SUMMARY[@]}"
grep -h '^| ' "$LOG/recon_speed.txt" "$LOG/two_units.txt" || true
rm -rf "$LOG"
if printf '%s\n' "${SUMMARY[@]}" | grep -q FAILED; then exit 1; fi
