"""Train-step throughput and compile time of All-CNN-32 per dropout method and filter percentage.

  python benchmarks/bench_train_step.py --platform=cpu --steps=5 --batch=32
  python benchmarks/bench_train_step.py --platform=gpu --steps=100 --batch=100 --filter_percentages=1.0,0.25

Times one `train.train_step` per call (jit on a mesh of all devices, state donated, batch pre-placed on device;
benchmarks/allcnn_step.py) and prints a markdown table: compile seconds, ms/step and images/s after one warm-up call.
Synthetic CIFAR-shaped data. The CPU speed-ups are set as the trainer's `config.train.cpu_speedups` sets them
(`--cpu_speedups`, default 'auto': on when JAX's default backend is the CPU, i.e. the model from
`infodrop_jax.cpu.model_parts()` compiled with `cpu.xla.compiler_options()`; 'off': plain Flax, XLA's defaults).
"""
import os
import sys

from absl import app
from absl import flags

flags.DEFINE_string('platform', 'cpu', 'JAX platform: cpu | gpu (= cuda) | tpu.')
flags.DEFINE_integer('steps', 10, 'Timed steps (after one warm-up call).')
flags.DEFINE_integer('batch', 100, 'Global batch size.')
flags.DEFINE_list('filter_percentages', ['1.0', '0.25'], 'All-CNN-32 width multipliers.')
flags.DEFINE_list('methods', ['information', 'binary', 'gaussian', 'lognormal_constant', 'variational', 'none'],
                  'Dropout methods.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
flags.DEFINE_enum('cpu_speedups', 'auto', ['auto', 'on', 'off'], "The CPU speed-ups (infodrop_jax.cpu), as "
                  "config.train.cpu_speedups: 'auto' = on when JAX's default backend is the CPU.")
FLAGS = flags.FLAGS


def _bench(method: str, filter_percentage: float):
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import allcnn_step  # pylint: disable=g-import-not-at-top
  from infodrop_jax import cpu  # pylint: disable=g-import-not-at-top

  config = allcnn_step.cifar_config(method, filter_percentage, FLAGS.dtype)
  images, labels = allcnn_step.synthetic_batch(FLAGS.batch)
  key = jax.random.PRNGKey(0)
  speedups = cpu.enabled(FLAGS.cpu_speedups, jax.default_backend())
  _, state, batch, compiled, compile_s, *_ = allcnn_step.build(config, images, labels, key, cpu_speedups=speedups)
  state, _ = allcnn_step.run_steps(compiled, state, batch, key, 1)
  _, seconds = allcnn_step.run_steps(compiled, state, batch, key, FLAGS.steps)
  return compile_s, FLAGS.steps * FLAGS.batch / seconds, 1000 * seconds / FLAGS.steps


def main(_):
  # JAX_PLATFORMS=gpu also asks for ROCm, which fails on CUDA-only installs: name the CUDA backend.
  os.environ.setdefault('JAX_PLATFORMS', {'gpu': 'cuda'}.get(FLAGS.platform, FLAGS.platform))
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from infodrop_jax import cpu  # pylint: disable=g-import-not-at-top
  speedups = 'on' if cpu.enabled(FLAGS.cpu_speedups, jax.default_backend()) else 'off'
  print(f'devices: {jax.devices()}; batch {FLAGS.batch}; {FLAGS.steps} timed steps; dtype {FLAGS.dtype}; '
        f'CPU speed-ups {speedups} ({FLAGS.cpu_speedups})\n')
  print('| filters | method | compile s | ms/step | images/s |')
  print('|---|---|---|---|---|')
  for fp in FLAGS.filter_percentages:
    for method in FLAGS.methods:
      compile_s, ips, ms = _bench(method, float(fp))
      print(f'| {float(fp):.0%} | {method} | {compile_s:.1f} | {ms:.1f} | {ips:,.0f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
