"""A sweep's report: W/report.md with the paper's claim, the verdict of the checks a sweep config declares
(`expect`, see `CHECKS`), the figures (`infodrop_jax.analysis.sweep_figures`), the table of means, the points not
finished, the machine and date, and the commands."""
from __future__ import annotations

import datetime
import os
from typing import Any

import ml_collections

from infodrop_jax.sweep import checks
from infodrop_jax.sweep.commands import analyze_command, display_command, train_command
from infodrop_jax.sweep.files import (LOG_FILE, MEANS_FILE, REPORT_FILE, RESULTS_FILE, STATUS_FILE, SWEEP_FILE,
                                      read_json, replacing, write_json)
from infodrop_jax.sweep.results import number, read_csv, write_means, write_results
from infodrop_jax.sweep.spec import SEED_AXIS, Point, SweepError, axes_of, is_smoke, points, sanitize


# --- checks: does our sweep agree with the paper? (the kinds and their statistics: sweep/checks.py) -------------


def verdicts(config: ml_collections.ConfigDict, rows: list[dict[str, Any]], workdir: str = '') -> tuple[str, list[str]]:
  """('agree' | 'partly' | 'disagree' | 'cannot tell' with the counts, one line per precondition and claim) from
  every point's row of results.csv (`workdir`: where the information-plane arrays are, for `window_fall`)."""
  verdict = checks.evaluate(config, checks.Evidence(config, rows, workdir))
  lines = [f'precondition {checks.describe(o)}' for o in verdict.preconditions]
  return verdict.word, lines + [checks.describe(o) for o in verdict.claims]


def _x_order(config: ml_collections.ConfigDict, x: str) -> list[str]:
  return checks.x_labels(config, x)


CHECKS = checks.CHECKS


# --- report --------------------------------------------------------------------------------------------------------


def _heatmap_points(config: ml_collections.ConfigDict, all_points: list[Point],
                    workdir: str) -> list[tuple[str, str, float | None]]:
  """(label on report.x, analysis/heatmaps.npz, cluttered canvas size) of each point of the first seed that has
  heat maps: the rows of `sweep_figures.heatmap_grid`."""
  x = str(config.report.x)
  first_seed = str(config.seeds[0])
  out = []
  for p in all_points:
    if p.labels[SEED_AXIS] != first_seed:
      continue
    npz = os.path.join(workdir, p.name, 'analysis', 'heatmaps.npz')
    if os.path.isfile(npz):
      run_config = read_json(os.path.join(workdir, p.name, 'config.json')) or {}
      size = ((run_config.get('data') or {}).get('cluttered') or {}).get('canvas_size')
      out.append((p.labels.get(x, ''), npz, size))
  return out


def _rate_distortion(config: ml_collections.ConfigDict, means: list[dict[str, Any]], path: str) -> bool:
  """The rate–distortion plane of a VAE sweep: mean test rate against mean distortion per (series, x) setting."""
  from infodrop_jax.analysis import vae as vae_analysis  # pylint: disable=g-import-not-at-top
  x, series = str(config.report.x), str(config.report.series or '')
  plane = []
  for row in means:
    rate, distortion = number(row.get('test_rate:mean')), number(row.get('test_distortion:mean'))
    beta = number(row.get(x))
    if rate is None or distortion is None or beta is None:
      continue
    plane.append({'beta': beta, 'rate': rate, 'distortion': distortion,
                  'latent': str(row.get(series, '')) if series else ''})
  if not plane:
    return False
  vae_analysis.plot_rate_distortion(plane, path)
  return True


