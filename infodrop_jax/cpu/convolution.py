"""CPU speed-up: `conv_general_dilated`, `jax.lax.conv_general_dilated` whose gradients XLA:CPU runs on its fast kernels.

Part of the opt-in CPU speed-ups (`infodrop_jax.cpu`): the layers and models use `nn.Conv` unless `Conv` (and
`ConvTranspose` in the conv VAE's decoder) is injected, as the trainer does on CPU (`config.train.cpu_speedups`).

XLA:CPU runs a convolution on its fast (Eigen) kernels when the convolution has, or can be rewritten into, the
form (batch, *spatial, features) × (*window, in, out) → (batch, *spatial, features). The rewrite
(ConvCanonicalization) visits only the entry computation, and the two gradient convolutions JAX emits are not in
that form: inside a loop (`lax.scan`, as a multi-step train chunk compiles) they become a naive loop nest, 35-70x
slower (`benchmarks/RESULTS.md`). On CPU the custom VJP here writes both gradients in that form itself:

* the kernel gradient as the convolution of the input, transposed to (in, *spatial, batch), with the output
  gradient, transposed to (*spatial, batch, out) and dilated by the strides as a window: what the rewrite would do;
* the input gradient in the *polyphase* form: every input position of one phase (its index modulo the stride, per
  axis) receives the output gradient through the same few kernel taps, so each phase is one stride-1 convolution of
  the undilated output gradient with those (flipped) taps, and the phases are interleaved back. For stride 1 that
  is the usual flipped-kernel convolution; for stride 2 it avoids the zeros JAX's form dilates the output gradient
  with (stride² the arithmetic in 2-D): 1.5-2.3x faster for All-CNN's stride-2 3x3 convolutions
  (`benchmarks/bench_conv_pieces.py`).

Same results to float rounding. The forward pass is XLA's own, and on other platforms so are both gradients (cuDNN
has its own): `jax.lax.platform_dependent` picks the form when the step is lowered.

`loop_unsafe_convolutions` tells whether a lowered function's convolutions are all in that form (the trainer
uses it to decide whether a CPU run may compile its loops).

`conv_transpose` / `ConvTranspose` do the same for transposed convolutions (the conv VAE's decoder). Both have
reverse-mode gradients only (custom VJPs): `jax.jvp` / `jax.jacfwd` through them raise.

`Conv` is `nn.Conv` with it (what `infodrop_jax.cpu.model_parts()` injects; the parameters are nn.Conv's own); pass
it to a Flax conv of your own as `nn.Conv(..., conv_general_dilated=conv_general_dilated)`. It handles the
features-last convolutions `nn.Conv` makes (batch first, features last, kernel (*window, in, out)) without dilation
or groups; any other call goes to `jax.lax.conv_general_dilated` unchanged.
"""
from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def conv_general_dilated(lhs: Array, rhs: Array, window_strides: Sequence[int], padding: str | Sequence[Any],
                         lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision: Any = None, preferred_element_type: Any = None) -> Array:
  """`jax.lax.conv_general_dilated`, the same arguments and result; features-last ones get the gradients of the
  module docstring on CPU."""
  strides = tuple(int(s) for s in window_strides)
  if not _custom_gradients_apply(lhs, rhs, strides, lhs_dilation, rhs_dilation, dimension_numbers,
                                 feature_group_count, batch_group_count, preferred_element_type):
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if any(lo < 0 or hi < 0 for lo, hi in pads):  # Cropping: rare enough to leave to XLA.
    return jax.lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=dimension_numbers,
                                        precision=precision)
  return _conv(lhs, rhs, strides, pads, precision)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def conv_transpose(lhs: Array, rhs: Array, strides: Sequence[int], padding: str | Sequence[tuple[int, int]],
                   precision: Any = None) -> Array:
  """`jax.lax.conv_transpose(lhs, rhs, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))` (any number
  of spatial axes, features last, kernel (*window, in, out), not transposed): the same values to float rounding.

  JAX's form convolves the input dilated by the strides. XLA:CPU runs that 11-16x slower than this even in the
  entry computation, and as a naive loop nest inside a compiled loop, gradients included. On CPU a strided one is
  computed as what it is, the input gradient of the strided convolution it transposes, in the polyphase form
  (`polyphase_input_gradient`): stride-1 convolutions whose own gradients are canonical. Without strides it is a
  plain convolution (`conv_general_dilated`, on every platform). Strided ones on other platforms, and those whose
  convolution would crop (a padding above window − 1) or that have an empty axis, use `jax.lax.conv_transpose`.
  Like `Conv`, it has reverse-mode gradients only (a custom VJP): `jax.jvp` / `jax.jacfwd` through it raise.
  """
  d = lhs.ndim - 2
  strides = tuple(int(s) for s in strides)
  if d < 1 or rhs.ndim != lhs.ndim or len(strides) != d or rhs.shape[-2] != lhs.shape[-1]:
    raise ValueError(f'conv_transpose: lhs {lhs.shape}, rhs {rhs.shape}, strides {strides}: expected lhs (batch, '
                     '*spatial, in), rhs (*window, in, out) with as many window axes and strides as spatial axes.')
  if lhs.dtype != rhs.dtype:
    raise ValueError(f'conv_transpose: lhs is {lhs.dtype} and rhs {rhs.dtype}; expected one dtype.')
  window = rhs.shape[:d]
  if isinstance(padding, str):
    if padding not in ('SAME', 'VALID'):
      raise ValueError(f"conv_transpose: padding {padding!r}: expected 'SAME', 'VALID' or (low, high) per axis.")
    pads = [_transpose_padding(k, s, padding) for k, s in zip(window, strides)]
  else:
    pads = [(int(lo), int(hi)) for lo, hi in padding]
    if len(pads) != d:
      raise ValueError(f'conv_transpose: padding {padding}: expected one (low, high) pair per spatial axis ({d}).')
  # The convolution this transposes: its padding, and the size it maps back to lhs's.
  forward_pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(window, pads))
  out_spatial = [(n - 1) * s + lo + hi - k + 2 for n, s, k, (lo, hi) in zip(lhs.shape[1:-1], strides, window, pads)]
  numbers = features_last(lhs.ndim)

  def by_xla(lhs, rhs):
    return jax.lax.conv_transpose(lhs, rhs, strides, pads, dimension_numbers=numbers, precision=precision)

  if (any(p < 0 for pair in forward_pads for p in pair) or 0 in lhs.shape[1:-1]
      or any(n <= 0 for n in out_spatial)):
    return by_xla(lhs, rhs)
  if all(s == 1 for s in strides):  # Nothing dilated: a plain convolution with this padding.
    return conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=numbers, precision=precision)

  def polyphase(lhs, rhs):
    kernel = jnp.swapaxes(jnp.flip(rhs, axis=tuple(range(d))), -1, -2)  # The forward convolution's kernel.
    return polyphase_input_gradient(lhs, kernel, input_shape=(lhs.shape[0], *out_spatial, rhs.shape[-1]),
                                    strides=strides, pads=forward_pads, precision=precision)

  return jax.lax.platform_dependent(lhs, rhs, cpu=polyphase, default=by_xla)


