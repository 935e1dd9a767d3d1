"""Where the All-CNN-32 train step spends its time: a `jax.profiler` trace, summed per XLA op, and the step's MFU.

  python benchmarks/profile_step.py --platform=cpu --filter_percentage=0.25
  python benchmarks/profile_step.py --platform=gpu --batch=100 --steps=50 --dtype=bfloat16 --peak_tflops=989

Builds the step the trainer compiles (benchmarks/allcnn_step.py: one device, state donated, batch pre-placed), with
the CPU speed-ups as the trainer's `config.train.cpu_speedups` sets them (`--cpu_speedups`, default 'auto': on when
JAX's default backend is the CPU, i.e. the model from `infodrop_jax.cpu.model_parts()` compiled with
`cpu.xla.compiler_options()`; 'off' profiles plain Flax with XLA's defaults), times --steps steps, then traces
--profile_steps more with `jax.profiler.trace` and prints:
- ms/step and images/s; the step's floating-point operations from XLA's cost analysis, and its MFU against
  --peak_tflops (default: a table of dense peaks per device kind below; none for CPUs);
- per category (convolution forward / input gradient / kernel gradient, transposes and copies, random numbers,
  other fusions, ...) and per op (the top --top, with the JAX source it came from), ms per step and share.
Ops are the trace's events named after instructions of the compiled step (`compiled.as_text()`; on GPU, kernels
whose `hlo_op` is one), so host-side events do not count; on CPU some library calls (XLA's Eigen convolutions) are
not traced and show up only as the gap between the traced sum and the step time, which is printed. The GPU path
(cuDNN custom calls, kernel events) follows XLA's trace format but has not yet been run on a GPU. `--trace_dir` keeps the trace for TensorBoard or
Perfetto.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

from absl import app
from absl import flags

flags.DEFINE_string('platform', 'cpu', 'JAX platform: cpu | gpu (= cuda) | tpu.')
flags.DEFINE_integer('batch', 100, 'Batch size (global: split over --devices).')
flags.DEFINE_integer('devices', 1, "Devices the batch is split over ('jit' mode). With more than one, ops are "
                     'summed over the devices: device-milliseconds per step (CPU: XLA_FLAGS='
                     '--xla_force_host_platform_device_count=N, what launch.py --host_devices=N sets).')
flags.DEFINE_float('filter_percentage', 1.0, 'All-CNN-32 width multiplier.')
flags.DEFINE_string('method', 'information', 'Dropout method.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype (config.model.dtype).')
flags.DEFINE_integer('steps', 5, 'Timed steps (after two warm-up steps).')
flags.DEFINE_integer('profile_steps', 2, 'Traced steps.')
flags.DEFINE_integer('top', 25, 'Ops listed one by one.')
flags.DEFINE_float('peak_tflops', None, 'Peak dense TFLOP/s of the device at --dtype for MFU (default: PEAK_TFLOPS).')
flags.DEFINE_enum('cpu_speedups', 'auto', ['auto', 'on', 'off'], "The CPU speed-ups (infodrop_jax.cpu), as "
                  "config.train.cpu_speedups: 'auto' = on when JAX's default backend is the CPU.")
flags.DEFINE_string('trace_dir', None, 'Keep the trace here (default: a temporary directory, deleted).')
FLAGS = flags.FLAGS

# Dense peaks without sparsity (vendor data sheets): (device kind substring, dtype) -> TFLOP/s.
PEAK_TFLOPS = {('H100', 'bfloat16'): 989.0, ('H100', 'float32'): 494.7,  # float32 as TF32 (XLA's default on GPU).
               ('H200', 'bfloat16'): 989.0, ('H200', 'float32'): 494.7,
               ('A100', 'bfloat16'): 312.0, ('A100', 'float32'): 156.0}

CATEGORIES = (  # (category, test on (instruction line, op_name)), first match wins.
    # Between devices (--devices > 1); their op_name is the value's, which may name a convolution.
    ('collective', lambda line, op: any(f' {k}(' in line or f' {k}-start(' in line for k in (
        'all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all'))),
    ('convolution, kernel gradient', lambda line, op: 'convBackwardFilter' in line
     or (' convolution(' in line and 'transpose(' in op and _is_kernel_gradient(line))),
    ('convolution, input gradient', lambda line, op: 'convBackwardInput' in line or (
        ' convolution(' in line and 'transpose(' in op)),
    ('convolution, forward', lambda line, op: ' convolution(' in line or 'cudnn$conv' in line
     or 'conv_general_dilated' in op),
    ('dot', lambda line, op: ' dot(' in line or 'dot_general' in op),
    ('random numbers', lambda line, op: any(k in op for k in ('_normal', '_uniform', '_bernoulli', 'threefry',
                                                             'random_bits'))),
    ('transpose / copy', lambda line, op: 'transpose' in line.split('=')[0] or ' copy(' in line
     or line.lstrip().startswith(('%copy', 'copy'))),
    ('reduction', lambda line, op: 'reduce' in line.split('(')[0] or 'reduce_sum' in op),
    ('other', lambda line, op: True),
)


def _is_kernel_gradient(line: str) -> bool:
  # A kernel gradient convolves with the output gradient as its window: the window is an image, not a 3x3 kernel.
  window = re.search(r'window=\{size=(\d+)', line)
  return bool(window) and int(window.group(1)) > 5


def instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Instruction name → (its line, its JAX op_name) for every instruction of a compiled HLO module's text."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = ', line)
    if m:
      op = re.search(r'op_name="([^"]*)"', line)
      out[m.group(1)] = (line, op.group(1) if op else '')
  return out


def summarize(events: list[dict], hlo_text: str, steps: int) -> tuple[dict[str, float], list[tuple]]:
  """Trace events (Chrome trace format) → (ms per step per category, [(ms per step, name, category, op_name)])."""
  known = instructions(hlo_text)
  complete = [e for e in events if e.get('ph') == 'X']
  # CPU traces name their op events after the instruction; GPU kernel events carry it as args.hlo_op instead.
  named = [(e['name'], e) for e in complete if e.get('name') in known]
  if not named:
    named = [(e['args']['hlo_op'], e) for e in complete if (e.get('args') or {}).get('hlo_op') in known]
  per_op = collections.Counter()
  for name, event in named:
    per_op[name] += event.get('dur', 0) / 1000 / steps
  categories, ops = collections.Counter(), []
  for name, ms in per_op.most_common():
    line, op = known[name]
    category = next(c for c, test in CATEGORIES if test(line, op))
    categories[category] += ms
    ops.append((ms, name, category, op))
  return dict(categories), ops


def _trace_events(trace_dir: str) -> list[dict]:
  paths = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  if not paths:
    raise FileNotFoundError(f'jax.profiler wrote no *.trace.json.gz under {trace_dir}.')
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    return json.load(f)['traceEvents']


def main(_):
  os.environ.setdefault('JAX_PLATFORMS', {'gpu': 'cuda'}.get(FLAGS.platform, FLAGS.platform))
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import allcnn_step  # pylint: disable=g-import-not-at-top
  from infodrop_jax import cpu  # pylint: disable=g-import-not-at-top

  config = allcnn_step.cifar_config(FLAGS.method, FLAGS.filter_percentage, FLAGS.dtype)
  images, labels = allcnn_step.synthetic_batch(FLAGS.batch)
  key = jax.random.PRNGKey(0)
  speedups = cpu.enabled(FLAGS.cpu_speedups, jax.default_backend())
  _, state, batch, compiled, compile_s, par, _ = allcnn_step.build(
      config, images, labels, key, devices=jax.devices()[:FLAGS.devices], cpu_speedups=speedups)
  state, _ = allcnn_step.run_steps(compiled, state, batch, key, 2)
  state, seconds = allcnn_step.run_steps(compiled, state, batch, key, FLAGS.steps)
  step_ms = 1000 * seconds / FLAGS.steps

  trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix='profile_step_')
  with jax.profiler.trace(trace_dir):
    allcnn_step.run_steps(compiled, state, batch, key, FLAGS.profile_steps)
  categories, ops = summarize(_trace_events(trace_dir), compiled.as_text(), FLAGS.profile_steps)
  if not FLAGS.trace_dir:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(trace_dir, ignore_errors=True)

  device = jax.devices()[0]
  # A step split over devices has one device's program in its cost analysis: count the whole step on one.
  flops = (allcnn_step.step_flops(compiled) if par.num_devices == 1 else
           allcnn_step.one_device_flops(config, images, labels, key, cpu_speedups=speedups))
  peak = FLAGS.peak_tflops or next((v for (kind, dtype), v in PEAK_TFLOPS.items()
                                    if kind in device.device_kind and dtype == FLAGS.dtype), None)
  achieved = flops / (step_ms / 1000) / 1e12
  print(f'{device.device_kind} ({device.platform}); All-CNN-32 at {FLAGS.filter_percentage:.0%}, {FLAGS.method}, '
        f'batch {FLAGS.batch} over {par.num_devices} device(s), {FLAGS.dtype}; CPU speed-ups '
        f'{"on" if speedups else "off"} ({FLAGS.cpu_speedups}); compiler options {par.compiler_options}')
  print(f'compile {compile_s:.1f} s; {step_ms:.2f} ms/step, {FLAGS.batch / step_ms * 1000:,.0f} images/s '
        f'(mean of {FLAGS.steps}); {flops / 1e9:.2f} GFLOP/step (XLA cost analysis) = {achieved:.2f} TFLOP/s' +
        (f' = {achieved / peak:.1%} MFU of {peak:g} TFLOP/s' if peak else ' (no peak known: --peak_tflops)'))
  traced = sum(categories.values())
  # Each device runs the whole (partitioned) program: its ops' time adds up to devices × the step at most.
  budget, unit = step_ms * par.num_devices, 'ms/step' if par.num_devices == 1 else 'device-ms/step'
  print(f'\ntraced ops: {traced:.2f} {unit} of {budget:.2f} (the rest: untraced library calls, dispatch, idle)\n')
  print(f'| category | {unit} | share of step |')
  print('|---|---|---|')
  for name, ms in sorted(categories.items(), key=lambda kv: -kv[1]):
    print(f'| {name} | {ms:.2f} | {ms / budget:.1%} |')
  print(f'\n| op | category | {unit} | share | from |')
  print('|---|---|---|---|---|')
  for ms, name, category, op in ops[:FLAGS.top]:
    print(f'| {name} | {category} | {ms:.2f} | {ms / budget:.1%} | {op[-90:]} |')


if __name__ == '__main__':
  app.run(main)