def _information_planes(config: ml_collections.ConfigDict, rows: list[dict[str, Any]], all_points: list[Point],
                        workdir: str, png: str) -> list[str]:
  """The section on the points' information planes (`plane_figures.plot_seed_planes`): one run per setting of the
  axes (named by report.x), over its finished seeds; a finished point whose W/information_plane.jsonl cannot be read is named,
  not drawn."""
  from infodrop_jax import information_plane  # pylint: disable=g-import-not-at-top
  from infodrop_jax.analysis import plane_figures  # pylint: disable=g-import-not-at-top
  x = str(config.report.x)
  status = {r['point']: r['status'] for r in rows}
  runs: dict[str, list[list[dict[str, Any]]]] = {}
  unread = []
  for p in all_points:
    if status.get(p.name) != 'done':
      continue
    try:
      records = information_plane.load_records(os.path.join(workdir, p.name))
    except (OSError, ValueError, KeyError) as e:
      unread.append(f'`{p.name}` ({type(e).__name__}: {e})')
      continue
    # One run per setting of every axis but the seed: x names it, the other axes (if any) qualify it.
    others = ', '.join(f'{k}={v}' for k, v in p.labels.items() if k not in (x, SEED_AXIS))
    runs.setdefault(p.labels.get(x, '') + (f' ({others})' if others else ''), []).append(records)
  if not runs:
    return []
  plane_figures.plot_seed_planes(runs, os.path.join(workdir, png),
                                 title=f'{config.name}: ' + (str(config.report.caption) or 'information planes')
                                 + ', mean ± one sample std over seeds')
  summary = plane_figures.summarize_seed_planes(runs)
  write_json(os.path.join(workdir, os.path.splitext(png)[0] + '.json'), summary)
  lines = _plane_lines(png, summary)
  if unread:
    lines.insert(-1, f'- Not drawn, their information_plane.jsonl could not be read: {"; ".join(unread)}.')
  return lines


def _committed_planes(workdir: str, png: str) -> list[str]:
  """The information-plane section of a report rebuilt from its committed files (the PNG, its .npz and .json)."""
  summary = read_json(os.path.join(workdir, os.path.splitext(png)[0] + '.json'))
  if not os.path.isfile(os.path.join(workdir, png)) or not isinstance(summary, dict):
    return []
  return _plane_lines(png, summary)


def _plane_lines(png: str, summary: dict[str, Any]) -> list[str]:
  from infodrop_jax.analysis import plane_figures  # pylint: disable=g-import-not-at-top
  stem = os.path.splitext(png)[0]
  lines = ['## Information planes', '',
           f'Each line: mean over the seeds at each capture, ± one sample std (figure above; the arrays in '
           f'`{stem}.npz`, these numbers in `{stem}.json`). I(X;Z) is the mixture estimate on the M training '
           f'examples of the capture, which cannot exceed log M. Whether I(X;Z) falls is decided by the claims '
           f'above, over windows fixed in the sweep config, on the training examples\' curves; the test examples\' '
           f'curves share the weights and are shown, not counted.', '']
  return lines + [f'- {line}' for line in plane_figures.describe_seed_planes(summary)] + ['']


def _table(config, means, metrics: list[str]) -> list[str]:
  from infodrop_jax.analysis import sweep_figures  # pylint: disable=g-import-not-at-top
  names = [a[0] for a in axes_of(config) if a[0] != SEED_AXIS]
  header = names + ['seeds done'] + [m + (' (%)' if sweep_figures.is_error(m) else '') for m in metrics]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in means:
    cells = [str(row.get(n, '')) for n in names] + [f'{row["seeds_done"]}/{row["seeds"]}']
    for m in metrics:
      mean, std = number(row.get(f'{m}:mean')), number(row.get(f'{m}:std'))
      scale = 100.0 if sweep_figures.is_error(m) else 1.0
      if mean is None:
        cells.append('')
      else:
        cells.append(f'{scale * mean:.4g}' + (f' ± {scale * std:.2g}' if std is not None else ''))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def _point_machines(all_points: list[Point], workdir: str) -> list[str]:
  """'host: cpu, N cores, GPUs; points finished first – last' per machine, from the points' status.json."""
  machines: dict[str, list[str]] = {}
  for p in all_points:
    status = read_json(os.path.join(workdir, p.name, STATUS_FILE)) or {}
    if status.get('machine'):
      m = status['machine']
      key = f'{m.get("host")}: {m.get("cpu")}, {m.get("cores")} cores' + (
          f', {", ".join(m["gpus"])}' if m.get('gpus') else ', no GPU')
      machines.setdefault(key, []).append(status.get('updated', ''))
  out = []
  for key, dates in machines.items():
    dates = sorted(d for d in dates if d)
    out.append(f'{key}; points finished {dates[0]} – {dates[-1]}' if dates else key)
  return out


def point_wall_time(row: dict[str, Any]) -> float | None:
  """A point's training plus analysis time (s). status.json's wall time covers both when the point ran in one go;
  a point analysed again later has only the re-analysis there, so its training time is added."""
  wall, train = number(row.get('wall_time_s')), number(row.get('train_wall_time_s'))
  if wall is None:
    return train
  return wall + train if train is not None and wall < train else wall


