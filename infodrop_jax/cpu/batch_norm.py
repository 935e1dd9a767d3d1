"""CPU speed-up: `BatchNorm`, `nn.BatchNorm` over the last axis whose training-mode gradient is one pass on CPU.

Part of the opt-in CPU speed-ups (`infodrop_jax.cpu`): the layers and models use `nn.BatchNorm` unless this is
injected (`norm=...`), as the trainer does on CPU (`config.train.cpu_speedups`).

Differentiating Flax's BatchNorm leaves XLA:CPU the gradient of every step of the forward pass (the centring, the
variance, the scale): on the narrow All-CNN-32 layers these elementwise passes and reductions are a large part of a
train step, which is bound by memory traffic there (`benchmarks/RESULTS.md`). Here the training-mode forward pass is
a custom VJP whose CPU backward pass is the closed form, two sums per feature and one elementwise pass:

  dx = γ/σ · (g − mean(g) − x̂ · mean(g · x̂))  (+ the terms of the batch mean and variance outputs, when used),

x̂ = (x − μ)/σ, σ = sqrt(var + ε), g the output gradient. All-CNN-32 at 25 % filters: 5 % more images/s in the
trainer's loop; the same at 100 % to within noise.

The forward pass is Flax's own arithmetic in Flax's order, so outputs and running statistics are Flax's; gradients
agree to float rounding wherever the fast variance E[x²] − E[x]² is itself accurate. Where it cancels to 0 or below
(a feature with |mean| ≫ std, relative to float32's precision) both gradients are dominated by that rounding and
differ. On other platforms the backward pass is JAX's differentiation of that forward pass, as with nn.BatchNorm.
Training mode has reverse-mode gradients only (a custom VJP, as `convolution.Conv`): `jax.jvp` / `jax.jacfwd`
through it raise; `jax.grad` of `jax.grad` and Hessian-vector products by reverse mode work.

With `axis_name` (under pmap) the statistics are those of the batch over every device of that axis, as
nn.BatchNorm's (the means of x and x² averaged across devices); the gradient is then JAX's differentiation of that
forward pass, as nn.BatchNorm's is.

The parameters ('scale', 'bias') and statistics ('batch_stats': 'mean', 'var') have nn.BatchNorm's names, shapes
and initialisers, so checkpoints of either restore into the other.

It covers what this package's models use: features on the last axis, statistics of the (global, under jit) batch
or of a pmap axis (`axis_name`), `use_fast_variance`, float32 reductions, real inputs. Anything else (`axis`,
`axis_index_groups`, `mask`, complex inputs, ...) is nn.BatchNorm's: use nn.BatchNorm itself for it.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _normalize(x: Array, mean: Array, var: Array, scale: Array | None, bias: Array | None, epsilon: float,
               dtype: Any) -> Array:
  """Flax's `_normalize` arithmetic, in its order (features last, statistics broadcast)."""
  y = x - mean
  mul = jax.lax.rsqrt(var + epsilon)
  if scale is not None:
    mul = mul * scale
  y = y * mul
  if bias is not None:
    y = y + bias
  return jnp.asarray(y, dtype)


def _statistics(x: Array, stats_dtype: Any, axis_name: str | None = None) -> tuple[Array, Array, Array]:
  """Flax's `_compute_stats` with use_fast_variance: E[x²] − E[x]², clipped at 0, over every axis but the last (and
  over the devices of `axis_name`, as Flax averages both means there); and where the clip left it alone."""
  x = x.astype(stats_dtype)
  axes = tuple(range(x.ndim - 1))
  mean, mean_square = x.mean(axes), jax.lax.square(x).mean(axes)
  if axis_name is not None:
    mean, mean_square = jnp.split(jax.lax.pmean(jnp.concatenate([mean, mean_square]), axis_name), 2)
  unclipped = mean_square - jax.lax.square(mean)
  return mean, jnp.maximum(0.0, unclipped), unclipped > 0


def _train_forward(x, scale, bias, epsilon, dtype, stats_dtype):
  mean, var, _ = _statistics(x, stats_dtype)
  return _normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x: Array, scale: Array | None, bias: Array | None, epsilon: float, dtype: Any,
                     stats_dtype: Any) -> tuple[Array, Array, Array]:
  """(y, batch mean, batch variance) of training-mode BatchNorm over the last axis, as nn.BatchNorm computes them."""
  return _train_forward(x, scale, bias, epsilon, dtype, stats_dtype)


