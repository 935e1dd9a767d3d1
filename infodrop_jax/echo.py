"""Echo noise (Brekelmans, Moyer, Galstyan & Ver Steeg, NeurIPS 2019): noise with an exact I(X;Z).

z = f(x) + S(x) ε with ε = Σ_l f(x_{j_l}) Π_{k<l} S(x_{j_k}), the j_l drawn from the *other* members of the batch,
so the noise is built from the encoder's own outputs. With diagonal S = r · exp(s(x)) (s ≤ 0, e.g. log_sigmoid
of a pre-activation, and a clip factor r < 1), I(X;Z) = −E_x Σ_d log S_d(x) exactly.

The clip factor r makes the truncated series converge to float32 precision: it is the largest r with
M r^d_max / (1 − r) ≤ 2^−23 for |f| ≤ M, so the first omitted term and everything after it vanish in float32.
The same r must be used in the sample and in the rate; `EchoNoise` and the functions here share it by default.
(The original computes r = (2^−23/M)^(1/d_max) = 0.8526 in its sampler, which bounds only the first omitted term,
but uses the constant 0.8359 in its loss: a mismatch we do not copy. 0.8359 satisfies the bound too; pass
`clip_factor=PAPER_CLIP_FACTOR` to reproduce the paper's rate values exactly.)
"""

import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

from infodrop_jax import layers

Array = jax.Array

_FLOAT32_EPS = 2.0**-23

# The clip factor the original echo_loss uses for d_max = 100.
PAPER_CLIP_FACTOR = 0.8359

# Echo terms by default: all the *other* examples of the paper's batch of 100. The original asks for d_max = 100
# but, sampling without replacement and excluding the example itself, silently uses only the 99 others; we make
# the 99 explicit so that the default works at batch 100 and the clip factor matches the terms actually summed.
DEFAULT_D_MAX = 99


def default_clip_factor(d_max: int, f_bound: float = 1.0) -> float:
  """Largest r in (0, 1) with f_bound · r^d_max / (1 − r) ≤ 2^−23 (0.8373 for d_max = 100, f_bound = 1)."""
  if d_max < 1:
    raise ValueError(f'd_max must be a positive number of echo terms, got {d_max!r}.')
  if not f_bound > 0:
    raise ValueError(f'f_bound must be > 0 (a bound on |f(x)|), got {f_bound!r}.')
  lo, hi = 0.0, 1.0
  for _ in range(60):  # Bisection on a monotone function of r: 60 halvings reach float64 resolution.
    mid = 0.5 * (lo + hi)
    if f_bound * mid**d_max / (1.0 - mid) <= _FLOAT32_EPS:
      lo = mid
    else:
      hi = mid
  return lo


# Below this clip factor every unit's rate is at least −log r > 2.3 nats and S ≤ r makes the echo noise a small
# fraction of the signal: a batch (and d_max) too small for echo noise to mean anything.
NEGLIGIBLE_CLIP_FACTOR = 0.1


class EchoNoiseNegligibleWarning(UserWarning):
  """The default clip factor of a small d_max is so small that the echo noise is negligible."""


def resolve_clip_factor(d_max: int, clip_factor: float | None, owner: str = 'echo') -> float:
  """The clip factor r a sampler and its rate share: `clip_factor`, or `default_clip_factor(d_max)`, with a warning
  where that default makes the noise negligible (r = 1.2e-7 at d_max = 1: every unit carries at least 15.9 nats)."""
  if clip_factor is not None:
    if not 0.0 < clip_factor < 1.0:
      raise ValueError(f'{owner}: clip_factor must be in (0, 1), got {clip_factor!r}.')
    return clip_factor
  r = default_clip_factor(d_max)
  if r < NEGLIGIBLE_CLIP_FACTOR:
    warnings.warn(
        f'{owner}: d_max={d_max} gives the default clip factor r = {r:.3g}: S ≤ r makes the echo noise negligible '
        f'and every unit carries at least −log r = {-math.log(r):.3g} nats. Use a batch and d_max of tens or more '
        f'(the paper: 100).', EchoNoiseNegligibleWarning, stacklevel=3)
  return r