def rows_of(config: ml_collections.ConfigDict, workdir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
  """(results.csv rows, results_mean.csv rows, from_csv). Where W holds none of the points' directories but a
  results.csv (a committed report: reports/*), the rows are that file's and it is left as it is; otherwise both
  files are written from the points' directories."""
  all_points = points(config)
  csv_path = os.path.join(workdir, RESULTS_FILE)
  if os.path.isfile(csv_path) and not any(os.path.isdir(os.path.join(workdir, p.name)) for p in all_points):
    rows = read_csv(csv_path)
    names = {p.name for p in all_points}
    stray = [r.get('point') for r in rows if r.get('point') not in names]
    if stray:
      raise SweepError(f'{csv_path}: rows {stray} are no points of the sweep config {config.name!r}; a report rebuilt '
                       f'from its results.csv needs the config that ran it (its {SWEEP_FILE}).')
    return rows, write_means(config, rows, workdir), True
  rows, means = write_results(config, workdir)
  return rows, means, False


def write_report(config: ml_collections.ConfigDict, workdir: str, draw: bool = True) -> str:
  """W/report.md and its PNGs, from the points' directories, or, where W has only their results.csv (a committed
  report), from that file: its figures are redrawn from the numbers (`draw`), the heat maps and information planes
  are the files already there. The claims are decided by `checks`."""
  # matplotlib loads only when a report is drawn: `--mode=sweep_commands` and the runs' start stay light.
  from infodrop_jax.analysis import sweep_figures  # pylint: disable=g-import-not-at-top
  checks.validate(config)
  all_points = points(config)
  rows, means, from_csv = rows_of(config, workdir)
  columns = {c.rsplit(':', 1)[0] for row in means for c in row if c.endswith(':mean')}
  panels = []
  for metric in config.report.metrics:
    expanded = [c for c in checks.expand(str(metric), columns) if c in columns]
    if expanded:
      panels.append((str(metric).rstrip('*').rstrip(':') if str(metric).endswith('*') else str(metric), expanded))
  name = sanitize(str(config.name) or 'sweep')
  saved = read_json(os.path.join(workdir, SWEEP_FILE)) or {}
  ran_in = str(saved.get('ran_in') or workdir)
  lines = [f'# {config.name}', '']
  now = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
  source = (f'rebuilt from the committed {RESULTS_FILE} and {SWEEP_FILE}: `python launch.py --workdir={workdir} '
            f'--mode=report`' if from_csv else f'regenerate: `python launch.py --workdir={workdir} --mode=report`')
  lines += [f'Generated {now} ({source}).', '']
  if config.claim:
    lines += [f'**The paper\'s claim:** {config.claim}', '']
  figures: dict[str, str] = {}  # kind -> PNG drawn or found
  extra_sections = []
  if config.report.get('information_plane'):  # first: the compression checks read the arrays it writes
    png = f'{name}_information_plane.png'
    extra_sections = (_committed_planes(workdir, png) if from_csv
                      else _information_planes(config, rows, all_points, workdir, png))
    if extra_sections:
      figures['plane'] = png
  verdict, check_lines = verdicts(config, rows, workdir)
  unreadable = [r for r in rows if r['status'] == 'unreadable']
  if unreadable:  # Their numbers are in no mean; a verdict without them would pass for the whole sweep's.
    which = '; '.join(f'`{r["point"]}`: {r["problem"]}' for r in unreadable)
    lines += [f'**Whether our numbers agree:** not judged: {len(unreadable)} finished point(s) could not be read '
              f'({which}). Re-run the sweep command: it redoes them.', '']
    check_lines = [f'(without those points) {line}' for line in check_lines]
  elif is_smoke(config):
    lines += ['**Whether our numbers agree:** not judged: a smoke sweep (tiny data and epochs) checks that the code '
              'runs, not the paper; run the full or :cpu variant for a verdict.', '']
    check_lines = [f'(smoke, not a verdict) {line}' for line in check_lines]
  else:
    lines += [f'**Whether our numbers agree:** {verdict}.', '']
  lines += [f'- {line}' for line in check_lines] + ([''] if check_lines else [])
  if check_lines:
    lines += ['Each claim is decided by its effect against its standard error: a comparison agrees when its interval '
              'lies inside the region the claim names, disagrees when it lies outside, and cannot tell when it '
              'straddles the boundary; a claim over several comparisons reads intervals simultaneous over all of '
              'them (Bonferroni), and p is the two-sided p at the nearest boundary times that number. A '
              'precondition that does not agree makes the claims it gates "cannot tell".', '']
  changes = saved.get('verdict_changes') or []
  if changes:
    lines += ['**Verdicts changed since this report was first written:**', ''] + [f'- {c}' for c in changes] + ['']
  counts = {s: sum(r['status'] == s for r in rows) for s in ('done', 'unreadable', 'failed', 'incomplete',
                                                               'pending')}
  lines += ['Points: ' + ', '.join(f'{v} {k}' for k, v in counts.items() if v) + f' of {len(rows)}.', '']
  if panels and means:
    png = f'{name}.png'
    series_axis = str(config.report.series or '')
    if draw:
      sweep_figures.plot(config, means, panels, os.path.join(workdir, png),
                         x_order=_x_order(config, str(config.report.x)),
                         series_order=_x_order(config, series_axis) if series_axis else [''])
    figures['main'] = png
  if config.report.heatmaps:
    png = f'{name}_heatmaps.png'
    if (os.path.isfile(os.path.join(workdir, png)) if from_csv else sweep_figures.heatmap_grid(
        config, _heatmap_points(config, all_points, workdir), os.path.join(workdir, png))):
      figures['heatmaps'] = png
  if config.report.get('rate_distortion'):
    png = f'{name}_rate_distortion.png'
    if (_rate_distortion(config, means, os.path.join(workdir, png)) if draw
        else os.path.isfile(os.path.join(workdir, png))):
      figures['rate_distortion'] = png
  figure_files = [figures[k] for k in ('main', 'heatmaps', 'rate_distortion', 'plane') if k in figures]
  lines += ['## Figure', '']
  for png in figure_files:
    lines += [f'![{png}]({png})', '']
  if not figure_files:
    lines += ['(nothing to plot yet: no point has finished)', '']
  lines += extra_sections
  table_metrics = [c for _, cols in panels for c in cols]
  lines += [f'## Table (mean ± sample std over finished seeds; every number in {RESULTS_FILE} and {MEANS_FILE})',
            ''] + _table(config, means, table_metrics) + ['']
  failed = [r for r in rows if r['status'] != 'done']
  if failed:
    lines += ['## Points not finished', '']
    for r in failed:
      why = {'failed': f' (see `{r["point"]}/{LOG_FILE}`)', 'incomplete': f' (see `{r["point"]}/{LOG_FILE}`)',
             'unreadable': f': {r.get("problem")}; its numbers count in no mean'}.get(r['status'], '')
      lines.append(f'- `{r["point"]}`: {r["status"]}{why}')
    lines.append('')
  machines = list(saved.get('machines') or []) if from_csv else _point_machines(all_points, workdir)
  # Each point's commands as they ran (a data path is this machine's): kept in sweep.json, so that a report rebuilt
  # from its committed files elsewhere prints them, not that machine's.
  point_commands = list(saved.get('point_commands') or []) if from_csv else []
  if not point_commands:
    for p in all_points:
      point_dir = os.path.join(ran_in, p.name)
      point_commands.append(display_command(train_command(p, point_dir)))
      if config.analyze:
        point_commands.append(display_command(analyze_command(p, point_dir)))
  if not from_csv and saved:
    write_json(os.path.join(workdir, SWEEP_FILE), {**saved, 'machines': machines, 'point_commands': point_commands})
  lines += ['## Machine and date', '']
  if not machines:
    lines.append(f'- not recorded (no point has a {STATUS_FILE} written by --mode=sweep)')
  lines += [f'- {m}' for m in machines]
  walls = [point_wall_time(r) for r in rows if r['status'] == 'done']
  walls = [w for w in walls if w is not None]
  if walls:
    lines.append(f'- wall time per point (training + analysis): {min(walls):.0f}–{max(walls):.0f} s, '
                 f'{sum(walls) / 60:.1f} min in all')
  lines += ['', '## Commands', '', 'The sweep (from the repository root):', '', '```bash']
  lines += list(saved.get('commands', [])) or [f'# not recorded ({SWEEP_FILE} has no sweep command)']
  lines += ['```', '', '<details><summary>Every point\'s commands</summary>', '', '```bash']
  lines += point_commands
  lines += ['```', '', '</details>', '']
  path = os.path.join(workdir, REPORT_FILE)
  with replacing(path) as f:
    f.write('\n'.join(lines))
  return path
