#!/usr/bin/env bash
# Issue 13's GPU checks as one short prepared run, for a session lent a GPU (about 10 minutes of device time):
#   bash benchmarks/gpu_session.sh            # writes logs and JSON to $OUT (or /tmp/gpu_session)
# Each step has its own time limit and a failing step does not stop the others; summary.txt says how each ended.
# Needs jax with CUDA on the machine; the PyTorch comparison also needs torch with CUDA and is skipped without it.
set -u
out="${OUT:-/tmp/gpu_session}"
mkdir -p "$out"
export JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit, log to $out/NAME.log, record its exit status.
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c 'import jax, jaxlib; print("jax", jax.__version__, "jaxlib", jaxlib.__version__, jax.devices())'
  python -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tail -1
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

# Where the step's time goes, float32 (TF32) and bf16: ms/step, MFU, the top ops.
step profile_f32 150 python benchmarks/profile_step.py --platform=gpu --steps=100 --top=30
step profile_bf16 150 python benchmarks/profile_step.py --platform=gpu --steps=100 --dtype=bfloat16 --top=30
# Information dropout against no dropout, both widths, float32 and bf16 (goal: ≤ 1.25x).
step train_step 150 python benchmarks/bench_train_step.py --platform=gpu --steps=200 --methods=information,none
step train_step_bf16 150 python benchmarks/bench_train_step.py --platform=gpu --steps=200 --methods=information,none \
  --dtype=bfloat16
# Against PyTorch eager (AMP + channels_last) and torch.compile on the same GPU (goals: ≥ 1.5x and ≥ 1.0x).
if python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  step vs_pytorch 300 python benchmarks/bench_vs_pytorch.py --platform=gpu --batch=100 --steps=50 --rounds=5 \
    --json="$out/vs_pytorch.json"
else
  echo "vs_pytorch: skipped (no torch with CUDA here)" | tee -a "$out/summary.txt"
fi
