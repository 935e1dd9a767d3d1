"""Information Dropout and its control noises as Flax Linen modules.

Three levels, from most to least assembled:
- `InformationDropoutConv` / `InformationDropoutDense`: x → projection → [BatchNorm] → activation → noise. For the
  'information' method a second projection of the same x gives the alpha logits (the original's pooling form).
  The `method` field swaps in the control noises (binary, Gaussian, constant log-normal, variational, none), so a
  model switches noise from its config without changing its code.
- `InformationDropout`: the bare noise for users who build the signal f and the alpha logits themselves.
- `BinaryDropout`, `GaussianDropout`, `LogNormalDropout`, `VariationalDropout`: the bare control noises.

All noise is multiplicative, drawn from the rng stream `rng_collection` (default 'noise') by the layer's `sampler`
(`jax.random` itself unless another `NoiseSampler` is injected), and off when `deterministic` (attribute or call
argument, the `flax.linen.Dropout` convention). Layers with a KL term sow their per-unit KL map into the 'kl' collection (see
`infodrop_jax.kl`); the map is sown in deterministic mode too, since the KL depends only on the noise distribution,
which is what the information heatmaps show. Noise and KL math run in float32 whatever the activation dtype.

Plain Flax by default: the projections are `nn.Conv` / `nn.Dense`, BatchNorm is `nn.BatchNorm` and the noise is
`jax.random`, so every JAX transformation (jvp, hessian, vmap, `jax.export`, ...) works. Like the `conv` / `norm`
fields of Flax's ImageNet ResNet, the composite layers take these parts as fields (`conv` or `dense`, `norm`,
`sampler`), so a faster variant is injected without touching the layer code; e.g. under pmap,
`norm=functools.partial(nn.BatchNorm, axis_name='batch')` averages BatchNorm's statistics across devices.
"""

from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Any
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

from infodrop_jax import kl as kl_lib

Array = jax.Array
Dtype = Any
ModuleDef = Any

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {'relu': nn.relu, 'softplus': nn.softplus}
PRIORS = ('log_uniform', 'log_normal')
METHODS = ('information', 'binary', 'gaussian', 'lognormal_constant', 'variational', 'none')

# The original takes log max(f, 1e-4) in the log-normal KL: ReLU-like units can be exactly 0.
_LOG_F_FLOOR = 1e-4


@dataclasses.dataclass(frozen=True)
class NoiseSampler:
  """Where the noise layers draw their random numbers: functions with `jax.random`'s signatures and values.

  `normal(key, shape, dtype)` and `bernoulli(key, p, shape)`. The default is `jax.random` itself (`JAX_RANDOM`);
  `infodrop_jax.cpu.SAMPLER` draws the same values faster on XLA:CPU.
  """
  normal: Callable[..., Array] = jax.random.normal
  bernoulli: Callable[..., Array] = jax.random.bernoulli


JAX_RANDOM = NoiseSampler()


class KLNotCollectedWarning(UserWarning):
  """A noise layer with a KL term ran with noise on outside `apply(..., mutable=['kl'])`."""


def _check_choice(owner: str, field: str, value: Any, allowed: Sequence[Any]) -> None:
  if value not in allowed:
    raise ValueError(f'{owner}: unknown {field}={value!r}; expected one of {", ".join(map(repr, allowed))}.')


def _check_positive(owner: str, field: str, value: float) -> None:
  if not value > 0:
    raise ValueError(f'{owner}: {field} must be > 0, got {value!r}.')


def _check_rate(owner: str, rate: float) -> None:
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'{owner}: rate (the drop probability) must be in [0, 1), got {rate!r}.')


def default_prior(activation: str) -> str:
  """The paper's pairing: log-uniform prior for ReLU, log-normal prior for softplus."""
  _check_choice('default_prior', 'activation', activation, tuple(ACTIVATIONS))
  return 'log_uniform' if activation == 'relu' else 'log_normal'


