"""Information Dropout and its control noises as native Flax NNX modules, for a user's own NNX training loop.

The same layers as `infodrop_jax.layers` (the math is `infodrop_jax.noise`, shared by both), the NNX way:

    from flax import nnx
    from infodrop_jax import kl, nnx_layers

    layer = nnx_layers.InformationDropoutConv(3, 32, rngs=nnx.Rngs(params=0, noise=1))
    z = layer(images)                     # noise on: a key from the 'noise' stream each call
    loss = ce + beta * kl.total_kl(layer, n_train)
    layer.eval()                          # noise off (and BatchNorm's running statistics); .train() back on

- Noise comes from the `rng_collection` stream (default 'noise') of the `nnx.Rngs` given at construction, or from
  `rngs=` at the call; `.eval()` / `.train()` (or `deterministic=` at construction or call) switch it.
- Each layer with a KL term keeps the KL of its last call in a `KL` variable: mean over the batch of Σ_units KL
  (nats), the quantity `kl.total_kl` sums over layers. It is replaced, never accumulated, by every call, and keeps
  its shape, so `nnx.jit` compiles a training step once; it reads NaN before the first call. A layer built with
  `keep_kl_map=True` also keeps the per-unit map of its last call (`KLMap`, for heat maps and `kl.kl_per_example`);
  its shape is the batch's, so `nnx.jit` traces once more when it is first set.
- A layer called twice in one forward pass keeps its last call's KL (the Linen layers sum their calls): give each
  use its own layer.

Parameters are named as the Linen layers name theirs (`signal`, `alpha`, `bn`, `noise/prior_mu`, ...), so
`infodrop_jax.nnx_models.load_linen_variables` moves a Linen checkpoint (e.g. one our trainer wrote) into them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from infodrop_jax import echo
from infodrop_jax import noise as noise_lib
from infodrop_jax.noise import JAX_RANDOM, NoiseSampler

Array = jax.Array


class KL(nnx.Variable):
  """A layer's KL of its last call: mean over the batch of Σ_units KL (nats); NaN before the first call."""
  kl_term = True


class KLMap(nnx.Variable):
  """A layer's per-unit KL map of its last call (float32, the signal's shape), kept when `keep_kl_map=True`."""
  kl_map = True


def _stream(rngs: nnx.Rngs | nnx.RngStream | None, collection: str) -> Any:
  if isinstance(rngs, nnx.Rngs):
    return rngs[collection].fork() if collection in rngs else nnx.data(None)
  if isinstance(rngs, nnx.RngStream):
    return rngs.fork()
  if rngs is None:
    return nnx.data(None)
  raise TypeError(f'rngs must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}.')


class _Noise(nnx.Module):
  """The deterministic switch, the key of each call, and the KL of the last call."""

  def __init__(self, *, has_kl: bool, deterministic: bool, rngs: nnx.Rngs | nnx.RngStream | None,
               rng_collection: str, sampler: NoiseSampler, keep_kl_map: bool):
    self.deterministic = deterministic
    self.rng_collection = rng_collection
    self.sampler = sampler
    self.keep_kl_map = keep_kl_map
    self.rngs = _stream(rngs, rng_collection)
    if has_kl:
      self.kl = KL(jnp.full((), jnp.nan, jnp.float32))
      self.kl_map = KLMap(jnp.zeros((0,), jnp.float32)) if keep_kl_map else nnx.data(None)

  def _key(self, deterministic: bool | None, rngs: nnx.Rngs | nnx.RngStream | Array | None) -> Array | None:
    if self.deterministic if deterministic is None else deterministic:
      return None
    if rngs is not None:
      if isinstance(rngs, nnx.Rngs):
        return rngs[self.rng_collection]()
      return rngs() if isinstance(rngs, nnx.RngStream) else rngs
    if self.rngs is None:
      raise ValueError(
          f'{type(self).__name__} needs a key for its noise: build it with rngs=nnx.Rngs({self.rng_collection}=key) '
          f"(or pass rngs= at the call), or switch the noise off with .eval() or deterministic=True.")
    return self.rngs()

  def _record(self, kl_map: Array) -> None:
    if kl_map.ndim < 2:
      raise ValueError(f'{type(self).__name__}: a KL needs a batch axis and at least one unit axis; got a signal of '
                       f'shape {kl_map.shape}. Call the layer on a batch (x[None] for one example).')
    self.kl[...] = jnp.mean(jnp.sum(kl_map.reshape(kl_map.shape[0], -1), axis=1))
    if self.keep_kl_map:
      self.kl_map.set_value(kl_map)


