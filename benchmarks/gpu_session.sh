#!/usr/bin/env bash
# Issue 13's GPU checks, prepared for a session lent a GPU (15 minutes of device time, starts included, at most
# 10 minutes a call). First, here: `bash benchmarks/gpu_prepare.sh` (fills .gpu_carry/). Then one device `run` per
# part, carry ['.gpu_carry'], a timeout_s of about the part's total plus a minute:
#   bash benchmarks/gpu_session.sh bench   # ≤ 9 min: smoke run, step times and profiles (float32 and bf16),
#                                          # PyTorch side by side (eager, AMP, torch.compile)
#   bash benchmarks/gpu_session.sh e2e     # cifar_info on the JPEG proxy, float32 then bf16, 200 epochs each
#                                          # (GPU_SESSION_EPOCHS, GPU_SESSION_E2E_LIMIT seconds per run)
# Results: $OUT/summary.txt (how each step ended) and $OUT/results.tar.gz (every log, JSON and run summary),
# rebuilt after each step, so a call cut short still brings back what finished. Each step has its own time limit
# and a failing step does not stop the others.
# Dry run of the script itself on a CPU, at tiny sizes: GPU_SESSION_PLATFORM=cpu bash benchmarks/gpu_session.sh all
set -u
part="${1:-bench}"
case "$part" in bench|e2e|all) ;; *) echo "usage: $0 [bench|e2e|all]" >&2; exit 2 ;; esac
platform="${GPU_SESSION_PLATFORM:-gpu}"
out="${OUT:-/tmp/gpu_session_out}"
work=/tmp/gpu_session   # Logs and run directories; only the archive and the summary go to $OUT (8 files at most).
mkdir -p "$out" "$work"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"  # The GPU image has python3 (with PyTorch), not always python.
if [ "$platform" = cpu ]; then
  export JAX_PLATFORMS=cpu
else
  export JAX_PLATFORMS=cuda
fi

pack() {  # The archive $OUT gets: every log and JSON, and each run's summary, config and metrics, no checkpoints.
  tar -czf "$out/results.tar.gz.tmp" -C "$work" --exclude='checkpoints' --exclude='tensorboard' . 2>/dev/null &&
    mv "$out/results.tar.gz.tmp" "$out/results.tar.gz"
  cp "$work/summary.txt" "$out/summary.txt" 2>/dev/null
}

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit, log to $work/NAME.log, record how it ended.
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$work/$name.log" 2>&1
  local rc=$?
  local how="exit $rc"
  [ "$rc" -eq 124 ] && how="stopped at its ${limit} s limit"
  echo "$name: $how after $((SECONDS - start)) s" | tee -a "$work/summary.txt"
  pack
}

{ date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
  "$py" -c 'import sys, jax, jaxlib, flax, optax, orbax.checkpoint as ocp
print("python", sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__, "flax", flax.__version__,
      "optax", optax.__version__, "orbax", ocp.__version__, jax.devices())' 2>&1 | tail -1
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tail -1
} > "$work/machine.txt" 2>&1

# What the image lacks travels in .gpu_carry (benchmarks/gpu_prepare.sh).
if compgen -G ".gpu_carry/wheels/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu_carry/wheels/*.whl >> "$work/machine.txt" 2>&1 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
data=/tmp/cifar10_jpeg.tar
if [ -f .gpu_carry/cifar10_jpeg.tar.gz ] && [ ! -f "$data" ]; then
  gunzip -c .gpu_carry/cifar10_jpeg.tar.gz > "$data.tmp" && mv "$data.tmp" "$data"
elif [ ! -f "$data" ] && [ -f ../shared/data/cifar10_jpeg/cifar10_jpeg.tar ]; then
  data=$(cd ../shared/data/cifar10_jpeg && pwd)/cifar10_jpeg.tar
fi
cat "$work/machine.txt"
echo "part $part on $platform, $(date -u +%H:%M:%S)" | tee -a "$work/summary.txt"
proxy=(--config.data.source=image_folder "--config.data.path=$data")

if [ "$platform" = cpu ]; then  # Tiny sizes: this checks the script and the flags, not the speed.
  bench_gpu=(--platform=cpu --batch=8)
  widths=(--filter_percentages=0.1)
  train_steps=(--steps=2) profile_steps=(--steps=1 --profile_steps=1 --filter_percentage=0.1)
  vs_torch=(--platform=cpu --batch=8 --filter_percentages=0.1 --steps=1 --rounds=1 --warmup=1 --matmul_size=256
            --torch_compile=false)
  e2e_config=configs/cifar_info.py:smoke e2e_epochs="${GPU_SESSION_EPOCHS:-1}"
else
  bench_gpu=(--platform=gpu --batch=100)
  widths=(--filter_percentages=1.0,0.25)
  train_steps=(--steps=200) profile_steps=(--steps=100)
  vs_torch=(--platform=gpu --batch=100 --filter_percentages=1.0 --steps=50 --rounds=3)
  e2e_config=configs/cifar_info.py e2e_epochs="${GPU_SESSION_EPOCHS:-200}"
fi

if [ "$part" != e2e ]; then
  # Does the trainer run at all on this machine's jax/flax/orbax (the image's versions, not the ones CI tests)?
  step smoke 120 "$py" launch.py --config=configs/cifar_info.py:smoke --workdir="$work/smoke" "${proxy[@]}"
  # Information dropout against no dropout, both widths, float32 (TF32) and bf16 (goal: ≤ 1.25×).
  step train_step_f32 60 "$py" benchmarks/bench_train_step.py "${bench_gpu[@]}" "${widths[@]}" "${train_steps[@]}" \
    --methods=information,none
  step train_step_bf16 60 "$py" benchmarks/bench_train_step.py "${bench_gpu[@]}" "${widths[@]}" "${train_steps[@]}" \
    --methods=information,none --dtype=bfloat16
  # Against PyTorch eager (AMP + channels_last) and torch.compile on the same GPU (goals: ≥ 1.5× and ≥ 1.0×).
  # Ours is plain Flax there (the CPU speed-ups are CPU only: --cpu_speedups defaults to off on a GPU, and the
  # trainer's 'auto' too); the CPU dry run times ours with them on and off.
  if "$py" -c 'import torch' 2>/dev/null; then
    step vs_pytorch 180 "$py" benchmarks/bench_vs_pytorch.py "${vs_torch[@]}" --json="$work/vs_pytorch.json"
  else
    echo "vs_pytorch: skipped (no torch here)" | tee -a "$work/summary.txt"
  fi
  # Where the step's time goes, float32 and bf16: ms/step, MFU, the top ops.
  step profile_f32 60 "$py" benchmarks/profile_step.py "${bench_gpu[@]}" "${profile_steps[@]}" --top=30
  step profile_bf16 60 "$py" benchmarks/profile_step.py "${bench_gpu[@]}" "${profile_steps[@]}" --top=30 \
    --dtype=bfloat16
fi

if [ "$part" != bench ]; then
  # 200 epochs end to end (goal ≤ 60 s), and bf16 within 0.5 points of float32 on the proxy.
  limit="${GPU_SESSION_E2E_LIMIT:-270}"
  for dtype in float32 bfloat16; do
    rm -rf "$work/e2e_$dtype"
    step "e2e_$dtype" "$limit" "$py" launch.py --config="$e2e_config" --workdir="$work/e2e_$dtype" "${proxy[@]}" \
      --config.model.dtype="$dtype" --config.train.num_epochs="$e2e_epochs"
  done
fi
echo "done $(date -u +%H:%M:%S)" | tee -a "$work/summary.txt"
pack
