"""A sweep's report: W/report.md with the paper's claim, the verdict of the checks a sweep config declares
(`expect`, see `CHECKS`), the figures (`infodrop_jax.analysis.sweep_figures`), the table of means, the points not
finished, the machine and date, and the commands."""
from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from infodrop_jax.sweep.commands import analyze_command, display_command, train_command
from infodrop_jax.sweep.files import (LOG_FILE, MEANS_FILE, REPORT_FILE, RESULTS_FILE, STATUS_FILE, SWEEP_FILE,
                                      read_json, replacing, write_json)
from infodrop_jax.sweep.results import number, write_results
from infodrop_jax.sweep.spec import SEED_AXIS, Point, SweepError, axes_of, is_smoke, points, sanitize


# --- checks: does our sweep agree with the paper? ---------------------------------------------------------------


def _expand(metric: str, columns: Iterable[str]) -> list[str]:
  if metric.endswith('*'):
    return sorted(c for c in columns if c.startswith(metric[:-1]))
  return [metric]


def _matches(row: Mapping[str, Any], where: Mapping[str, str]) -> bool:
  return all(str(row.get(k)) == str(v) for k, v in where.items())


def _series(means: list[dict[str, Any]], metric: str, x: str, where: Mapping[str, str],
            stat: str = 'mean') -> dict[str, float]:
  values: dict[str, list[float]] = {}
  for row in means:
    if not _matches(row, where):
      continue
    value = number(row.get(f'{metric}:{stat}'))
    if value is not None and math.isfinite(value):
      values.setdefault(str(row.get(x)) if x else '', []).append(value)
  return {k: sum(v) / len(v) for k, v in values.items()}


def _seed_spread(means: list[dict[str, Any]], metric: str, x: str, wheres: list[Mapping[str, str]],
                 xs: list[str]) -> dict[str, float]:
  """{v: the largest sample std over seeds among the series `wheres` select, at x = v} for each v of xs; 0 where
  no std is known (one seed)."""
  stds = [_series(means, metric, x, where, 'std') for where in wheres]
  return {v: max(s.get(v, 0.0) for s in stds) for v in xs}


def _x_order(config: ml_collections.ConfigDict, x: str) -> list[str]:
  for name, _, _, labels, _ in axes_of(config):
    if name == x:
      return labels
  return ['']


def _where(spec: ml_collections.ConfigDict) -> dict[str, str]:
  text = str(spec.get('where', '') or '')
  out = {}
  for part in filter(None, (p.strip() for p in text.split(','))):
    key, _, value = part.partition('=')
    out[key.strip()] = value.strip()
  return out


def _fmt(value: float | None) -> str:
  return 'n/a' if value is None else f'{value:.4g}'


def _check_one(config, means, spec, metric) -> tuple[bool | None, str]:
  """(agrees, the numbers) for one metric column; agrees None = cannot tell. A check may disagree on the values of x
  that finished, but agrees only when every value of x has finished."""
  agrees, detail = _check_finished(config, means, spec, metric)
  if agrees and spec.check in ('at_least', 'at_most'):  # every run `where` selects; no x axis
    # Numbers, not text: mean rows read back from results_mean.csv hold strings ('10' < '9').
    missing = [r for r in means if _matches(r, _where(spec))
               and (number(r.get('seeds_done')) or 0) < (number(r.get('seeds')) or 0)]
    if missing:
      return None, f'{detail}; not every seed finished'
  elif agrees:
    x = str(spec.get('along', '') or config.report.x)
    where = _where(spec)
    if spec.check == 'le':
      wanted = [_series(means, metric, x, {**where, str(spec.by): spec.a}),
                _series(means, metric, x, {**where, str(spec.by): spec.b})]
    elif spec.check == 'above':
      wanted = [_series(means, metric, x, where), _series(means, str(spec.reference), x, where)]
    else:
      wanted = [_series(means, metric, x, where)]
    order = [where[x]] if x in where else _x_order(config, x)  # `where` may pin x to one value
    if spec.check in ('increasing', 'decreasing'):  # the endpoints decide; a middle value does not
      order = [order[0], order[-1]]
    missing = [v for v in order if any(v not in s for s in wanted)]
    if missing:
      return None, f'{detail}; not finished at {x}={", ".join(missing)}'
  return agrees, detail


