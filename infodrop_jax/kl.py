"""KL terms of the noise posteriors against their priors, and the paper's loss normalisation.

Every noise layer in `infodrop_jax.layers` sows its per-unit KL map (float32, the shape of its signal, batch first)
into the `KL_COLLECTION` collection under the name `KL_MAP_NAME`. The helpers here turn such a collection (what
`model.apply(..., mutable=[KL_COLLECTION])` returns under that key) into the quantities the loss and the analyses
need, so no layer has to know how it is normalised and no caller has to recompute a KL.

The helpers take axis `batch_axis` (default 0) of every map as the batch axis; every other axis is summed as units.
Nothing in a map says which axis is the batch, so:
- layers inside `nn.scan` or `nn.vmap` must stack the collection behind the batch axis (`variable_axes={'kl': 1}`),
  or every map must be stacked the same way and `batch_axis` says where the batch is;
- `jax.vmap` over examples outside the model hands the helpers per-example maps: apply the model to the batch, or
  call the helpers outside the vmap on the stacked collection.
Maps whose sizes along the batch axis disagree, or maps with no axis besides the batch, raise ValueError.
An empty collection gives 0: right for a model without KL layers, but also what forgetting `mutable=['kl']` in
`apply` gives; pass `allow_empty=False` where the model has noise layers to make that an error.

Every helper also takes an NNX module (`infodrop_jax.nnx_layers` / `nnx_models`) in place of the collection: its
layers' `KL` variables hold each layer's mean_batch(Σ_units KL) of the last call, which `total_kl` and
`kl_per_layer` read; the per-example helpers need the layers' maps (`keep_kl_map=True`).
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


def _is_nnx_module(value: Any) -> bool:
  # No import of Flax here: a module can only have been built with it loaded.
  return any(c.__module__.startswith('flax.nnx') and c.__name__ == 'Module' for c in type(value).__mro__)


def _nnx_terms(model: Any, marker: str) -> dict[str, Any]:
  """{layer path: value} of the NNX variables whose type has `marker` ('kl_term' or 'kl_map')."""
  from flax import nnx  # pylint: disable=g-import-not-at-top  (only reached with an NNX module, Flax loaded)
  terms = {}
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Variable) and getattr(type(node), marker, False):
      terms['/'.join(str(p) for p in path[:-1])] = node.get_value()
  return terms


def _nnx_maps(model: Any, caller: str) -> dict[str, list[jax.Array]]:
  maps = _nnx_terms(model, 'kl_map')
  if not maps or any(jnp.shape(m) == (0,) for m in maps.values()):
    raise ValueError(f'{caller}: this NNX model keeps only each layer\'s KL summed over units and averaged over the '
                     'batch (what total_kl and kl_per_layer read); build its layers with keep_kl_map=True, and call it '
                     'once, for the per-unit maps.')
  return {name: [m] for name, m in maps.items()}


def _check_collection(kl_collection: Any, caller: str) -> None:
  if isinstance(kl_collection, Mapping) and (set(kl_collection) & {KL_COLLECTION, 'params', 'batch_stats'}):
    raise ValueError(
        f'{caller}: got the whole variables dict (collections {sorted(kl_collection)}); pass its '
        f"'{KL_COLLECTION}' entry: `_, state = model.apply(..., mutable=True); {caller}(state['{KL_COLLECTION}'], "
        '...)`.')


def _path_name(path: tuple[Any, ...]) -> str:
  """'block1/noise' from a tree path like (DictKey('block1'), DictKey('noise'), DictKey('kl_map'), SequenceKey(0))."""
  parts = []
  for entry in path:
    key = getattr(entry, 'key', None)
    if isinstance(key, str) and key != KL_MAP_NAME:
      parts.append(key)
  return '/'.join(parts)


def _kl_maps(kl_collection: Mapping[str, Any] | None, batch_axis: int, allow_empty: bool, caller: str
             ) -> dict[str, list[jax.Array]]:
  """Groups the sown KL maps by layer path (a layer applied several times contributes several maps), after checking
  that they share one batch size along `batch_axis`."""
  if _is_nnx_module(kl_collection):
    return _nnx_maps(kl_collection, caller)
  _check_collection(kl_collection, caller)
  grouped: dict[str, list[jax.Array]] = {}
  if kl_collection:
    for path, leaf in jax.tree_util.tree_flatten_with_path(kl_collection)[0]:
      grouped.setdefault(_path_name(path), []).append(leaf)
  if not grouped:
    if not allow_empty:
      raise ValueError(
          f'{caller}: the KL collection is empty ({kl_collection!r}), so the KL term would be 0. Apply the model with '
          f"mutable=['{KL_COLLECTION}'] and pass the returned collection (`_, updates = model.apply(..., "
          f"mutable=['{KL_COLLECTION}']); {caller}(updates['{KL_COLLECTION}'], ...)`), or pass allow_empty=True for a "
          'model without KL layers.')
    return grouped
  sizes = {}
  for name, maps in grouped.items():
    for kl_map in maps:
      shape = jnp.shape(kl_map)
      if len(shape) < 2 or not -len(shape) <= batch_axis < len(shape):
        raise ValueError(
            f'{caller}: the KL map of layer {name!r} has shape {shape}; expected a batch axis (batch_axis='
            f'{batch_axis}) and at least one unit axis. Per-example maps come from jax.vmap outside the model: apply '
            'the model to the whole batch, or call the KL helpers outside the vmap.')
      sizes.setdefault(shape[batch_axis], []).append(f'{name or "<root>"} {shape}')
  if len(sizes) > 1:
    listing = '; '.join(f'size {size}: {", ".join(names)}' for size, names in sizes.items())
    raise ValueError(
        f'{caller}: the KL maps disagree on the batch size along batch_axis={batch_axis} ({listing}). A layer inside '
        "nn.scan/nn.vmap stacks its maps on the axis its variable_axes gives 'kl': use variable_axes={'kl': 1} to keep "
        'the batch first, and do not vmap over examples outside the model.')
  return grouped


def _sum_units(kl_map: jax.Array, batch_axis: int) -> jax.Array:
  """Sum over every non-batch axis: the KL of one example's whole representation at this layer."""
  kl_map = jnp.moveaxis(jnp.asarray(kl_map, jnp.float32), batch_axis, 0)
  return jnp.sum(kl_map.reshape(kl_map.shape[0], -1), axis=1)


