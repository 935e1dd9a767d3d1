"""A sweep's numbers: W/results.csv (one row per point, from its summary.json and analysis/analysis.json) and
W/results_mean.csv (mean, sample std, min, max and the count of finite values over each setting's finished seeds)."""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from infodrop_jax.sweep.commands import status_of, unreadable_files
from infodrop_jax.sweep.files import MEANS_FILE, RESULTS_FILE, STATUS_FILE, read_json, replacing
from infodrop_jax.sweep.spec import SEED_AXIS, Point, axes_of, points

_SUMMARY_COLUMNS = (('test/error_d', 'test_error_d'), ('test/error_n', 'test_error_n'), ('test/ce_d', 'test_ce_d'),
                    ('test/ce_n', 'test_ce_n'), ('test/neg_elbo', 'test_neg_elbo'), ('test/rate', 'test_rate'),
                    ('test/distortion', 'test_distortion'))
# A VAE run's analysis: the importance-weighted bound on −log p(x) (Gaussian and softplus-information latents).
_VAE_ANALYSIS_COLUMNS = (('test/iw_nll', 'iw_nll'), ('test/iw_nll_stderr', 'iw_nll_stderr'))


def number(value: Any) -> float | None:
  """`value` as a float ('nan' / 'inf' strings included), or None when it is no number (None, a bool, text)."""
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, (int, float)):
    return float(value)
  try:
    return float(value)  # 'nan' / 'inf' strings of summary.json
  except (TypeError, ValueError):
    return None


def point_row(config: ml_collections.ConfigDict, point: Point, point_dir: str) -> dict[str, Any]:
  """One row of results.csv: axis labels, status, and the numbers of summary.json and analysis/analysis.json."""
  analyze = bool(config.analyze)
  row: dict[str, Any] = {**point.labels, 'point': point.name, 'status': status_of(point, point_dir, analyze)}
  if row['status'] == 'unreadable':
    row['problem'] = '; '.join(unreadable_files(point_dir, analyze))
  summary = read_json(os.path.join(point_dir, 'summary.json'))
  status = read_json(os.path.join(point_dir, STATUS_FILE)) or {}
  if isinstance(summary, dict):
    for key, column in _SUMMARY_COLUMNS:
      if key in summary:
        row[column] = summary[key]
    for key in sorted(summary):
      if key.startswith('test/kl/'):
        row[f'kl:{key[len("test/kl/"):]}'] = summary[key]
    row['steps'] = summary.get('steps')
    row['epochs'] = summary.get('epochs')
    row['train_wall_time_s'] = summary.get('wall_time_s')
  if status.get('wall_time_s') is not None and row['status'] in ('done', 'failed'):
    row['wall_time_s'] = status['wall_time_s']
  analysis = read_json(os.path.join(point_dir, 'analysis', 'analysis.json'))
  if isinstance(analysis, dict):
    fit = analysis.get('train_error') or {}
    for key in ('train_error_d', 'train_error_n', 'generalization_gap_d'):
      if key in fit:
        row[key] = fit[key]
    for layer, value in (analysis.get('info_per_layer') or {}).items():
      row[f'info_layer:{layer}'] = value
    for layer, value in (analysis.get('info_per_unit') or {}).items():
      row[f'info_unit:{layer}'] = value
    tc = analysis.get('total_correlation') or {}
    if tc:
      row['tc_nats'] = tc.get('tc_nats')
      row['tc_per_dim_nats'] = tc.get('tc_per_dim_nats')
    clean = analysis.get('total_correlation_clean') or {}
    if clean:
      row['tc_clean_per_dim_nats'] = clean.get('tc_per_dim_nats')
      row['tc_floor_per_dim_nats'] = clean.get('floor_per_dim_nats')
      row['tc_excess_per_dim_nats'] = clean.get('excess_per_dim_nats')
    localization = analysis.get('localization') or {}
    for layer, value in (localization.get('mass_in_box') or {}).items():
      row[f'mass_in_box:{layer}'] = value
    for layer, value in (localization.get('pointing') or {}).items():
      row[f'pointing:{layer}'] = value
    if localization:
      row['localization_chance'] = localization.get('chance')
    for key, column in _VAE_ANALYSIS_COLUMNS:
      if key in analysis:
        row[column] = analysis[key]
    # The IW bound's change from each k to the next (`iw_k_step:1-10` ...), paired over the same images.
    for step in (analysis.get('iw_k_sweep') or {}).get('steps') or ():
      name = f'{step["from_k"]}-{step["to_k"]}'
      row[f'iw_k_step:{name}'], row[f'iw_k_step_stderr:{name}'] = step.get('change'), step.get('stderr')
    row.update(_plane_columns(analysis.get('information_plane') or {}))
    nuisance = analysis.get('nuisance') or {}
    if nuisance:
      row['nuisance_error'] = nuisance.get('nuisance_error')
      row['nuisance_chance'] = nuisance.get('chance_error')
  return row