class InformationDropout(_Noise):
  """Bare Information Dropout: z = f ⊙ exp(α ε), α = 0.001 + max_alpha · sigmoid(alpha_logits) (see the Linen
  `layers.InformationDropout`). prior 'log_normal' learns μ and log σ (`noise/prior_mu`, `noise/prior_log_sigma`)."""

  def __init__(self, max_alpha: float = 0.7, prior: str = 'log_uniform', *, deterministic: bool = False,
               rngs: nnx.Rngs | nnx.RngStream | None = None, rng_collection: str = 'noise',
               sampler: NoiseSampler = JAX_RANDOM, keep_kl_map: bool = False):
    noise_lib.check_positive(type(self).__name__, 'max_alpha', max_alpha)
    noise_lib.check_choice(type(self).__name__, 'prior', prior, noise_lib.PRIORS)
    super().__init__(has_kl=True, deterministic=deterministic, rngs=rngs, rng_collection=rng_collection,
                     sampler=sampler, keep_kl_map=keep_kl_map)
    self.max_alpha, self.prior = max_alpha, prior
    if prior == 'log_normal':
      self.prior_mu = nnx.Param(jnp.zeros((), jnp.float32))
      self.prior_log_sigma = nnx.Param(jnp.zeros((), jnp.float32))

  def __call__(self, f: Array, alpha_logits: Array, *, deterministic: bool | None = None,
               rngs: nnx.Rngs | nnx.RngStream | Array | None = None) -> Array:
    if jnp.shape(f) != jnp.shape(alpha_logits):
      raise ValueError(f'InformationDropout: alpha_logits shape {jnp.shape(alpha_logits)} must equal signal shape '
                       f'{jnp.shape(f)}.')
    log_normal = self.prior == 'log_normal'
    z, kl_map, _ = noise_lib.information_dropout(
        f, alpha_logits, self._key(deterministic, rngs), max_alpha=self.max_alpha, prior=self.prior,
        prior_mu=self.prior_mu[...] if log_normal else None,
        prior_log_sigma=self.prior_log_sigma[...] if log_normal else None, sampler=self.sampler)
    self._record(kl_map)
    return z


class LogNormalDropout(_Noise):
  """Constant log-normal noise z = f ⊙ exp(α ε), the paper's non-adaptive control; its KL is a constant."""

  def __init__(self, alpha: float = 0.5, max_alpha: float = 0.7, *, deterministic: bool = False,
               rngs: nnx.Rngs | nnx.RngStream | None = None, rng_collection: str = 'noise',
               sampler: NoiseSampler = JAX_RANDOM, keep_kl_map: bool = False):
    noise_lib.check_lognormal(type(self).__name__, alpha, max_alpha)
    super().__init__(has_kl=True, deterministic=deterministic, rngs=rngs, rng_collection=rng_collection,
                     sampler=sampler, keep_kl_map=keep_kl_map)
    self.alpha, self.max_alpha = alpha, max_alpha

  def __call__(self, f: Array, *, deterministic: bool | None = None,
               rngs: nnx.Rngs | nnx.RngStream | Array | None = None) -> Array:
    z, kl_map = noise_lib.lognormal_dropout(f, self._key(deterministic, rngs), alpha=self.alpha,
                                            max_alpha=self.max_alpha, sampler=self.sampler)
    self._record(kl_map)
    return z


class BinaryDropout(_Noise):
  """Bernoulli dropout with inverted scaling (E[z] = f); no KL term. Drawn from the 'noise' stream."""

  def __init__(self, rate: float = 0.5, *, deterministic: bool = False, rngs: nnx.Rngs | nnx.RngStream | None = None,
               rng_collection: str = 'noise', sampler: NoiseSampler = JAX_RANDOM):
    noise_lib.check_rate(type(self).__name__, rate)
    super().__init__(has_kl=False, deterministic=deterministic, rngs=rngs, rng_collection=rng_collection,
                     sampler=sampler, keep_kl_map=False)
    self.rate = rate

  def __call__(self, f: Array, *, deterministic: bool | None = None,
               rngs: nnx.Rngs | nnx.RngStream | Array | None = None) -> Array:
    key = None if self.rate == 0.0 else self._key(deterministic, rngs)
    return noise_lib.binary_dropout(f, key, rate=self.rate, sampler=self.sampler)


