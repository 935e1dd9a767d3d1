"""The noise draws of a layer: `jax.random` against `infodrop_jax.cpu.prng` (the same values, Threefry unrolled on CPU).

  python benchmarks/bench_prng.py                                  # All-CNN-32's noise shapes at 25 % and 100 %
  python benchmarks/bench_prng.py --shapes=100x16x16x96 --repeats=50
  python benchmarks/bench_prng.py --last_axes=1,3,8,12,16,24      # normal draws of 300k values by last axis

Per shape: milliseconds per call of `bits` (uint32), `uniform`, `normal` and `bernoulli(0.8)`, each jitted with
the XLA options of the CPU speed-ups (`infodrop_jax.cpu.xla.compiler_options()`: the trainer compiles with them
when `config.train.cpu_speedups` is on, and its layers then draw with `cpu.prng.SAMPLER`), `jax.random`'s and
ours in turn, mean of --repeats calls after one warm-up, and the ratio. Checks first that both give the same
values. `--last_axes` instead times normal draws of about 300,000 values shaped (300000 // d, d), in nanoseconds
per value: XLA:CPU does not vectorise the erf⁻¹ pass along a last axis of 3, 5-7 or 9-15, so `prng.normal` leaves
those to jax.random.
"""
import functools
import os
import sys
import time

from absl import app
from absl import flags

flags.DEFINE_list('shapes', ['100x16x16x24', '100x8x8x48', '100x16x16x96', '100x32x32x3'],
                  'Shapes to draw, dimensions separated by x.')
flags.DEFINE_list('last_axes', [], 'Time normal draws of ~300k values by the size d of their last axis instead.')
flags.DEFINE_integer('repeats', 30, 'Timed calls per measurement.')
FLAGS = flags.FLAGS


def _time(fn, key):
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(key))
  start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    out = fn(key)
  jax.block_until_ready(out)
  return 1000 * (time.perf_counter() - start) / FLAGS.repeats


def main(_):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from infodrop_jax.cpu import prng  # pylint: disable=g-import-not-at-top
  from infodrop_jax.cpu import xla as cpu_xla  # pylint: disable=g-import-not-at-top
  jit = functools.partial(jax.jit, compiler_options=cpu_xla.compiler_options())
  print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}')
  key = jax.random.PRNGKey(0)
  if FLAGS.last_axes:
    print('| last axis d | jax.random ns/value | prng ns/value (unrolled?) |')
    print('|---|---|---|')
    for d in (int(v) for v in FLAGS.last_axes):
      shape = (300_000 // d, d)
      theirs, ours = jit(lambda k, s=shape: jax.random.normal(k, s)), jit(lambda k, s=shape: prng.normal(k, s))
      per_value = 1e6 / (shape[0] * d)
      unrolled = 'stablehlo.while' not in ours.lower(key).as_text()
      print(f'| {d} | {_time(theirs, key) * per_value:.1f} | {_time(ours, key) * per_value:.1f} '
            f'({"yes" if unrolled else "no: jax.random"}) |', flush=True)
    return
  print('| shape | draw | jax.random ms | prng ms | jax.random / prng |')
  print('|---|---|---|---|---|')
  for text in FLAGS.shapes:
    shape = tuple(int(d) for d in text.split('x'))
    draws = {
        'bits': (lambda k: jax.random.bits(k, shape), lambda k: prng.random_bits(k, shape)),
        'uniform': (lambda k: jax.random.uniform(k, shape), lambda k: prng.uniform(k, shape)),
        'normal': (lambda k: jax.random.normal(k, shape), lambda k: prng.normal(k, shape)),
        'bernoulli(0.8)': (lambda k: jax.random.bernoulli(k, 0.8, shape), lambda k: prng.bernoulli(k, 0.8, shape)),
    }
    for name, (theirs, ours) in draws.items():
      theirs, ours = jit(theirs), jit(ours)
      if not np.array_equal(np.asarray(theirs(key)), np.asarray(ours(key))):
        raise AssertionError(f'{name} {shape}: prng differs from jax.random')
      t_theirs, t_ours = _time(theirs, key), _time(ours, key)
      print(f'| {text} | {name} | {t_theirs:.2f} | {t_ours:.2f} | {t_theirs / t_ours:.1f}× |', flush=True)


if __name__ == '__main__':
  app.run(main)
