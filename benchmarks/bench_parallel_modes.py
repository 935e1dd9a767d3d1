"""Training throughput of the real trainer loop per parallel mode ('jit' sharding vs 'pmap') and steps per call.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/bench_parallel_modes.py --platform=cpu
  python benchmarks/bench_parallel_modes.py --platform=gpu --model=all_cnn_32 --batch=800 --steps_per_call=50

Builds `train.Run` (the trainer's own data pipeline, chunk functions and host/compiled loop choice) on generated
data (MNIST- or CIFAR-shaped) for each mode, with `config.train.cpu_speedups` = `--cpu_speedups` (default 'auto',
the trainer's: on a CPU the model from `infodrop_jax.cpu.model_parts()`, and in 'jit' mode
`cpu.xla.compiler_options()`; pmap takes no XLA options, so a pmap run keeps XLA's default kernels), compiles a
chunk, then times `--rounds` rounds in which every mode runs `--chunks` chunks in turn. Prints compile seconds and
median images/s [min–max] per mode, and the ratio to 'jit'.
On forced CPU devices the numbers say what the device split costs on one socket, not what real devices would gain.
"""
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_string('platform', 'cpu', 'JAX platform: cpu | gpu (= cuda) | tpu.')
flags.DEFINE_list('modes', ['jit', 'pmap'], 'config.train.parallel values to compare.')
flags.DEFINE_enum('model', 'mlp', ['mlp', 'all_cnn_32'], 'mlp: mnist_fc; all_cnn_32 at --filter_percentage.')
flags.DEFINE_float('filter_percentage', 0.25, 'All-CNN-32 width multiplier.')
flags.DEFINE_integer('batch', 128, 'Global batch size (a multiple of the device count).')
flags.DEFINE_integer('steps_per_call', 10, 'Steps per compiled chunk (config.train.steps_per_call).')
flags.DEFINE_integer('chunks', 3, 'Chunks per mode per round.')
flags.DEFINE_integer('rounds', 3, 'Timed rounds.')
flags.DEFINE_enum('cpu_speedups', 'auto', ['auto', 'on', 'off'], "config.train.cpu_speedups: the CPU speed-ups "
                  "(infodrop_jax.cpu); 'auto' = on when JAX's default backend is the CPU.")
FLAGS = flags.FLAGS

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _splits(shape, n_train, n_test):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from infodrop_jax.data.splits import DatasetSplits, Split  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  def split(n):
    return Split(images=rng.integers(0, 256, (n,) + shape).astype(np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.int32), extras={})
  return DatasetSplits(name='generated', num_classes=10, train=split(n_train), test=split(n_test), valid=None)


def _config(mode):
  from configs import cifar_info, mnist_fc  # pylint: disable=g-import-not-at-top
  if FLAGS.model == 'mlp':
    config = mnist_fc.get_config()
  else:
    config = cifar_info.get_config()
    config.model.filter_percentage = FLAGS.filter_percentage
  config.train.parallel = mode
  config.train.batch_size = FLAGS.batch
  config.train.steps_per_call = FLAGS.steps_per_call
  config.eval.batch_size = FLAGS.batch
  config.logging.progress_bar = False
  config.train.cpu_speedups = FLAGS.cpu_speedups
  return config


class _Mode:
  def __init__(self, mode, splits):
    import jax  # pylint: disable=g-import-not-at-top
    from infodrop_jax import train  # pylint: disable=g-import-not-at-top
    self.mode = mode
    self.run = train.Run(_config(mode), tempfile.mkdtemp(), model=None, splits=splits)
    self.state = self.run.parallel.to_device_layout(self.run.initial_state())
    self.order = self.run.train_data.order(0)
    self.length = FLAGS.steps_per_call
    start = time.perf_counter()
    self._chunk()  # Compiles, then runs one chunk.
    self.compile_s = time.perf_counter() - start
    self._block = jax.block_until_ready

  def _chunk(self):
    self.state, metrics = self.run.run_chunk(self.state, self.length, self.order)
    return metrics

  def time(self, chunks):
    start = time.perf_counter()
    for _ in range(chunks):
      metrics = self._chunk()
    self._block(self.state)
    del metrics
    return chunks * self.length * FLAGS.batch / (time.perf_counter() - start)


def main(_):
  logging.set_verbosity(logging.WARNING)  # The checkpoint manager's INFO lines, once per mode.
  os.environ.setdefault('JAX_PLATFORMS', {'gpu': 'cuda'}.get(FLAGS.platform, FLAGS.platform))
  sys.path.insert(0, _REPO)
  import jax  # pylint: disable=g-import-not-at-top
  shape = (28, 28, 1) if FLAGS.model == 'mlp' else (32, 32, 3)
  splits = _splits(shape, n_train=FLAGS.batch * FLAGS.steps_per_call * 4, n_test=FLAGS.batch)
  print(f'{len(jax.devices())} {jax.devices()[0].platform} devices; model {FLAGS.model}; batch {FLAGS.batch}; '
        f'{FLAGS.steps_per_call} steps per call; cpu_speedups {FLAGS.cpu_speedups}; '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}', flush=True)
  modes = [_Mode(mode, splits) for mode in FLAGS.modes]
  rates = {m.mode: [] for m in modes}
  for r in range(FLAGS.rounds):
    k = r % len(modes)
    for m in modes[k:] + modes[:k]:
      rates[m.mode].append(m.time(FLAGS.chunks))
  base = statistics.median(rates[modes[0].mode])
  print(f'\n| mode | CPU speed-ups | host loops | compile + first chunk s | images/s median [min–max] | '
        f'ratio vs {modes[0].mode} |')
  print('|---|---|---|---|---|---|')
  for m in modes:
    med = statistics.median(rates[m.mode])
    print(f'| {m.mode} | {"on" if m.run.cpu_speedups else "off"} | {m.run.host_loops} | {m.compile_s:.1f} | '
          f'{med:,.0f} [{min(rates[m.mode]):,.0f}–{max(rates[m.mode]):,.0f}] | {med / base:.2f} |')


if __name__ == '__main__':
  app.run(main)
