"""The sweep config and its points: what to run, not how.

A sweep is an ml_collections config (configs/sweeps/*.py; `new_config` and `axis` build one) with the fields:
  name: the sweep's name (titles).
  base, variant: the experiment config file (relative to the repository root) and its variant ('' = full):
    every point runs `python launch.py --config=<base>:<variant> ...`.
  overrides: 'field=value' strings applied to every point (`--config.field=value`), e.g. 'train.num_epochs=5'.
  data: '' (the base config's data), 'proxy' (the offline CIFAR-10 JPEG proxy under the data root) or 'canonical'
    (CIFAR-10 from TFDS / the original files: data.source=auto).
  axes: axis name -> ConfigDict(field=..., values=(...), labels=()). `field` is a config field ('model.dropout') or,
    for a zipped axis whose each value sets several fields at once, a tuple of fields (then every value is a tuple
    with one entry per field). `labels` (optional, one per value) name the values in point names and tables. The
    points are the product of the axes (in the order written) and the seeds.
  seeds: config.seed of each repetition (a last axis named 'seed'). seeds_only_at: 'axis=label ...' runs the seeds
    after the first only at the points with those labels (more seeds where the spread matters), '' everywhere.
  analysis: 'field=value' options of the analyze step (`--analysis.field=value`); analyze: False skips that step.
  parallel: points run at once on this machine (each gets its share of the CPU cores and GPUs).
  max_points: run at most this many unfinished points in this invocation (0 = all); only: a space-separated list
    of point names or indices to run (e.g. a job-array task's index).
  format: what `--mode=sweep_commands` prints: 'shell' (one self-contained line per point) or 'slurm' (a Slurm
    array job script, one task per point, and the submit line that chains the report job after it); slurm: its
    resources (time, cpus_per_task, gpus_per_task, mem, partition, account, extra sbatch options).
  claim: the paper's claim in one sentence; expect: the checks that decide whether our numbers agree with it
    (check name -> ConfigDict(check=..., metric=..., ...)); preconditions: the checks that make the setup able to
    test it (the same, with `why`, and optionally `gates` and `optional`); the kinds and their fields:
    `infodrop_jax.sweep.checks` (`checks.docs()`).
  report: what the report plots: x (an axis name), series (an axis name or ''), metrics (result columns, one panel
    each; 'info_layer:*' stands for every column with that prefix), xscale ('linear' | 'log'), heatmaps (a grid of
    each point's analysis/heatmaps.npz: rows = values of x, columns = layers, the same test images), x_label (the
    x axis as a reader reads it), caption (a line under the figure's title, e.g. the runs' β) and setup (a few
    words for the table of claims, `sweep.overview`);
    information_plane (the points' captured information planes overlaid per value of x, mean ± std over seeds at
    each capture) and rate_distortion (a VAE sweep's test rate against distortion, one line per value of series).

`--mode=sweep` saves the config in W/sweep.json (`save_sweep`), so that `--mode=report` can rebuild it (`load_sweep`);
a committed report (reports/*) keeps its sweep.json beside its results.csv, and `--mode=report` rebuilds it from
those two.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import ml_collections

from infodrop_jax.sweep.files import REPO_ROOT, SWEEP_FILE, read_json, write_json

SEED_AXIS = 'seed'
DATA_CHOICES = ('', 'proxy', 'canonical')
_NAME_CHARS = re.compile(r'[^A-Za-z0-9._=,+-]')


class SweepError(ValueError):
  """A sweep config or workdir the sweep cannot use; the message says what was expected."""


def new_config(name: str, base: str, variant: str = '') -> ml_collections.ConfigDict:
  """An empty sweep of `base` (a configs/*.py path relative to the repository root); fill axes, seeds, report."""
  config = ml_collections.ConfigDict()
  config.name = name
  config.base = base
  config.variant = variant
  config.overrides = ()
  config.data = ''
  config.axes = ml_collections.ConfigDict()
  config.seeds = (0,)
  # 'axis=label ...': the seeds after the first run only at the points with all these labels (e.g. 'beta=1': three
  # seeds at β = 1, one elsewhere); '' = every seed at every point.
  config.seeds_only_at = ''
  config.analyze = True
  config.analysis = ()
  config.parallel = 1
  config.max_points = 0
  config.only = ''
  # --mode=sweep_commands: 'shell' (one line per point) or 'slurm' (an array job script; see sweep/slurm.py).
  config.format = 'shell'
  config.slurm = ml_collections.ConfigDict(dict(time='24:00:00', cpus_per_task=8, gpus_per_task=1, mem='',
                                                partition='', account='', extra=()))
  config.claim = ''
  # The paper's claims (`expect`) and what makes this setup able to test them (`preconditions`): name -> a check
  # spec (infodrop_jax.sweep.checks: the kinds, their fields and how they decide).
  config.expect = ml_collections.ConfigDict()
  config.preconditions = ml_collections.ConfigDict()
  # x_label: the x axis as a reader should read it (default: the axis name); caption: a line under the figure's
  # title with what a reader needs and the axes do not say (e.g. the β of the runs); setup: the setup in a few
  # words for the table of claims (`sweep.overview`; default: the caption).
  config.report = ml_collections.ConfigDict(dict(x='', series='', metrics=('test_error_d', 'test_error_n'),
                                                 xscale='linear', heatmaps=False, heatmap_images=3, x_label='',
                                                 caption='', setup='', information_plane=False,
                                                 rate_distortion=False))
  return config


def is_smoke(config: ml_collections.ConfigDict) -> bool:
  """A sweep of its base's :smoke runs: their numbers check the code, not the paper, and its report gives no
  verdict. (The :cpu presets' data subsets are not smoke: they are sized to decide.)"""
  return str(config.variant) == 'smoke'


def axis(field: str | Sequence[str], values: Sequence[Any], labels: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """One axis: `field` (or a tuple of fields, zipped) takes each of `values` in turn."""
  return ml_collections.ConfigDict(dict(field=field if isinstance(field, str) else tuple(field),
                                        values=tuple(values), labels=tuple(labels)))


def data_root() -> pathlib.Path | None:
  """As `infodrop_jax.data.config.default_data_root` (not imported: it loads JAX): $INFODROP_DATA_DIR, else
  ../shared/data beside the checkout."""
  env = os.environ.get('INFODROP_DATA_DIR', '')
  if env:
    return pathlib.Path(env).expanduser()
  shared = REPO_ROOT.parent / 'shared' / 'data'
  return shared if shared.is_dir() else None


def _data_overrides(choice: str) -> list[str]:
  if choice not in DATA_CHOICES:
    raise SweepError(f'sweep data={choice!r}: expected one of {DATA_CHOICES}.')
  if choice == 'proxy':
    root = data_root()
    path = str(root / 'cifar10_jpeg' / 'cifar10_jpeg.tar') if root else ''
    return ['data.source=image_folder', f'data.path={path}']
  if choice == 'canonical':
    return ['data.source=auto', 'data.path=']
  return []


def format_value(value: Any) -> str:
  """A value as `--config.field=<here>` parses it back."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (list, tuple)):
    inner = ','.join(repr(v) if isinstance(v, str) else format_value(v) for v in value)
    return f'({inner}{"," if len(value) == 1 else ""})'
  return str(value)


def label_of(value: Any) -> str:
  """A short readable name of an axis value: 0.5 -> '0.5', (128, 32) -> '128x32'."""
  if isinstance(value, bool) or isinstance(value, str):
    return str(value)
  if isinstance(value, float):
    return f'{value:g}'
  if isinstance(value, (list, tuple)):
    return 'x'.join(label_of(v) for v in value)
  return str(value)


def sanitize(name: str) -> str:
  return _NAME_CHARS.sub('_', name)


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the sweep."""
  index: int
  name: str
  labels: dict[str, str]  # axis name -> label, seed last
  settings: tuple[tuple[str, Any], ...]  # (field, value) the axes set
  train_args: tuple[str, ...]  # launch.py arguments, without the workdir
  analyze_args: tuple[str, ...]  # launch.py arguments of the analyze step, without the workdir


def axes_of(config: ml_collections.ConfigDict) -> list[tuple[str, tuple[str, ...], list[Any], list[str], bool]]:
  """(name, fields, values, labels, zipped) of each axis in the order written, then the seed axis."""
  # ConfigDict.keys() sorts; its JSON keeps the order the axes were written in.
  order = list(json.loads(config.axes.to_json_best_effort()))
  out = []
  for name in order:
    spec = config.axes[name]
    if name == SEED_AXIS:
      raise SweepError(f'axis name {SEED_AXIS!r} is reserved: set `seeds` instead.')
    for key in spec.keys():
      if key not in ('field', 'values', 'labels'):
        raise SweepError(f'axes.{name}: unknown field {key!r} (expected field, values, labels).')
    field = spec.get('field')
    zipped = not isinstance(field, str)
    fields = (field,) if not zipped else tuple(field or ())
    values = list(spec.get('values') or ())
    if not fields or not all(isinstance(f, str) and f for f in fields):
      raise SweepError(f'axes.{name}.field: expected a config field such as "model.dropout" or a tuple of them.')
    if not values:
      raise SweepError(f'axes.{name}.values: expected at least one value.')
    if zipped and any(not isinstance(v, (list, tuple)) or len(v) != len(fields) for v in values):
      raise SweepError(f'axes.{name}: a zipped axis over {fields} needs every value to be a tuple of {len(fields)}.')
    labels = [str(x) for x in (spec.get('labels') or ())]
    if labels and len(labels) != len(values):
      raise SweepError(f'axes.{name}.labels: {len(labels)} labels for {len(values)} values.')
    labels = labels or [('_'.join(label_of(x) for x in v) if zipped else label_of(v)) for v in values]
    if len(set(labels)) != len(labels):
      raise SweepError(f'axes.{name}: two values have the same label ({labels}); give distinct labels.')
    out.append((name, fields, values, labels, zipped))
  seeds = list(config.seeds)
  if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
    raise SweepError(f'seeds={config.seeds!r}: expected a tuple of ints.')
  out.append((SEED_AXIS, ('seed',), seeds, [str(s) for s in seeds], False))
  return out


def seeds_only_at(config: ml_collections.ConfigDict, axes=None) -> dict[str, str]:
  """`config.seeds_only_at` as {axis: label}, checked against the axes."""
  axes = axes or axes_of(config)
  labels = {a[0]: a[3] for a in axes if a[0] != SEED_AXIS}
  out = {}
  for part in str(config.get('seeds_only_at', '') or '').split():
    name, sep, label = part.partition('=')
    if not sep or name not in labels or label not in labels[name]:
      raise SweepError(f'seeds_only_at={config.seeds_only_at!r}: {part!r} is not axis=label for one of the axes '
                       f'{ {k: list(v) for k, v in labels.items()} }.')
    if name in out:
      raise SweepError(f'seeds_only_at={config.seeds_only_at!r}: axis {name!r} is named twice; a point has one '
                       'label per axis (list one label per axis).')
    out[name] = label
  return out


def base_argument(config: ml_collections.ConfigDict) -> str:
  return f'{config.base}:{config.variant}' if config.variant else str(config.base)


def points(config: ml_collections.ConfigDict) -> list[Point]:
  """Every point of the sweep, in order (the first axis varies slowest, the seed fastest)."""
  if not (REPO_ROOT / str(config.base)).is_file():
    raise SweepError(f'sweep base={config.base!r}: no such config file under {REPO_ROOT}.')
  axes = axes_of(config)
  fixed = [str(o) for o in config.overrides] + _data_overrides(str(config.data))
  for o in fixed:
    if '=' not in o:
      raise SweepError(f'sweep overrides: {o!r} is not of the form field=value.')
  analysis = [str(o) for o in config.analysis]
  for o in analysis:
    if '=' not in o:
      raise SweepError(f'sweep analysis: {o!r} is not of the form field=value.')
  only_at = seeds_only_at(config, axes)
  out, names = [], set()
  for choice in itertools.product(*[range(len(a[2])) for a in axes]):
    labels, settings = {}, []
    for (name, fields, values, axis_labels, zipped), i in zip(axes, choice):
      labels[name] = axis_labels[i]
      settings.extend(zip(fields, values[i]) if zipped else [(fields[0], values[i])])
    if choice[-1] > 0 and any(labels[k] != v for k, v in only_at.items()):
      continue
    index = len(out)
    name = sanitize(','.join(f'{k}={v}' for k, v in labels.items()))
    if name in names:
      raise SweepError(f'two points are both named {name!r}; give the axes distinct labels.')
    names.add(name)
    train_args = (f'--config={base_argument(config)}', *[f'--config.{o}' for o in fixed],
                  *[f'--config.{f}={format_value(v)}' for f, v in settings])
    analyze_args = ('--mode=analyze', *[f'--analysis.{o}' for o in analysis])
    out.append(Point(index, name, labels, tuple(settings), train_args, analyze_args))
  return out


def select(config: ml_collections.ConfigDict, all_points: list[Point]) -> list[Point]:
  """The points `config.only` names (space-separated names or indices), or all."""
  wanted = str(config.only).split()
  if not wanted:
    return all_points
  by_name = {p.name: p for p in all_points}
  chosen = []
  for w in wanted:
    if w.isdigit() and int(w) < len(all_points):
      chosen.append(all_points[int(w)])
    elif sanitize(w) in by_name:
      chosen.append(by_name[sanitize(w)])
    else:
      raise SweepError(f'only={config.only!r}: {w!r} is neither a point name nor an index < {len(all_points)}. '
                       f'`--mode=sweep_commands` lists the points.')
  return chosen


# --- the saved sweep (W/sweep.json) -----------------------------------------------------------------------------


def save_sweep(config: ml_collections.ConfigDict, workdir: str, command: str) -> None:
  """W/sweep.json: the sweep config and every distinct command that ran the sweep in W (the last one last)."""
  path = os.path.join(workdir, SWEEP_FILE)
  previous = read_json(path) or {}
  commands = [c for c in previous.get('commands', []) if c != command] + [command]
  # The axes' order names the points (the first axis first); the file's keys are sorted, so it is kept apart.
  # Other keys (the machines a report recorded, notes on changed verdicts) stay.
  write_json(path, {**previous, 'config': json.loads(config.to_json_best_effort()), 'commands': commands,
                    'axis_order': list(json.loads(config.axes.to_json_best_effort()))})


def load_sweep(workdir: str) -> ml_collections.ConfigDict:
  """The sweep config a `--mode=sweep` saved in W/sweep.json."""
  saved = read_json(os.path.join(workdir, SWEEP_FILE))
  if not isinstance(saved, dict) or 'config' not in saved:
    raise SweepError(f'{os.path.join(workdir, SWEEP_FILE)} not found: give --config=configs/sweeps/<x>.py, or run '
                     f'--mode=sweep in {workdir} first.')
  config = new_config('', '')
  saved_config = saved['config']
  axes = saved_config.pop('axes', {})
  config.update(_tuples(saved_config))
  # Files written before the order was saved: their axes are in sorted order.
  order = [n for n in saved.get('axis_order') or () if n in axes] or list(axes)
  for name in order + [n for n in axes if n not in order]:
    spec = axes[name]
    config.axes[name] = axis(spec['field'] if isinstance(spec['field'], str) else tuple(spec['field']),
                             _tuples(spec['values']), spec.get('labels') or ())
  return config


def _tuples(value: Any) -> Any:
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value