class NoiseModule(nn.Module):
  """Base of the noise layers: the deterministic switch, a clear error for a missing key, and KL sowing.

  Subclasses define the fields `deterministic` and `rng_collection`.
  """

  def _noise_key(self, deterministic: bool | None) -> Array | None:
    """The key for this call's noise, or None when the noise is off."""
    if nn.merge_param('deterministic', self.deterministic, deterministic):
      return None
    if not self.has_rng(self.rng_collection):
      raise ValueError(
          f'{type(self).__name__} needs a PRNG key in the {self.rng_collection!r} stream when deterministic=False: '
          f"pass rngs={{'{self.rng_collection}': key}} to apply(), or call it with deterministic=True.")
    return self.make_rng(self.rng_collection)

  def _sow_kl(self, kl_map: Array, deterministic: bool | None = None) -> None:
    """Sows `kl_map`; `deterministic` is the call argument, to warn when a noisy call's KL is not collected."""
    # `init` makes every collection mutable: a map sown there would ride along in the returned variables and be
    # counted again by the next apply(..., mutable=['kl']).
    if self.is_initializing():
      return
    if not self.is_mutable_collection(kl_lib.KL_COLLECTION):
      noisy = (self.deterministic if deterministic is None else deterministic) is False
      if noisy:  # Training without the KL term would give Lz = 0 without a word.
        warnings.warn(
            f'{type(self).__name__} {"/".join(self.scope.path) or "<root>"} runs with noise on, but the '
            f"'{kl_lib.KL_COLLECTION}' collection is not mutable, so its KL is dropped and a loss built with "
            f"kl.total_kl would miss it. Pass mutable=['{kl_lib.KL_COLLECTION}'] to apply() (or deterministic=True "
            'when no KL is needed).', KLNotCollectedWarning, stacklevel=2)
      return
    self.sow(kl_lib.KL_COLLECTION, kl_lib.KL_MAP_NAME, kl_map.astype(jnp.float32))


class InformationDropout(NoiseModule):
  """Bare Information Dropout: z = f ⊙ exp(α ε), ε ~ N(0, 1), α = 0.001 + max_alpha · sigmoid(alpha_logits).

  Attributes:
    max_alpha: cap of the noise scale (the original's default 0.7 for CIFAR, 1.0 for Cluttered MNIST).
    prior: 'log_uniform' (ReLU units) or 'log_normal' (softplus units; learned per-layer μ and σ, stored as
      params `prior_mu` and `prior_log_sigma` so σ = exp(log σ) stays positive; init μ = 0, σ = 1 as the original).
    deterministic: noise off (z = f) when True; mergeable with the call argument.
    rng_collection: the rng stream the noise is drawn from.
    sampler: the random-number functions (`NoiseSampler`; default `jax.random`).
  """
  max_alpha: float = 0.7
  prior: str = 'log_uniform'
  deterministic: bool | None = None
  rng_collection: str = 'noise'
  sampler: NoiseSampler = JAX_RANDOM

  def __post_init__(self):
    _check_positive(type(self).__name__, 'max_alpha', self.max_alpha)
    _check_choice(type(self).__name__, 'prior', self.prior, PRIORS)
    super().__post_init__()

  @nn.compact
  def __call__(self, f: Array, alpha_logits: Array, deterministic: bool | None = None) -> Array:
    if f.shape != alpha_logits.shape:
      raise ValueError(f'InformationDropout: alpha_logits shape {alpha_logits.shape} must equal signal shape {f.shape}.')
    alpha = kl_lib.ALPHA_FLOOR + self.max_alpha * jax.nn.sigmoid(alpha_logits.astype(jnp.float32))
    self.sow('intermediates', 'alpha', alpha)
    if self.prior == 'log_uniform':
      self._sow_kl(kl_lib.log_uniform_kl(alpha, self.max_alpha), deterministic)
    else:
      mu = self.param('prior_mu', nn.initializers.zeros_init(), (), jnp.float32)
      log_sigma = self.param('prior_log_sigma', nn.initializers.zeros_init(), (), jnp.float32)
      log_f = jnp.log(jnp.maximum(f.astype(jnp.float32), _LOG_F_FLOOR))
      self._sow_kl(kl_lib.log_normal_kl(alpha, log_f, mu, jnp.exp(log_sigma)), deterministic)
    key = self._noise_key(deterministic)
    if key is None:
      return f
    log_eps = alpha * self.sampler.normal(key, f.shape, jnp.float32)
    return (f.astype(jnp.float32) * jnp.exp(log_eps)).astype(f.dtype)


