"""Generated datasets: Cluttered MNIST and Occluded CIFAR-10, vectorised numpy, deterministic from a seed.

Each split draws from its own generator, `split_rng(seed, split)`, and draws all of its random numbers up front,
so the bytes depend only on (seed, split, source arrays, parameters), not on chunking or on the other splits.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from infodrop_jax.data.splits import Split
from infodrop_jax.data.splits import split_rng

_CHUNK = 4096  # Canvases composed at once; bounds the uint16 work buffer.


def _windows(array: np.ndarray, size: int, writeable: bool = False) -> np.ndarray:
  """size x size windows of (N, H, W, ...) arrays: [n, y, x] is the window with top-left corner (y, x)."""
  return sliding_window_view(array, (size, size), axis=(1, 2), writeable=writeable)


# ----------------------------------------------------------------------------------------------------------------
# Cluttered MNIST (DeepMind mnist-cluttered).


def clutter(digits: np.ndarray, rng: np.random.Generator, canvas_size: int = 96, num_distractors: int = 21,
            distractor_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Places each digit on its own cluttered canvas, as DeepMind's mnist_cluttered.lua does.

  Per canvas (following `placeDistractors` and `placeSpriteRandomly` there): `num_distractors` crops of
  distractor_size x distractor_size, each from a uniformly drawn digit of the same set (with replacement, as in
  the original, so rarely the canvas's own digit) at a uniform crop offset, are added at uniform positions; then
  the digit itself is added at a uniform position fully inside the canvas. Intensities add and saturate at the
  maximum (the original clips the [0, 1] sum at 1), which is order-independent, so the result is exactly
  min(255, sum of the pasted uint8 pixels).

  Args:
    digits: uint8 (N, h, w) digits; canvas i holds digit i.
    rng: the split's generator.
    canvas_size: canvas side (`megapatch_w`).
    num_distractors: `num_dist`.
    distractor_size: `dist_w`.

  Returns:
    canvases uint8 (N, canvas_size, canvas_size); bbox int32 (N, 4), the digit's placement box (y0, x0, y1, x1),
    end exclusive (the full h x w sprite, blank margin included); ink_bbox int32 (N, 4), the tight box of the
    digit's non-zero pixels on the canvas (the placement box for a blank digit).
  """
  n, h, w = digits.shape
  if h > canvas_size or w > canvas_size or distractor_size > min(h, w):
    raise ValueError(f'clutter: digits {h}x{w} and distractors {distractor_size} must fit a {canvas_size} canvas.')
  digit_yx = np.stack([rng.integers(0, canvas_size - h + 1, n), rng.integers(0, canvas_size - w + 1, n)], -1)
  sources = rng.integers(0, n, (n, num_distractors))
  crop_yx = rng.integers(0, min(h, w) - distractor_size + 1, (n, num_distractors, 2))
  paste_yx = rng.integers(0, canvas_size - distractor_size + 1, (n, num_distractors, 2))

  crops_of = _windows(digits, distractor_size)
  canvases = np.empty((n, canvas_size, canvas_size), np.uint8)
  for start in range(0, n, _CHUNK):
    rows = np.arange(start, min(start + _CHUNK, n))
    canvas = np.zeros((len(rows), canvas_size, canvas_size), np.uint16)
    local = np.arange(len(rows))
    # Each assignment touches one window per canvas, so the fancy-indexed `+=` never writes a pixel twice.
    dist_windows = _windows(canvas, distractor_size, writeable=True)
    for j in range(num_distractors):
      crops = crops_of[sources[rows, j], crop_yx[rows, j, 0], crop_yx[rows, j, 1]]
      dist_windows[local, paste_yx[rows, j, 0], paste_yx[rows, j, 1]] += crops
    digit_windows = sliding_window_view(canvas, (h, w), axis=(1, 2), writeable=True)
    digit_windows[local, digit_yx[rows, 0], digit_yx[rows, 1]] += digits[rows]
    np.minimum(canvas, 255, out=canvas)
    canvases[rows] = canvas

  bbox = np.concatenate([digit_yx, digit_yx + (h, w)], axis=1).astype(np.int32)
  ink_rows, ink_cols = digits.any(axis=2), digits.any(axis=1)
  first = lambda mask: np.where(mask.any(1), mask.argmax(1), 0)
  last = lambda mask: np.where(mask.any(1), mask.shape[1] - mask[:, ::-1].argmax(1), mask.shape[1])
  ink = np.stack([first(ink_rows), first(ink_cols), last(ink_rows), last(ink_cols)], axis=1)
  ink_bbox = (ink + np.tile(digit_yx, 2)).astype(np.int32)
  return canvases, bbox, ink_bbox


