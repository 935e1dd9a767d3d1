"""The figures of a sweep's report (`infodrop_jax.sweep.report` draws them into W/report.md).

`plot` draws the metrics of W/results_mean.csv against the sweep's x axis (mean ± std over seeds, one line per
series); `heatmap_grid` the KL heat maps of one point per value of x, the same test images in every row.
`metric_label` is the y-axis label a reader sees for a results column.

This module knows the sweep only through its arguments (the sweep config, rows, file paths): it does not import
`infodrop_jax.sweep`, which imports it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.patches as mpatches
import matplotlib.ticker as mticker
from matplotlib.figure import Figure
import ml_collections
import numpy as np

# Axis labels for the metrics of results.csv (a column's prefix before ':'), for readers who have not seen the code.
METRIC_LABELS = {
    'test_error_d': 'test error, noise off (D), %',
    'test_error_n': 'test error, noise on (N), %',
    'train_error_d': 'training error, noise off (D), %',
    'train_error_n': 'training error, noise on (N), %',
    'generalization_gap_d': 'test − training error, noise off (fraction)',
    'test_ce_d': 'test cross-entropy, noise off (nats)',
    'kl': 'KL per layer (nats per example)',
    'info_layer': 'information per layer (nats per example)',
    'info_unit': 'information per unit (nats)',
    'mass_in_box': 'share of the KL heat in the digit box',
    'tc_per_dim_nats': 'total correlation per dimension (nats)',
    'nuisance_error': 'nuisance probe error, %',
    'test_neg_elbo': 'test −ELBO = D + R (nats per example)',
    'iw_nll': 'IW bound on −log p(x), k samples (nats)',
    'test_rate': 'test rate R (nats per example)',
    'test_distortion': 'test distortion D (nats per example)',
    'ixz_final': 'I(X;Z) at the last capture (nats)',
    'ixz_compression': 'I(X;Z): peak − last capture (nats)',
    'ixz_headroom': 'log M − largest I(X;Z) captured (nats)',
}


def is_error(metric: str) -> bool:
  """Whether a results column is an error rate (a fraction, shown in %)."""
  return 'error' in metric


def metric_label(metric: str) -> str:
  """The axis label of a results column (`METRIC_LABELS` by its prefix before ':', else the column itself)."""
  label = METRIC_LABELS.get(metric.split(':', 1)[0])
  if label is None:
    return metric + (' (%)' if is_error(metric) else '')
  return label


def _x_positions(labels: list[str]) -> tuple[list[float], bool]:
  try:
    return [float(v) for v in labels], True
  except ValueError:
    return list(range(len(labels))), False


def _float(value: float | None) -> float | None:
  return None if value is None else float(value)


def plot(config: ml_collections.ConfigDict, means: Sequence[Mapping[str, Any]],
         metrics_by_panel: Sequence[tuple[str, Sequence[str]]], path: str, *, x_order: list[str],
         series_order: list[str]) -> None:
  """One panel per (title, columns) of `metrics_by_panel`: each column's mean ± std over seeds (the `means` rows of
  `sweep.mean_rows`) against `config.report.x`, one line per value of `config.report.series`.

  `x_order` are the labels of the x axis in the sweep's order ([''] when x is no axis), `series_order` those of the
  series axis ([''] when there is none).
  """
  x = str(config.report.x)
  series_axis = str(config.report.series or '')
  positions, numeric = _x_positions(x_order)
  fig = Figure(figsize=(5.2 * len(metrics_by_panel), 3.9))
  axes = fig.subplots(1, len(metrics_by_panel), squeeze=False)
  for ax, (title, columns) in zip(axes[0], metrics_by_panel):
    scale = 100.0 if is_error(title) else 1.0
    for column in columns:
      for s in series_order:
        xs, ys, es = [], [], []
        for pos, label in zip(positions, x_order):
          for row in means:
            if (x and str(row.get(x)) != label) or (series_axis and str(row.get(series_axis)) != s):
              continue
            m = _float(row.get(f'{column}:mean'))
            if m is None or not math.isfinite(m):
              continue
            e = _float(row.get(f'{column}:std'))
            xs.append(pos)
            ys.append(scale * m)
            es.append(scale * e if e is not None and math.isfinite(e) else 0.0)
        if not xs:
          continue
        parts = [p for p in (s if series_axis else '', column.split(':', 1)[1] if len(columns) > 1 else '') if p]
        ax.errorbar(xs, ys, yerr=es, marker='o', capsize=3, label=', '.join(parts) or column)
    if str(config.report.xscale) == 'log' and numeric:
      ax.set_xscale('log')
      # Ticks at the sweep's values only: matplotlib's minor labels (3×10⁻¹, 4×10⁻¹, …) overprint each other.
      ax.xaxis.set_minor_formatter(mticker.NullFormatter())
      ax.set_xticks(positions, x_order)
    if not numeric:
      ax.set_xticks(positions, x_order)
    ax.set_xlabel(str(config.report.get('x_label', '')) or x)
    ax.set_ylabel(metric_label(title))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  caption = str(config.report.get('caption', ''))
  counts = sorted({int(row.get('seeds_done') or 0) for row in means} - {0})
  if counts and counts[0] == 1 and len(counts) > 1:
    over = f'mean ± std over {counts[0]}–{counts[-1]} finished seeds (no bar: one seed)'
  else:
    over = f'mean ± std over seeds {tuple(config.seeds)}'
  fig.suptitle(f'{config.name}: {over}' + (f'\n{caption}' if caption else ''), fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def heatmap_grid(config: ml_collections.ConfigDict, points: Sequence[tuple[str, str, float | None]],
                 path: str) -> bool:
  """Rows: values of report.x; columns: each layer's KL map for the same test images. Returns whether it drew one.

  `points` are (the point's label on `config.report.x`, its analysis/heatmaps.npz, the canvas size of its cluttered
  images or None), one per row; the digit boxes are drawn only where the size is known.
  """
  x = str(config.report.x)
  rows = []
  for x_label, npz, size in points:
    with np.load(npz) as data:
      rows.append((x_label, size, {k: data[k] for k in data.files}))
  if not rows:
    return False
  k = int(config.report.heatmap_images)
  layers = [n for n in rows[0][2] if n not in ('indices', 'bbox')]
  cols = [(i, layer) for i in range(k) for layer in layers]
  fig = Figure(figsize=(1.5 * len(cols), 1.6 * len(rows) + 0.8))
  axes = fig.subplots(len(rows), len(cols), squeeze=False)
  for r, (x_label, size, data) in enumerate(rows):
    for c, (i, layer) in enumerate(cols):
      ax = axes[r, c]
      ax.set_xticks([])
      ax.set_yticks([])
      if layer not in data or i >= len(data[layer]):
        ax.axis('off')
        continue
      m = data[layer][i]
      ax.imshow(m, cmap='inferno', interpolation='nearest')
      ax.set_xlabel(f'{m.min():.3g}–{m.max():.3g} nats', fontsize=5, labelpad=1)
      if 'bbox' in data and size:
        y0, x0, y1, x1 = (float(v) * m.shape[0] / size for v in data['bbox'][i])
        ax.add_patch(mpatches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color='lime', lw=0.8))
      if r == 0:
        ax.set_title(f'image {i + 1}\n{layer}', fontsize=6)
      if c == 0:
        ax.set_ylabel(f'{"β" if x == "beta" else x} = {x_label}', fontsize=7)
  caption = str(config.report.get('caption', ''))
  seeds = [str(s) for s in config.seeds]
  # Maps of one seed per row: the reader must know which, and that the other seeds are only in the table.
  which = f'seed {seeds[0]} (of seeds {", ".join(seeds)})' if len(seeds) > 1 else f'seed {seeds[0]}'
  fig.suptitle(f'{config.name}: KL per location in nats (noise off; each panel its own colour scale, its range '
               f'below it), the same test images in every row, {which}; green: the digit box'
               + (f'\n{caption}' if caption else ''), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return True