def _batch_norm_fwd(x, scale, bias, epsilon, dtype, stats_dtype):
  mean, var, live = _statistics(x, stats_dtype)
  y = _normalize(x, mean, var, scale, bias, epsilon, dtype)
  return (y, mean, var), (x, scale, bias, mean, var, live)


def closed_form_vjp(x, scale, bias, mean, var, live, cotangents, *, epsilon: float):
  """(dx, dscale, dbias) of `batch_norm_train` in closed form: two sums per feature and one elementwise pass."""
  grad_y, grad_mean, grad_var = cotangents
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  inv = jax.lax.rsqrt(var + epsilon)
  centred = x - mean  # Promoted as in the forward pass (float32 statistics).
  x_hat = centred * inv
  g = grad_y.astype(jnp.promote_types(centred.dtype, grad_y.dtype))
  g_sum, g_x_hat_sum = g.sum(axes), (g * x_hat).sum(axes)
  mul = inv if scale is None else inv * scale
  # `live`: E[x²] − E[x]² was above 0. Where it was clipped (it can round to 0 or below), the variance carries no
  # gradient; JAX's `maximum` gives half of it at exactly 0. A constant feature has x − μ = 0 there, which these
  # terms multiply; a feature whose fast variance cancelled gets rounding either way.
  live = live.astype(mean.dtype)
  grad_x = (mul * (g - g_sum / count - x_hat * (live * g_x_hat_sum / count))
            + grad_mean / count + centred * (live * 2.0 * grad_var / count))
  grad_scale = None if scale is None else g_x_hat_sum.astype(scale.dtype)
  grad_bias = None if bias is None else g_sum.astype(bias.dtype)
  return grad_x.astype(x.dtype), grad_scale, grad_bias


def _batch_norm_bwd(epsilon, dtype, stats_dtype, residuals, cotangents):
  x, scale, bias, mean, var, live = residuals

  def closed_form(x, scale, bias, mean, var, live, cotangents):
    return closed_form_vjp(x, scale, bias, mean, var, live, cotangents, epsilon=epsilon)

  def by_jax(x, scale, bias, mean, var, live, cotangents):
    del mean, var, live
    _, vjp = jax.vjp(lambda *a: _train_forward(*a, epsilon, dtype, stats_dtype), x, scale, bias)
    return vjp(cotangents)

  return jax.lax.platform_dependent(x, scale, bias, mean, var, live, cotangents, cpu=closed_form, default=by_jax)


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """nn.BatchNorm (features on the last axis, no mask) with `batch_norm_train`'s gradient on CPU.

  The fields below have nn.BatchNorm's meanings and defaults; pass them by keyword, as nn.BatchNorm's positional
  order (`axis` second) is not this one's. `use_running_average` merges with the call argument.
  """
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = nn.initializers.zeros
  scale_init: Any = nn.initializers.ones
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
    use_running_average = nn.merge_param('use_running_average', self.use_running_average, use_running_average)
    if jnp.issubdtype(jnp.result_type(x), jnp.complexfloating):
      raise ValueError(f'BatchNorm: inputs of dtype {jnp.result_type(x)}: complex inputs need nn.BatchNorm '
                       '(its variance is E|x|² − |E[x]|²).')
    features = (x.shape[-1],)
    # As nn.BatchNorm: statistics first, then scale and bias; float32 (at least) statistics.
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param('scale', self.scale_init, features, self.param_dtype) if self.use_scale else None
    bias = self.param('bias', self.bias_init, features, self.param_dtype) if self.use_bias else None
    dtype = nn.dtypes.canonicalize_dtype(*[a for a in (x, scale, bias) if a is not None], dtype=self.dtype)
    if use_running_average:
      return _normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, dtype)
    stats_dtype = jnp.promote_types(self.dtype if self.dtype is not None else x.dtype, jnp.float32)
    if self.axis_name is None or self.is_initializing():  # As nn.BatchNorm: no device axis is bound at init.
      y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, dtype, stats_dtype)
    else:  # Statistics across devices: nn.BatchNorm's arithmetic, differentiated by JAX.
      mean, var, _ = _statistics(x, stats_dtype, self.axis_name)
      y = _normalize(x, mean, var, scale, bias, self.epsilon, dtype)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y
