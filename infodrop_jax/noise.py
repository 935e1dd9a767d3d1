"""The noise of every layer as pure functions of arrays: one implementation that the Linen layers
(`infodrop_jax.layers`) and the NNX layers (`infodrop_jax.nnx_layers`) both call, so the two APIs cannot drift.

Each function takes the signal f, the layer's parameters as arrays, and `key` (None: the noise is off, z = f) and
returns z, with the per-unit KL map (float32, f's shape) where the noise has a KL term. Noise and KL run in float32;
z has f's dtype when f is floating point, float32 otherwise (an integer input would be truncated by the noise).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from infodrop_jax import kl as kl_lib

Array = jax.Array

# The original takes log max(f, 1e-4) in the log-normal KL: ReLU-like units can be exactly 0.
LOG_F_FLOOR = 1e-4


@dataclasses.dataclass(frozen=True)
class NoiseSampler:
  """Where the noise draws its random numbers: functions with `jax.random`'s signatures and values.

  `normal(key, shape, dtype)` and `bernoulli(key, p, shape)`. The default is `jax.random` itself (`JAX_RANDOM`);
  `infodrop_jax.cpu.SAMPLER` draws the same values faster on XLA:CPU.
  """
  normal: Callable[..., Array] = jax.random.normal
  bernoulli: Callable[..., Array] = jax.random.bernoulli


JAX_RANDOM = NoiseSampler()


# --- what both APIs check before anything runs ---------------------------------------------------------------

ACTIVATIONS = {'relu': jax.nn.relu, 'softplus': jax.nn.softplus}
PRIORS = ('log_uniform', 'log_normal')
METHODS = ('information', 'binary', 'gaussian', 'lognormal_constant', 'variational', 'none')


def check_choice(owner: str, field: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f'{owner}: unknown {field}={value!r}; expected one of {", ".join(map(repr, allowed))}.')


def check_positive(owner: str, field: str, value: float) -> None:
  if not value > 0:
    raise ValueError(f'{owner}: {field} must be > 0, got {value!r}.')


def check_rate(owner: str, rate: float) -> None:
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'{owner}: rate (the drop probability) must be in [0, 1), got {rate!r}.')


def default_prior(activation: str) -> str:
  """The paper's pairing: log-uniform prior for ReLU, log-normal prior for softplus."""
  check_choice('default_prior', 'activation', activation, tuple(ACTIVATIONS))
  return 'log_uniform' if activation == 'relu' else 'log_normal'


def check_lognormal(owner: str, alpha: float, max_alpha: float) -> None:
  check_positive(owner, 'alpha', alpha)
  check_positive(owner, 'max_alpha', max_alpha)
  if alpha > max_alpha + kl_lib.ALPHA_FLOOR:
    raise ValueError(f'{owner}: alpha={alpha!r} exceeds max_alpha + {kl_lib.ALPHA_FLOOR} '
                     f'({max_alpha + kl_lib.ALPHA_FLOOR!r}), where its KL would turn negative; raise max_alpha.')


def check_variational(owner: str, init_rate: float) -> None:
  check_rate(owner, init_rate)
  if init_rate == 0.0:
    raise ValueError(f'{owner}: init_rate must be > 0 (alpha = rate/(1-rate) is learned in log space).')


def check_noisy_projection(owner: str, *, method: str, activation: str, prior: str | None, max_alpha: float,
                           lognormal_alpha: float, rate: float) -> None:
  """The fields of a composite noisy layer (projection → [BatchNorm] → activation → noise)."""
  check_choice(owner, 'method', method, METHODS)
  check_choice(owner, 'activation', activation, tuple(ACTIVATIONS))
  if prior is not None:
    check_choice(owner, 'prior', prior, PRIORS)
    if method != 'information':
      raise ValueError(f'{owner}: prior={prior!r} applies to method=\'information\' only, not method={method!r}; '
                       'leave prior=None.')
  if method == 'information' and activation == 'relu' and prior == 'log_normal':
    raise ValueError(f'{owner}: prior=\'log_normal\' needs positive units (activation=\'softplus\'): a ReLU unit '
                     'at 0 has no log-normal posterior. Use the log-uniform prior with ReLU.')
  check_positive(owner, 'max_alpha', max_alpha)
  check_positive(owner, 'lognormal_alpha', lognormal_alpha)
  check_rate(owner, rate)


def check_input_rank(owner: str, x: Array, rank: int, layout: str) -> None:
  """Refuses an input of the wrong rank at the layer, before the projection's own (cryptic) error. One example
  without its batch axis is the common case (the KL helpers would read its rows as examples); it is refused for a
  concrete array, and let through for a traced one, since `jax.vmap` over examples hands every layer exactly that."""
  shape = jnp.shape(x)
  if len(shape) == rank - 1 and isinstance(x, jax.core.Tracer):
    return
  if len(shape) != rank:
    hint = ' (one example without its batch axis? pass x[None])' if len(shape) == rank - 1 else ''
    raise ValueError(f'{owner}: expected an input of rank {rank}, {layout}, got shape {tuple(shape)}{hint}.')


# --- the noise ---------------------------------------------------------------------------------------------------