class LogNormalDropout(NoiseModule):
  """Constant log-normal noise z = f ⊙ exp(α ε): the paper's non-adaptive control for Information Dropout.

  Its KL under the log-uniform prior is the same formula as Information Dropout's (a constant here, so it does not
  change training); it is sown, normalised by `max_alpha`, so information planes compare the two directly.
  """
  alpha: float = 0.5
  max_alpha: float = 0.7
  deterministic: bool | None = None
  rng_collection: str = 'noise'
  sampler: NoiseSampler = JAX_RANDOM

  def __post_init__(self):
    _check_positive(type(self).__name__, 'alpha', self.alpha)
    _check_positive(type(self).__name__, 'max_alpha', self.max_alpha)
    if self.alpha > self.max_alpha + kl_lib.ALPHA_FLOOR:
      raise ValueError(f'{type(self).__name__}: alpha={self.alpha!r} exceeds max_alpha + {kl_lib.ALPHA_FLOOR} '
                       f'({self.max_alpha + kl_lib.ALPHA_FLOOR!r}), where its KL would turn negative; raise max_alpha.')
    super().__post_init__()

  @nn.compact
  def __call__(self, f: Array, deterministic: bool | None = None) -> Array:
    self._sow_kl(jnp.broadcast_to(kl_lib.log_uniform_kl(self.alpha, self.max_alpha), f.shape), deterministic)
    key = self._noise_key(deterministic)
    if key is None:
      return f
    log_eps = self.alpha * self.sampler.normal(key, f.shape, jnp.float32)
    return (f.astype(jnp.float32) * jnp.exp(log_eps)).astype(f.dtype)


class _RateNoise(NoiseModule):
  """Noises set by a drop probability `rate`, as Bernoulli dropout is."""
  rate: float = 0.5
  deterministic: bool | None = None
  rng_collection: str = 'noise'
  sampler: NoiseSampler = JAX_RANDOM

  def __post_init__(self):
    _check_rate(type(self).__name__, self.rate)
    super().__post_init__()


class BinaryDropout(_RateNoise):
  """Bernoulli dropout, inverted scaling (E[z] = f). No KL term. Unlike `nn.Dropout` it uses the 'noise' stream."""

  @nn.compact
  def __call__(self, f: Array, deterministic: bool | None = None) -> Array:
    if self.rate == 0.0:
      return f
    key = self._noise_key(deterministic)
    if key is None:
      return f
    keep = 1.0 - self.rate
    mask = self.sampler.bernoulli(key, keep, f.shape)
    # Scale in float32: keep = 0.8 in bfloat16 is 0.80078, a bias of E[z].
    return jnp.where(mask, f.astype(jnp.float32) / keep, 0.0).astype(f.dtype)


class GaussianDropout(_RateNoise):
  """Multiplicative Gaussian noise N(1, rate/(1−rate)): the variance of Bernoulli dropout at the same rate."""

  @nn.compact
  def __call__(self, f: Array, deterministic: bool | None = None) -> Array:
    key = self._noise_key(deterministic)
    if key is None:
      return f
    std = math.sqrt(self.rate / (1.0 - self.rate))
    eps = 1.0 + std * self.sampler.normal(key, f.shape, jnp.float32)
    return (f.astype(jnp.float32) * eps).astype(f.dtype)


