"""Preprocessing: CIFAR GCN + ZCA (fitted on train, cached), [0, 1] scaling and binarisation for MNIST-like data.

Host-side functions work on numpy arrays once per dataset; `to_unit_interval` and `binarize_stochastic` are pure
jax functions for use inside a jitted train step.
"""
from __future__ import annotations

import pathlib
import warnings

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from infodrop_jax.data import cache
from infodrop_jax.data.splits import Split
from infodrop_jax.data.splits import split_rng

_ROWS_PER_CHUNK = 4096  # Bounds the float64 temporaries of GCN/ZCA to ~100 MB for CIFAR-sized images.


# ----------------------------------------------------------------------------------------------------------------
# MNIST-like data.


def to_unit_interval(images: jax.Array | np.ndarray) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1] (float input is returned as float32 unchanged)."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def binarize_threshold(images: np.ndarray) -> np.ndarray:
  """Fixed binarisation: uint8 pixels -> uint8 in {0, 255}, on where pixel / 255 > 0.5."""
  return np.where(images > 127, np.uint8(255), np.uint8(0))


def binarize_sample(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Fixed stochastic binarisation: one Bernoulli(pixel / 255) draw, uint8 in {0, 255}.

  The same generator state gives the same bytes: the fixed binarised MNIST of the VAE literature.
  """
  # u * 255 < pixel  <=>  u < pixel / 255, without a float copy of the whole dataset.
  on = rng.random(images.shape, dtype=np.float32) * 255 < images
  return np.where(on, np.uint8(255), np.uint8(0))


def binarize_stochastic(images: jax.Array, key: jax.Array) -> jax.Array:
  """Dynamic binarisation: a fresh Bernoulli(images) draw, float32 in {0, 1}.

  Args:
    images: float in [0, 1] (e.g. `to_unit_interval` of the uint8 batch).
    key: PRNG key, e.g. `jax.random.fold_in(key, step)`.
  """
  return jax.random.bernoulli(key, images).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------------
# CIFAR: global contrast normalisation and ZCA whitening, as the original's process_cifar.py (docs/ORIGINALS.md).


def global_contrast_normalize(images: np.ndarray, min_std: float = 1e-8) -> np.ndarray:
  """Per image: subtract the mean over (H, W, C), divide by the std (ddof=1; std := 1 where < min_std).

  Returns float64 of shape (N, H*W*C), flattened in NHWC order (ZCA is equivariant to the flattening order).
  """
  x = images.reshape(len(images), -1).astype(np.float64)
  x -= x.mean(axis=1, keepdims=True)
  std = x.std(axis=1, ddof=1, keepdims=True)
  x /= np.where(std < min_std, 1.0, std)
  return x


def fit_zca(x: np.ndarray, epsilon: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
  """ZCA of rows x (n, d), float64: returns (mean m, W) with whitened = (x - m) @ W.

  The original takes the SVD of D = (x - m) / sqrt(n - 1) and uses W = U diag(1 / (S + epsilon)) U^T, U being
  the singular vectors in pixel space (d-dimensional). Those are exactly the eigenvectors of the covariance
  D^T D (d x d), and the singular values S are the square roots of its eigenvalues. So we eigendecompose the
  d x d covariance instead of taking the SVD of the n x d matrix: the same W (tested against the SVD form), at a
  fraction of the cost for n >> d (50000 x 3072 for CIFAR-10).

  Directions the rows do not span (eigenvalue 0 to rounding: all but n - 1 when n <= d, and the constant image
  that GCN removes) are mapped to 0 rather than multiplied by 1 / epsilon = 10^5: the rows have nothing there, and
  other images' small components there would otherwise dominate their whitened norm (on CIFAR-10 fitted on 512
  images, test images came out 48 000 times the norm of training images). Warns when n - 1 < d.
  """
  n, d = x.shape
  if n < 2:
    raise ValueError(f'ZCA needs at least 2 training examples, got {n}.')
  mean = x.mean(axis=0)
  cov = np.zeros((d, d))
  for start in range(0, n, _ROWS_PER_CHUNK):
    chunk = x[start:start + _ROWS_PER_CHUNK] - mean
    cov += chunk.T @ chunk
  cov /= n - 1
  eigenvalues, u = np.linalg.eigh(cov)
  # Rounding leaves eigenvalues of about eps * d * the largest where the rows span nothing.
  seen = eigenvalues > eigenvalues.max() * d * np.finfo(np.float64).eps * 10
  if n - 1 < d:
    warnings.warn(f'ZCA fitted on {n} examples of {d} dimensions: they span {int(seen.sum())} directions; the '
                  f'whitening keeps those and maps the other {d - int(seen.sum())} to 0. Fit it on more examples '
                  '(the loader fits on the whole training split whatever config.data.limit is).', RuntimeWarning,
                  stacklevel=2)
  s = np.sqrt(eigenvalues[seen])
  w = (u[:, seen] / (s + epsilon)) @ u[:, seen].T
  return mean, w


def apply_zca(x: np.ndarray, mean: np.ndarray, w: np.ndarray) -> np.ndarray:
  """(x - mean) @ w in float64, chunked, returned as float32."""
  out = np.empty(x.shape, np.float32)
  for start in range(0, len(x), _ROWS_PER_CHUNK):
    out[start:start + _ROWS_PER_CHUNK] = (x[start:start + _ROWS_PER_CHUNK] - mean) @ w
  return out


def fitted_zca(train_images: np.ndarray, min_std: float, epsilon: float, cache_directory: pathlib.Path
               ) -> tuple[np.ndarray, np.ndarray]:
  """GCN + ZCA fitted on `train_images`, cached by their content and the parameters. Returns (mean, W)."""
  def fit():
    logging.info('Fitting ZCA on %d training images.', len(train_images))
    mean, w = fit_zca(global_contrast_normalize(train_images, min_std), epsilon)
    return {'mean': mean, 'w': w}

  key = {'train': cache.fingerprint(train_images), 'gcn_min_std': min_std, 'zca_epsilon': epsilon}
  fitted = cache.cached_arrays(cache_directory, 'zca', key, fit)
  return fitted['mean'], fitted['w']


def _gcn_zca(images: np.ndarray, mean: np.ndarray, w: np.ndarray, min_std: float) -> np.ndarray:
  """GCN then the fitted ZCA, chunked so float64 temporaries stay small; float32 NHWC out."""
  out = np.empty(images.shape, np.float32)
  flat = out.reshape(len(images), -1)
  for start in range(0, len(images), _ROWS_PER_CHUNK):
    chunk = images[start:start + _ROWS_PER_CHUNK]
    flat[start:start + len(chunk)] = apply_zca(global_contrast_normalize(chunk, min_std), mean, w)
  return out


def _cached_gcn_zca(splits: dict[str, Split], min_std: float, epsilon: float, cache_directory: pathlib.Path,
                    fit_images: np.ndarray) -> dict[str, Split]:
  """GCN + ZCA (fitted on `fit_images`) of every split; the whitened arrays are cached too, because applying
  a 3072 x 3072 float64 transform to 60000 images takes about a minute on two cores."""
  def build():
    mean, w = fitted_zca(fit_images, min_std, epsilon, cache_directory)
    return {name: Split(_gcn_zca(s.images, mean, w, min_std), s.labels, s.extras) for name, s in splits.items()}

  key = {'train': cache.fingerprint(fit_images), 'gcn_min_std': min_std, 'zca_epsilon': epsilon,
         'splits': {name: cache.fingerprint(s.images, s.labels) for name, s in splits.items()}}
  return cache.cached_splits(cache_directory, 'gcn_zca', key, build)


# ----------------------------------------------------------------------------------------------------------------
# Dispatch on config.data.preprocess.


def apply(data_config: ml_collections.ConfigDict, splits: dict[str, Split],
          fit_images: np.ndarray | None = None) -> dict[str, Split]:
  """Applies `data_config.preprocess` to every split; anything fitted (ZCA) is fitted on `fit_images`, by default
  splits['train'].images (the loader passes the whole training split when config.data.limit takes a subset)."""
  method = data_config.preprocess
  if method in ('none', 'binarize_stochastic'):  # The train step binarises ('binarize_stochastic').
    transform = lambda images: images
  elif method == 'scale':
    transform = lambda images: images.astype(np.float32) / np.float32(255)
  elif method == 'binarize_threshold':
    transform = binarize_threshold
  elif method == 'binarize_sample':
    return {name: Split(binarize_sample(s.images, split_rng(data_config.seed, name)), s.labels, s.extras)
            for name, s in splits.items()}
  elif method == 'gcn':
    transform = lambda images: global_contrast_normalize(images, data_config.gcn_min_std).astype(
        np.float32).reshape(images.shape)
  elif method == 'gcn_zca':
    return _cached_gcn_zca(splits, data_config.gcn_min_std, data_config.zca_epsilon, cache.cache_dir(data_config),
                           splits['train'].images if fit_images is None else fit_images)
  else:
    raise ValueError(f'config.data.preprocess = {method!r}: unknown.')
  return {name: Split(transform(s.images), s.labels, s.extras) for name, s in splits.items()}