def kl_per_example(kl_collection: Mapping[str, Any] | None, *, batch_axis: int = 0,
                   allow_empty: bool = True) -> jax.Array | float:
  """Σ_layers Σ_units KL for each example, shape (batch,); 0.0 for an empty collection (see the module docstring)."""
  maps = _kl_maps(kl_collection, batch_axis, allow_empty, 'kl_per_example')
  totals = [_sum_units(m, batch_axis) for layer_maps in maps.values() for m in layer_maps]
  return sum(totals[1:], totals[0]) if totals else 0.0


def kl_maps_by_layer(kl_collection: Mapping[str, Any] | None, *, batch_axis: int = 0,
                     allow_empty: bool = True) -> dict[str, jax.Array]:
  """The per-unit KL map of each layer (float32, the layer's signal shape), keyed by the layer's module path.

  A layer applied several times contributes the sum of its maps. These are what information heatmaps show.
  """
  maps = _kl_maps(kl_collection, batch_axis, allow_empty, 'kl_maps_by_layer')
  return {name: sum(layer_maps[1:], layer_maps[0]) for name, layer_maps in maps.items()}


def kl_per_layer(kl_collection: Mapping[str, Any] | None, *, batch_axis: int = 0,
                 allow_empty: bool = True) -> dict[str, jax.Array]:
  """mean_batch(Σ_units KL) for each layer (in nats), keyed by the layer's module path."""
  if _is_nnx_module(kl_collection):
    return _nnx_per_layer(kl_collection, allow_empty, 'kl_per_layer')
  return _per_layer(_kl_maps(kl_collection, batch_axis, allow_empty, 'kl_per_layer'), batch_axis)


def _nnx_per_layer(model: Any, allow_empty: bool, caller: str) -> dict[str, jax.Array]:
  terms = _nnx_terms(model, 'kl_term')
  if not terms and not allow_empty:
    raise ValueError(f'{caller}: the NNX model {type(model).__name__} has no layer with a KL term, so the KL term '
                     'would be 0; pass allow_empty=True for a model without KL layers.')
  return terms


def _per_layer(maps: dict[str, list[jax.Array]], batch_axis: int) -> dict[str, jax.Array]:
  return {name: sum(jnp.mean(_sum_units(m, batch_axis)) for m in layer_maps) for name, layer_maps in maps.items()}


def total_kl(kl_collection: Mapping[str, Any] | None, n_train: int, *, batch_axis: int = 0,
             allow_empty: bool = True) -> jax.Array | float:
  """Lz = Σ_layers mean_batch(Σ_units KL) / n_train: the paper's normalisation, making beta comparable to it.

  Args:
    kl_collection: the 'kl' collection returned by `model.apply(..., mutable=['kl'])`, or an NNX module whose
      layers keep their last call's KL (`infodrop_jax.nnx_layers`).
    n_train: the size of the training set.
    batch_axis: the batch axis of every KL map (see the module docstring).
    allow_empty: whether an empty collection (None or {}) gives 0; False makes it an error, which catches a
      forgotten `mutable=['kl']` for models with noise layers.
  """
  if n_train <= 0:
    raise ValueError(f'n_train must be the (positive) size of the training set, got {n_train}.')
  if _is_nnx_module(kl_collection):
    per_layer = _nnx_per_layer(kl_collection, allow_empty, 'total_kl')
  else:
    per_layer = _per_layer(_kl_maps(kl_collection, batch_axis, allow_empty, 'total_kl'), batch_axis)
  return sum(per_layer.values()) / n_train if per_layer else 0.0
