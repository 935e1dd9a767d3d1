"""The numbers behind the analyses, as functions of arrays: no workdir, no model, no plotting.

- `channel_heatmaps`: a layer's KL map summed over channels (the original `plot` command, paper Fig. 2).
- `BoxLocalization`: how much of a heatmap's mass, and its peak, fall inside a known box (Cluttered MNIST digits).
- `MomentAccumulator` / `gaussian_total_correlation`: Gaussian total correlation of a representation (the original
  `correlation` command, paper Fig. 5); `independence_floor` and `shuffled_total_correlation`: what independent
  features of the same (d, n) give, the floor a TC must clear before it says anything about disentanglement.
- `train_softmax_probe`: a softmax regression on a frozen (noisy) representation (the nuisance probe, paper Fig. 4).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def channel_heatmaps(kl_map: np.ndarray) -> np.ndarray:
  """[B, h, w, C] per-unit KL → [B, h, w] nats per location (summed over channels)."""
  kl_map = np.asarray(kl_map, np.float64)
  if kl_map.ndim != 4:
    raise ValueError(f'channel_heatmaps: expected a convolutional KL map [batch, h, w, channels], got shape '
                     f'{kl_map.shape}.')
  return kl_map.sum(axis=-1)


def _cell_coverage(boxes_lo: np.ndarray, boxes_hi: np.ndarray, input_size: int, cells: int) -> np.ndarray:
  """[B, cells]: input pixels of each map cell (nearest-neighbour upsampling) that lie in [lo, hi) per example."""
  pixels = np.arange(input_size)
  cell_of_pixel = pixels * cells // input_size  # nearest-neighbour upsampling: pixel y shows cell floor(y·h/H)
  inside = (pixels >= boxes_lo[:, None]) & (pixels < boxes_hi[:, None])  # [B, input_size]
  one_hot = cell_of_pixel[:, None] == np.arange(cells)[None, :]  # [input_size, cells]
  return inside.astype(np.float64) @ one_hot.astype(np.float64)


@dataclasses.dataclass
class BoxLocalization:
  """Accumulates, over batches, how well heatmaps point at boxes given in input pixels.

  For each example the map m (cells h × w) is shifted to m − min(m) ≥ 0 and upsampled by nearest neighbour to the
  input (H × W). `mass_in_box` is the fraction of that mass inside the box (end-exclusive (y0, x0, y1, x1)); a
  constant map counts as uniform. `pointing` is whether the centre of the argmax cell lies in the box. `chance` is
  the box's share of the image: what a map without information about the box would score on `mass_in_box`.
  Reported values are means over all examples added.
  """
  input_height: int
  input_width: int
  mass_in_box: float = 0.0
  pointing: float = 0.0
  chance: float = 0.0
  count: int = 0

  def add(self, maps: np.ndarray, boxes: np.ndarray) -> None:
    maps = np.asarray(maps, np.float64)
    boxes = np.asarray(boxes, np.int64)
    b, h, w = maps.shape
    y0, x0, y1, x1 = (np.clip(boxes[:, i], 0, size) for i, size in
                      enumerate((self.input_height, self.input_width, self.input_height, self.input_width)))
    rows = _cell_coverage(y0, y1, self.input_height, h)  # [B, h] pixels of each cell row inside the box rows
    cols = _cell_coverage(x0, x1, self.input_width, w)
    pixels_per_row = _cell_coverage(np.zeros(b, np.int64), np.full(b, self.input_height), self.input_height, h)
    pixels_per_col = _cell_coverage(np.zeros(b, np.int64), np.full(b, self.input_width), self.input_width, w)
    shifted = maps - maps.reshape(b, -1).min(axis=1)[:, None, None]
    total = np.einsum('bij,bi,bj->b', shifted, pixels_per_row, pixels_per_col)
    inside = np.einsum('bij,bi,bj->b', shifted, rows, cols)
    area = (y1 - y0) * (x1 - x0) / (self.input_height * self.input_width)
    mass = np.where(total > 0, inside / np.where(total > 0, total, 1.0), area)
    peak = shifted.reshape(b, -1).argmax(axis=1)
    centre_y = (peak // w + 0.5) * self.input_height / h
    centre_x = (peak % w + 0.5) * self.input_width / w
    hit = (centre_y >= y0) & (centre_y < y1) & (centre_x >= x0) & (centre_x < x1)
    n = self.count + b
    self.mass_in_box += (mass.sum() - b * self.mass_in_box) / n
    self.pointing += (hit.sum() - b * self.pointing) / n
    self.chance += (area.sum() - b * self.chance) / n
    self.count = n

  def result(self) -> dict[str, float]:
    return {'mass_in_box': float(self.mass_in_box), 'pointing': float(self.pointing), 'chance': float(self.chance),
            'num_images': int(self.count)}


class MomentAccumulator:
  """Running count, sum and sum of outer products (float64) of rows of [n, D] batches: a covariance in one pass."""

  def __init__(self, dim: int):
    self.n = 0
    self.total = np.zeros(dim, np.float64)
    self.outer = np.zeros((dim, dim), np.float64)

  def add(self, rows: np.ndarray) -> None:
    rows = np.asarray(rows, np.float64)
    self.n += rows.shape[0]
    self.total += rows.sum(axis=0)
    self.outer += rows.T @ rows

  def covariance(self) -> np.ndarray:
    if self.n < 2:
      raise ValueError(f'MomentAccumulator: a covariance needs at least 2 samples, got {self.n}.')
    mean = self.total / self.n
    return (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)


def gaussian_total_correlation(covariance: np.ndarray, num_samples: int) -> dict[str, Any]:
  """Gaussian total correlation of a representation from its covariance (the original `correlation` command).

  TC = Σ_d h(x_d) − h(x) for a Gaussian with this covariance = −½ log det R, R the correlation matrix. The original
  reports it per dimension (÷ D). Dimensions without variance (a unit that never changes) have no correlation and
  are left out (`constant_dims`). Where the samples do not exceed the dimensions the sample R is singular and TC
  is infinite: `singular` is then True and `tc` None (the caller should use fewer dimensions).

  Returns:
    {'tc_nats', 'tc_per_dim_nats', 'dims', 'constant_dims', 'samples', 'singular', 'eigenvalues' (of R, numpy)}.
  """
  covariance = np.atleast_2d(np.asarray(covariance, np.float64))  # np.cov of one column is a 0-d array
  variance = np.diag(covariance)
  keep = variance > 1e-12 * max(float(variance.max(initial=0.0)), 1e-300)
  std = np.sqrt(variance[keep])
  correlation = covariance[np.ix_(keep, keep)] / np.outer(std, std)
  eigenvalues = np.linalg.eigvalsh(correlation)
  dims = int(keep.sum())
  singular = num_samples <= dims or eigenvalues.min(initial=1.0) <= 1e-12
  tc = None if singular else float(-0.5 * np.sum(np.log(eigenvalues)))
  # No dimension varies (e.g. one dead unit): TC 0, and no per-dimension value.
  return {'tc_nats': tc, 'tc_per_dim_nats': None if tc is None or not dims else tc / dims, 'dims': dims,
          'constant_dims': int((~keep).sum()), 'samples': int(num_samples), 'singular': bool(singular),
          'eigenvalues': eigenvalues}


def independence_floor(dims: int, samples: int) -> float:
  """The expected Gaussian TC per dimension (nats) of `dims` independent Gaussian features from `samples` samples.

  The sample correlation matrix R of independent normal columns has det R distributed as Π_{i=2..d} B((n−i)/2,
  (i−1)/2) (independent Beta variables), so E[−½ log det R] = −½ Σ_{i=2..d} [ψ((n−i)/2) − ψ((n−1)/2)]: positive,
  although the true TC is 0 (e.g. 0.086 nats per dimension for d = 3072, n = 10 000).
  """
  from scipy.special import digamma  # pylint: disable=g-import-not-at-top
  if dims < 2:  # nothing to correlate
    return 0.0
  if samples <= dims:
    return float('inf')
  i = np.arange(2, dims + 1, dtype=np.float64)
  return float(-0.5 * np.sum(digamma((samples - i) / 2.0) - digamma((samples - 1) / 2.0)) / dims)


def shuffled_total_correlation(rows: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
  """`gaussian_total_correlation` of `rows` [n, D] with each column permuted on its own: the same marginals and
  (d, n), any dependence between the columns destroyed. Its TC is the independence floor of this representation
  (it accounts for non-Gaussian marginals, e.g. the point mass of ReLU zeros at the log floor, that the closed form
  `independence_floor` does not)."""
  shuffled = rng.permuted(np.asarray(rows, np.float64), axis=0)
  return gaussian_total_correlation(np.cov(shuffled, rowvar=False), shuffled.shape[0])


def train_softmax_probe(features_fn: Callable[[jax.Array, jax.Array], jax.Array], train_inputs: np.ndarray,
                        train_labels: np.ndarray, test_inputs: np.ndarray, test_labels: np.ndarray, num_classes: int,
                        *, epochs: int, batch_size: int, learning_rate: float, key: jax.Array,
                        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Softmax regression on `features_fn(inputs, key)`, trained with Adam; the representation itself stays frozen.

  `features_fn` is called inside jit with a fresh key per batch, so a noisy representation is seen with new noise
  every time, as a classifier on top of the noisy network would see it. Inputs are fed in a seeded random order,
  dropping the last partial batch when training; the test error uses every test example.

  Returns:
    {'test_error', 'train_error' (over the last epoch's batches, before each update), 'epochs', 'batch_size',
    'learning_rate', 'feature_dim'}.
  """
  if len(train_inputs) < batch_size:
    raise ValueError(f'probe: {len(train_inputs)} training examples is fewer than one batch of {batch_size}.')
  key, init_key = jax.random.split(key)
  sample = jax.eval_shape(features_fn, jnp.asarray(train_inputs[:batch_size]), init_key)
  dim = int(np.prod(sample.shape[1:]))
  params = {'w': jnp.zeros((dim, num_classes), jnp.float32), 'b': jnp.zeros((num_classes,), jnp.float32)}
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  def logits_of(params, inputs, key):
    features = jax.lax.stop_gradient(features_fn(inputs, key)).reshape(inputs.shape[0], -1).astype(jnp.float32)
    return features @ params['w'] + params['b']

  @jax.jit
  def step(params, opt_state, inputs, labels, key):
    def loss_fn(params):
      logits = logits_of(params, inputs, key)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits
    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, jnp.sum(jnp.argmax(logits, -1) != labels)

  @jax.jit
  def errors(params, inputs, labels, key):
    return jnp.sum(jnp.argmax(logits_of(params, inputs, key), -1) != labels)

  steps = len(train_inputs) // batch_size
  train_error = float('nan')
  for epoch in range(epochs):
    key, order_key = jax.random.split(key)
    order = np.asarray(jax.random.permutation(order_key, len(train_inputs)))
    wrong = 0
    for i in range(steps):
      rows = np.sort(order[i * batch_size:(i + 1) * batch_size])
      params, opt_state, w = step(params, opt_state, jnp.asarray(train_inputs[rows]),
                                  jnp.asarray(train_labels[rows]), jax.random.fold_in(key, i))
      wrong += int(w)
    train_error = wrong / (steps * batch_size)
    if progress:
      progress(f'probe epoch {epoch + 1}/{epochs}: train error {100 * train_error:.2f} %')
  key, test_key = jax.random.split(key)
  wrong = 0
  for start in range(0, len(test_inputs), batch_size):
    wrong += int(errors(params, jnp.asarray(test_inputs[start:start + batch_size]),
                        jnp.asarray(test_labels[start:start + batch_size]), jax.random.fold_in(test_key, start)))
  return {'test_error': wrong / len(test_inputs), 'train_error': train_error, 'epochs': int(epochs),
          'batch_size': int(batch_size), 'learning_rate': float(learning_rate), 'feature_dim': dim}