def _check_finished(config, means, spec, metric) -> tuple[bool | None, str]:
  """(agrees, the numbers) for one metric column; agrees None = cannot tell."""
  kind = spec.check
  x = str(spec.get('along', '') or config.report.x)
  where = _where(spec)
  axis_names = [a[0] for a in axes_of(config)]
  unknown = [k for k in where if k not in axis_names]
  if unknown:  # it would match no row, and the check would stay 'cannot tell' for ever
    raise SweepError(f'expect: where={spec.where!r} names {unknown}, which are not axes of the sweep ({axis_names}).')
  tol = float(spec.get('tolerance', 0.0) or 0.0)
  order = _x_order(config, x)
  if kind == 'le':
    by = str(spec.by)
    a = _series(means, metric, x, {**where, by: spec.a})
    b = _series(means, metric, x, {**where, by: spec.b})
    xs = [v for v in order if v in a and v in b]
    if not xs:
      return None, f'no finished points with both {by}={spec.a} and {by}={spec.b}'
    holds = [a[v] <= b[v] + tol for v in xs]
    detail = '; '.join(f'{x}={v}: {_fmt(a[v])} vs {_fmt(b[v])}' for v in xs)
    line = f'{metric} of {spec.a} ≤ {spec.b}{f" + {tol:g}" if tol else ""} at {sum(holds)}/{len(xs)} ({detail})'
    if not spec.get('within_spread_cannot_tell', False):
      return all(holds), line
    # A difference no larger than the seeds' spread (the larger sample std of the two) decides nothing either way.
    spread = _seed_spread(means, metric, x, [{**where, by: spec.a}, {**where, by: spec.b}], xs)
    unclear = [v for v in xs if abs(a[v] - b[v] - tol) <= spread[v]]
    clear = [v for v in xs if v not in unclear]
    line += (f'; within the seeds\' spread (larger std) at {", ".join(unclear) or "none"}'
             f' ({"; ".join(f"{x}={v}: |{_fmt(a[v] - b[v])}| ≤ {_fmt(spread[v])}" for v in unclear)})' if unclear
             else '; every difference is larger than the seeds\' spread')
    if any(not holds[xs.index(v)] for v in clear):
      return False, line
    return (None if unclear else True), line
  if kind in ('at_least', 'at_most'):
    value = float(spec.value)
    rows = [r for r in means if _matches(r, where)]
    # Every run counts, not the mean: the smallest (at_least) or largest (at_most) value over each setting's seeds.
    extreme = [number(r.get(f'{metric}:{"min" if kind == "at_least" else "max"}')) for r in rows]
    values = [v for v in extreme if v is not None and math.isfinite(v)]
    if not values:
      return None, f'{metric}: no finished run{f" with {spec.where}" if where else ""}'
    worst = min(values) if kind == 'at_least' else max(values)
    holds = worst >= value - tol if kind == 'at_least' else worst <= value + tol
    sign = '≥' if kind == 'at_least' else '≤'
    detail = (f'{metric} {sign} {value:g} in every run{f" with {spec.where}" if where else ""}: '
              f'{"smallest" if kind == "at_least" else "largest"} {_fmt(worst)} over {len(rows)} setting(s)')
    # A finished run without a finite value could be the one that breaks the bound.
    missing = sum(max(0, int(number(r.get('seeds_done')) or 0) - int(number(r.get(f'{metric}:n')) or 0))
                  for r in rows)
    if holds and missing:
      return None, f'{detail}; {missing} finished run(s) have no finite {metric}'
    return holds, detail
  series = _series(means, metric, x, where)
  xs = [v for v in order if v in series]
  if kind in ('increasing', 'decreasing'):
    if len(xs) < 2:
      return None, f'{metric}: fewer than two values of {x} finished'
    first, last = series[xs[0]], series[xs[-1]]
    agrees = last > first + tol if kind == 'increasing' else last < first - tol
    line = (f'{metric} at {x}={xs[0]}: {_fmt(first)}, at {x}={xs[-1]}: {_fmt(last)} '
            f'(all: {", ".join(f"{v}: {_fmt(series[v])}" for v in xs)})')
    if not spec.get('within_spread_cannot_tell', False):
      return agrees, line
    # As for 'le': a change between the endpoints no larger than the seeds' spread decides nothing either way.
    spread = max(_seed_spread(means, metric, x, [where], [xs[0], xs[-1]]).values())
    margin = (last - first - tol) if kind == 'increasing' else (first - last - tol)
    if abs(margin) <= spread:
      return None, f'{line}; within the seeds\' spread (larger std): |{_fmt(last - first)}| ≤ {_fmt(spread)}'
    return agrees, f'{line}; the change is larger than the seeds\' spread (larger std {_fmt(spread)})'
  if kind == 'range_le':
    if len(xs) < 2:
      return None, f'{metric}: fewer than two values of {x} finished'
    values = [series[v] for v in xs]
    spread = (max(values) - min(values)) / (abs(sum(values) / len(values)) or 1.0)
    return spread <= tol, f'{metric} varies by {100 * spread:.1f} % of its mean across {x} (allowed {100 * tol:.0f} %)'
  if kind == 'interior_min':
    if len(xs) < 3:
      return None, f'{metric}: fewer than three values of {x} finished'
    lowest = min(series[v] for v in xs)
    best = ', '.join(v for v in xs if series[v] == lowest)
    return series[xs[0]] > lowest and series[xs[-1]] > lowest, (f'{metric} is lowest at {x}={best} '
                                         f'(all: {", ".join(f"{v}: {_fmt(series[v])}" for v in xs)})')
  if kind == 'above':
    ref = _series(means, str(spec.reference), x, where)
    factor = float(spec.get('factor', 1.0) or 1.0)
    xs = [v for v in xs if v in ref]
    if not xs:
      return None, f'{metric}: no finished points with {spec.reference}'
    holds = [series[v] > factor * ref[v] + tol for v in xs]
    times = f'{factor:g} × ' if factor != 1.0 else ''
    return all(holds), (f'{metric} above {times}{spec.reference} at {sum(holds)}/{len(xs)} '
                        f'({"; ".join(f"{x}={v}: {_fmt(series[v])} vs {times}{_fmt(ref[v])}" for v in xs)})')
  raise SweepError(f'expect: unknown check {kind!r}; expected one of {CHECKS}.')


