"""`conv_general_dilated`: `jax.lax.conv_general_dilated` whose strided convolutions differentiate faster on CPU.

JAX differentiates a strided convolution with respect to its input as a convolution of the output gradient dilated
by the stride: stride − 1 zeros between neighbouring entries, which XLA:CPU multiplies through (stride² as much
arithmetic for stride 2 in 2-D). Here that gradient is the *polyphase* form instead: every input position of one
phase (its index modulo the stride, per axis) receives the output gradient through the same few kernel taps, so
each phase is one small stride-1 convolution of the undilated output gradient with those taps, and the phases are
interleaved back. Same arithmetic as the forward pass, same result to float rounding; on CPU 1.5–2.3x faster for
the stride-2 3x3 convolutions of All-CNN (`benchmarks/bench_conv_pieces.py`). The forward pass and the kernel
gradient are XLA's own, and on other platforms (cuDNN has its own strided input gradient) so is the input
gradient: `jax.lax.platform_dependent` picks the form when the step is lowered.

`Conv` is `nn.Conv` with it (the layers and models of this package use it; the parameters are nn.Conv's own); pass it
to a Flax conv of your own as `nn.Conv(..., conv_general_dilated=conv_general_dilated)`. It handles the
features-last convolutions `nn.Conv` makes (batch first, features last, kernel (*window, in, out)) without dilation
or groups; any other call goes to `jax.lax.conv_general_dilated` unchanged.
"""
from __future__ import annotations

import functools
import itertools
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
  """`jax.lax.conv_general_dilated`, the same arguments and result; strided features-last ones get the polyphase
  input gradient on CPU (module docstring)."""
  strides = tuple(int(s) for s in window_strides)
  if not _polyphase_applies(lhs, rhs, strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                            batch_group_count, preferred_element_type):
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if any(lo < 0 or hi < 0 for lo, hi in pads):  # Cropping: rare enough to leave to XLA.
    return jax.lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=dimension_numbers,
                                        precision=precision)
  return _strided_conv(lhs, rhs, strides, pads, precision)


def _features_last(ndim: int) -> jax.lax.ConvDimensionNumbers:
  """nn.Conv's dimension numbers: (batch, *spatial, features), kernel (*window, in, out)."""
  lhs = (0, ndim - 1, *range(1, ndim - 1))
  return jax.lax.ConvDimensionNumbers(lhs, (ndim - 1, ndim - 2, *range(ndim - 2)), lhs)


def _polyphase_applies(lhs, rhs, strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                       batch_group_count, preferred_element_type) -> bool:
  if lhs.ndim < 3 or lhs.ndim != rhs.ndim or len(strides) != lhs.ndim - 2 or all(s == 1 for s in strides):
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  if feature_group_count != 1 or batch_group_count != 1 or preferred_element_type is not None:
    return False
  numbers = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return numbers == _features_last(lhs.ndim)


def _lax_conv(lhs, rhs, strides, pads, precision):
  return jax.lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=_features_last(lhs.ndim),
                                      precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _strided_conv(lhs, rhs, strides, pads, precision):
  return _lax_conv(lhs, rhs, strides, pads, precision)


def _strided_conv_fwd(lhs, rhs, strides, pads, precision):
  return _lax_conv(lhs, rhs, strides, pads, precision), (lhs, rhs)


def _strided_conv_bwd(strides, pads, precision, residuals, grad):
  lhs, rhs = residuals
  _, kernel_vjp = jax.vjp(lambda kernel: _lax_conv(lhs, kernel, strides, pads, precision), rhs)
  (rhs_grad,) = kernel_vjp(grad)

  def xla_input_gradient(grad, rhs):
    _, input_vjp = jax.vjp(lambda x: _lax_conv(x, rhs, strides, pads, precision), lhs)
    return input_vjp(grad)[0]

  polyphase = functools.partial(polyphase_input_gradient, input_shape=lhs.shape, strides=strides, pads=pads,
                                precision=precision)
  lhs_grad = jax.lax.platform_dependent(grad, rhs, cpu=polyphase, default=xla_input_gradient)
  return lhs_grad.astype(lhs.dtype), rhs_grad


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)

Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


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
  """The input gradient of a features-last convolution (`_features_last`) with these strides and explicit pads,
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
    phases.append(jax.lax.conv_general_dilated(source, window.astype(grad.dtype), (1,) * len(spatial), 'VALID',
                                               dimension_numbers=_features_last(grad.ndim), precision=precision))
  # phases[(r_1, ..., r_d) flattened] is (batch, m_1, ..., m_d, in); input index s_k·m_k + r_k.
  stacked = jnp.stack(phases).reshape(*strides, batch, *rows, in_features)
  d = len(spatial)
  order = [d] + [axis for k in range(d) for axis in (d + 1 + k, k)] + [2 * d + 1]
  interleaved = jnp.transpose(stacked, order).reshape(batch, *[m * s for m, s in zip(rows, strides)], in_features)
  return interleaved[(slice(None), *[slice(0, size) for size in spatial])]
