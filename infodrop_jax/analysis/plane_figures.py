"""Figures and numbers of the information planes a run captured (`W/information_plane.jsonl`, written by
`infodrop_jax.information_plane`'s training hook).

`plot_information_plane` draws one run, `plot_method_overlay` several (e.g. information vs Gaussian dropout), and
`analyze_information_plane` writes a run's figure, the arrays it was drawn from (npz) and its headline numbers.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.figure import Figure
import numpy as np

from infodrop_jax import information_plane


def _layer_names(records: Sequence[Mapping[str, Any]], split: str = 'train') -> list[str]:
  names: list[str] = []
  for r in records:
    for name in r.get(split, {}).get('layers', {}):
      if name not in names:
        names.append(name)
  return names


def _series(records: Sequence[Mapping[str, Any]], split: str, layer: str, field: str) -> np.ndarray:
  """One field of one layer over the records (NaN where missing or null)."""
  values = []
  for r in records:
    layer_values = r.get(split, {}).get('layers', {}).get(layer, {})
    value = layer_values.get(field) if field in layer_values else r.get(split, {}).get(field)
    values.append(np.nan if value is None else float(value))
  return np.asarray(values, np.float64)


def _run_label(records: Sequence[Mapping[str, Any]]) -> str:
  if not records:
    return ''
  r = records[-1]
  beta = f', β = {r["beta"]:g}' if r.get('method') in ('information', 'variational', 'lognormal_constant') else ''
  return f'{r.get("method", "?")} dropout{beta}, M = {r.get("num_examples")}'


def plot_information_plane(records: Sequence[Mapping[str, Any]], path: str, title: str | None = None,
                           split: str = 'train') -> str:
  """One figure: per noisy layer, I(X;Z) (x) against I(Z;Y) (y) in nats over training, colour = epoch.

  Circles: I(Z;Y) = H(Y) − H(Y|Z) from the mixture; crosses: the bound H(Y) − CE with the noise on. The dashed
  lines mark log M (the ceiling of the I(X;Z) estimate) and H(Y). Returns `path`.
  """
  names = [n for n in _layer_names(records, split)
           if np.isfinite(_series(records, split, n, 'ixz')).any()] or _layer_names(records, split)
  epochs = np.asarray([r['epoch'] for r in records], np.float64)
  fig = Figure(figsize=(5.2 * max(1, len(names)) + 0.8, 4.4))
  axes = fig.subplots(1, max(1, len(names)), squeeze=False)
  scatter = None
  for ax, name in zip(axes[0], names):
    ixz = _series(records, split, name, 'ixz')
    izy = _series(records, split, name, 'izy')
    izy_ce = _series(records, split, name, 'izy_ce_n')
    ok = np.isfinite(ixz)
    ax.plot(ixz[ok], izy[ok], '-', color='0.75', lw=0.8, zorder=1)
    scatter = ax.scatter(ixz[ok], izy[ok], c=epochs[ok], cmap='viridis', s=22, zorder=2,
                         label='I(Z;Y) = H(Y) − H(Y|Z), mixture')
    ax.scatter(ixz[ok], izy_ce[ok], c=epochs[ok], cmap='viridis', marker='x', s=22, zorder=2,
               label='I(Z;Y) ≥ H(Y) − CE (noise on)')
    if records:
      ax.axvline(records[-1]['log_m'], ls='--', color='0.5', lw=0.8, label='log M (estimator ceiling)')
      ax.axhline(records[-1][split]['h_y'], ls=':', color='0.5', lw=0.8, label='H(Y)')
    if not ok.any():
      reason = next((r[split]['layers'][name].get('reason') for r in records
                     if r[split]['layers'].get(name, {}).get('reason')), 'no finite estimate')
      ax.text(0.5, 0.5, f'I(X;Z) not finite:\n{reason[:60]}…', ha='center', va='center', transform=ax.transAxes,
              fontsize=8)
    _full_plane(ax, records, split, np.concatenate([ixz[ok], [0.0]]), np.concatenate([izy[ok], izy_ce[ok], [0.0]]))
    units = records[-1][split]['layers'].get(name, {}).get('units') if records else None
    ax.set_title(f'{name} ({units} units)')
    ax.set_xlabel('I(X;Z) [nats]')
    ax.set_ylabel('I(Z;Y) [nats]')
    ax.legend(fontsize=7, loc='lower right')
  if scatter is not None:
    fig.colorbar(scatter, ax=axes[0].tolist(), label='epoch')
  fig.suptitle(title or f'Information plane ({split} examples): {_run_label(records)}')
  fig.savefig(path, dpi=110, bbox_inches='tight')
  return path


def _full_plane(ax: Any, records: Sequence[Mapping[str, Any]], split: str, xs: np.ndarray, ys: np.ndarray) -> None:
  """Axes from 0 to past log M and H(Y): a trajectory pinned at the estimator's ceiling shows as such."""
  if not records:
    return
  xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
  x_max = max(records[-1]['log_m'], xs.max(initial=0.0))
  y_min, y_max = min(0.0, ys.min(initial=0.0)), max(records[-1][split]['h_y'], ys.max(initial=0.0))
  ax.set_xlim(0.0, 1.05 * x_max)
  ax.set_ylim(y_min - 0.05 * (y_max - y_min), y_max + 0.05 * (y_max - y_min))