def cluttered_mnist(mnist: dict[str, Split], seed: int, valid_size: int = 10000, canvas_size: int = 96,
                    num_distractors: int = 21, distractor_size: int = 8) -> dict[str, Split]:
  """Cluttered MNIST train/valid/test from MNIST train/test.

  As DeepMind's download_mnist.lua: valid is built from the last `valid_size` MNIST training digits (in source
  order), train from the others, test from MNIST test; distractors come from the digits of the same split only.
  Labels are the digit classes; extras 'bbox' and 'ink_bbox' are described in `clutter`.
  """
  n_train = len(mnist['train'])
  if not 0 <= valid_size < n_train:
    raise ValueError(f'config.data.valid_size = {valid_size}: expected in [0, {n_train}) (MNIST train size).')
  bases = {'train': (mnist['train'], slice(0, n_train - valid_size)), 'test': (mnist['test'], slice(None))}
  if valid_size:
    bases['valid'] = (mnist['train'], slice(n_train - valid_size, n_train))
  splits = {}
  for split, (base, rows) in bases.items():
    canvases, bbox, ink_bbox = clutter(base.images[rows, ..., 0], split_rng(seed, split), canvas_size,
                                       num_distractors, distractor_size)
    splits[split] = Split(canvases[..., None], base.labels[rows], {'bbox': bbox, 'ink_bbox': ink_bbox})
  return splits


# ----------------------------------------------------------------------------------------------------------------
# Occluded CIFAR-10.


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) antialiased linear resampling weights (triangle filter, rows sum to 1).

  When shrinking, the triangle is widened by in_size / out_size (like PIL's BILINEAR), so thin digit strokes
  are averaged rather than dropped.
  """
  scale = in_size / out_size
  support = max(scale, 1.0)
  centres = (np.arange(out_size) + 0.5) * scale - 0.5
  weights = np.clip(1 - np.abs(np.arange(in_size)[None, :] - centres[:, None]) / support, 0, None)
  return weights / weights.sum(axis=1, keepdims=True)


def occlude(images: np.ndarray, digits: np.ndarray, rng: np.random.Generator, digit_fraction: float = 0.5
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Paints one MNIST digit over each image.

  The digit is resized to round(digit_fraction * H) pixels square and composited as opaque white ink with the
  digit's intensity as alpha (out = image + alpha * (255 - image)): full strokes hide the image, anti-aliased
  edges blend, and the digit stays visible on any background. Position is uniform with the digit fully inside.
  Digits are drawn without replacement when there are enough, else with replacement.

  Args:
    images: uint8 (N, H, W, C).
    digits: uint8 (M, h, w) occluders.
    rng: the split's generator.
    digit_fraction: occluder side / image side.

  Returns:
    occluded uint8 (N, H, W, C); index int64 (N,) of the digit used per image; bbox int32 (N, 4) (y0, x0, y1, x1),
    end exclusive, of the occluder.
  """
  n, height, width, _ = images.shape
  size = max(1, round(digit_fraction * min(height, width)))
  index = rng.permutation(len(digits))[:n] if n <= len(digits) else rng.integers(0, len(digits), n)
  yx = np.stack([rng.integers(0, height - size + 1, n), rng.integers(0, width - size + 1, n)], -1)
  resize_rows, resize_cols = resize_matrix(digits.shape[1], size), resize_matrix(digits.shape[2], size)

  out = images.copy()
  windows = _windows(out, size, writeable=True)  # [n, y, x] -> (C, size, size)
  for start in range(0, n, _CHUNK):
    rows = np.arange(start, min(start + _CHUNK, n))
    # np.einsum without `optimize` uses its own loops (not BLAS), so the bytes do not depend on the BLAS build.
    small = np.einsum('nij,pj->nip', digits[index[rows]].astype(np.float32), resize_cols.astype(np.float32))
    alpha = np.einsum('oi,nip->nop', resize_rows.astype(np.float32), small) / np.float32(255)
    patch = windows[rows, yx[rows, 0], yx[rows, 1]].astype(np.float32)
    painted = patch + alpha[:, None] * (np.float32(255) - patch)
    windows[rows, yx[rows, 0], yx[rows, 1]] = np.clip(np.rint(painted), 0, 255).astype(np.uint8)
  bbox = np.concatenate([yx, yx + size], axis=1).astype(np.int32)
  return out, index, bbox


def occluded_cifar10(cifar: dict[str, Split], mnist: dict[str, Split], seed: int, digit_fraction: float = 0.5
                     ) -> dict[str, Split]:
  """Occluded CIFAR-10: CIFAR train/test occluded by MNIST train/test digits respectively.

  Labels are the CIFAR classes (main task); extras 'nuisance_label' (int32, the digit class, nuisance task) and
  'bbox' (the occluder box, see `occlude`).
  """
  splits = {}
  for split in ('train', 'test'):
    occluded, index, bbox = occlude(cifar[split].images, mnist[split].images[..., 0], split_rng(seed, split),
                                    digit_fraction)
    nuisance = mnist[split].labels[index].astype(np.int32)
    splits[split] = Split(occluded, cifar[split].labels, {'nuisance_label': nuisance, 'bbox': bbox})
  return splits