# What each check kind means (an `expect` entry names one; `tolerance` is a margin in the metric's units):
#   le            metric at by=a ≤ at by=b (+ tolerance) at every value of x: ties agree. With
#                 `within_spread_cannot_tell=True`, a value of x where |a − b − tolerance| ≤ the larger of the two
#                 sample stds over seeds decides nothing: the check disagrees where a clear difference goes the wrong
#                 way, agrees only when every difference is clear and right, else cannot tell.
#   increasing    the value at the last x > at the first (+ tolerance): the endpoints decide, ties disagree.
#   decreasing    the value at the last x < at the first (− tolerance): ties disagree. Both take
#                 `within_spread_cannot_tell=True` as `le` does: a change (less the tolerance) no larger than the
#                 larger of the two endpoints' sample stds over seeds cannot tell.
#   range_le      (max − min) / |mean| over x ≤ tolerance.
#   interior_min  the lowest value lies at neither end of x (three values of x at least); a tie with an end
#                 disagrees.
#   above         metric > `factor` (default 1) × `reference` (+ tolerance) at every x: ties disagree.
#   at_least      metric ≥ `value` (− tolerance) in every finished run that `where` selects (its seeds' minimum);
#   at_most       metric ≤ `value` (+ tolerance) likewise (the maximum); both need every seed finished to agree.
# `where` ('axis=label, ...') selects rows; where it names x itself, only that value of x is needed.
# `metric` may be 'prefix:*' (every such column) with `mode` 'all' (default) or 'any'. A check disagrees on what
# finished, but agrees only when every value of x it needs finished; otherwise it cannot tell.
CHECKS = ('le', 'increasing', 'decreasing', 'range_le', 'interior_min', 'above', 'at_least', 'at_most')


def verdicts(config: ml_collections.ConfigDict, means: list[dict[str, Any]]) -> tuple[str, list[str]]:
  """('agree' | 'partly' | 'disagree' | 'cannot tell', one line per check with its numbers)."""
  columns = {c.rsplit(':', 1)[0] for row in means for c in row if c.endswith(':mean')}
  lines, outcomes = [], []
  for name in sorted(config.expect.keys()):
    spec = config.expect[name]
    mode = str(spec.get('mode', 'all') or 'all')
    metrics = _expand(str(spec.metric), columns)
    results = [(m, *_check_one(config, means, spec, m)) for m in metrics] if metrics else []
    decided = [r[1] for r in results if r[1] is not None]
    undecided = len(decided) < len(results) or not results
    if mode == 'all':
      outcome = False if False in decided else None if undecided else True
    else:
      outcome = True if True in decided else None if undecided else False
    outcomes.append(outcome)
    word = {True: 'agrees', False: 'disagrees', None: 'cannot tell'}[outcome]
    detail = ' | '.join(r[2] for r in results) or f'no column matches {spec.metric}'
    description = f' ({spec.description})' if spec.get('description') else ''
    lines.append(f'`{name}`{description}: **{word}**: {detail}')
  if not outcomes:
    return 'no check declared', lines
  agree, disagree = outcomes.count(True), outcomes.count(False)
  unknown = len(outcomes) - agree - disagree
  word = ('agree' if agree == len(outcomes) else 'cannot tell' if unknown == len(outcomes)
          else 'partly' if agree else 'disagree')
  return f'{word} ({agree} of {len(outcomes)} checks agree, {disagree} disagree, {unknown} cannot tell)', lines


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
  lines = ['## Information planes', '',
           f'Each line: mean over the seeds at each capture, ± one sample std (figure above; the arrays in '
           f'`{os.path.splitext(png)[0]}.npz`, these numbers in `{os.path.splitext(png)[0]}.json`). I(X;Z) is the '
           f'mixture estimate on the M training examples of the capture, which cannot exceed log M.', '']
  lines += [f'- {line}' for line in plane_figures.describe_seed_planes(summary)]
  if unread:
    lines.append(f'- Not drawn, their information_plane.jsonl could not be read: {"; ".join(unread)}.')
  return lines + ['']


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


