"""Mutual-information estimators for networks with continuous multiplicative noise (dropout-style layers), used by the
information planes (`information_plane`) and the analyses.

With continuous multiplicative noise the representation Z is a stochastic function of X, so I(X;Z) is finite and
can be estimated (Adilova, Geiger & Fischer, ICLR 2023, "Information Plane Analysis for Dropout Neural Networks"):

  I(X;Z) = h(Z) − h(Z|X),   h(Z|X) in closed form,   h(Z) under the mixture p(z) = (1/N) Σ_j p(z | x_j),

where x_1..x_N is a uniform sample of X and f_j = f(x_j) ∈ R^D the noise-free representations. Two families:

- 'gaussian':  z = f ⊙ ε, ε ~ N(1, σ²):   z_d | x ~ N(f_d, σ_d² f_d²),   h(Z_d|x) = ½ log(2πe σ_d² f_d²).
- 'lognormal': z = f ⊙ e^u, u ~ N(0, α²): log|z_d| | x ~ N(log|f_d|, α_d²) with sign(z_d) = sign(f_d),
               h(Z_d|x) = E[log|z_d|] + h(log|z_d|) = log|f_d| + ½ log(2πe α_d²)  (information dropout, α = α(x)).

The scale (σ or α) may be a scalar, per unit [D], or per example [N, D] (information dropout's α(x)); it enters
the mixture per component, which the public code of the paper gets wrong (its mixture uses σ·|f| where its h(Z|X)
uses σ²f², it hard-codes the dropout rate, and it keeps the noise on at test time). We evaluate the true mixture,
with log-normal components for log-normal noise, not Gaussians.

Choices:

- Pairing form. We draw z_i ~ p(z | x_i) and average log p(z_i | x_i) − log p(z_i), with
  log p(z_i) = logsumexp_j log p(z_i | x_j) − log N. This equals h(Z) − h(Z|X) in expectation but the large
  per-sample fluctuations of −log p(z_i) and −log p(z_i|x_i) cancel, so its variance is much lower than estimating
  the two entropies separately. The reported stderr is the standard error of the mean over inputs of the per-input
  averages (over `num_noise_samples` draws); it ignores the weak coupling of the terms through the shared mixture.
  Because the log-densities enter only as ratios, the Jacobian of z ↦ log|z| cancels and the log-normal case is
  evaluated in log space.
- The log N ceiling. Sample i's own component is in the mixture, so each term is ≤ log N and so is the estimate:
  it is the mutual information with X uniform over the N sample points (the InfoNCE bound with the exact critic),
  a lower bound on I(X;Z) in expectation that approaches it only when N ≫ e^{I(X;Z)}. Wide layers with little
  noise saturate at log N; read the estimate against log N, and against the sample-size curves. The leave-one-out
  variant (`estimator='leave_one_out'`, mixture over j ≠ i and log(N − 1)) is an upper bound in expectation (Poole
  et al., ICML 2019), so the pair brackets the truth; it can be large or +inf when z_i has no other component
  nearby.
- Zero activations. Multiplicative noise leaves f_d = 0 at exactly 0 (ReLU units often are), so such a coordinate
  is an atom, not a density, and h(Z) and h(Z|X) are both −∞. I(X;Z) stays finite: with B = 1[Z = 0] (a function
  of X and of Z), I(X;Z) = H(B) + I(X;Z|B). The pairing form covers this unchanged once densities are taken with
  respect to Lebesgue measure plus a point mass at 0 per coordinate: p(z | x_j) is zero unless z and f_j have the
  same zero pattern (and, for log-normal noise, the same signs), and atom coordinates contribute a factor 1. Coordinates that
  are 0 for every input thus drop out exactly; coordinates that are 0 for some inputs add the information carried by
  the zero pattern. `zero_tol` sets what counts as zero (default: exact zeros; a coordinate whose noise scale σ|f|
  underflows is an atom too). `conditional_entropy` reports h(Z|X) of the continuous coordinates only, and
  `gaussian_upper_bound` refuses inputs with partial zeros (a differential-entropy bound does not apply to atoms).
- Memory. Log-densities of [samples × components × D] blocks are reduced with a running logsumexp (lax.map over
  sample chunks, lax.scan over component chunks), so N = 10 000, D = 128 needs a few hundred MB at most. Everything
  runs in the dtype of `f` (float64 when jax_enable_x64 is on and f is float64).

Beside it: the Gaussian (max-entropy, Ledoit–Wolf covariance) upper bound; I(Z;Y) from the same mixture
(p(y|z) = Σ_{j: y_j = y} p(z|x_j) / Σ_j p(z|x_j); with the own component it is biased up when Z nearly identifies
the sample point, leave-one-out it is H(Y) minus a held-out cross-entropy, a lower bound) or from a classifier's
cross-entropy; the binning estimator for deterministic networks; and Echo layers' exact I(X;Z) through the same
(value, stderr) interface.
"""