class GaussianDropout(BinaryDropout):
  """Multiplicative Gaussian noise N(1, rate/(1 − rate)); no KL term."""

  def __call__(self, f: Array, *, deterministic: bool | None = None,
               rngs: nnx.Rngs | nnx.RngStream | Array | None = None) -> Array:
    return noise_lib.gaussian_dropout(f, self._key(deterministic, rngs), rate=self.rate, sampler=self.sampler)


class VariationalDropout(_Noise):
  """Variational dropout z = f ⊙ N(1, α), a learned α per feature (`num_features`, the last axis), capped at 1."""

  def __init__(self, num_features: int, init_rate: float = 0.5, *, deterministic: bool = False,
               rngs: nnx.Rngs | nnx.RngStream | None = None, rng_collection: str = 'noise',
               sampler: NoiseSampler = JAX_RANDOM, keep_kl_map: bool = False):
    noise_lib.check_variational(type(self).__name__, init_rate)
    super().__init__(has_kl=True, deterministic=deterministic, rngs=rngs, rng_collection=rng_collection,
                     sampler=sampler, keep_kl_map=keep_kl_map)
    self.log_alpha = nnx.Param(jnp.full((num_features,), noise_lib.initial_log_alpha(init_rate), jnp.float32))

  def __call__(self, f: Array, *, deterministic: bool | None = None,
               rngs: nnx.Rngs | nnx.RngStream | Array | None = None) -> Array:
    z, kl_map = noise_lib.variational_dropout(f, self._key(deterministic, rngs), raw_log_alpha=self.log_alpha[...],
                                              sampler=self.sampler)
    self._record(kl_map)
    return z


class EchoNoise(_Noise):
  """Echo noise z = f + S ε built from the other examples of the batch (`echo.EchoNoise`); its `KL` is the exact
  rate I(X;Z) = −Σ_d log S_d(x) (mean over the batch), with the layer's own d_max and clip factor."""

  def __init__(self, d_max: int = echo.DEFAULT_D_MAX, clip_factor: float | None = None, replace: bool = False, *,
               deterministic: bool = False, rngs: nnx.Rngs | nnx.RngStream | None = None,
               rng_collection: str = 'noise', keep_kl_map: bool = False):
    if d_max < 1:
      raise ValueError(f'EchoNoise: d_max must be a positive number of echo terms, got {d_max!r}.')
    self.d_max, self.replace = d_max, replace
    self.clip_factor = echo.resolve_clip_factor(d_max, clip_factor, 'EchoNoise')
    super().__init__(has_kl=True, deterministic=deterministic, rngs=rngs, rng_collection=rng_collection,
                     sampler=JAX_RANDOM, keep_kl_map=keep_kl_map)

  def mutual_information(self, log_s: Array) -> Array:
    """The exact I(X;Z) per example, with this layer's d_max and clip factor."""
    return echo.echo_mutual_information(log_s, self.d_max, self.clip_factor)

  def __call__(self, f: Array, log_s: Array, *, deterministic: bool | None = None,
               rngs: nnx.Rngs | nnx.RngStream | Array | None = None) -> Array:
    if jnp.shape(f) != jnp.shape(log_s):
      raise ValueError(f'EchoNoise: log_s shape {jnp.shape(log_s)} must equal f shape {jnp.shape(f)}.')
    self._record(echo.echo_rate_map(log_s, self.clip_factor))
    key = self._key(deterministic, rngs)
    if key is None:
      return f
    return echo.echo_sample(key, f, log_s, self.d_max, self.clip_factor, self.replace)


def _noise(method: str, features: int, *, activation: str, prior: str | None, max_alpha: float, rate: float,
           lognormal_alpha: float, **common) -> nnx.Module | None:
  if method == 'information':
    return InformationDropout(max_alpha, prior or noise_lib.default_prior(activation), **common)
  if method == 'binary':
    return BinaryDropout(rate, **{k: v for k, v in common.items() if k != 'keep_kl_map'})
  if method == 'gaussian':
    return GaussianDropout(rate, **{k: v for k, v in common.items() if k != 'keep_kl_map'})
  if method == 'lognormal_constant':
    return LogNormalDropout(lognormal_alpha, max_alpha, **common)
  if method == 'variational':
    return VariationalDropout(features, rate, **common)
  return None