def plot_method_overlay(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str, title: str | None = None,
                        split: str = 'train') -> str:
  """The information planes of several runs (e.g. information vs Gaussian dropout) overlaid; two panels per layer.

  Left: the whole plane from 0 to log M and H(Y), with the mixture I(Z;Y). Right: zoomed on the trajectories, with
  the mixture I(Z;Y) (circles) and the bound H(Y) − CE with the noise on (crosses). Each run has its own colour
  map, light at the first epoch and dark at the last; the square marks the start, the star the end. Returns `path`.
  """
  names: list[str] = []
  for records in runs.values():
    names += [n for n in _layer_names(records, split) if n not in names]
  cmaps = ['Blues', 'Oranges', 'Greens', 'Purples', 'Reds', 'Greys']
  rows = max(1, len(names))
  fig = Figure(figsize=(12, 4.6 * rows))
  axes = fig.subplots(rows, 2, squeeze=False)
  all_records = [r for records in runs.values() for r in records]
  for (ax_full, ax_zoom), name in zip(axes, names):
    for zoomed, ax in ((False, ax_full), (True, ax_zoom)):
      xs, ys = [], []
      for (label, records), cmap_name in zip(runs.items(), cmaps):
        cmap = matplotlib.colormaps[cmap_name]
        ixz, izy = _series(records, split, name, 'ixz'), _series(records, split, name, 'izy')
        izy_ce = _series(records, split, name, 'izy_ce_n')
        epochs = np.asarray([r['epoch'] for r in records], np.float64)
        ok = np.isfinite(ixz) & np.isfinite(izy)
        if not ok.any():
          ax.plot([], [], color=cmap(0.75), label=f'{label}: I(X;Z) not finite')
          continue
        shade = cmap(0.3 + 0.7 * epochs[ok] / max(epochs.max(), 1e-9))
        ax.plot(ixz[ok], izy[ok], '-', color=cmap(0.6), lw=0.8, zorder=1)
        ax.scatter(ixz[ok], izy[ok], c=shade, s=18, zorder=2)
        ax.scatter(ixz[ok][:1], izy[ok][:1], color=cmap(0.45), marker='s', s=50, edgecolor='k', zorder=3)
        ax.scatter(ixz[ok][-1:], izy[ok][-1:], color=cmap(0.95), marker='*', s=140, edgecolor='k', zorder=3,
                   label=f'{label}, epochs 0→{epochs[ok][-1]:g}')
        xs.append(ixz[ok])
        ys.append(izy[ok])
        if zoomed:
          # The first capture (untrained net, CE ≈ log 10) would stretch the zoom over the whole axis.
          ax.scatter(ixz[ok][1:], izy_ce[ok][1:], c=shade[1:], marker='x', s=18, zorder=2)
          ax.plot([], [], 'x', color=cmap(0.8), label=f'{label}: H(Y) − CE, noise on')
          ys.append(izy_ce[ok][1:])
      if all_records:
        ax.axvline(all_records[-1]['log_m'], ls='--', color='0.5', lw=0.8, label='log M (estimator ceiling)')
        ax.axhline(all_records[-1][split]['h_y'], ls=':', color='0.5', lw=0.8, label='H(Y)')
        if not zoomed:
          _full_plane(ax, all_records, split, np.concatenate(xs or [np.zeros(1)]), np.concatenate(ys or [np.zeros(1)]))
      ax.set_title(f'{name}: {"zoom on the trajectories" if zoomed else "the whole plane"}')
      ax.set_xlabel('I(X;Z) [nats]')
      ax.set_ylabel('I(Z;Y) [nats]')
      ax.legend(fontsize=7, loc='lower left' if zoomed else 'lower right')
  fig.suptitle(title or f'Information planes ({split} examples), ■ start → ★ end, darker = later epoch')
  fig.tight_layout()
  fig.savefig(path, dpi=100, bbox_inches='tight')
  return path