from collections.abc import Sequence
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from infodrop_jax import echo

Array = jax.Array
ArrayLike = Any

NOISE_FAMILIES = ('gaussian', 'lognormal')
ESTIMATORS = ('mixture', 'leave_one_out')

_LOG_2PI = math.log(2.0 * math.pi)
# Elements of one [samples, components, D] block when component_chunk_size is left to us: 4M float64 values are
# 32 MB, and XLA keeps a few such temporaries alive.
_BLOCK_ELEMENTS = 2**22


class MIEstimate(NamedTuple):
  """An information estimate in nats and its Monte Carlo standard error (a plain (value, stderr) tuple)."""
  value: Array
  stderr: Array


class MixtureInformation(NamedTuple):
  """All mixture estimates from one pass over the pairwise log-densities."""
  i_xz: MIEstimate           # I(X;Z), mixture over all components: ≤ log N, a lower bound in expectation.
  i_xz_leave_one_out: MIEstimate  # I(X;Z), mixture over j ≠ i: an upper bound in expectation.
  i_zy: MIEstimate | None    # I(Z;Y) = H(Y) − H(Y|Z) when labels were given, p(y|z) from all components.
  i_zy_leave_one_out: MIEstimate | None  # The same with p(y_i|z_i) from the components j ≠ i.


class BinningInformation(NamedTuple):
  """Binning estimates for a deterministic representation: I(X;T) = H(T_binned), I(T;Y) (None without labels)."""
  i_xt: float
  i_ty: float | None


# ---------------------------------------------------------------------------------------------------------------
# Argument checks.


def _check_noise(noise: str) -> None:
  if noise not in NOISE_FAMILIES:
    families = ', '.join(map(repr, NOISE_FAMILIES))
    raise ValueError(f'noise={noise!r} is not a known noise family; expected one of {families} '
                     f"('gaussian': z = f·ε, ε ~ N(1, scale²); 'lognormal': z = f·exp(u), u ~ N(0, scale²)).")


def _check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f'{name} must be a positive integer, got {value!r}.')


def _as_float_2d(f: ArrayLike, name: str = 'f') -> np.ndarray:
  """f as a host array in the floating dtype JAX will compute in; checks run here, once, not per jit trace."""
  f = np.asarray(f)
  if not np.issubdtype(f.dtype, np.floating):
    f = f.astype(np.float64)
  f = f.astype(jax.dtypes.canonicalize_dtype(f.dtype))  # float64 becomes float32 unless jax_enable_x64 is on.
  if f.ndim != 2:
    raise ValueError(f'{name} must be a 2-D [N, D] array of representations (one row per input), got shape {f.shape}.')
  if f.shape[0] < 1 or f.shape[1] < 1:
    raise ValueError(f'{name} must have at least one row and one column, got shape {f.shape}.')
  if not np.isfinite(f).all():
    raise ValueError(f'{name} contains NaN or infinite values; the estimators need finite representations.')
  return f


def _as_scale(scale: ArrayLike, f: np.ndarray) -> np.ndarray:
  """Broadcasts a scalar / [D] / [N, D] noise scale to [N, D] in f's dtype after checking it."""
  n, d = f.shape
  scale = np.asarray(scale)
  if scale.shape not in ((), (d,), (n, d)):
    raise ValueError(f'scale must be a scalar, a per-unit [D] = [{d}] array or a per-example [N, D] = [{n}, {d}] array '
                     f'matching f, got shape {scale.shape}.')
  if not np.issubdtype(scale.dtype, np.number) or not np.isfinite(scale).all():
    raise ValueError('scale contains NaN or infinite values; expected finite noise scales > 0.')
  scale = scale.astype(f.dtype)
  if not (scale > 0).all():
    raise ValueError(f'scale must be > 0 everywhere (the noise standard deviation σ or α), got minimum '
                     f'{float(scale.min())!r}.')
  return np.ascontiguousarray(np.broadcast_to(scale, (n, d)))


