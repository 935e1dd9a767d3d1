r"""Times generated-dataset construction: full Cluttered MNIST (60k + 10k digits) and Occluded CIFAR-10.

Only generation is timed (the MNIST/CIFAR reads and the cache are outside the timed region); each figure is the
best of --repeats runs.

  python benchmarks/bench_data_generation.py                      # data from $INFODROP_DATA_DIR or ../shared/data
  python benchmarks/bench_data_generation.py --occluded_cifar_path=../shared/data/cifar10_jpeg/cifar10_jpeg.tar
"""
import datetime
import os
import platform
import time

from absl import app
from absl import flags
import numpy as np

from infodrop_jax.data import config as config_lib
from infodrop_jax.data import generated
from infodrop_jax.data import sources

_MNIST_PATH = flags.DEFINE_string('mnist_path', '', 'MNIST IDX directory; default <data root>/mnist.')
_OCCLUDED_CIFAR_PATH = flags.DEFINE_string(
    'occluded_cifar_path', '', 'CIFAR-10 source (image-folder tar or CIFAR archive) to also time Occluded '
    'CIFAR-10 generation; empty = skip.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repetitions; the best is reported.')
_SEED = flags.DEFINE_integer('seed', 0, 'Generation seed.')


def _best_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return min(times), times, result


def _machine():
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  return (f'{cpu}, {len(os.sched_getaffinity(0))} usable cores, numpy {np.__version__}, '
          f'1-min load average at start {load:.1f}')


def main(argv):
  del argv
  print(f'date: {datetime.datetime.now().isoformat(timespec="seconds")}')
  print(f'machine: {_machine()}')
  mnist_config = config_lib.get_config('mnist', source='idx', path=_MNIST_PATH.value)
  mnist, where = sources.read_base(mnist_config, 'mnist')
  print(f'MNIST from {where}')

  best, times, splits = _best_time(lambda: generated.cluttered_mnist(mnist, seed=_SEED.value), _REPEATS.value)
  sizes = {k: len(v) for k, v in splits.items()}
  print(f'Cluttered MNIST 96x96, 21 distractors, {sizes}: best {best:.2f} s '
        f'(runs: {", ".join(f"{t:.2f}" for t in times)})')

  if _OCCLUDED_CIFAR_PATH.value:
    path = _OCCLUDED_CIFAR_PATH.value
    source = 'image_folder' if path.endswith('.tar') or os.path.isdir(os.path.join(path, 'train')) else 'auto'
    cifar_config = config_lib.get_config('cifar10', source=source, path=path)
    cifar, where = sources.read_base(cifar_config, 'cifar10')  # Decoded once, then cached.
    print(f'CIFAR-10 from {where}')
    best, times, splits = _best_time(lambda: generated.occluded_cifar10(cifar, mnist, seed=_SEED.value),
                                     _REPEATS.value)
    sizes = {k: len(v) for k, v in splits.items()}
    print(f'Occluded CIFAR-10, 16x16 digits, {sizes}: best {best:.2f} s '
          f'(runs: {", ".join(f"{t:.2f}" for t in times)})')


if __name__ == '__main__':
  app.run(main)