def output_dtype(f: Array):
  """The dtype z takes: f's when floating point (bfloat16 stays bfloat16), float32 for integer or bool inputs."""
  dtype = jnp.asarray(f).dtype
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


def _scaled(f: Array, factor: Array) -> Array:
  return (jnp.asarray(f).astype(jnp.float32) * factor).astype(output_dtype(f))


def _as_output(f: Array) -> Array:
  return jnp.asarray(f).astype(output_dtype(f))


def information_alpha(alpha_logits: Array, max_alpha: float) -> Array:
  """α = 0.001 + max_alpha · sigmoid(alpha_logits), float32."""
  return kl_lib.ALPHA_FLOOR + max_alpha * jax.nn.sigmoid(jnp.asarray(alpha_logits).astype(jnp.float32))


def information_dropout(f: Array, alpha_logits: Array, key: Array | None, *, max_alpha: float, prior: str,
                        prior_mu: Array | None = None, prior_log_sigma: Array | None = None,
                        sampler: NoiseSampler = JAX_RANDOM) -> tuple[Array, Array, Array]:
  """(z, per-unit KL map, α) of information dropout: z = f ⊙ exp(α ε), ε ~ N(0, 1).

  prior 'log_uniform': KL = −log(α / (max_alpha + 0.001)); 'log_normal': KL(N(log max(f, 1e-4), α²) ‖ N(μ, σ²)) with
  σ = exp(prior_log_sigma).
  """
  alpha = information_alpha(alpha_logits, max_alpha)
  if prior == 'log_uniform':
    kl_map = kl_lib.log_uniform_kl(alpha, max_alpha)
  else:
    log_f = jnp.log(jnp.maximum(jnp.asarray(f).astype(jnp.float32), LOG_F_FLOOR))
    kl_map = kl_lib.log_normal_kl(alpha, log_f, prior_mu, jnp.exp(prior_log_sigma))
  if key is None:
    return _as_output(f), kl_map, alpha
  return _scaled(f, jnp.exp(alpha * sampler.normal(key, jnp.shape(f), jnp.float32))), kl_map, alpha


def lognormal_dropout(f: Array, key: Array | None, *, alpha: float, max_alpha: float,
                      sampler: NoiseSampler = JAX_RANDOM) -> tuple[Array, Array]:
  """(z, KL map) of constant log-normal noise z = f ⊙ exp(α ε); its log-uniform KL is a constant map."""
  kl_map = jnp.broadcast_to(kl_lib.log_uniform_kl(alpha, max_alpha), jnp.shape(f))
  if key is None:
    return _as_output(f), kl_map
  return _scaled(f, jnp.exp(alpha * sampler.normal(key, jnp.shape(f), jnp.float32))), kl_map


def binary_dropout(f: Array, key: Array | None, *, rate: float, sampler: NoiseSampler = JAX_RANDOM) -> Array:
  """Bernoulli dropout with inverted scaling (E[z] = f); scaled in float32 (keep = 0.8 in bfloat16 is 0.80078)."""
  if key is None or rate == 0.0:
    return _as_output(f)
  keep = 1.0 - rate
  mask = sampler.bernoulli(key, keep, jnp.shape(f))
  return jnp.where(mask, jnp.asarray(f).astype(jnp.float32) / keep, 0.0).astype(output_dtype(f))


def gaussian_dropout(f: Array, key: Array | None, *, rate: float, sampler: NoiseSampler = JAX_RANDOM) -> Array:
  """Multiplicative Gaussian noise N(1, rate/(1 − rate)): Bernoulli dropout's variance at the same rate."""
  if key is None:
    return _as_output(f)
  std = math.sqrt(rate / (1.0 - rate))
  return _scaled(f, 1.0 + std * sampler.normal(key, jnp.shape(f), jnp.float32))


def capped_log_alpha(raw_log_alpha: Array) -> Array:
  """Variational dropout's log α capped at 0 (α ≤ 1) in value, the gradient passing straight through: a hard clip
  would freeze every unit whose parameter once stepped above the cap (the default init sits exactly on it)."""
  return raw_log_alpha - jax.lax.stop_gradient(jnp.maximum(raw_log_alpha, 0.0))


def variational_dropout(f: Array, key: Array | None, *, raw_log_alpha: Array,
                        sampler: NoiseSampler = JAX_RANDOM) -> tuple[Array, Array]:
  """(z, KL map) of variational dropout z = f ⊙ N(1, α), α per feature (last axis), capped at 1."""
  log_alpha = capped_log_alpha(raw_log_alpha)
  kl_map = jnp.broadcast_to(kl_lib.variational_dropout_kl(log_alpha), jnp.shape(f))
  if key is None:
    return _as_output(f), kl_map
  return _scaled(f, 1.0 + jnp.exp(0.5 * log_alpha) * sampler.normal(key, jnp.shape(f), jnp.float32)), kl_map


def initial_log_alpha(init_rate: float) -> float:
  """Variational dropout's initial log α = log(rate / (1 − rate)), the Gaussian-dropout equivalent."""
  return math.log(init_rate / (1.0 - init_rate))