def analyze_information_plane(workdir: str, out_dir: str) -> dict[str, Any]:
  """Reads W/information_plane.jsonl; writes information_plane.png and information_plane.npz to `out_dir`.

  The npz holds `step`, `epoch` and, per split and layer, `<split>/<layer>/<field>` for ixz, ixz_stderr, ixz_loo,
  izy, izy_stderr and kl, plus `<split>/izy_ce_n` and `<split>/izy_ce_d` (NaN where not finite). The returned dict
  (JSON-ready, nats) has per split and layer the first, peak and final I(X;Z) with the peak's epoch, the final
  I(Z;Y) both ways and the compression ΔI(X;Z) = peak − final, for analysis.json.
  """
  records = information_plane.load_records(workdir)
  os.makedirs(out_dir, exist_ok=True)
  arrays: dict[str, np.ndarray] = {'step': np.asarray([r['step'] for r in records]),
                                   'epoch': np.asarray([r['epoch'] for r in records], np.float64)}
  summary: dict[str, Any] = {'records': len(records), 'method': records[-1].get('method') if records else None,
                             'beta': records[-1].get('beta') if records else None,
                             'num_examples': records[-1].get('num_examples') if records else None,
                             'log_m': records[-1].get('log_m') if records else None, 'splits': {}}
  for split in information_plane.SPLITS:
    for field in ('izy_ce_n', 'izy_ce_d', 'error_n', 'error_d'):
      arrays[f'{split}/{field}'] = _series(records, split, '', field)
    split_summary = {'final_izy_ce_n': _nan_to_none(arrays[f'{split}/izy_ce_n'][-1]) if records else None,
                     'layers': {}}
    for layer in _layer_names(records, split):
      for field in ('ixz', 'ixz_stderr', 'ixz_loo', 'izy', 'izy_stderr', 'kl'):
        arrays[f'{split}/{layer}/{field}'] = _series(records, split, layer, field)
      ixz, izy = arrays[f'{split}/{layer}/ixz'], arrays[f'{split}/{layer}/izy']
      layer_summary: dict[str, Any] = {'final_izy': _nan_to_none(izy[-1]),
                                       'final_kl': _nan_to_none(arrays[f'{split}/{layer}/kl'][-1])}
      if np.isfinite(ixz).any():
        peak = int(np.nanargmax(ixz))
        layer_summary.update(first_ixz=_nan_to_none(ixz[0]), peak_ixz=float(ixz[peak]),
                             peak_epoch=float(arrays['epoch'][peak]), final_ixz=_nan_to_none(ixz[-1]),
                             final_ixz_stderr=_nan_to_none(arrays[f'{split}/{layer}/ixz_stderr'][-1]),
                             compression=_nan_to_none(ixz[peak] - ixz[-1]))
      else:
        layer_summary.update(final_ixz=None, reason=records[-1][split]['layers'][layer].get('reason'))
      split_summary['layers'][layer] = layer_summary
    summary['splits'][split] = split_summary
  np.savez(os.path.join(out_dir, 'information_plane.npz'), **arrays)
  figure = plot_information_plane(records, os.path.join(out_dir, 'information_plane.png'))
  summary['figure'] = figure
  return summary


def _nan_to_none(value: float) -> float | None:
  return float(value) if np.isfinite(value) else None