class _NoisyProjection(nnx.Module):
  """x → projection → [BatchNorm] → activation → noise(method), as the Linen `layers._NoisyProjection`; the
  alpha logits of the information method are a second projection of the same x (no BatchNorm)."""

  def __init__(self, in_features: int, features: int, *, method: str = 'information', activation: str = 'relu',
               prior: str | None = None, use_bn: bool = False, bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
               bn_use_scale: bool = True, max_alpha: float = 0.7, rate: float = 0.5, lognormal_alpha: float = 0.5,
               deterministic: bool = False, use_running_average: bool = False, rng_collection: str = 'noise',
               dtype: Any = None, param_dtype: Any = jnp.float32, sampler: NoiseSampler = JAX_RANDOM,
               keep_kl_map: bool = False, rngs: nnx.Rngs):
    noise_lib.check_noisy_projection(type(self).__name__, method=method, activation=activation, prior=prior,
                                     max_alpha=max_alpha, lognormal_alpha=lognormal_alpha, rate=rate)
    self.method, self.activation, self.use_bn = method, activation, use_bn
    self.signal = self._projection(in_features, features, not use_bn, dtype, param_dtype, rngs)
    if use_bn:
      self.bn = nnx.BatchNorm(features, use_running_average=use_running_average, momentum=bn_momentum,
                              epsilon=bn_epsilon, use_scale=bn_use_scale, dtype=dtype, param_dtype=param_dtype,
                              rngs=rngs)
    if method == 'information':
      self.alpha = self._projection(in_features, features, True, dtype, param_dtype, rngs)
    self.noise = _noise(method, features, activation=activation, prior=prior, max_alpha=max_alpha, rate=rate,
                        lognormal_alpha=lognormal_alpha, deterministic=deterministic, rngs=rngs,
                        rng_collection=rng_collection, sampler=sampler, keep_kl_map=keep_kl_map)

  def _projection(self, in_features, features, use_bias, dtype, param_dtype, rngs) -> nnx.Module:
    raise NotImplementedError

  def _check_input(self, x: Array) -> None:
    raise NotImplementedError

  def __call__(self, x: Array, *, deterministic: bool | None = None, use_running_average: bool | None = None,
               rngs: nnx.Rngs | nnx.RngStream | Array | None = None) -> Array:
    self._check_input(x)
    f = self.signal(x)
    if self.use_bn:
      f = self.bn(f, use_running_average=use_running_average)
    f = noise_lib.ACTIVATIONS[self.activation](f)
    if self.noise is None:
      return f
    if self.method == 'information':
      return self.noise(f, self.alpha(x), deterministic=deterministic, rngs=rngs)
    return self.noise(f, deterministic=deterministic, rngs=rngs)


class InformationDropoutConv(_NoisyProjection):
  """Convolutional Information Dropout (the original's strided `information_pool`); inputs (batch, H, W, C)."""

  def __init__(self, in_features: int, features: int, kernel_size: Sequence[int] = (3, 3),
               strides: Sequence[int] = (2, 2), padding: str = 'SAME', **kwargs):
    self.kernel_size, self.strides, self.padding = tuple(kernel_size), tuple(strides), padding
    super().__init__(in_features, features, **kwargs)

  def _projection(self, in_features, features, use_bias, dtype, param_dtype, rngs):
    return nnx.Conv(in_features, features, self.kernel_size, self.strides, padding=self.padding, use_bias=use_bias,
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def _check_input(self, x):
    spatial = len(self.kernel_size)
    noise_lib.check_input_rank(type(self).__name__, x, spatial + 2,
                               f'(batch, {spatial} spatial axes, channels) for kernel_size {self.kernel_size}')


class InformationDropoutDense(_NoisyProjection):
  """Dense Information Dropout for fully connected nets; inputs (batch, ..., in_features)."""

  def _projection(self, in_features, features, use_bias, dtype, param_dtype, rngs):
    return nnx.Linear(in_features, features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def _check_input(self, x):
    if jnp.ndim(x) < 2:
      noise_lib.check_input_rank(type(self).__name__, x, 2, '(batch, features)')