def max_d_max(batch_size: int) -> int:
  """The most echo terms a batch allows without replacement: the batch_size − 1 *other* examples."""
  return batch_size - 1


def _check_echo_args(batch_size: int, d_max: int, replace: bool) -> None:
  if d_max < 1:
    raise ValueError(f'd_max must be a positive number of echo terms, got {d_max!r}.')
  if batch_size < 2:
    raise ValueError(f'echo noise needs a batch of at least 2 examples (it is built from the others), got '
                     f'{batch_size}.')
  if not replace and d_max > max_d_max(batch_size):
    raise ValueError(
        f'd_max={d_max} must be smaller than the batch size ({batch_size}) when sampling without replacement: each '
        f'example draws d_max *other* examples, at most batch − 1 = {max_d_max(batch_size)}. Lower d_max, raise '
        f'the batch size, or pass replace=True.')


def _other_indices(key: Array, batch_size: int, d_max: int, replace: bool) -> Array:
  """(batch, d_max) indices; row i holds examples other than i, distinct within the row unless `replace`."""
  if replace:
    idx = jax.random.randint(key, (batch_size, d_max), 0, batch_size - 1)
  else:
    # Rank random keys to get an independent random ordering of the batch_size − 1 others for every row.
    scores = jax.random.uniform(key, (batch_size, batch_size - 1))
    idx = jnp.argsort(scores, axis=1)[:, :d_max]
  # Indices in [0, batch_size − 1) skip the row's own index.
  return idx + (idx >= jnp.arange(batch_size)[:, None])


def log_scale(log_s: Array, clip_factor: float) -> Array:
  """log S(x) = log r + s(x)."""
  return jnp.log(clip_factor) + jnp.asarray(log_s, jnp.float32)


def echo_sample(key: Array, f: Array, log_s: Array, d_max: int = DEFAULT_D_MAX, clip_factor: float | None = None,
                replace: bool = False) -> Array:
  """Draws z = f + S ⊙ ε with echo noise built from the other examples of the batch.

  Args:
    key: PRNG key choosing which other examples echo into each one.
    f: (batch, ...) encoder means; should be bounded (|f| ≤ 1 for the default clip factor), e.g. tanh.
    log_s: (batch, ...) s(x) ≤ 0, e.g. jax.nn.log_sigmoid of a pre-activation.
    d_max: number of echo terms.
    clip_factor: r; defaults to `default_clip_factor(d_max)`. Use the same r in `echo_mutual_information`.
    replace: draw the other examples with replacement (then d_max may exceed the batch size).
  Returns:
    z with f's shape and dtype. An example whose log S is −inf (S = 0, an infinitely precise code) gets z = f and
    contributes nothing beyond its own term to the others' noise; it does not make any z NaN.
  """
  if f.shape != log_s.shape:
    raise ValueError(f'echo_sample: log_s shape {log_s.shape} must equal f shape {f.shape}.')
  batch_size = f.shape[0]
  _check_echo_args(batch_size, d_max, replace)
  clip_factor = resolve_clip_factor(d_max, clip_factor, 'echo_sample')
  idx = _other_indices(key, batch_size, d_max, replace)
  f32 = f.astype(jnp.float32).reshape(batch_size, -1)
  log_scale_flat = log_scale(log_s, clip_factor).reshape(batch_size, -1)
  f_echo = f32[idx]                      # (batch, d_max, units)
  log_scale_echo = log_scale_flat[idx]   # (batch, d_max, units)
  # Π_{k<l} S(x_{j_k}) as an exclusive cumulative sum in log space, the l = 0 term getting factor 1. Shifted, not
  # computed as cumsum − own term: with a −inf log S that difference is −inf − (−inf) = NaN, which would reach
  # every example that drew this one.
  inclusive = jnp.cumsum(log_scale_echo, axis=1)
  exclusive = jnp.concatenate([jnp.zeros_like(inclusive[:, :1]), inclusive[:, :-1]], axis=1)
  eps = jnp.sum(f_echo * jnp.exp(exclusive), axis=1)
  z = f32 + jnp.exp(log_scale_flat) * eps
  return z.reshape(f.shape).astype(f.dtype)


