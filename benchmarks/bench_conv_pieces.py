"""Where a CPU conv-net step goes: one 3x3 convolution's forward, input gradient and weight gradient, ours vs PyTorch.

  python benchmarks/bench_conv_pieces.py                       # All-CNN-32's shapes at batch 100
  python benchmarks/bench_conv_pieces.py --shapes=100x32x96x96s1

Times, per shape (batch × size × in-channels × out-channels, stride), the convolution our layers run
(`convolution.conv_general_dilated`, NHWC/HWIO, 'SAME') jitted as the trainer compiles it
(`parallel.cpu_compiler_options`; `--xla_cpu_defaults` for XLA's own), its input gradient (polyphase for strides
above 1), XLA's own input gradient (the dilated form `jax.lax.conv_general_dilated` differentiates to), its weight
gradient (from `jax.vjp`, as `jax.grad` of a model computes them), the weight gradient written as nine 2-d matrix
products (one per kernel tap), then the same three with PyTorch's oneDNN kernels (`conv2d`,
`torch.nn.grad.conv2d_input` / `conv2d_weight`), and one plain matrix product of the weight gradient's inner shape
((N·H·W)ᵀ × C by N·H·W × O). Milliseconds per call, mean of --repeats calls after one warm-up. PyTorch is a
benchmark-only extra (requirements-bench.txt).
"""
import functools
import time

from absl import app
from absl import flags

flags.DEFINE_list('shapes', ['100x32x96x96s1', '100x32x96x192s2', '100x16x192x192s1', '100x32x24x24s1',
                             '100x32x24x48s2', '100x16x48x48s1'],
                  'NxHxCxOsS: batch, input size, in and out channels, stride.')
flags.DEFINE_integer('repeats', 5, 'Timed calls per measurement.')
flags.DEFINE_bool('xla_cpu_defaults', False, "Compile ours with XLA's own CPU defaults instead of the trainer's "
                  'options (parallel.cpu_compiler_options: YNNPACK convolutions off).')
FLAGS = flags.FLAGS


def _parse(shape):
  sizes, stride = shape.split('s')
  n, h, c, o = (int(v) for v in sizes.split('x'))
  return n, h, c, o, int(stride)


def _time(fn, block):
  block(fn())
  start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    out = fn()
  block(out)
  return 1000 * (time.perf_counter() - start) / FLAGS.repeats


def _weight_gradient_by_taps(x, dy, stride):
  """The 3x3 'SAME' weight gradient as nine 2-d matrix products, one per kernel tap (what XLA:CPU does fast)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, h, _, c = x.shape
  ho, wo, o = dy.shape[1], dy.shape[2], dy.shape[3]
  pad = max((ho - 1) * stride + 3 - h, 0)
  xp = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2), (0, 0)))
  grad = dy.reshape(-1, o)
  taps = []
  for i in range(3):
    for j in range(3):
      tap = jax.lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                          (1, stride, stride, 1))
      taps.append(jax.lax.dot_general(tap.reshape(-1, c), grad, (((0,), (0,)), ((), ()))))
  return jnp.stack(taps).reshape(3, 3, c, o)


def main(_):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    torch = None
    print('PyTorch is not installed (pip install -r requirements-bench.txt): timing ours only.')
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from infodrop_jax import convolution, parallel  # pylint: disable=g-import-not-at-top
  options = None if FLAGS.xla_cpu_defaults else parallel.compiler_options(jax.devices()[:1])
  jit = functools.partial(jax.jit, compiler_options=options)
  print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}, compiler options {options}' +
        (f'; torch {torch.__version__}, {torch.get_num_threads()} threads' if torch else ''))
  print('\n| shape | ours fwd | ours dx | XLA dx | ours dw | dw by 9 taps | torch fwd | torch dx | torch dw | '
        'ours / torch, fwd+dx+dw | dw-shaped matmul, ours / torch |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  rng = np.random.default_rng(0)
  for shape in FLAGS.shapes:
    n, h, c, o, s = _parse(shape)
    x = jnp.asarray(rng.normal(size=(n, h, h, c)), jnp.float32)
    w = jnp.asarray(0.05 * rng.normal(size=(3, 3, c, o)), jnp.float32)
    numbers = ('NHWC', 'HWIO', 'NHWC')
    conv = lambda x, w, s=s: convolution.conv_general_dilated(x, w, (s, s), 'SAME', dimension_numbers=numbers)
    lax_conv = lambda x, w, s=s: jax.lax.conv_general_dilated(x, w, (s, s), 'SAME', dimension_numbers=numbers)
    dy = jnp.asarray(rng.normal(size=conv(x, w).shape), jnp.float32)
    fwd = jit(conv)
    dx = jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
    lax_dx = jit(lambda x, w, dy: jax.vjp(lambda x: lax_conv(x, w), x)[1](dy)[0])
    dw = jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
    k = n * dy.shape[1] * dy.shape[2]
    a, b = (jnp.asarray(rng.normal(size=(k, m)), jnp.float32) for m in (c, o))
    matmul = jit(lambda a, b: jax.lax.dot_general(a, b, (((0,), (0,)), ((), ()))))
    block = jax.block_until_ready
    taps = jit(functools.partial(_weight_gradient_by_taps, stride=s))
    np.testing.assert_allclose(taps(x, dy), dw(x, w, dy), rtol=1e-3, atol=2e-2)
    np.testing.assert_allclose(dx(x, w, dy), lax_dx(x, w, dy), rtol=1e-4, atol=1e-4)
    ours = [_time(lambda: fwd(x, w), block), _time(lambda: dx(x, w, dy), block), _time(lambda: lax_dx(x, w, dy), block),
            _time(lambda: dw(x, w, dy), block), _time(lambda: taps(x, dy), block)]
    ours_mm = _time(lambda: matmul(a, b), block)
    theirs, theirs_mm = ['—'] * 3, '—'
    if torch:
      xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
      wt = torch.from_numpy(np.asarray(w).transpose(3, 2, 0, 1).copy())
      dyt = torch.from_numpy(np.asarray(dy).transpose(0, 3, 1, 2).copy())
      nop = lambda r: r
      with torch.no_grad():
        theirs = [_time(lambda: torch.nn.functional.conv2d(xt, wt, stride=s, padding=1), nop),
                  _time(lambda: torch.nn.grad.conv2d_input(xt.shape, wt, dyt, stride=s, padding=1), nop),
                  _time(lambda: torch.nn.grad.conv2d_weight(xt, wt.shape, dyt, stride=s, padding=1), nop)]
        at, bt = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
        theirs_mm = _time(lambda: at.T @ bt, nop)
    cells = [f'{v:.1f}' if isinstance(v, float) else v for v in ours + theirs]
    # What a train step runs: forward, our input gradient, XLA's weight gradient.
    ratio = f'{(ours[0] + ours[1] + ours[3]) / sum(theirs):.2f}' if torch else '—'
    mm = f'{theirs_mm:.1f}' if torch else '—'
    print(f'| {shape} | ' + ' | '.join(cells) + f' | {ratio} | {ours_mm:.1f} / {mm} |', flush=True)


if __name__ == '__main__':
  app.run(main)
