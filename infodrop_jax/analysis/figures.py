"""The analysis figures (matplotlib, headless Agg), each drawn only from the arrays the analysis also saves.

Every figure is meant for a reader who has not seen the code: a title with the run (dataset, model, method, β),
axis labels with units, legends and colour bars.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.patches as mpatches  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def _save(fig: Any, path: str) -> None:
  fig.savefig(path, dpi=100, bbox_inches='tight')
  plt.close(fig)


def heatmaps(path: str, images: np.ndarray, maps: Mapping[str, np.ndarray], *, title: str,
             boxes: np.ndarray | None = None, box_label: str = 'digit box') -> None:
  """One row per image: the input, then each layer's KL map (nats per location); one colour scale per layer."""
  names = list(maps)
  k = images.shape[0]
  fig, axes = plt.subplots(k, len(names) + 1, figsize=(2.0 * (len(names) + 1), 1.7 * k + 1.6), squeeze=False,
                           layout='constrained')
  for col, name in enumerate(names, start=1):
    vmin, vmax = float(maps[name].min()), float(maps[name].max())
    for row in range(k):
      im = axes[row, col].imshow(maps[name][row], cmap='inferno', vmin=vmin, vmax=vmax, interpolation='nearest')
    bar = fig.colorbar(im, ax=axes[:, col], location='bottom', shrink=0.9, aspect=12)
    bar.set_label('KL (nats per location)', fontsize=8)
    axes[0, col].set_title(f'{name}\n{maps[name].shape[1]}×{maps[name].shape[2]}', fontsize=8)
  for row in range(k):
    image = images[row]
    axes[row, 0].imshow(image[..., 0] if image.shape[-1] == 1 else _display(image), cmap='gray',
                        interpolation='nearest')
    if boxes is not None:
      y0, x0, y1, x1 = boxes[row]
      axes[row, 0].add_patch(mpatches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color='lime',
                                                linewidth=1.2))
  axes[0, 0].set_title('input' + (f'\n(green: {box_label})' if boxes is not None else ''), fontsize=8)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=10)
  _save(fig, path)


def _display(image: np.ndarray) -> np.ndarray:
  """Colour images (possibly whitened) stretched to [0, 1] for display."""
  lo, hi = float(image.min()), float(image.max())
  return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def info_per_layer(path: str, names: Sequence[str], per_layer: Sequence[float], per_unit: Sequence[float],
                   units: Sequence[int], *, title: str) -> None:
  """Bars: test-set mean KL per layer (nats per example) and per unit (nats per unit)."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(max(7.0, 1.6 * len(names) + 4), 3.6))
  x = np.arange(len(names))
  left.bar(x, per_layer, color='tab:blue')
  left.set_ylabel('KL (nats per example)')
  left.set_title('information per layer')
  right.bar(x, per_unit, color='tab:orange')
  right.set_ylabel('KL (nats per unit)')
  right.set_title('information per unit')
  labels = [f'{n}\n({u} units)' for n, u in zip(names, units)]
  for ax in (left, right):
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlabel('noisy layer')
  fig.suptitle(title, fontsize=10)
  _save(fig, path)


def prior_fit(path: str, bin_edges: np.ndarray, counts: np.ndarray, prior_density: np.ndarray, *, prior_label: str,
              zero_fraction: float, title: str) -> None:
  """Histogram of log z (as a density) of the positive activations against the prior's density on log z."""
  fig, ax = plt.subplots(figsize=(6.4, 3.8))
  widths = np.diff(bin_edges)
  total = counts.sum()
  density = counts / (total * widths) if total else counts
  ax.bar(bin_edges[:-1], density, width=widths, align='edge', alpha=0.6, color='tab:blue',
         label=f'activations (noise on), {100 * (1 - zero_fraction):.1f} % > 0')
  centres = 0.5 * (bin_edges[:-1] + bin_edges[1:])
  ax.plot(centres, prior_density, color='tab:red', linewidth=2, label=prior_label)
  ax.set_xlabel('log z (natural log of the post-noise activation)')
  ax.set_ylabel('density of log z (per nat)')
  ax.legend(fontsize=8)
  ax.set_title(title, fontsize=10)
  _save(fig, path)


def curves(path: str, train: Mapping[str, tuple[np.ndarray, np.ndarray]],
           test: Mapping[str, tuple[np.ndarray, np.ndarray]], *, epoch_of_step: float, title: str) -> None:
  """Training curves against epochs: loss terms, per-layer KL, and test error D and N."""
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  loss_ax, kl_ax, err_ax = axes
  for name, label in (('train/loss', 'loss'), ('train/ce', 'cross-entropy'), ('train/beta_lz', 'β·Lz')):
    if name in train:
      steps, values = train[name]
      loss_ax.plot(steps / epoch_of_step, values, label=label)
  loss_ax.set_ylabel('nats per example')
  loss_ax.set_title('training loss terms')
  for name, (steps, values) in train.items():
    if name.startswith('train/kl/'):
      kl_ax.plot(steps / epoch_of_step, values, label=name[len('train/kl/'):])
  kl_ax.set_ylabel('KL (nats per example)')
  kl_ax.set_yscale('symlog', linthresh=1.0)
  kl_ax.set_title('KL per noisy layer (train batches)')
  for name, label in (('test/error_d', 'test error, noise off (D)'), ('test/error_n', 'test error, noise on (N)'),
                      ('train/accuracy', None)):
    if name in test and label:
      steps, values = test[name]
      err_ax.plot(steps / epoch_of_step, 100 * values, marker='o', label=label)
  if 'train/accuracy' in train:
    steps, values = train['train/accuracy']
    err_ax.plot(steps / epoch_of_step, 100 * (1 - values), alpha=0.6, label='train error (noisy batches)')
  err_ax.set_ylabel('error (%)')
  err_ax.set_title('error')
  for ax in axes:
    ax.set_xlabel('epoch')
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  _save(fig, path)