def write_report(config: ml_collections.ConfigDict, workdir: str) -> str:
  """W/report.md and its PNGs (from results.csv's numbers and the points' analysis files)."""
  # matplotlib loads only when a report is drawn: `--mode=sweep_commands` and the runs' start stay light.
  from infodrop_jax.analysis import sweep_figures  # pylint: disable=g-import-not-at-top
  all_points = points(config)
  rows, means = write_results(config, workdir)
  columns = {c.rsplit(':', 1)[0] for row in means for c in row if c.endswith(':mean')}
  panels = []
  for metric in config.report.metrics:
    expanded = [c for c in _expand(str(metric), columns) if c in columns]
    if expanded:
      panels.append((str(metric).rstrip('*').rstrip(':') if str(metric).endswith('*') else str(metric), expanded))
  name = sanitize(str(config.name) or 'sweep')
  lines = [f'# {config.name}', '']
  saved = read_json(os.path.join(workdir, SWEEP_FILE)) or {}
  now = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
  lines += [f'Generated {now} (regenerate: `python launch.py --workdir={workdir} --mode=report`).', '']
  if config.claim:
    lines += [f'**The paper\'s claim:** {config.claim}', '']
  verdict, check_lines = verdicts(config, means)
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
  counts = {s: sum(r['status'] == s for r in rows) for s in ('done', 'unreadable', 'failed', 'incomplete',
                                                               'pending')}
  lines += ['Points: ' + ', '.join(f'{v} {k}' for k, v in counts.items() if v) + f' of {len(rows)}.', '']
  figure_files = []
  if panels and means:
    png = f'{name}.png'
    series_axis = str(config.report.series or '')
    sweep_figures.plot(config, means, panels, os.path.join(workdir, png),
                       x_order=_x_order(config, str(config.report.x)),
                       series_order=_x_order(config, series_axis) if series_axis else [''])
    figure_files.append(png)
  if config.report.heatmaps:
    png = f'{name}_heatmaps.png'
    if sweep_figures.heatmap_grid(config, _heatmap_points(config, all_points, workdir), os.path.join(workdir, png)):
      figure_files.append(png)
  extra_sections = []
  if config.report.get('rate_distortion'):
    png = f'{name}_rate_distortion.png'
    if _rate_distortion(config, means, os.path.join(workdir, png)):
      figure_files.append(png)
  if config.report.get('information_plane'):
    png = f'{name}_information_plane.png'
    extra_sections = _information_planes(config, rows, all_points, workdir, png)
    if extra_sections:
      figure_files.append(png)
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
  machines = {}
  for p in all_points:
    status = read_json(os.path.join(workdir, p.name, STATUS_FILE)) or {}
    if status.get('machine'):
      m = status['machine']
      key = f'{m.get("host")}: {m.get("cpu")}, {m.get("cores")} cores' + (
          f', {", ".join(m["gpus"])}' if m.get('gpus') else ', no GPU')
      machines.setdefault(key, []).append(status.get('updated', ''))
  lines += ['## Machine and date', '']
  if not machines:
    lines.append(f'- not recorded (no point has a {STATUS_FILE} written by --mode=sweep)')
  for key, dates in machines.items():
    dates = sorted(d for d in dates if d)
    lines.append(f'- {key}; points finished {dates[0]} – {dates[-1]}' if dates else f'- {key}')
  walls = [number(r.get('wall_time_s')) for r in rows if r['status'] == 'done']
  walls = [w for w in walls if w is not None]
  if walls:
    lines.append(f'- wall time per point (train + analysis): {min(walls):.0f}–{max(walls):.0f} s, '
                 f'{sum(walls) / 60:.1f} min in all')
  lines += ['', '## Commands', '', 'The sweep (from the repository root):', '', '```bash']
  lines += list(saved.get('commands', [])) or [f'# not recorded ({SWEEP_FILE} has no sweep command)']
  lines += ['```', '', '<details><summary>Every point\'s commands</summary>', '', '```bash']
  for p in all_points:
    point_dir = os.path.join(workdir, p.name)
    lines.append(display_command(train_command(p, point_dir)))
    if config.analyze:
      lines.append(display_command(analyze_command(p, point_dir)))
  lines += ['```', '', '</details>', '']
  path = os.path.join(workdir, REPORT_FILE)
  with replacing(path) as f:
    f.write('\n'.join(lines))
  return path

