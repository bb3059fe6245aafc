#!/usr/bin/env bash
# The GPU checks and timings of BENCHMARKS.md's GPU section as one command, for a CUDA
# machine with torch and keras (no TensorFlow needed):
#
#     KERAS_BACKEND=torch bench/gpu_checks.sh [OUT_DIR]     # default bench/results/gpu
#
# 1. the fused LSTM paths against Keras' loop and cuDNN call on the GPU (float32, TF32 off);
# 2. the lean forward pass against the functional model on the GPU;
# 3. the paper-shaped training step at batch 128: the step variants in turns, then the
#    lean step one after the other with the PyTorch references (with torch.profiler's
#    tables and the host-device synchronisations of the lean and per-layer reference rows);
# 4. the same in turns at batch 256.
# Each part writes its output to OUT_DIR; a failing check does not stop the timings.
set -u
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu}
mkdir -p "$out"
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
status=0
# Each test module's CODE string, run as it is (without pytest, which the machine may lack).
run_code='import ast, sys, torch
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
tree = ast.parse(open(sys.argv[1]).read())
exec(next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "CODE"))'
for test in test_lstm test_torch_forward; do
  if python3 -W ignore -c "$run_code" "tests/keras_s2s/$test.py" > "$out/check_$test.txt" 2>&1; then
    echo "check $test: passed ($(tail -n 1 "$out/check_$test.txt"))"
  else
    echo "check $test: FAILED (see $out/check_$test.txt)"; status=1
  fi
done
python3 bench/gpu_train_step.py --interleave --steps 30 \
  --variants keras_s2s,wait_free_step,lean_forward,lean_forward_bf16_logits --out "$out/interleave_lean_128.json" || status=1
python3 bench/gpu_train_step.py --variants lean_forward,lean_forward_bf16_logits,torch_reference,torch_reference_per_layer \
  --profile "$out/profile_lean" --out "$out/lean_128.json" || status=1
python3 bench/gpu_train_step.py --batch 256 --interleave --steps 30 \
  --variants keras_s2s,lean_forward,lean_forward_bf16_logits --out "$out/interleave_lean_256.json" || status=1
exit $status