def _check_labels(labels: ArrayLike, n: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (n,):
    raise ValueError(f'labels must be a 1-D [N] = [{n}] array with one class per row of f, got shape {labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integer class ids, got dtype {labels.dtype}.')
  if labels.size and labels.min() < 0:
    raise ValueError(f'labels must be non-negative class ids, got minimum {labels.min()}.')
  return labels


# ---------------------------------------------------------------------------------------------------------------
# Per-component parameters. Both families become Gaussian components in w-space (w = z, or w = log|z| with the sign
# in the support pattern); atom coordinates get w = m = 0 and unit inverse scale so they add nothing to the sum.
# Components whose zero/sign pattern differs from a sample's have density 0 there; `_support_ids` numbers the
# patterns (0 atom, else 1 for gaussian or sign(f) for lognormal, per coordinate) so that is one compare per pair.


class _Components(NamedTuple):
  mean: Array       # [N, D]
  inv_scale: Array  # [N, D]
  log_norm: Array   # [N]: Σ over continuous coordinates of −½ log 2π − log(scale in w-space).
  atom: Array       # [N, D] bool


def _components(f: Array, scale: Array, noise: str, zero_tol: float) -> _Components:
  if noise == 'gaussian':
    w_scale = scale * jnp.abs(f)
    atom = (jnp.abs(f) <= zero_tol) | (w_scale <= 0)  # A scale that underflows to 0 is a point mass too.
    mean = jnp.where(atom, 0.0, f)
  else:
    w_scale = scale
    atom = jnp.abs(f) <= zero_tol
    mean = jnp.where(atom, 0.0, jnp.log(jnp.where(atom, 1.0, jnp.abs(f))))
  safe_scale = jnp.where(atom, 1.0, w_scale)
  log_norm = jnp.sum(jnp.where(atom, 0.0, -0.5 * _LOG_2PI - jnp.log(safe_scale)), axis=-1)
  return _Components(mean, 1.0 / safe_scale, log_norm, atom)


def _support_ids(f: np.ndarray, scale: np.ndarray, noise: str, zero_tol: float) -> np.ndarray:
  """An integer per row, equal for rows with equal zero/sign patterns: one compare replaces a [.., D] match.

  Uses the same atom rule as `_components` (the patterns are numbered on the host, before the jit).
  """
  atom = np.abs(f) <= zero_tol
  if noise == 'gaussian':
    atom |= scale * np.abs(f) <= 0
    code = np.where(atom, 0, 1).astype(np.int8)
  else:
    code = np.where(atom, 0, np.sign(f)).astype(np.int8)
  if code.min() == code.max():  # One pattern (the usual case: no zeros, one sign).
    return np.zeros(code.shape[0], np.int32)
  _, ids = np.unique(code, axis=0, return_inverse=True)
  return ids.reshape(-1).astype(np.int32)


def _log_density_w(w: Array, comp_mean: Array, comp_inv_scale: Array, comp_log_norm: Array) -> Array:
  """log q(w | component) summed over the last axis, for w and components that broadcast against each other."""
  diff = (w - comp_mean) * comp_inv_scale
  return comp_log_norm - 0.5 * jnp.sum(diff * diff, axis=-1)


def _sample_w(key: Array, comps: _Components, scale: Array, f: Array, noise: str, num_samples: int) -> Array:
  """Draws w = z (gaussian) or log|z| (lognormal): [num_samples, N, D], 0 on atom coordinates."""
  xi = jax.random.normal(key, (num_samples,) + f.shape, f.dtype)
  if noise == 'gaussian':
    w = f * (1.0 + scale * xi)
  else:
    w = comps.mean + scale * xi
  return jnp.where(comps.atom, 0.0, w)


@functools.partial(jax.jit, static_argnames=('noise', 'num_noise_samples', 'chunk_size', 'component_chunk_size'))
def _mixture_log_terms(f: Array, scale: Array, key: Array, support_id: Array, labels: Array, zero_tol: Array, *,
                       noise: str, num_noise_samples: int, chunk_size: int, component_chunk_size: int):
  """Per-sample log q(w_i|x_i) and running logsumexps over all, other (j ≠ i) and same-label components.

  Returns five [num_noise_samples, N] arrays: self, all, leave-one-out, same label, same label and j ≠ i.
  """
  n, d = f.shape
  m = num_noise_samples
  comps = _components(f, scale, noise, zero_tol)
  w = _sample_w(key, comps, scale, f, noise, m)
  self_lp = _log_density_w(w, comps.mean, comps.inv_scale, comps.log_norm)  # [M, N]

  # Components, padded to whole chunks; padded ones get a support id no sample has, so they contribute −inf.
  c = component_chunk_size
  n_comp_chunks = -(-n // c)
  pad_c = n_comp_chunks * c - n
  comp_idx = jnp.arange(n_comp_chunks * c, dtype=jnp.int32)
  pad = lambda a, value: jnp.pad(a, [(0, pad_c)] + [(0, 0)] * (a.ndim - 1), constant_values=value)
  comp_xs = (pad(comps.mean, 0.0).reshape(n_comp_chunks, c, d),
             pad(comps.inv_scale, 1.0).reshape(n_comp_chunks, c, d),
             pad(comps.log_norm, 0.0).reshape(n_comp_chunks, c),
             pad(support_id, -1).reshape(n_comp_chunks, c),
             pad(labels, -1).reshape(n_comp_chunks, c),
             comp_idx.reshape(n_comp_chunks, c))

  # Samples, flattened over (noise draw, input) and padded to whole chunks (padding is sliced off at the end).
  b = chunk_size
  total = m * n
  n_chunks = -(-total // b)
  pad_s = n_chunks * b - total
  owner = jnp.tile(jnp.arange(n, dtype=jnp.int32), m)
  pad_samples = lambda a, value: jnp.pad(a, [(0, pad_s)] + [(0, 0)] * (a.ndim - 1), constant_values=value)
  sample_xs = (pad_samples(w.reshape(total, d), 0.0).reshape(n_chunks, b, d),
               pad_samples(support_id[owner], -2).reshape(n_chunks, b),
               pad_samples(labels[owner], -2).reshape(n_chunks, b),
               pad_samples(owner, -1).reshape(n_chunks, b))

  neg_inf = jnp.array(-jnp.inf, f.dtype)

  def sample_chunk(xs):
    w_b, sid_b, lab_b, own_b = xs

    def component_chunk(carry, cxs):
      mean_c, inv_c, norm_c, sid_c, lab_c, idx_c = cxs
      lp = _log_density_w(w_b[:, None, :], mean_c[None], inv_c[None], norm_c[None])  # [B, C]
      lp = jnp.where(sid_b[:, None] == sid_c[None, :], lp, neg_inf)
      other = own_b[:, None] != idx_c[None, :]
      same = lab_b[:, None] == lab_c[None, :]
      masks = (None, other, same, other & same)
      lses = [jax.nn.logsumexp(lp if mask is None else jnp.where(mask, lp, neg_inf), axis=1) for mask in masks]
      return tuple(jnp.logaddexp(acc, lse) for acc, lse in zip(carry, lses)), None

    init = (jnp.full((b,), neg_inf),) * 4
    out, _ = jax.lax.scan(component_chunk, init, comp_xs)
    return out

  lses = jax.lax.map(sample_chunk, sample_xs)
  unpad = lambda a: a.reshape(-1)[:total].reshape(m, n)
  return (self_lp,) + tuple(unpad(a) for a in lses)


def _mean_and_stderr(terms: np.ndarray, dtype) -> MIEstimate:
  """terms: [M, N]. Averages the M draws per input first, so the stderr counts inputs, not correlated draws."""
  per_input = np.mean(np.asarray(terms, np.float64), axis=0)
  n = per_input.shape[0]
  finite = np.isfinite(per_input).all()
  # The leave-one-out forms are ±inf when a sample has no other component with its zero/sign pattern (or class):
  # the value is then that infinity and the stderr undefined.
  value = per_input.mean() if finite else float(np.sum(per_input))  # sum: +inf, −inf, or nan for both.
  stderr = per_input.std(ddof=1) / math.sqrt(n) if n > 1 and finite else math.nan
  return MIEstimate(jnp.asarray(value, dtype), jnp.asarray(stderr, dtype))


def _entropy_from_counts(counts: np.ndarray) -> float:
  p = counts[counts > 0] / counts.sum()
  return float(-np.sum(p * np.log(p)))


# ---------------------------------------------------------------------------------------------------------------
# Public API.


def mixture_information(f: ArrayLike, labels: ArrayLike | None = None, *, noise: str, scale: ArrayLike, key: Array,
                        num_noise_samples: int = 1, chunk_size: int = 256, component_chunk_size: int | None = None,
                        zero_tol: float = 0.0) -> MixtureInformation:
  """I(X;Z) (mixture and leave-one-out) and, with labels, I(Z;Y), all from one pass over the pairwise densities.

  Args:
    f: [N, D] noise-free representations of a uniform sample of N inputs.
    labels: optional [N] integer classes of the inputs, for I(Z;Y) (see `label_mutual_information`).
    noise: 'gaussian' (z = f·ε, ε ~ N(1, scale²)) or 'lognormal' (z = f·exp(u), u ~ N(0, scale²)).
    scale: noise standard deviation σ or α: scalar, per unit [D] or per example [N, D]; > 0.
    key: PRNG key for the noise draws.
    num_noise_samples: noisy draws z per input (reduces the noise part of the variance; cost is linear in it).
    chunk_size: samples per block.
    component_chunk_size: mixture components per block; default keeps a block at about 4M elements.
    zero_tol: |f| ≤ zero_tol counts as an exact zero (an atom; see the module docstring).
  Returns:
    MixtureInformation of MIEstimate (value, stderr) pairs in nats, in f's floating dtype.

  Not traceable (it checks values on the host); the heavy part inside is jit-compiled.
  """
  f = _as_float_2d(f)
  _check_noise(noise)
  scale = _as_scale(scale, f)
  _check_positive_int('num_noise_samples', num_noise_samples)
  _check_positive_int('chunk_size', chunk_size)
  if component_chunk_size is not None:
    _check_positive_int('component_chunk_size', component_chunk_size)
  if not zero_tol >= 0:
    raise ValueError(f'zero_tol must be >= 0, got {zero_tol!r}.')
  n, d = f.shape
  if labels is not None:
    labels_np = _check_labels(labels, n)
  chunk_size = min(chunk_size, n * num_noise_samples)
  if component_chunk_size is None:
    component_chunk_size = max(1, _BLOCK_ELEMENTS // (chunk_size * d))
  component_chunk_size = min(component_chunk_size, n)

  # Zero/sign patterns are numbered on the host so the blocks compare one id per pair instead of D codes.
  support_id = _support_ids(f, scale, noise, zero_tol)
  label_arr = (labels_np if labels is not None else np.zeros(n)).astype(np.int32)
  self_lp, lse_all, lse_loo, lse_lab, lse_lab_loo = jax.device_get(_mixture_log_terms(
      f, scale, key, support_id, label_arr, np.asarray(zero_tol, f.dtype), noise=noise,
      num_noise_samples=num_noise_samples, chunk_size=chunk_size, component_chunk_size=component_chunk_size))

  dtype = f.dtype
  i_xz = _mean_and_stderr(self_lp - lse_all + math.log(n), dtype)
  if n > 1:
    i_loo = _mean_and_stderr(self_lp - lse_loo + math.log(n - 1), dtype)
  else:
    i_loo = MIEstimate(jnp.asarray(math.nan, dtype), jnp.asarray(math.nan, dtype))
  i_zy = i_zy_loo = None
  if labels is not None:
    h_y = _entropy_from_counts(np.bincount(labels_np))
    # log p(y_i | z_i) = log Σ_{j: y_j = y_i} p(z_i|x_j) − log Σ_j p(z_i|x_j) ≤ 0, so the estimate is ≤ H(Y).
    i_zy = _mean_and_stderr(h_y + lse_lab - lse_all, dtype)
    # −inf − −inf where no other component reaches z_i: p(y_i|z_i) is undefined there (nan).
    with np.errstate(invalid='ignore'):
      i_zy_loo = _mean_and_stderr(h_y + lse_lab_loo - lse_loo, dtype)
  return MixtureInformation(i_xz, i_loo, i_zy, i_zy_loo)


def dropout_mutual_information(f: ArrayLike, *, noise: str, scale: ArrayLike, key: Array, num_noise_samples: int = 1,
                               chunk_size: int = 256, component_chunk_size: int | None = None, zero_tol: float = 0.0,
                               estimator: str = 'mixture') -> MIEstimate:
  """I(X;Z) in nats for z = f(x) ⊙ multiplicative noise, with its Monte Carlo standard error.

  h(Z|X) is analytic and h(Z) is taken under the exact mixture (1/N) Σ_j p(z|x_j), in the pairing form
  mean_i [log p(z_i|x_i) − log p(z_i)] (see the module docstring for the log N ceiling and zero activations).

  Args:
    f: [N, D] noise-free representations of a uniform sample of N inputs.
    noise: 'gaussian' (z = f·ε, ε ~ N(1, scale²); Gaussian dropout has scale² = p/(1−p)) or 'lognormal'
      (z = f·exp(u), u ~ N(0, scale²); information dropout with scale = α(x)).
    scale: σ or α, > 0: a scalar, per unit [D], or per example [N, D].
    key: PRNG key for the noise draws.
    num_noise_samples: noisy draws per input.
    chunk_size: samples per block of pairwise log-densities.
    component_chunk_size: mixture components per block (default: about 4M elements per block).
    zero_tol: |f| ≤ zero_tol is an exact zero (an atom of Z).
    estimator: 'mixture' (all N components; ≤ log N, a lower bound in expectation) or 'leave_one_out'
      (components j ≠ i; an upper bound in expectation).
  Returns:
    MIEstimate(value, stderr), a (value, stderr) tuple of scalars in f's floating dtype.
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f'estimator={estimator!r} is unknown; expected one of {", ".join(map(repr, ESTIMATORS))}.')
  if estimator == 'leave_one_out' and np.shape(f)[:1] == (1,):
    raise ValueError('estimator=\'leave_one_out\' needs f with at least 2 rows (it leaves one input out).')
  info = mixture_information(f, noise=noise, scale=scale, key=key, num_noise_samples=num_noise_samples,
                             chunk_size=chunk_size, component_chunk_size=component_chunk_size, zero_tol=zero_tol)
  return info.i_xz if estimator == 'mixture' else info.i_xz_leave_one_out


def label_mutual_information(f: ArrayLike, labels: ArrayLike, *, noise: str, scale: ArrayLike, key: Array,
                             num_noise_samples: int = 1, chunk_size: int = 256,
                             component_chunk_size: int | None = None, zero_tol: float = 0.0,
                             estimator: str = 'mixture') -> MIEstimate:
  """I(Z;Y) = H(Y) − H(Y|Z) with p(y|z) = Σ_{j: y_j = y} p(z|x_j) / Σ_j p(z|x_j) under the same mixture.

  H(Y) is the plug-in entropy of the labels, so the estimate is ≤ H(Y); stderr is that of the H(Y|Z) average.
  With 'mixture' the sample's own component is in both sums: when Z nearly identifies the sample point (I(X;Z)
  near log N) p(y_i|z_i) → 1 and the estimate approaches H(Y) whatever the labels, because Y is a function of the
  sample point: an overestimate. 'leave_one_out' takes p(y_i|z_i) from the other components only, a kernel
  classifier evaluated out of sample, so it is H(Y) minus a held-out cross-entropy: a lower bound in expectation
  (it can be negative; −inf when some z_i reaches other components but none of its class, nan when it reaches
  none). Far from the log N ceiling the two agree. Other arguments as in `dropout_mutual_information`; labels: [N]
  integer classes of f's rows.
  """
  if labels is None:
    raise ValueError('labels must be a 1-D [N] integer array; got None.')
  if estimator not in ESTIMATORS:
    raise ValueError(f'estimator={estimator!r} is unknown; expected one of {", ".join(map(repr, ESTIMATORS))}.')
  out = mixture_information(f, labels, noise=noise, scale=scale, key=key, num_noise_samples=num_noise_samples,
                            chunk_size=chunk_size, component_chunk_size=component_chunk_size, zero_tol=zero_tol)
  return out.i_zy if estimator == 'mixture' else out.i_zy_leave_one_out


@jax.jit
def _conditional_entropy_core(f: Array, scale: Array, zero_tol: Array) -> Array:
  atom = jnp.abs(f) <= zero_tol
  safe_f = jnp.where(atom, 1.0, jnp.abs(f))
  per_unit = 0.5 * (_LOG_2PI + 1.0) + jnp.log(scale) + jnp.log(safe_f)  # Both families: log(σ|f|) or log α + log|f|.
  return jnp.sum(jnp.where(atom, 0.0, per_unit), axis=-1)


def conditional_entropy(f: ArrayLike, *, noise: str, scale: ArrayLike, zero_tol: float = 0.0) -> Array:
  """Closed-form h(Z | X = x_i) in nats for every row: [N], summed over the continuous (non-zero) coordinates.

  Gaussian: Σ_d ½ log(2πe σ_d² f_d²). Log-normal: Σ_d log|f_d| + ½ log(2πe α_d²). Zero coordinates are point
  masses (h = −∞) and are left out of the sum.
  """
  f = _as_float_2d(f)
  _check_noise(noise)  # Same formula for both families: h(σ|f|·N(0,1)) and E log|z| + h(log|z|) agree in form.
  scale = _as_scale(scale, f)
  return _conditional_entropy_core(f, scale, np.asarray(zero_tol, f.dtype))


@functools.partial(jax.jit, static_argnames=('noise', 'num_samples'))
def _sample_core(f: Array, scale: Array, key: Array, *, noise: str, num_samples: int) -> Array:
  xi = jax.random.normal(key, (num_samples,) + f.shape, f.dtype)
  return f * (1.0 + scale * xi) if noise == 'gaussian' else f * jnp.exp(scale * xi)


def sample_representation(f: ArrayLike, *, noise: str, scale: ArrayLike, key: Array, num_samples: int = 1) -> Array:
  """Noisy z for every row of f: [num_samples, N, D]. Zeros of f stay exactly 0 (multiplicative noise)."""
  f = _as_float_2d(f)
  _check_noise(noise)
  scale = _as_scale(scale, f)
  _check_positive_int('num_samples', num_samples)
  return _sample_core(f, scale, key, noise=noise, num_samples=num_samples)


@functools.partial(jax.jit, static_argnames=('noise',))
def _log_conditional_density_core(z: Array, f: Array, scale: Array, zero_tol: Array, *, noise: str) -> Array:
  atom = jnp.abs(f) <= zero_tol
  safe_f = jnp.where(atom, 1.0, f)
  if noise == 'gaussian':
    s = scale * jnp.abs(safe_f)
    per_unit = -0.5 * _LOG_2PI - jnp.log(s) - 0.5 * ((z - safe_f) / s) ** 2
  else:
    same_sign = jnp.sign(z) == jnp.sign(safe_f)
    log_abs_z = jnp.log(jnp.where(same_sign, jnp.abs(z), 1.0))
    u = (log_abs_z - jnp.log(jnp.abs(safe_f))) / scale
    per_unit = jnp.where(same_sign, -0.5 * _LOG_2PI - jnp.log(scale) - log_abs_z - 0.5 * u * u, -jnp.inf)
  return jnp.sum(jnp.where(atom, 0.0, per_unit), axis=-1)


def log_conditional_density(z: ArrayLike, f: ArrayLike, *, noise: str, scale: ArrayLike,
                            zero_tol: float = 0.0) -> Array:
  """log p(z | x_i) in z-space, summed over the continuous coordinates of f: z [..., N, D] → [..., N].

  For log-normal noise a z whose sign differs from f's has density 0 (−inf). Averaging −log p(z|x) over draws from
  `sample_representation` gives a Monte Carlo check of `conditional_entropy`.
  """
  f = _as_float_2d(f)
  _check_noise(noise)
  scale = _as_scale(scale, f)
  z = jnp.asarray(z, f.dtype)
  if z.shape[-2:] != f.shape:
    raise ValueError(f'z must end in the shape of f {f.shape}, got {z.shape}.')
  return _log_conditional_density_core(z, f, scale, np.asarray(zero_tol, f.dtype), noise=noise)


def gaussian_upper_bound(f: ArrayLike, *, noise: str, scale: ArrayLike, key: Array, num_noise_samples: int = 1,
                         zero_tol: float = 0.0) -> MIEstimate:
  """Upper bound on I(X;Z): ½ log det(2πe Σ_Z) − mean_i h(Z|X = x_i), Σ_Z the Ledoit–Wolf covariance of noisy z.

  The Gaussian has the largest entropy for a given covariance, so ½ log det(2πe Σ_Z) ≥ h(Z). Ledoit–Wolf shrinks
  the sample covariance S towards tr(S)/D · I; log det is concave and log det(tr(S)/D · I) ≥ log det S (AM–GM), so
  the shrinkage can only raise the bound over the plain sample covariance, never lower it. Coordinates that are 0
  for every input are constant and dropped (exact); partially zero coordinates are atoms, for which no
  differential-entropy bound holds, so they raise a ValueError.

  Returns:
    MIEstimate(value, stderr); the stderr covers the average of h(Z|X) over inputs only, not the sampling error
    of the covariance estimate.
  """
  from sklearn import covariance  # Imported here: only this bound needs scikit-learn.

  f = _as_float_2d(f)
  _check_noise(noise)
  scale = _as_scale(scale, f)
  atom = np.abs(f) <= zero_tol
  dead = atom.all(axis=0)
  partial = atom.any(axis=0) & ~dead
  if partial.any():
    raise ValueError(f'gaussian_upper_bound: {int(partial.sum())} coordinates of f are zero for some inputs and not '
                     f'others (atoms of Z); the Gaussian bound on differential entropy does not apply. Use '
                     f'dropout_mutual_information, which handles zero activations, or a representation without zeros.')
  keep = np.flatnonzero(~dead)
  if keep.size == 0:
    return MIEstimate(jnp.zeros((), f.dtype), jnp.zeros((), f.dtype))
  f, scale = f[:, keep], scale[:, keep]
  z = sample_representation(f, noise=noise, scale=scale, key=key, num_samples=num_noise_samples)
  z = np.asarray(z, np.float64).reshape(-1, keep.size)  # scikit-learn works in float64 on the host.
  cov = covariance.LedoitWolf(assume_centered=False).fit(z).covariance_
  sign, logdet = np.linalg.slogdet(cov)
  if sign <= 0:
    raise ValueError('gaussian_upper_bound: the shrunk covariance is not positive definite (degenerate samples).')
  h_bound = 0.5 * (keep.size * (_LOG_2PI + 1.0) + logdet)
  h_cond = np.asarray(conditional_entropy(f, noise=noise, scale=scale), np.float64)
  n = h_cond.shape[0]
  stderr = h_cond.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
  return MIEstimate(jnp.asarray(h_bound - h_cond.mean(), f.dtype), jnp.asarray(stderr, f.dtype))


def label_information_from_ce(ce_nats: float, labels: ArrayLike | None = None, *,
                              class_priors: Sequence[float] | None = None) -> float:
  """Lower bound I(Z;Y) ≥ H(Y) − CE from a classifier's cross-entropy (nats) on Z, as the paper uses.

  Any decoder q(y|z) gives H(Y|Z) ≤ E[−log q(y|z)] = CE. H(Y) comes from the empirical label frequencies of
  `labels` or from `class_priors` (exactly one of the two).
  """
  if (labels is None) == (class_priors is None):
    raise ValueError('label_information_from_ce: pass exactly one of labels (an [N] integer array) or class_priors.')
  if not np.isfinite(ce_nats) or ce_nats < 0:
    raise ValueError(f'ce_nats must be a finite cross-entropy >= 0 in nats, got {ce_nats!r}.')
  if labels is not None:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
      raise ValueError(f'labels must be a non-empty 1-D array of non-negative integer classes, got {labels!r}.')
    h_y = _entropy_from_counts(np.bincount(labels))
  else:
    priors = np.asarray(class_priors, np.float64)
    if priors.ndim != 1 or (priors < 0).any() or not np.isclose(priors.sum(), 1.0, atol=1e-6):
      raise ValueError(f'class_priors must be a 1-D array of probabilities summing to 1, got {class_priors!r}.')
    h_y = _entropy_from_counts(priors)
  return h_y - float(ce_nats)


def binning_mutual_information(t: ArrayLike, labels: ArrayLike | None = None, num_bins: int = 30,
                               bin_range: tuple[float, float] | None = None) -> BinningInformation:
  """Deterministic-network baseline (Shwartz-Ziv & Tishby 2017): I(X;T) and I(T;Y) by binning T.

  Every unit of t is cut into `num_bins` equal bins over `bin_range` (default: the min and max of t over all
  units, the original's per-layer range); each row becomes a discrete symbol. With X uniform over the N rows and T a
  deterministic function of X, I(X;T) = H(T_binned) ≤ log N and I(T;Y) = H(T) − Σ_y p(y) H(T | Y = y). The result
  depends on the bin width rather than on any noise: it is a baseline, not an estimate of I(X;Z) for noisy layers.
  """
  t = np.asarray(t, np.float64)
  if t.ndim == 1:
    t = t[:, None]
  if t.ndim != 2 or t.shape[0] < 1:
    raise ValueError(f't must be a [N, D] (or [N]) array of activations, got shape {t.shape}.')
  if not np.isfinite(t).all():
    raise ValueError('t contains NaN or infinite values.')
  _check_positive_int('num_bins', num_bins)
  lo, hi = (t.min(), t.max()) if bin_range is None else bin_range
  if not hi >= lo:
    raise ValueError(f'bin_range must be (low, high) with high >= low, got {(lo, hi)!r}.')
  edges = np.linspace(lo, hi, num_bins + 1)
  binned = np.clip(np.digitize(t, edges[1:-1]), 0, num_bins - 1)  # Values at or past the ends go to the end bins.
  _, symbols = np.unique(binned, axis=0, return_inverse=True)
  symbols = symbols.reshape(-1)
  h_t = _entropy_from_counts(np.bincount(symbols))
  i_ty = None
  if labels is not None:
    labels = _check_labels(labels, t.shape[0])
    h_t_given_y = 0.0
    for y in np.unique(labels):
      members = symbols[labels == y]
      h_t_given_y += members.size / labels.size * _entropy_from_counts(np.bincount(members))
    i_ty = h_t - h_t_given_y
  return BinningInformation(h_t, i_ty)


def echo_mutual_information_nats(log_s: ArrayLike, d_max: int | None = None,
                                 clip_factor: float | None = None) -> MIEstimate:
  """Echo noise's exact I(X;Z) = −E_x Σ_d log S_d(x) through the same (value, stderr) interface.

  The per-example value is exact (`echo.echo_mutual_information`), so the stderr is 0.0; the mean over the batch
  is then I(X;Z) with X uniform over that batch. Pass the d_max (or the clip factor) the layer sampled with: the
  rate depends on it.
  """
  per_example = echo.echo_mutual_information(jnp.asarray(log_s), d_max=d_max, clip_factor=clip_factor)
  value = jnp.mean(per_example)
  return MIEstimate(value, jnp.zeros((), value.dtype))
