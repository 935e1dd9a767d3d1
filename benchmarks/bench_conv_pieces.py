"""Where a CPU conv-net step goes: one 3x3 convolution's forward, input gradient and weight gradient, ours vs PyTorch.

  python benchmarks/bench_conv_pieces.py                       # All-CNN-32's shapes at batch 100
  python benchmarks/bench_conv_pieces.py --shapes=100x32x96x96s1

Times, per shape (batch × size × in-channels × out-channels, stride), the convolution our layers run with the CPU
speed-ups on (`infodrop_jax.cpu.convolution.conv_general_dilated`, NHWC/HWIO, 'SAME') jitted as the trainer
compiles it then (`infodrop_jax.cpu.xla.compiler_options()`; `--xla_cpu_defaults` for XLA's own options, what the
trainer uses with the speed-ups off), its input gradient (polyphase for strides above 1), XLA's own input
gradient (the dilated form `jax.lax.conv_general_dilated` differentiates to), its weight gradient (from `jax.vjp`,
as `jax.grad` of a model computes them), the weight gradient written as nine 2-d matrix products (one per kernel
tap), then the same three with PyTorch's oneDNN kernels (`conv2d`,
`torch.nn.grad.conv2d_input` / `conv2d_weight`), and one plain matrix product of the weight gradient's inner shape
((N·H·W)ᵀ × C by N·H·W × O). Milliseconds per call, mean of --repeats calls after one warm-up. PyTorch is a
benchmark-only extra (requirements-bench.txt).

`--winograd` adds a second table for the stride-1 shapes: Winograd's minimal filtering F(2×2, 3×3) and F(4×4, 3×3)
(Lavin & Gray 2016) written in JAX (tiles transformed with strided slices, one batched matrix product per tile
position, JAX's own gradients of that), forward and forward + both gradients against ours, their largest error
relative to ours, and what the arithmetic does not explain: the time of the batched product alone and of one pass
that reads and writes the transformed input (this machine's memory traffic).
"""
import functools
import time

from absl import app
from absl import flags

flags.DEFINE_list('shapes', ['100x32x96x96s1', '100x32x96x192s2', '100x16x192x192s1', '100x32x24x24s1',
                             '100x32x24x48s2', '100x16x48x48s1'],
                  'NxHxCxOsS: batch, input size, in and out channels, stride.')
flags.DEFINE_integer('repeats', 5, 'Timed calls per measurement.')
flags.DEFINE_bool('xla_cpu_defaults', False, "Compile ours with XLA's own CPU defaults instead of the CPU "
                  "speed-ups' options (infodrop_jax.cpu.xla.compiler_options(): YNNPACK convolutions off).")
flags.DEFINE_bool('winograd', False, 'Also time Winograd F(2x2,3x3) and F(4x4,3x3) convolutions on the stride-1 '
                  'shapes.')
FLAGS = flags.FLAGS

# Winograd's transforms (Lavin & Gray 2016): output tile m, input tile m + 2; B^T (input), G (filter), A^T (output).
_WINOGRAD = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def _combine(coefficients, terms):
  """Σ c·t over the nonzero coefficients, written as adds (and scales only where |c| ≠ 1) for XLA to fuse."""
  total = None
  for c, t in zip(coefficients, terms):
    if c:
      t = t if c == 1 else -t if c == -1 else t * float(c)
      total = t if total is None else total + t
  return total