def _transpose_padding(window: int, stride: int, padding: str) -> tuple[int, int]:
  """jax.lax.conv_transpose's padding of the dilated input for 'SAME' / 'VALID' (its `_conv_transpose_padding`)."""
  if padding == 'SAME':
    total = window + stride - 2
    low = window - 1 if stride > window - 1 else -(-total // 2)
  else:
    total = window + stride - 2 + max(window - stride, 0)
    low = window - 1
  return low, total - low


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose` (kernel not transposed, no dilation or mask, one batch axis) with `conv_transpose`, fast and
  loop-safe on CPU.

  The same fields as far as they go, and the same parameters ('kernel' (*window, in, features), 'bias'), initialised
  alike, so the two swap in a checkpoint. `padding` takes what nn.ConvTranspose takes except 'CIRCULAR'.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] | None = 1
  padding: Any = 'SAME'
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel_size = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    if inputs.ndim != len(kernel_size) + 2:
      raise ValueError(f'ConvTranspose: inputs of shape {inputs.shape}: expected (batch, *{len(kernel_size)} '
                       'spatial, features).')
    strides = 1 if self.strides is None else self.strides
    strides = (strides,) * len(kernel_size) if isinstance(strides, int) else tuple(strides)
    padding = nn.linear.canonicalize_padding(self.padding, len(kernel_size))
    kernel = self.param('kernel', self.kernel_init, kernel_size + (inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv_transpose(inputs, kernel, strides, padding, precision=self.precision)
    return y if bias is None else y + bias


def features_last(ndim: int) -> jax.lax.ConvDimensionNumbers:
  """nn.Conv's dimension numbers: (batch, *spatial, features), kernel (*window, in, out)."""
  lhs = (0, ndim - 1, *range(1, ndim - 1))
  return jax.lax.ConvDimensionNumbers(lhs, (ndim - 1, ndim - 2, *range(ndim - 2)), lhs)


def _custom_gradients_apply(lhs, rhs, strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                            batch_group_count, preferred_element_type) -> bool:
  if lhs.ndim < 3 or lhs.ndim != rhs.ndim or len(strides) != lhs.ndim - 2:
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  if feature_group_count != 1 or batch_group_count != 1 or preferred_element_type is not None:
    return False
  numbers = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return numbers == features_last(lhs.ndim)


def _lax_conv(lhs, rhs, strides, pads, precision):
  return jax.lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=features_last(lhs.ndim),
                                      precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(lhs, rhs, strides, pads, precision):
  return _lax_conv(lhs, rhs, strides, pads, precision)


def _conv_fwd(lhs, rhs, strides, pads, precision):
  return _lax_conv(lhs, rhs, strides, pads, precision), (lhs, rhs)


def _conv_bwd(strides, pads, precision, residuals, grad):
  lhs, rhs = residuals

  def xla_gradients(lhs, rhs, grad):
    _, conv_vjp = jax.vjp(lambda x, kernel: _lax_conv(x, kernel, strides, pads, precision), lhs, rhs)
    return conv_vjp(grad)

  def canonical_gradients(lhs, rhs, grad):
    lhs_grad = polyphase_input_gradient(grad, rhs, input_shape=lhs.shape, strides=strides, pads=pads,
                                        precision=precision)
    return lhs_grad, canonical_kernel_gradient(lhs, grad, window=rhs.shape[:-2], strides=strides, pads=pads,
                                               precision=precision)

  lhs_grad, rhs_grad = jax.lax.platform_dependent(lhs, rhs, grad, cpu=canonical_gradients, default=xla_gradients)
  return lhs_grad.astype(lhs.dtype), rhs_grad.astype(rhs.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def canonical_kernel_gradient(lhs: Array, grad: Array, *, window: Sequence[int], strides: Sequence[int],
                              pads: Sequence[tuple[int, int]], precision: Any = None) -> Array:
  """The kernel gradient (*window, in, out) of a features-last convolution of `lhs` with these strides and explicit
  pads, given the output gradient: one convolution in the features-last form, the batch contracted as features."""
  d = lhs.ndim - 2
  source = jnp.transpose(lhs, (d + 1, *range(1, d + 1), 0))  # (in, *spatial, batch)
  taps = jnp.transpose(grad, (*range(1, d + 1), 0, d + 1))  # (*out spatial, batch, out)
  out = jax.lax.conv_general_dilated(source, taps.astype(lhs.dtype), (1,) * d, pads, rhs_dilation=strides,
                                     dimension_numbers=features_last(lhs.ndim), precision=precision)
  # (in, *window', out): window' exceeds the window by the input rows no output reaches ('VALID' leftovers).
  out = out[(slice(None), *[slice(0, k) for k in window])]
  return jnp.transpose(out, (*range(1, d + 1), 0, d + 1))


def _axis_phases(size: int, window: int, stride: int, pad_low: int) -> list[tuple[list[int], int]]:
  """Per phase r (input index ≡ r mod stride) of one spatial axis: the kernel taps that reach it, in correlation
  order, and the output-gradient offset of the first. Input index s·m + r receives output index m + offset + t
  through tap taps[t]."""
  phases = []
  for r in range(stride):
    # Output index a reaches input index s·a + i − pad_low through tap i.
    taps = sorted((i for i in range(window) if (r + pad_low - i) % stride == 0), reverse=True)
    phases.append((taps, (r + pad_low - taps[0]) // stride if taps else 0))
  return phases


def polyphase_input_gradient(grad: Array, rhs: Array, *, input_shape: Sequence[int], strides: Sequence[int],
                             pads: Sequence[tuple[int, int]], precision: Any = None) -> Array:
  """The input gradient of a features-last convolution (`features_last`) with these strides and explicit pads,
  given the output gradient `grad`: one stride-1 'VALID' convolution per phase, interleaved."""
  batch, *spatial, in_features = input_shape
  out_features = rhs.shape[-1]
  per_axis = [_axis_phases(size, window, stride, low)
              for size, window, stride, (low, _) in zip(spatial, rhs.shape[:-2], strides, pads)]
  rows = [-(-size // stride) for size, stride in zip(spatial, strides)]  # Positions per phase, padded up.
  # Pad the output gradient once so that every phase's window lies inside it.
  low = [max([0] + [-offset for _, offset in axis]) for axis in per_axis]
  high = [max([0] + [offset + m + len(taps) - 1 - out for taps, offset in axis])
          for axis, m, out in zip(per_axis, rows, grad.shape[1:-1])]
  padded = jnp.pad(grad, [(0, 0)] + list(zip(low, high)) + [(0, 0)])
  kernel = jnp.swapaxes(rhs, -1, -2)  # (*window, out, in): the transposed convolution's kernel.
  phases = []
  for combo in itertools.product(*per_axis):
    if any(not taps for taps, _ in combo):  # A stride larger than the window: nothing reaches this phase.
      phases.append(jnp.zeros((batch, *rows, in_features), grad.dtype))
      continue
    window = kernel[np.ix_(*[taps for taps, _ in combo])]
    starts = [offset + pad for (_, offset), pad in zip(combo, low)]
    limits = [start + m + len(taps) - 1 for start, m, (taps, _) in zip(starts, rows, combo)]
    source = jax.lax.slice(padded, (0, *starts, 0), (batch, *limits, out_features))
    # Through `_conv`, so that differentiating this (a transposed convolution's gradients) stays canonical too.
    phases.append(_conv(source, window.astype(grad.dtype), (1,) * len(spatial), ((0, 0),) * len(spatial),
                        precision))
  if len(phases) == 1:  # Stride 1: the usual flipped-kernel convolution, nothing to interleave.
    return phases[0][(slice(None), *[slice(0, size) for size in spatial])]
  # phases[(r_1, ..., r_d) flattened] is (batch, m_1, ..., m_d, in); input index s_k·m_k + r_k.
  stacked = jnp.stack(phases).reshape(*strides, batch, *rows, in_features)
  d = len(spatial)
  order = [d] + [axis for k in range(d) for axis in (d + 1 + k, k)] + [2 * d + 1]
  interleaved = jnp.transpose(stacked, order).reshape(batch, *[m * s for m, s in zip(rows, strides)], in_features)
  return interleaved[(slice(None), *[slice(0, size) for size in spatial])]


_STABLEHLO_CONVOLUTION = re.compile(
    r'stablehlo\.convolution\(.*?dim_numbers = \[([^\]]*)\]x\[([^\]]*)\]->\[([^\]]*)\].*?'
    r'reverse = \[([^\]]*)\].*?batch_group_count = (\d+).*?feature_group_count = (\d+)')


def loop_unsafe_convolutions(stablehlo_text: str) -> list[str]:
  """The convolutions of a lowered function (`jax.jit(f).lower(...).as_text()`) that XLA:CPU would run as a naive
  loop nest inside a compiled loop: every one not in the features-last form (batch, *spatial, features) ×
  (*window, in, out) — the kernel's last two axes may be swapped, XLA lays the small kernel out itself — or with a
  reversed window or groups. Dilations and strides are fine. A convolution printed in a way this does not parse
  counts as unsafe.
  """
  unsafe = []
  for line in stablehlo_text.splitlines():
    if 'stablehlo.convolution' not in line:
      continue
    match = _STABLEHLO_CONVOLUTION.search(line)
    if match is None:
      unsafe.append(line.strip())
      continue
    lhs, rhs, out, reverse, batch_groups, feature_groups = match.groups()
    lhs, rhs, out = ([part.strip() for part in spec.split(',')] for spec in (lhs, rhs, out))
    spatial = [str(i) for i in range(len(lhs) - 2)]
    canonical = (lhs == out == ['b', *spatial, 'f'] and rhs in ([*spatial, 'i', 'o'], [*spatial, 'o', 'i'])
                 and 'true' not in reverse and batch_groups == feature_groups == '1')
    if not canonical:
      unsafe.append(line.strip())
  return unsafe
