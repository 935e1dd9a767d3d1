"""Figures and numbers of the information planes a run captured (`W/information_plane.jsonl`, written by
`infodrop_jax.information_plane`'s training hook).

`plot_information_plane` draws one run, `plot_method_overlay` several (e.g. information vs Gaussian dropout), and
`analyze_information_plane` writes a run's figure, the arrays it was drawn from (npz) and its headline numbers.
"""
from __future__ import annotations

import contextlib
import os
import warnings
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


def _layer_names_of_runs(record_lists: Sequence[Sequence[Mapping[str, Any]]], split: str = 'train') -> list[str]:
  """The noisy layers of several runs' records, in the order they first appear."""
  names: list[str] = []
  for records in record_lists:
    names += [n for n in _layer_names(records, split) if n not in names]
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
  names = _layer_names_of_runs(list(runs.values()), split)
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


# --- several seeds per method (a sweep's report) -------------------------------------------------------------------

# Whether I(X;Z) falls (compression) is not decided here: a sweep config names the epoch windows before the curves are
# seen and its `window_fall` claims test them (infodrop_jax.sweep.checks). These summaries only describe the curves.


def _seed_arrays(seed_records: Sequence[Sequence[Mapping[str, Any]]], split: str,
                 layer: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(epochs every seed captured, {field: (seeds, captures) array}) for ixz, ixz_stderr, izy and izy_ce_n."""
  common = None
  for records in seed_records:
    epochs = {float(r['epoch']) for r in records}
    common = epochs if common is None else common & epochs
  epochs = np.asarray(sorted(common or ()), np.float64)
  fields = {}
  for field in ('ixz', 'ixz_stderr', 'izy', 'izy_ce_n'):
    rows = []
    for records in seed_records:
      by_epoch = {float(r['epoch']): r for r in records}
      rows.append(_series([by_epoch[e] for e in epochs], split, layer, field))
    fields[field] = np.asarray(rows, np.float64).reshape(len(seed_records), len(epochs))
  return epochs, fields


def _std(values: np.ndarray, axis: int = 0) -> np.ndarray:
  n = values.shape[axis]
  return np.nanstd(values, axis=axis, ddof=1) if n > 1 else np.full(np.delete(values.shape, axis), np.nan)


@contextlib.contextmanager
def _all_nan_quiet():
  """Silences numpy's warnings on all-NaN slices: their NaN results are handled (reported as None)."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    yield


def curve_summary(epochs: np.ndarray, ixz: np.ndarray, log_m: float) -> dict[str, Any]:
  """The descriptive numbers of one layer's I(X;Z) curves (seeds × captures, nats): the mean curve's first value,
  its highest after the first capture (the untrained net) and its last, the seeds' std at the end, the largest
  single estimate and its distance to log M."""
  with _all_nan_quiet():
    mean = np.nanmean(ixz, axis=0)
    peak = 1 + int(np.nanargmax(mean[1:])) if epochs.size > 1 and np.isfinite(mean[1:]).any() else 0
    return {'captures': int(epochs.size), 'first_epoch': float(epochs[0]), 'last_epoch': float(epochs[-1]),
            'first_ixz': _nan_to_none(float(mean[0])), 'peak_ixz': _nan_to_none(float(mean[peak])),
            'peak_epoch': float(epochs[peak]), 'final_ixz': _nan_to_none(float(mean[-1])),
            'final_ixz_std': _nan_to_none(float(_std(ixz[:, -1:], axis=0)[0])),
            'max_ixz': float(np.nanmax(ixz)), 'headroom': log_m - float(np.nanmax(ixz))}


def summarize_seed_planes(runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
                          split: str = 'train') -> dict[str, Any]:
  """Per method and noisy layer, over the seeds' captures on `split` (nats): `curve_summary` and the final I(Z;Y)
  both ways. `runs` maps a method to the records of each of its seeds. Non-finite numbers come out as None."""
  out: dict[str, Any] = {'split': split, 'methods': {}}
  for method, seed_records in runs.items():
    seed_records = [r for r in seed_records if r]
    if not seed_records:
      continue
    log_m = float(seed_records[0][-1]['log_m'])
    out['log_m'] = log_m
    layers = {}
    for layer in _layer_names_of_runs(seed_records, split):
      epochs, fields = _seed_arrays(seed_records, split, layer)
      if not epochs.size or not np.isfinite(fields['ixz']).any():
        continue
      with _all_nan_quiet():
        final_izy = float(np.nanmean(fields['izy'][:, -1]))
        final_izy_ce = float(np.nanmean(fields['izy_ce_n'][:, -1]))
      layers[layer] = {'seeds': len(seed_records), **curve_summary(epochs, fields['ixz'], log_m),
                       'final_izy': _nan_to_none(final_izy), 'final_izy_ce_n': _nan_to_none(final_izy_ce)}
    out['methods'][method] = layers
  return out


def describe_seed_planes(summary: Mapping[str, Any]) -> list[str]:
  """One sentence per method and layer of `summarize_seed_planes`, with its numbers (no verdict: the claims decide)."""
  lines = []
  log_m = summary.get('log_m')
  for method, layers in summary.get('methods', {}).items():
    for layer, s in layers.items():
      numbers = (f'mean I(X;Z) {s["first_ixz"]:.2f} nats at epoch {s["first_epoch"]:g}, highest '
                 f'{s["peak_ixz"]:.2f} (epoch {s["peak_epoch"]:g}), {s["final_ixz"]:.2f}'
                 + (f' ± {s["final_ixz_std"]:.2f}' if s['final_ixz_std'] is not None else '')
                 + ' at the end') if None not in (s['first_ixz'], s['peak_ixz'], s['final_ixz']) else (
                     'mean I(X;Z) not finite at some captures')
      lines.append(
          f'{method}, `{layer}` ({s["seeds"]} seeds, {s["captures"]} captures to epoch {s["last_epoch"]:g}): '
          f'{numbers}. Largest single estimate {s["max_ixz"]:.2f} nats'
          + (f', {s["headroom"]:.2f} below log M = {log_m:.3f}' if log_m is not None else '')
          + (f'; final I(Z;Y) {s["final_izy"]:.3f} (mixture), {s["final_izy_ce_n"]:.3f} (H(Y) − CE, noise on).'
             if s.get('final_izy') is not None and s.get('final_izy_ce_n') is not None else '.'))
  return lines


def plot_seed_planes(runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], path: str, title: str | None = None,
                     split: str = 'train') -> str:
  """Each method's information plane as the mean over its seeds with ± one sample std bars at every capture (left),
  and I(X;Z) against the epoch, each seed thin and the mean ± std as a band (right); one row per noisy layer.
  Dashed: log M (the estimator's ceiling); dotted: log M − 1. Writes the drawn arrays next to `path` (.npz)."""
  names = _layer_names_of_runs([records for seed_records in runs.values() for records in seed_records], split)
  colours = ['tab:blue', 'tab:orange', 'tab:green', 'tab:purple', 'tab:red', 'tab:grey']
  fig = Figure(figsize=(12, 4.6 * max(1, len(names))))
  axes = fig.subplots(max(1, len(names)), 2, squeeze=False)
  arrays: dict[str, np.ndarray] = {}
  log_m = h_y = None
  for (ax_plane, ax_time), layer in zip(axes, names):
    for (method, seed_records), colour in zip(runs.items(), colours):
      seed_records = [r for r in seed_records if r]
      if not seed_records:
        continue
      log_m, h_y = seed_records[0][-1]['log_m'], seed_records[0][-1][split]['h_y']
      epochs, fields = _seed_arrays(seed_records, split, layer)
      ixz, izy = fields['ixz'], fields['izy']
      mx, my = np.nanmean(ixz, axis=0), np.nanmean(izy, axis=0)
      sx, sy = _std(ixz), _std(izy)
      n = len(seed_records)
      ax_plane.errorbar(mx, my, xerr=np.nan_to_num(sx), yerr=np.nan_to_num(sy), color=colour, lw=0.9, marker='o',
                        ms=3, elinewidth=0.6, capsize=1.5, label=f'{method} dropout (mean ± std, {n} seeds)')
      ax_plane.scatter(mx[:1], my[:1], color=colour, marker='s', s=50, edgecolor='k', zorder=3)
      ax_plane.scatter(mx[-1:], my[-1:], color=colour, marker='*', s=150, edgecolor='k', zorder=3)
      for row in ixz:
        ax_time.plot(epochs, row, color=colour, lw=0.5, alpha=0.5)
      ax_time.plot(epochs, mx, color=colour, lw=1.6, label=f'{method} dropout: mean of {n} seeds (thin: each seed)')
      ax_time.fill_between(epochs, mx - np.nan_to_num(sx), mx + np.nan_to_num(sx), color=colour, alpha=0.2)
      for name, value in (('epoch', epochs), ('ixz', ixz), ('izy', izy), ('izy_ce_n', fields['izy_ce_n'])):
        arrays[f'{method}/{layer}/{name}'] = value
    for ax in (ax_plane, ax_time):
      if log_m is not None:
        (ax.axvline if ax is ax_plane else ax.axhline)(log_m, ls='--', color='0.4', lw=0.8,
                                                     label=f'log M = {log_m:.2f} (estimator ceiling)')
        (ax.axvline if ax is ax_plane else ax.axhline)(log_m - 1.0, ls=':', color='0.4', lw=0.8, label='log M − 1')
    if h_y is not None:
      ax_plane.axhline(h_y, ls='-.', color='0.6', lw=0.8, label=f'H(Y) = {h_y:.3f}')
    ax_plane.set_xlabel('I(X;Z) [nats]')
    ax_plane.set_ylabel('I(Z;Y), mixture estimate [nats]')
    ax_plane.set_title(f'{layer}: information plane ({split} examples), ■ epoch 0 → ★ last')
    ax_time.set_xlabel('epoch')
    ax_time.set_ylabel('I(X;Z) [nats]')
    ax_time.set_title(f'{layer}: I(X;Z) over training')
    ax_plane.legend(fontsize=7, loc='lower right')
    ax_time.legend(fontsize=7, loc='center right')  # between the trajectories and the ceiling lines
  fig.suptitle(title or 'Information planes, mean ± one sample std over seeds at each capture', fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100, bbox_inches='tight')
  np.savez(os.path.splitext(path)[0] + '.npz', **arrays)
  return path