def echo_rate_map(log_s: Array, clip_factor: float) -> Array:
  """Per-unit contribution −log S_d(x) to I(X;Z); it sums over units (and averages over x) to the exact MI."""
  return -log_scale(log_s, clip_factor)


def echo_mutual_information(log_s: Array, d_max: int | None = None, clip_factor: float | None = None) -> Array:
  """Exact I(X;Z) in nats for each example: −Σ_d log S_d(x), shape (batch,). Its batch mean estimates I(X;Z).

  Pass the d_max the noise was sampled with (or its clip_factor): r, and with it −log r in every unit, depends on
  it, so a default here could silently disagree with the sampler (`EchoNoise.mutual_information` uses the layer's
  own; the layer's sown rate, read by `kl.total_kl`, does too).
  """
  if d_max is None and clip_factor is None:
    raise ValueError('echo_mutual_information: pass the d_max the echo noise was sampled with (or its clip_factor): '
                     f'the rate depends on it (d_max = 7: r = {default_clip_factor(7):.3g}; the default 99: r = '
                     f'{default_clip_factor(DEFAULT_D_MAX):.4g}), or use EchoNoise(...).mutual_information(log_s).')
  clip_factor = resolve_clip_factor(d_max or DEFAULT_D_MAX, clip_factor, 'echo_mutual_information')
  rate = echo_rate_map(log_s, clip_factor)
  return jnp.sum(rate.reshape(rate.shape[0], -1), axis=1)


class EchoNoise(layers.NoiseModule):
  """Echo noise as a Linen layer: `EchoNoise()(f, log_s)` → z; sows the per-unit rate −log S into 'kl'.

  Because the rate map goes into the same collection as the KL maps of `infodrop_jax.layers`, `kl.total_kl` and
  `kl.kl_per_layer` give I(X;Z) for echo layers too. Sampling needs a fixed batch larger than d_max (without
  replacement), which jit guarantees; deterministic calls take any batch, and so does `init` (which samples
  nothing: the layer has no parameters, and the trainer initialises on a batch of one). The default d_max = 99 uses
  all the other examples of a batch of 100, as the original does. The default clip factor assumes
  |f| ≤ 1 (e.g. tanh) and log_s ≤ 0 (e.g. log_sigmoid); otherwise pass `clip_factor=default_clip_factor(d_max,
  f_bound)`.
  """
  d_max: int = DEFAULT_D_MAX
  clip_factor: float | None = None
  replace: bool = False
  deterministic: bool | None = None
  rng_collection: str = 'noise'

  def __post_init__(self):
    if self.d_max < 1:
      raise ValueError(f'EchoNoise: d_max must be a positive number of echo terms, got {self.d_max!r}.')
    resolve_clip_factor(self.d_max, self.clip_factor, 'EchoNoise')  # its errors and its warning, at construction
    super().__post_init__()

  @property
  def resolved_clip_factor(self) -> float:
    return default_clip_factor(self.d_max) if self.clip_factor is None else self.clip_factor

  def mutual_information(self, log_s: Array) -> Array:
    """This layer's exact I(X;Z) per example, with its own d_max and clip factor (`echo_mutual_information`)."""
    return echo_mutual_information(log_s, self.d_max, self.resolved_clip_factor)

  @nn.compact
  def __call__(self, f: Array, log_s: Array, deterministic: bool | None = None) -> Array:
    if f.shape != log_s.shape:
      raise ValueError(f'EchoNoise: log_s shape {log_s.shape} must equal f shape {f.shape}.')
    clip_factor = self.resolved_clip_factor
    self._sow_kl(echo_rate_map(log_s, clip_factor), deterministic)
    if self.is_initializing():  # Nothing is sampled (nor a key needed), so any batch size works.
      return f
    key = self._noise_key(deterministic)
    if key is None:
      return f
    return echo_sample(key, f, log_s, self.d_max, clip_factor, self.replace)
