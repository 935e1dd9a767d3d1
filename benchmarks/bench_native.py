"""The compiled CPU kernels (`infodrop_jax.native`) against XLA's convolutions, one convolution at a time.

  python benchmarks/bench_native.py [--shapes=100x32x96x96s1,...] [--repeats=8]

For each shape NxHxCxO[sS][kK][v] (batch, square input side, input and output channels, stride, window, 'v' for
'VALID' padding instead of 'SAME'; by default All-CNN-32's convolutions at 100 % and 25 % filters, its fused
α/f pooling convolutions, and a 2x2 phase of a strided input gradient), in one process with the trainer's XLA
options (`parallel.cpu_compiler_options`), jitted alone on one device:
- the kernel gradient: XLA's (`convolution.canonical_kernel_gradient`, Eigen, with its transposes) and ours
  (`native.kernel_gradient`), where the input channels are a multiple of 8;
- the forward convolution: XLA's (`jax.lax.conv_general_dilated`) and ours (`native.forward`), whether or not
  `convolution` uses it there (column "used": `native.supports_forward` / `supports_kernel_gradient`).
Median ms over --repeats calls, the ratio XLA / ours, ours' GFLOP/s, and the largest difference from XLA's result
relative to its largest value.
"""
import os
import re
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
_ALL_CNN_32 = [  # At 100 % filters, then 25 %.
    '100x32x3x96', '100x32x96x96', '100x32x96x192s2', '100x16x96x192', '100x16x192x192', '100x16x192x384s2',
    '100x8x192x192v', '100x6x192x192k1', '100x17x192x96k2v',
    '100x32x3x24', '100x32x24x24', '100x32x24x48s2', '100x16x24x48', '100x16x48x48', '100x16x48x96s2',
    '100x8x48x48v', '100x6x48x48k1', '100x17x48x24k2v']
flags.DEFINE_list('shapes', _ALL_CNN_32, 'NxHxCxO[sS][kK][v] per convolution (see the module docstring).')
flags.DEFINE_integer('repeats', 8, 'Timed calls per variant; the median is reported.')


def parse(shape: str) -> tuple[int, int, int, int, int, int, str]:
  """'100x32x96x192s2' -> (batch, side, in, out, stride, window, padding)."""
  match = re.fullmatch(r'(\d+)x(\d+)x(\d+)x(\d+)(?:s(\d+))?(?:k(\d+))?(v?)', shape)
  if match is None:
    raise app.UsageError(f'--shapes: {shape!r} is not NxHxCxO[sS][kK][v]')
  batch, side, features, out, stride, window, valid = match.groups()
  return (int(batch), int(side), int(features), int(out), int(stride or 1), int(window or 3),
          'VALID' if valid else 'SAME')


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from infodrop_jax import convolution, native, parallel  # pylint: disable=g-import-not-at-top

  if not native.available():
    raise SystemExit('infodrop_jax.native: the compiled kernels are not available here (see the warning above).')
  options = parallel.cpu_compiler_options()
  shapes = [parse(s) for s in FLAGS.shapes]

  def timed(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile(options)
    out = compiled(*args).block_until_ready()
    times = []
    for _ in range(FLAGS.repeats):
      start = time.perf_counter()
      compiled(*args).block_until_ready()
      times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), out

  print(f'jax {jax.__version__}; {os.cpu_count()} CPUs; options {options}; median of {FLAGS.repeats} calls')
  print('| shape | op | XLA ms | ours ms | XLA / ours | ours GFLOP/s | used | largest difference |')
  print('|---|---|---|---|---|---|---|---|')
  for (batch, side, features, out, stride, window, padding), name in zip(shapes, FLAGS.shapes):
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, side, side, features), jnp.float32)
    w = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (window, window, features, out), jnp.float32)
    pads = tuple(jax.lax.padtype_to_pads((side, side), (window, window), (stride, stride), padding))
    y = jax.eval_shape(lambda x, w: convolution._lax_conv(x, w, (stride, stride), pads, None), x, w)  # pylint: disable=protected-access
    g = jax.random.normal(jax.random.PRNGKey(2), y.shape, jnp.float32)
    flops = 2.0 * np.prod(y.shape) * window * window * features
    cases = [('forward', lambda x, w: jax.lax.conv_general_dilated(
        x, w, (stride, stride), pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC')),
              lambda x, w: native.forward(x, w, strides=(stride, stride), pads=pads), (x, w),
              native.supports_forward(x, w, (stride, stride), pads))]
    if native.supports_kernel_gradient(x, g, (window, window), pads):
      cases.append(('kernel gradient', lambda x, g: convolution.canonical_kernel_gradient(
          x, g, window=(window, window), strides=(stride, stride), pads=pads),
                    lambda x, g: native.kernel_gradient(x, g, window=(window, window), strides=(stride, stride),
                                                        pads=pads), (x, g), True))
    for op, xla_fn, ours_fn, args, used in cases:
      xla_ms, expected = timed(xla_fn, *args)
      ours_ms, got = timed(ours_fn, *args)
      difference = float(jnp.max(jnp.abs(got - expected)) / jnp.max(jnp.abs(expected)))
      print(f'| {name} | {op} | {xla_ms:.1f} | {ours_ms:.1f} | {xla_ms / ours_ms:.2f} | '
            f'{flops / ours_ms / 1e6:.0f} | {"yes" if used else "no"} | {difference:.1e} |', flush=True)


if __name__ == '__main__':
  app.run(main)