class VariationalDropout(NoiseModule):
  """Variational dropout (Kingma et al. 2015) on units: z = f ⊙ N(1, α) with a learned α per feature (last axis).

  α is capped at 1, the range of their KL approximation (in value only; gradients pass through the cap); the KL
  map (`kl.variational_dropout_kl`) is sown for every unit. `log_alpha` is excluded from weight decay. `init_rate` sets the initial α = rate/(1−rate), i.e. the Gaussian-dropout equivalent.
  """
  init_rate: float = 0.5
  deterministic: bool | None = None
  rng_collection: str = 'noise'
  sampler: NoiseSampler = JAX_RANDOM

  def __post_init__(self):
    _check_rate(type(self).__name__, self.init_rate)
    if self.init_rate == 0.0:
      raise ValueError('VariationalDropout: init_rate must be > 0 (alpha = rate/(1-rate) is learned in log space).')
    super().__post_init__()

  @nn.compact
  def __call__(self, f: Array, deterministic: bool | None = None) -> Array:
    init_log_alpha = math.log(self.init_rate / (1.0 - self.init_rate))
    raw_log_alpha = self.param('log_alpha', nn.initializers.constant(init_log_alpha), (f.shape[-1],), jnp.float32)
    # Cap α at 1 in value but pass the gradient straight through: a hard clip would freeze every unit whose
    # parameter once stepped above the cap (the default init sits exactly on it).
    log_alpha = raw_log_alpha - jax.lax.stop_gradient(jnp.maximum(raw_log_alpha, 0.0))
    self._sow_kl(jnp.broadcast_to(kl_lib.variational_dropout_kl(log_alpha), f.shape), deterministic)
    key = self._noise_key(deterministic)
    if key is None:
      return f
    eps = 1.0 + jnp.exp(0.5 * log_alpha) * self.sampler.normal(key, f.shape, jnp.float32)
    return (f.astype(jnp.float32) * eps).astype(f.dtype)


