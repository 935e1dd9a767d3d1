"""KL terms of the noise posteriors against their priors, and the paper's loss normalisation.

Every noise layer in `infodrop_jax.layers` sows its per-unit KL map (float32, the shape of its signal, batch first)
into the `KL_COLLECTION` collection under the name `KL_MAP_NAME`. The helpers here turn such a collection (what
`model.apply(..., mutable=[KL_COLLECTION])` returns under that key) into the quantities the loss and the analyses
need, so no layer has to know how it is normalised and no caller has to recompute a KL.

The helpers take axis 0 of every map as the batch axis. Layers inside `nn.scan` or `nn.vmap` must therefore stack
the collection behind the batch axis: `variable_axes={'kl': 1}`.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

KL_COLLECTION = 'kl'
KL_MAP_NAME = 'kl_map'

# Floor added to alpha by the original implementation; keeps log(alpha) finite. The log-uniform KL is normalised
# against max_alpha + ALPHA_FLOOR, the largest alpha a layer can produce, so that it is zero at the cap.
ALPHA_FLOOR = 0.001

# Kingma, Salimans & Welling (2015) polynomial fit of -KL for Gaussian dropout N(1, alpha) under the log-uniform
# prior, valid for alpha <= 1.
_VD_C1, _VD_C2, _VD_C3 = 1.16145124, -1.50204118, 0.58629921


def log_uniform_kl(alpha: jax.Array, max_alpha: float) -> jax.Array:
  """Per-unit KL for ReLU units under the log-uniform prior q(z) ∝ 1/z (paper, Prop. 2).

  KL = -H(log ε) + const = -log α + const; the constant is chosen, as in the original, so the KL is zero at the
  largest alpha the layer can produce (max_alpha + ALPHA_FLOOR) and positive below it.
  """
  alpha = jnp.asarray(alpha, jnp.float32)
  return -jnp.log(alpha / (max_alpha + ALPHA_FLOOR))


def log_normal_kl(alpha: jax.Array, log_f: jax.Array, mu: jax.Array, sigma: jax.Array) -> jax.Array:
  """Per-unit KL(N(log f, α²) ‖ N(μ, σ²)) on log z: softplus units under a log-normal prior (paper, Prop. 3).

  The paper states it for μ = 0 after absorbing log f; the original code (and this function) keep the general form
  ½[(α² + (log f − μ)²)/σ²] − log(α/σ) − ½.
  """
  alpha = jnp.asarray(alpha, jnp.float32)
  log_f = jnp.asarray(log_f, jnp.float32)
  return 0.5 * (jnp.square(alpha) + jnp.square(log_f - mu)) / jnp.square(sigma) - jnp.log(alpha / sigma) - 0.5


def variational_dropout_kl(log_alpha: jax.Array) -> jax.Array:
  """Per-unit KL of Gaussian dropout N(1, α) under the log-uniform prior, Kingma et al. (2015) approximation.

  -KL ≈ C + ½ log α + c1 α + c2 α² + c3 α³ for α ≤ 1. The unknown constant C is fixed so that the KL is zero at
  α = 1 (the largest alpha the variational layer allows), the same normalisation as `log_uniform_kl`.
  """
  log_alpha = jnp.asarray(log_alpha, jnp.float32)
  alpha = jnp.exp(log_alpha)
  neg_kl = 0.5 * log_alpha + _VD_C1 * alpha + _VD_C2 * alpha**2 + _VD_C3 * alpha**3
  neg_kl_at_one = _VD_C1 + _VD_C2 + _VD_C3
  return neg_kl_at_one - neg_kl


def _path_name(path: tuple[Any, ...]) -> str:
  """'block1/noise' from a tree path like (DictKey('block1'), DictKey('noise'), DictKey('kl_map'), SequenceKey(0))."""
  parts = []
  for entry in path:
    key = getattr(entry, 'key', None)
    if isinstance(key, str) and key != KL_MAP_NAME:
      parts.append(key)
  return '/'.join(parts)


def _kl_maps(kl_collection: Mapping[str, Any] | None) -> dict[str, list[jax.Array]]:
  """Groups the sown KL maps by layer path; a layer applied several times contributes several maps."""
  if not kl_collection:
    return {}
  grouped: dict[str, list[jax.Array]] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(kl_collection)[0]:
    grouped.setdefault(_path_name(path), []).append(leaf)
  return grouped


def _sum_units(kl_map: jax.Array) -> jax.Array:
  """Sum over every non-batch axis: the KL of one example's whole representation at this layer."""
  kl_map = jnp.asarray(kl_map, jnp.float32)
  return jnp.sum(kl_map.reshape(kl_map.shape[0], -1), axis=1)


def kl_per_example(kl_collection: Mapping[str, Any] | None) -> jax.Array | float:
  """Σ_layers Σ_units KL for each example, shape (batch,); 0.0 for an empty collection."""
  totals = [_sum_units(m) for maps in _kl_maps(kl_collection).values() for m in maps]
  return sum(totals[1:], totals[0]) if totals else 0.0


def kl_per_layer(kl_collection: Mapping[str, Any] | None) -> dict[str, jax.Array]:
  """mean_batch(Σ_units KL) for each layer (in nats), keyed by the layer's module path."""
  return {name: sum(jnp.mean(_sum_units(m)) for m in maps) for name, maps in _kl_maps(kl_collection).items()}


def total_kl(kl_collection: Mapping[str, Any] | None, n_train: int) -> jax.Array | float:
  """Lz = Σ_layers mean_batch(Σ_units KL) / n_train: the paper's normalisation, making beta comparable to it."""
  if n_train <= 0:
    raise ValueError(f'n_train must be the (positive) size of the training set, got {n_train}.')
  per_layer = kl_per_layer(kl_collection)
  return sum(per_layer.values()) / n_train if per_layer else 0.0