def _winograd_parts(x, tile):
  """The transformed input tiles of a 3x3 'SAME' convolution, (tile + 2)² × (N·tiles, C), and the tile counts."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  bt = _WINOGRAD[tile][0]
  size = tile + 2
  n, h, w, c = x.shape
  th, tw = -(-h // tile), -(-w // tile)
  xp = jnp.pad(x, ((0, 0), (1, th * tile + 1 - h), (1, tw * tile + 1 - w), (0, 0)))
  rows = [jax.lax.slice_in_dim(xp, i, i + (th - 1) * tile + 1, tile, axis=1) for i in range(size)]
  parts = []
  for row in (_combine(bt[i], rows) for i in range(size)):
    cols = [jax.lax.slice_in_dim(row, j, j + (tw - 1) * tile + 1, tile, axis=2) for j in range(size)]
    parts += [_combine(bt[j], cols) for j in range(size)]
  return jnp.stack(parts).reshape(size * size, n * th * tw, c), (th, tw)


def _winograd_conv(x, w, tile):
  """A 3x3 stride-1 'SAME' convolution, NHWC × HWIO, by Winograd's F(tile × tile, 3 × 3)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  _, g, at = _WINOGRAD[tile]
  g = jnp.asarray(g, jnp.float32)
  size = tile + 2
  n, h, wd, _ = x.shape
  o = w.shape[-1]
  v, (th, tw) = _winograd_parts(x, tile)
  u = jnp.einsum('ir,rsco,js->ijco', g, w, g).reshape(size * size, w.shape[2], o)
  m = jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))).reshape(size, size, n, th, tw, o)
  rows = [_combine(at[i], [m[p] for p in range(size)]) for i in range(tile)]
  y = jnp.stack([jnp.stack([_combine(at[j], [r[q] for q in range(size)]) for j in range(tile)]) for r in rows])
  return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, th * tile, tw * tile, o)[:, :h, :wd]


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
  from infodrop_jax.cpu import convolution  # pylint: disable=g-import-not-at-top
  from infodrop_jax.cpu import xla as cpu_xla  # pylint: disable=g-import-not-at-top
  options = None if FLAGS.xla_cpu_defaults else cpu_xla.compiler_options()
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
    # What a train step with the CPU speed-ups runs: forward, our input gradient, our weight gradient.
    ratio = f'{(ours[0] + ours[1] + ours[3]) / sum(theirs):.2f}' if torch else '—'
    mm = f'{theirs_mm:.1f}' if torch else '—'
    print(f'| {shape} | ' + ' | '.join(cells) + f' | {ratio} | {ours_mm:.1f} / {mm} |', flush=True)
  if FLAGS.winograd:
    _winograd_table(jit, rng)


def _winograd_table(jit, rng):
  """Winograd F(2x2,3x3) and F(4x4,3x3) against ours on the stride-1 shapes (ms; see the module docstring)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from infodrop_jax.cpu import convolution  # pylint: disable=g-import-not-at-top
  print('\n| shape | ours fwd | ours fwd+dx+dw | tile | Winograd fwd | Winograd fwd+dx+dw | its batched product | '
        'one pass over its input tiles | largest error / ours |')
  print('|---|---|---|---|---|---|---|---|---|')
  block = jax.block_until_ready
  for shape in FLAGS.shapes:
    n, h, c, o, s = _parse(shape)
    if s != 1:
      continue
    x = jnp.asarray(rng.normal(size=(n, h, h, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, c, o)) / np.sqrt(9 * c), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(n, h, h, o)), jnp.float32)
    ours = lambda x, w: convolution.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    both = lambda conv: jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy))
    forward, forward_backward = jit(ours), both(ours)
    reference = forward(x, w)
    ours_times = [_time(lambda: forward(x, w), block), _time(lambda: forward_backward(x, w, dy), block)]
    for tile in (2, 4):
      conv = functools.partial(_winograd_conv, tile=tile)
      forward, forward_backward = jit(conv), both(conv)
      error = float(jnp.max(jnp.abs(forward(x, w) - reference)) / jnp.max(jnp.abs(reference)))
      v = jit(lambda x, tile=tile: _winograd_parts(x, tile)[0])(x)
      u = jnp.asarray(rng.normal(size=(v.shape[0], c, o)), jnp.float32)
      product = jit(lambda v, u: jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))))
      one_pass = jit(lambda v: v * 2)
      times = [_time(lambda: forward(x, w), block), _time(lambda: forward_backward(x, w, dy), block),
               _time(lambda: product(v, u), block), _time(lambda: one_pass(v), block)]
      print(f'| {shape} | ' + ' | '.join(f'{t:.1f}' for t in ours_times) + f' | {tile}×{tile} | ' +
            ' | '.join(f'{t:.1f}' for t in times) + f' | {error:.1e} |', flush=True)


if __name__ == '__main__':
  app.run(main)
