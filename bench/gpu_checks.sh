#!/usr/bin/env bash
# The GPU checks and timings of BENCHMARKS.md's GPU section as one command, for a CUDA
# machine with torch and keras (no TensorFlow needed):
#
#     KERAS_BACKEND=torch bench/gpu_checks.sh [OUT_DIR]     # default bench/results/gpu
#
# 1. tests/torch_backend on the GPU: the fused LSTM paths against Keras' loop and cuDNN
#    call, the lean forward pass against the functional model, the wait-free step against
#    Keras' (float32, TF32 off);
# 2. the paper-shaped training step at batch 128: the step variants in turns, then the
#    lean step one after the other with the PyTorch references (with torch.profiler's
#    tables and the host-device synchronisations of the lean and per-layer reference rows);
# 3. the same in turns at batch 256.
# Each part writes its output to OUT_DIR; a failing check does not stop the timings.
set -u
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu}
mkdir -p "$out"
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
status=0
# The torch backend's tests, on the GPU (pytest and keras are pure Python: carry them in a
# virtual environment where the machine lacks them).
if python3 -m pytest -q -p no:cacheprovider -m torch_backend tests/torch_backend > "$out/checks.txt" 2>&1; then
  echo "checks: passed ($(tail -n 1 "$out/checks.txt"))"
else
  echo "checks: FAILED (see $out/checks.txt)"; status=1
fi
python3 bench/gpu_train_step.py --interleave --steps 30 \
  --variants keras_s2s,wait_free_step,lean_forward,lean_forward_bf16_logits --out "$out/interleave_lean_128.json" || status=1
python3 bench/gpu_train_step.py --variants lean_forward,lean_forward_bf16_logits,torch_reference,torch_reference_per_layer \
  --profile "$out/profile_lean" --out "$out/lean_128.json" || status=1
python3 bench/gpu_train_step.py --batch 256 --interleave --steps 30 \
  --variants keras_s2s,lean_forward,lean_forward_bf16_logits --out "$out/interleave_lean_256.json" || status=1
exit $status