class _NoisyProjection(nn.Module):
  """x → projection → [BatchNorm] → activation → noise(method); subclasses supply the projection (conv or dense).

  Attributes:
    features: output features of the signal (and alpha) projection.
    method: one of METHODS.
    activation: 'relu' or 'softplus'.
    prior: 'log_uniform' or 'log_normal' for the information method; None picks the paper's pairing
      (`default_prior(activation)`).
    use_bn: BatchNorm on the signal path (All-CNN), not on the alpha path (as the original).
    bn_momentum: BatchNorm running-average decay (the original's 0.9).
    bn_epsilon, bn_use_scale: BatchNorm's epsilon and learned scale γ (the original's TF BatchNorm: 1e-3, no γ).
    max_alpha: information dropout's cap on α; also the normaliser of the constant log-normal KL.
    rate: drop probability for 'binary' and 'gaussian'; the initial rate for 'variational'.
    lognormal_alpha: the fixed α of 'lognormal_constant'.
    deterministic: noise off; mergeable with the call argument.
    use_running_average: BatchNorm running statistics instead of batch statistics; mergeable with the call argument.
    rng_collection: the rng stream of the noise.
    dtype: computation dtype of the projections and BatchNorm (e.g. jnp.bfloat16); noise and KL stay float32.
    param_dtype: dtype of the parameters.
    fuse_alpha: for the information method, compute the signal and alpha projections as one projection of twice
      the features (their kernels concatenated) instead of two. Same parameters (`signal`, `alpha`), same
      outputs and gradients up to float rounding; one wide conv reads the input once and keeps the matrix units
      busier (benchmarks/RESULTS.md has the measured effect). It needs a projection whose parameters are
      nn.Conv's / nn.Dense's ('kernel', 'bias').
    norm: the BatchNorm module (default `nn.BatchNorm`), called with `use_running_average`, `momentum`, `epsilon`,
      `use_scale`, `dtype` and `param_dtype`; e.g. `functools.partial(nn.BatchNorm, axis_name='batch')` under pmap.
    sampler: the noise's random-number functions (`NoiseSampler`; default `jax.random`).
  """
  features: int
  method: str = 'information'
  activation: str = 'relu'
  prior: str | None = None
  use_bn: bool = False
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_use_scale: bool = True
  max_alpha: float = 0.7
  rate: float = 0.5
  lognormal_alpha: float = 0.5
  deterministic: bool | None = None
  use_running_average: bool | None = None
  rng_collection: str = 'noise'
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  fuse_alpha: bool = False
  norm: ModuleDef = nn.BatchNorm
  sampler: NoiseSampler = JAX_RANDOM

  def __post_init__(self):
    owner = type(self).__name__
    _check_choice(owner, 'method', self.method, METHODS)
    _check_choice(owner, 'activation', self.activation, tuple(ACTIVATIONS))
    if self.prior is not None:
      _check_choice(owner, 'prior', self.prior, PRIORS)
      if self.method != 'information':
        raise ValueError(f'{owner}: prior={self.prior!r} applies to method=\'information\' only, not '
                         f'method={self.method!r}; leave prior=None.')
    if self.method == 'information' and self.activation == 'relu' and self.prior == 'log_normal':
      raise ValueError(f'{owner}: prior=\'log_normal\' needs positive units (activation=\'softplus\'): a ReLU unit '
                       f'at 0 has no log-normal posterior. Use the log-uniform prior with ReLU.')
    _check_positive(owner, 'max_alpha', self.max_alpha)
    _check_positive(owner, 'lognormal_alpha', self.lognormal_alpha)
    _check_rate(owner, self.rate)
    super().__post_init__()

  def _projection(self, features: int, use_bias: bool, x: Array, **kwargs) -> nn.Module:
    """The projection of input `x` to `features` (conv or dense); `kwargs` go to the module (name, parent)."""
    raise NotImplementedError

  def _fused_projections(self, x: Array, signal_bias: bool) -> tuple[Array, Array]:
    """(signal, alpha logits) as one projection of `x` with the two kernels side by side (`fuse_alpha`).

    The parameters are declared exactly as the two separate projections declare them (names, shapes,
    initialisers), so checkpoints and initial values do not depend on `fuse_alpha`. The wide projection is the
    layer's own projection module (so an injected conv is used here too), applied as a pure function of the
    concatenated kernel.
    """
    window = self._window(x)
    shape = (*window, x.shape[-1], self.features)
    signal = _ProjectionParams(shape, signal_bias, self.param_dtype, name='signal')()
    alpha = _ProjectionParams(shape, True, self.param_dtype, name='alpha')()
    kernel = jnp.concatenate([signal[0], alpha[0]], axis=-1)
    wide = self._projection(2 * self.features, False, x, parent=None)
    y = wide.apply({'params': {'kernel': kernel}}, x)
    f, alpha_logits = y[..., :self.features], y[..., self.features:]
    if signal[1] is not None:
      f = f + signal[1].astype(f.dtype)
    return f, alpha_logits + alpha[1].astype(alpha_logits.dtype)

  def _window(self, x: Array) -> tuple[int, ...]:
    """The kernel's spatial size for input `x` (() for a dense projection)."""
    raise NotImplementedError

  def _noise(self) -> nn.Module | None:
    common = dict(rng_collection=self.rng_collection, sampler=self.sampler, name='noise')
    if self.method == 'information':
      return InformationDropout(max_alpha=self.max_alpha, prior=self.prior or default_prior(self.activation), **common)
    if self.method == 'binary':
      return BinaryDropout(rate=self.rate, **common)
    if self.method == 'gaussian':
      return GaussianDropout(rate=self.rate, **common)
    if self.method == 'lognormal_constant':
      return LogNormalDropout(alpha=self.lognormal_alpha, max_alpha=self.max_alpha, **common)
    if self.method == 'variational':
      return VariationalDropout(init_rate=self.rate, **common)
    return None

  @nn.compact
  def __call__(self, x: Array, deterministic: bool | None = None, use_running_average: bool | None = None) -> Array:
    fused = self.fuse_alpha and self.method == 'information'
    if fused:
      f, alpha_logits = self._fused_projections(x, signal_bias=not self.use_bn)
    else:
      f = self._projection(self.features, not self.use_bn, x, name='signal')(x)
    if self.use_bn:
      use_running_average = nn.merge_param('use_running_average', self.use_running_average, use_running_average)
      f = self.norm(use_running_average=use_running_average, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                    use_scale=self.bn_use_scale, dtype=self.dtype, param_dtype=self.param_dtype, name='bn')(f)
    f = ACTIVATIONS[self.activation](f)
    noise = self._noise()
    if noise is None:  # method='none': nothing to switch, so `deterministic` may be left unset.
      return f
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    if self.method == 'information':
      # α is a function of the same input as f, not of f: the original's separate alpha conv.
      if not fused:
        alpha_logits = self._projection(self.features, True, x, name='alpha')(x)
      return noise(f, alpha_logits, deterministic=deterministic)
    return noise(f, deterministic=deterministic)


