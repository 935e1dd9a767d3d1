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
from typing import Any
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

from infodrop_jax import kl as kl_lib
from infodrop_jax import noise as noise_lib
from infodrop_jax.noise import JAX_RANDOM, NoiseSampler  # pylint: disable=unused-import  (part of this API)

Array = jax.Array
Dtype = Any
ModuleDef = Any

ACTIVATIONS: dict[str, Callable[[Array], Array]] = noise_lib.ACTIVATIONS
PRIORS = noise_lib.PRIORS
METHODS = noise_lib.METHODS
default_prior = noise_lib.default_prior



class KLNotCollectedWarning(UserWarning):
  """A noise layer with a KL term ran with noise on outside `apply(..., mutable=['kl'])`."""


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
          f"pass rngs={{'{self.rng_collection}': key}} to apply() (Linen), or call it with deterministic=True. From "
          f'NNX, use the native layers of infodrop_jax.nnx_layers (noise from nnx.Rngs({self.rng_collection}=key), '
          f'.eval() to switch it off); through nnx.bridge.ToNNX, give rngs=nnx.Rngs(params=..., '
          f'{self.rng_collection}=...).')
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
    noise_lib.check_positive(type(self).__name__, 'max_alpha', self.max_alpha)
    noise_lib.check_choice(type(self).__name__, 'prior', self.prior, PRIORS)
    super().__post_init__()

  @nn.compact
  def __call__(self, f: Array, alpha_logits: Array, deterministic: bool | None = None) -> Array:
    if f.shape != alpha_logits.shape:
      raise ValueError(f'InformationDropout: alpha_logits shape {alpha_logits.shape} must equal signal shape {f.shape}.')
    mu = log_sigma = None
    if self.prior == 'log_normal':
      mu = self.param('prior_mu', nn.initializers.zeros_init(), (), jnp.float32)
      log_sigma = self.param('prior_log_sigma', nn.initializers.zeros_init(), (), jnp.float32)
    key = self._noise_key(deterministic)
    z, kl_map, alpha = noise_lib.information_dropout(f, alpha_logits, key, max_alpha=self.max_alpha, prior=self.prior,
                                                     prior_mu=mu, prior_log_sigma=log_sigma, sampler=self.sampler)
    self.sow('intermediates', 'alpha', alpha)
    self._sow_kl(kl_map, deterministic)
    return z


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
    noise_lib.check_lognormal(type(self).__name__, self.alpha, self.max_alpha)
    super().__post_init__()

  @nn.compact
  def __call__(self, f: Array, deterministic: bool | None = None) -> Array:
    z, kl_map = noise_lib.lognormal_dropout(f, self._noise_key(deterministic), alpha=self.alpha,
                                            max_alpha=self.max_alpha, sampler=self.sampler)
    self._sow_kl(kl_map, deterministic)
    return z


class _RateNoise(NoiseModule):
  """Noises set by a drop probability `rate`, as Bernoulli dropout is."""
  rate: float = 0.5
  deterministic: bool | None = None
  rng_collection: str = 'noise'
  sampler: NoiseSampler = JAX_RANDOM

  def __post_init__(self):
    noise_lib.check_rate(type(self).__name__, self.rate)
    super().__post_init__()


class BinaryDropout(_RateNoise):
  """Bernoulli dropout, inverted scaling (E[z] = f). No KL term. Unlike `nn.Dropout` it uses the 'noise' stream."""

  @nn.compact
  def __call__(self, f: Array, deterministic: bool | None = None) -> Array:
    key = None if self.rate == 0.0 else self._noise_key(deterministic)
    return noise_lib.binary_dropout(f, key, rate=self.rate, sampler=self.sampler)


class GaussianDropout(_RateNoise):
  """Multiplicative Gaussian noise N(1, rate/(1−rate)): the variance of Bernoulli dropout at the same rate."""

  @nn.compact
  def __call__(self, f: Array, deterministic: bool | None = None) -> Array:
    return noise_lib.gaussian_dropout(f, self._noise_key(deterministic), rate=self.rate, sampler=self.sampler)


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
    noise_lib.check_variational(type(self).__name__, self.init_rate)
    super().__post_init__()

  @nn.compact
  def __call__(self, f: Array, deterministic: bool | None = None) -> Array:
    raw_log_alpha = self.param('log_alpha', nn.initializers.constant(noise_lib.initial_log_alpha(self.init_rate)),
                               (f.shape[-1],), jnp.float32)
    z, kl_map = noise_lib.variational_dropout(f, self._noise_key(deterministic), raw_log_alpha=raw_log_alpha,
                                              sampler=self.sampler)
    self._sow_kl(kl_map, deterministic)
    return z


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
    noise_lib.check_noisy_projection(type(self).__name__, method=self.method, activation=self.activation,
                                     prior=self.prior, max_alpha=self.max_alpha, lognormal_alpha=self.lognormal_alpha,
                                     rate=self.rate)
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

  def _check_input(self, x: Array) -> None:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: Array, deterministic: bool | None = None, use_running_average: bool | None = None) -> Array:
    self._check_input(x)
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

  def _check_input(self, x: Array) -> None:
    if isinstance(self.kernel_size, Sequence):
      spatial = len(self.kernel_size)
      noise_lib.check_input_rank(type(self).__name__, x, spatial + 2,
                                 f'(batch, {spatial} spatial axes, channels) for kernel_size {tuple(self.kernel_size)}')
    elif jnp.ndim(x) < 3:
      noise_lib.check_input_rank(type(self).__name__, x, 4, '(batch, height, width, channels)')

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

  def _check_input(self, x: Array) -> None:
    if jnp.ndim(x) < 2:  # more axes are fine: a dense layer maps the last one
      noise_lib.check_input_rank(type(self).__name__, x, 2, '(batch, features)')

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