def _plane_columns(plane: dict[str, Any]) -> dict[str, Any]:
  """Per noisy layer, from a captured information plane (`plane_figures.analyze_information_plane`): ixz_final and
  ixz_compression (peak − final) on the training examples, and ixz_headroom = log M − the largest I(X;Z) captured on
  either split (how far every estimate stayed below the estimator's ceiling)."""
  out: dict[str, Any] = {}
  log_m = number(plane.get('log_m'))
  splits = plane.get('splits') or {}
  layers = {layer for split in splits.values() for layer in (split.get('layers') or {})}
  for layer in sorted(layers):
    train = ((splits.get('train') or {}).get('layers') or {}).get(layer) or {}
    out[f'ixz_final:{layer}'] = train.get('final_ixz')
    out[f'ixz_compression:{layer}'] = train.get('compression')
    peaks = [number(((split.get('layers') or {}).get(layer) or {}).get('peak_ixz')) for split in splits.values()]
    peaks = [p for p in peaks if p is not None]
    if log_m is not None and peaks:
      out[f'ixz_headroom:{layer}'] = log_m - max(peaks)
  # The final checkpoint's I(X;Z) on M and on 2M other training examples (`CaptureHook.m_stability`).
  for layer, s in sorted((plane.get('m_stability') or {}).items()):
    if isinstance(s, dict):
      for field in ('ixz', 'ixz_stderr', 'ixz_2m', 'ixz_2m_stderr'):
        out[f'{field.replace("ixz", "ixz_m", 1) if field in ("ixz", "ixz_stderr") else field}:{layer}'] = s.get(field)
  return out


def _columns(rows: list[dict[str, Any]], first: Sequence[str]) -> list[str]:
  columns = list(first)
  for row in rows:
    columns += [k for k in row if k not in columns]
  return columns


def _cell(value: Any) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _write_csv(path: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
  with replacing(path, newline='') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      writer.writerow([_cell(row.get(c)) for c in columns])


_NOT_METRICS = ('point', 'status', 'problem', 'steps', 'epochs')


def mean_rows(config: ml_collections.ConfigDict, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Rows of results_mean.csv: one per setting of the axes other than seed, over its finished seeds."""
  names = [a[0] for a in axes_of(config) if a[0] != SEED_AXIS]
  groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault(tuple(row[n] for n in names), []).append(row)
  out = []
  for key, members in groups.items():
    done = [r for r in members if r['status'] == 'done']
    mean = {**dict(zip(names, key)), 'seeds': len(members), 'seeds_done': len(done)}
    metrics = [c for c in _columns(done, []) if c not in names and c != SEED_AXIS and c not in _NOT_METRICS]
    for metric in metrics:
      values = [v for v in (number(r.get(metric)) for r in done) if v is not None and math.isfinite(v)]
      if not values:
        continue
      m = sum(values) / len(values)
      mean[f'{metric}:mean'] = m
      mean[f'{metric}:std'] = (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
                               if len(values) > 1 else None)
      mean[f'{metric}:min'] = min(values)
      mean[f'{metric}:max'] = max(values)
      mean[f'{metric}:n'] = len(values)  # finished seeds with a finite value (NaN and absent ones are left out)
    out.append(mean)
  return out


def write_results(config: ml_collections.ConfigDict, workdir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """W/results.csv (one row per point) and W/results_mean.csv (mean and sample std over the finished seeds)."""
  all_points = points(config)
  rows = [point_row(config, p, os.path.join(workdir, p.name)) for p in all_points]
  axis_names = [a[0] for a in axes_of(config)]
  _write_csv(os.path.join(workdir, RESULTS_FILE), rows, _columns(rows, [*axis_names, 'point', 'status']))
  return rows, write_means(config, rows, workdir)


def write_means(config: ml_collections.ConfigDict, rows: list[dict[str, Any]], workdir: str) -> list[dict[str, Any]]:
  """W/results_mean.csv of `rows` (results.csv's rows); returns its rows."""
  means = mean_rows(config, rows)
  mean_first = [a[0] for a in axes_of(config) if a[0] != SEED_AXIS] + ['seeds', 'seeds_done']
  _write_csv(os.path.join(workdir, MEANS_FILE), means, _columns(means, mean_first))
  return means


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
  with open(path, encoding='utf-8', newline='') as f:
    return list(csv.DictReader(f))