class InformationDropoutConv(_NoisyProjection):
  """Convolutional Information Dropout (the original's `information_pool`: a strided conv that also drops).

  Signal f = act([BN](conv(x))); alpha logits = a second conv of x with the same kernel and stride, with bias and no
  BatchNorm. See `_NoisyProjection` for the other attributes; `method` swaps in the control noises.

  `kernel_size` and `strides` take a sequence (one entry per spatial axis) or an int for the same value on every
  spatial axis of the input. `conv` is the convolution module (default `nn.Conv`), called with nn.Conv's fields.
  """
  kernel_size: int | Sequence[int] = (3, 3)
  strides: int | Sequence[int] = (2, 2)
  padding: str = 'SAME'
  conv: ModuleDef = nn.Conv

  def __post_init__(self):
    for field in ('kernel_size', 'strides'):
      value = getattr(self, field)
      if isinstance(value, bool) or not (isinstance(value, int) or (
          isinstance(value, Sequence) and not isinstance(value, str) and value and
          all(isinstance(v, int) and not isinstance(v, bool) for v in value))):
        raise TypeError(f'{type(self).__name__}: {field} must be an int or a sequence of ints, got {value!r}.')
    super().__post_init__()

  def _spatial(self, value: int | Sequence[int], x: Array) -> tuple[int, ...]:
    # An int means the same size on every spatial axis; only the input tells how many there are.
    return tuple(value) if isinstance(value, Sequence) else (value,) * max(x.ndim - 2, 1)

  def _projection(self, features: int, use_bias: bool, x: Array, **kwargs) -> nn.Module:
    return self.conv(features, self._spatial(self.kernel_size, x), strides=self._spatial(self.strides, x),
                     padding=self.padding, use_bias=use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                     **kwargs)

  def _window(self, x: Array) -> tuple[int, ...]:
    window = self._spatial(self.kernel_size, x)
    if x.ndim != len(window) + 2:
      raise ValueError(f'{type(self).__name__}: fuse_alpha needs a batched input of rank {len(window) + 2} for '
                       f'kernel_size {window}, got shape {x.shape}.')
    return window


class InformationDropoutDense(_NoisyProjection):
  """Dense Information Dropout for fully connected nets and VAE latents; see `_NoisyProjection` for attributes.

  `dense` is the projection module (default `nn.Dense`), called with nn.Dense's fields.
  """
  dense: ModuleDef = nn.Dense

  def _projection(self, features: int, use_bias: bool, x: Array, **kwargs) -> nn.Module:
    del x  # A dense projection does not depend on the input's rank.
    return self.dense(features, use_bias=use_bias, dtype=self.dtype, param_dtype=self.param_dtype, **kwargs)

  def _window(self, x: Array) -> tuple[int, ...]:
    del x
    return ()


class _ProjectionParams(nn.Module):
  """The parameters `nn.Conv` / `nn.Dense` declare (kernel `shape`, optional bias), without applying them."""
  shape: tuple[int, ...]
  use_bias: bool
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self) -> tuple[Array, Array | None]:
    # The initialisers of nn.Conv and nn.Dense, so a fused layer initialises exactly as the unfused one.
    kernel = self.param('kernel', nn.linear.default_kernel_init, self.shape, self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.shape[-1],), self.param_dtype) if self.use_bias \
        else None
    return kernel, bias
