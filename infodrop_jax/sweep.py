"""Sweeps: many runs of one experiment config over a grid of config values, then a table, figures and a report.

A sweep is an ml_collections config (configs/sweeps/*.py, `configs/sweeps/common.py` builds one) with the fields:
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
  seeds: config.seed of each repetition (a last axis named 'seed').
  analysis: 'field=value' options of the analyze step (`--analysis.field=value`); analyze: False skips that step.
  parallel: points run at once on this machine (each gets its share of the CPU cores and GPUs).
  max_points: run at most this many unfinished points in this invocation (0 = all); only: a space-separated list
    of point names or indices to run (e.g. a job-array task's index).
  claim: the paper's claim in one sentence; expect: the checks that decide whether our numbers agree with it
    (check name -> ConfigDict(check=..., metric=..., ...); see `CHECKS`).
  report: what the report plots: x (an axis name), series (an axis name or ''), metrics (result columns, one panel
    each; 'info_layer:*' stands for every column with that prefix), xscale ('linear' | 'log'), heatmaps (a grid of
    each point's analysis/heatmaps.npz: rows = values of x, columns = layers, the same test images), x_label (the
    x axis as a reader reads it) and caption (a line under the figure's title, e.g. the runs' β).

`launch.py --mode=sweep` runs every point into W/<point>/ (a normal run: config.json, checkpoints, metrics,
summary.json, then analysis/), logging to W/<point>/run.log. A point is finished when W/<point>/DONE exists (written
after its analysis) for the same commands and its summary.json is there; a re-run skips finished points and resumes
the others from their checkpoints. A failing point is reported with the tail of its log and the others go on. Then
`W/results.csv`, `W/results_mean.csv` and `W/report.md` are written (also by `--mode=report` alone).

Pure Python: this module must not import JAX (the sweep process only starts and watches the runs).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import itertools
import json
import math
import os
import pathlib
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from infodrop_jax import cpu_process

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO_ROOT / 'launch.py'
DONE_FILE = 'DONE'
STATUS_FILE = 'status.json'
LOG_FILE = 'run.log'
SWEEP_FILE = 'sweep.json'
RESULTS_FILE = 'results.csv'
MEANS_FILE = 'results_mean.csv'
REPORT_FILE = 'report.md'
GPU_ENV = 'INFODROP_SWEEP_GPUS'
SEED_AXIS = 'seed'
DATA_CHOICES = ('', 'proxy', 'canonical')
_NAME_CHARS = re.compile(r'[^A-Za-z0-9._=,+-]')
TAIL_LINES = 20


class SweepError(ValueError):
  """A sweep config or workdir the sweep cannot use; the message says what was expected."""


# --- the sweep config ---------------------------------------------------------------------------------------------


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
  config.analyze = True
  config.analysis = ()
  config.parallel = 1
  config.max_points = 0
  config.only = ''
  config.claim = ''
  config.expect = ml_collections.ConfigDict()
  # x_label: the x axis as a reader should read it (default: the axis name); caption: a line under the figure's
  # title with what a reader needs and the axes do not say (e.g. the β of the runs).
  config.report = ml_collections.ConfigDict(dict(x='', series='', metrics=('test_error_d', 'test_error_n'),
                                                 xscale='linear', heatmaps=False, heatmap_images=3, x_label='',
                                                 caption=''))
  return config


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


def _axes(config: ml_collections.ConfigDict) -> list[tuple[str, tuple[str, ...], list[Any], list[str], bool]]:
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


def base_argument(config: ml_collections.ConfigDict) -> str:
  return f'{config.base}:{config.variant}' if config.variant else str(config.base)


def points(config: ml_collections.ConfigDict) -> list[Point]:
  """Every point of the sweep, in order (the first axis varies slowest, the seed fastest)."""
  if not (REPO_ROOT / str(config.base)).is_file():
    raise SweepError(f'sweep base={config.base!r}: no such config file under {REPO_ROOT}.')
  axes = _axes(config)
  fixed = [str(o) for o in config.overrides] + _data_overrides(str(config.data))
  for o in fixed:
    if '=' not in o:
      raise SweepError(f'sweep overrides: {o!r} is not of the form field=value.')
  analysis = [str(o) for o in config.analysis]
  for o in analysis:
    if '=' not in o:
      raise SweepError(f'sweep analysis: {o!r} is not of the form field=value.')
  out, names = [], set()
  for index, choice in enumerate(itertools.product(*[range(len(a[2])) for a in axes])):
    labels, settings = {}, []
    for (name, fields, values, axis_labels, zipped), i in zip(axes, choice):
      labels[name] = axis_labels[i]
      settings.extend(zip(fields, values[i]) if zipped else [(fields[0], values[i])])
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


# --- commands ------------------------------------------------------------------------------------------------------


def _python() -> str:
  return sys.executable or 'python'


def train_command(point: Point, point_dir: str) -> list[str]:
  return [_python(), str(LAUNCH), *point.train_args, f'--workdir={point_dir}']


def analyze_command(point: Point, point_dir: str) -> list[str]:
  return [_python(), str(LAUNCH), f'--workdir={point_dir}', *point.analyze_args]


def _done_record(point: Point, analyze: bool) -> dict[str, Any]:
  return {'point': point.name, 'train_args': list(point.train_args),
          'analyze_args': list(point.analyze_args) if analyze else None}


def _display_command(args: Sequence[str]) -> str:
  """A command as a reader would type it in the repository root."""
  rest = [a for a in args[2:]]
  return 'python launch.py ' + ' '.join(shlex.quote(a) for a in rest)


def shell_line(point: Point, workdir: str, analyze: bool) -> str:
  """One self-contained shell line that runs `point` into the same layout a sweep gives (for a job array)."""
  point_dir = os.path.join(os.path.abspath(workdir), point.name)
  log = shlex.quote(os.path.join(point_dir, LOG_FILE))
  steps = [' '.join(shlex.quote(a) for a in train_command(point, point_dir))]
  if analyze:
    steps.append(' '.join(shlex.quote(a) for a in analyze_command(point, point_dir)))
  done = json.dumps({**_done_record(point, analyze), 'by': 'sweep_commands'})
  return (f'cd {shlex.quote(str(REPO_ROOT))} && mkdir -p {shlex.quote(point_dir)} && {{ '
          + ' && '.join(steps) + f'; }} >> {log} 2>&1 && printf "%s\\n" {shlex.quote(done)} > '
          + shlex.quote(os.path.join(point_dir, DONE_FILE)))


# --- the state of a point ------------------------------------------------------------------------------------------


def _read_json(path: str | os.PathLike) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str | os.PathLike, value: Any) -> None:
  tmp = f'{path}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def is_finished(point: Point, point_dir: str, analyze: bool) -> bool:
  """DONE written for these very commands, and summary.json (and analysis.json when analysing) present."""
  done = _read_json(os.path.join(point_dir, DONE_FILE))
  if not isinstance(done, dict):
    return False
  record = _done_record(point, analyze)
  if done.get('train_args') != record['train_args'] or (analyze and done.get('analyze_args') != record['analyze_args']):
    return False
  if not os.path.isfile(os.path.join(point_dir, 'summary.json')):
    return False
  return not analyze or os.path.isfile(os.path.join(point_dir, 'analysis', 'analysis.json'))


def status_of(point: Point, point_dir: str, analyze: bool) -> str:
  """'done', 'failed', 'incomplete' (started, not finished: killed or still running elsewhere) or 'pending'."""
  if is_finished(point, point_dir, analyze):
    return 'done'
  status = _read_json(os.path.join(point_dir, STATUS_FILE))
  if isinstance(status, dict) and status.get('status') == 'failed':
    return 'failed'
  return 'incomplete' if os.path.isdir(point_dir) else 'pending'


def log_tail(path: str | os.PathLike, lines: int = TAIL_LINES) -> str:
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return '(no log)'


# --- machine shares ------------------------------------------------------------------------------------------------


def gpu_ids(env: Mapping[str, str] | None = None) -> list[str]:
  """The GPUs to divide: $INFODROP_SWEEP_GPUS (a count or ids), else $CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`."""
  env = os.environ if env is None else env
  given = env.get(GPU_ENV, '').strip()
  if given:
    return [str(i) for i in range(int(given))] if given.isdigit() else [g.strip() for g in given.split(',') if g.strip()]
  visible = env.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return [g.strip() for g in visible.split(',') if g.strip() and g.strip() != '-1']
  if shutil.which('nvidia-smi'):
    try:
      out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
      return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith('GPU '))]
  return []


def _chunks(items: list[Any], k: int) -> list[list[Any]]:
  """`items` divided into k contiguous shares; with fewer items than k, share i is [items[i % len]]."""
  if len(items) < k:
    return [[items[i % len(items)]] for i in range(k)] if items else [[] for _ in range(k)]
  size, extra = divmod(len(items), k)
  out, start = [], 0
  for i in range(k):
    end = start + size + (1 if i < extra else 0)
    out.append(items[start:end])
    start = end
  return out


@dataclasses.dataclass
class Slot:
  """What one of the `parallel` concurrent runs may use."""
  index: int
  cpus: list[int] | None  # None: no pinning (parallel = 1)
  gpus: list[str] | None
  env: dict[str, str]

  def describe(self) -> str:
    parts = []
    if self.cpus is not None:
      parts.append(f'cpus {",".join(map(str, self.cpus))}')
    if self.gpus:
      parts.append(f'gpus {",".join(self.gpus)}')
    return ', '.join(parts) or 'the whole machine'

  def preexec(self) -> Callable[[], None] | None:
    if self.cpus is None or not hasattr(os, 'sched_setaffinity'):
      return None
    cpus = set(self.cpus)
    return lambda: os.sched_setaffinity(0, cpus)


def plan_slots(parallel: int, env: Mapping[str, str] | None = None, cpus: list[int] | None = None,
               gpus: list[str] | None = None) -> list[Slot]:
  """`parallel` shares of this machine's CPU cores (and GPUs, if any): each run sees only its own."""
  env = dict(os.environ if env is None else env)
  if parallel < 1:
    raise SweepError(f'parallel={parallel}: expected an int >= 1.')
  if parallel == 1:
    return [Slot(0, None, None, {})]
  cpus = cpu_process.usable_cpus() if cpus is None else cpus
  gpus = gpu_ids(env) if gpus is None else gpus
  slots = []
  for i, (cpu_share, gpu_share) in enumerate(zip(_chunks(cpus, parallel),
                                                 _chunks(gpus, parallel) if gpus else [None] * parallel)):
    extra = {k: str(len(cpu_share)) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')}
    if len(cpu_share) == 1:
      # XLA:CPU's Eigen pool sizes itself from the schedulable cores; with one core, run it single-threaded.
      extra['XLA_FLAGS'] = ('--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 '
                            + env.get('XLA_FLAGS', '')).strip()
    if gpu_share is not None:
      extra['CUDA_VISIBLE_DEVICES'] = ','.join(gpu_share)
      if parallel > len(gpus):  # Several runs share one GPU: split its memory instead of preallocating it all.
        sharing = math.ceil(parallel / len(gpus))
        extra['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{0.9 / sharing:.2f}'
    slots.append(Slot(i, cpu_share, gpu_share, extra))
  return slots


def machine() -> dict[str, Any]:
  """Where the sweep runs: host, CPU, cores, GPUs."""
  gpus = []
  if shutil.which('nvidia-smi'):
    try:
      out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=30, check=False).stdout
      gpus = [line.split(' (UUID')[0] for line in out.splitlines() if line.startswith('GPU ')]
    except (OSError, subprocess.SubprocessError):
      pass
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  return {'host': platform.node(), 'cpu': cpu, 'cores': len(cpu_process.usable_cpus()), 'gpus': gpus,
          'python': platform.python_version(), 'platform': platform.platform()}


# --- running -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
  point: Point
  point_dir: str
  slot: Slot
  stage: str
  process: subprocess.Popen
  log: Any
  start: float
  stage_start: float


class Runner:
  """Runs the unfinished points, `parallel` at a time, each train then analyze, as subprocesses."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, out: Callable[[str], None] = print):
    self.config, self.workdir, self.out = config, os.path.abspath(workdir), out
    self.analyze = bool(config.analyze)
    self.machine = machine()

  def point_dir(self, point: Point) -> str:
    return os.path.join(self.workdir, point.name)

  def _start(self, point: Point, slot: Slot, stage: str, log: Any, start: float) -> _Job:
    point_dir = self.point_dir(point)
    command = train_command(point, point_dir) if stage == 'train' else analyze_command(point, point_dir)
    stamp = datetime.datetime.now().isoformat(timespec='seconds')
    log.write(f'\n### {stamp} sweep: {stage} on {slot.describe()}\n### {" ".join(shlex.quote(a) for a in command)}\n')
    log.flush()
    env = {**os.environ, **slot.env, 'PYTHONUNBUFFERED': '1'}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               cwd=str(REPO_ROOT), preexec_fn=slot.preexec())  # pylint: disable=subprocess-popen-preexec-fn
    self._status(point, 'running', stage=stage, start=start, slot=slot.describe())
    return _Job(point, point_dir, slot, stage, process, log, start, time.time())

  def _status(self, point: Point, status: str, **fields: Any) -> None:
    record = {'status': status, 'point': point.name, 'labels': point.labels, 'machine': self.machine,
              'commands': [_display_command(train_command(point, self.point_dir(point)))]
              + ([_display_command(analyze_command(point, self.point_dir(point)))] if self.analyze else []),
              'updated': datetime.datetime.now().isoformat(timespec='seconds'), **fields}
    _write_json(os.path.join(self.point_dir(point), STATUS_FILE), record)

  def run(self, to_run: list[Point]) -> dict[str, list[Point]]:
    """Runs `to_run`; returns {'done': [...], 'failed': [...]}."""
    slots = plan_slots(int(self.config.parallel))
    queue = list(to_run)
    free = list(slots)
    jobs: list[_Job] = []
    result: dict[str, list[Point]] = {'done': [], 'failed': []}
    try:
      while queue or jobs:
        while queue and free:
          point, slot = queue.pop(0), free.pop(0)
          os.makedirs(self.point_dir(point), exist_ok=True)
          done_path = os.path.join(self.point_dir(point), DONE_FILE)
          if os.path.exists(done_path):
            os.remove(done_path)  # Stale (other commands): it is redone now.
          log = open(os.path.join(self.point_dir(point), LOG_FILE), 'a', encoding='utf-8')
          self.out(f'[sweep] start {point.name} ({slot.describe()})')
          jobs.append(self._start(point, slot, 'train', log, time.time()))
        time.sleep(0.2)
        for job in list(jobs):
          rc = job.process.poll()
          if rc is None:
            continue
          jobs.remove(job)
          now = time.time()
          if rc == 0 and job.stage == 'train' and self.analyze:
            jobs.append(self._start(job.point, job.slot, 'analyze', job.log, job.start))
            continue
          job.log.close()
          free.append(job.slot)
          if rc == 0:
            wall = now - job.start
            self._status(job.point, 'done', start=job.start, wall_time_s=wall)
            _write_json(os.path.join(job.point_dir, DONE_FILE),
                        {**_done_record(job.point, self.analyze), 'by': 'sweep', 'wall_time_s': wall,
                         'finished': datetime.datetime.now().isoformat(timespec='seconds')})
            result['done'].append(job.point)
            self.out(f'[sweep] done  {job.point.name} in {wall:.0f} s')
          else:
            log_path = os.path.join(job.point_dir, LOG_FILE)
            tail = log_tail(log_path)
            self._status(job.point, 'failed', stage=job.stage, returncode=rc, start=job.start,
                         wall_time_s=now - job.start, log_tail=tail)
            result['failed'].append(job.point)
            self.out(f'[sweep] FAILED {job.point.name}: {job.stage} exited with status {rc}; the last lines of '
                     f'{log_path}:\n' + ''.join(f'    {line}\n' for line in tail.rstrip('\n').split('\n')))
    except KeyboardInterrupt:
      for job in jobs:
        job.process.send_signal(signal.SIGTERM)
      for job in jobs:
        try:
          job.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
          job.process.kill()
        job.log.close()
      raise
    return result


def _sweep_command(config_file: str | None, overrides: Mapping[str, Any] | None, workdir: str, mode: str) -> str:
  args = [f'--config={config_file}'] if config_file else []
  args += [f'--config.{k}={format_value(v)}' for k, v in (overrides or {}).items()]
  return 'python launch.py ' + ' '.join(shlex.quote(a) for a in [*args, f'--workdir={workdir}', f'--mode={mode}'])


def _save_sweep(config: ml_collections.ConfigDict, workdir: str, command: str) -> None:
  path = os.path.join(workdir, SWEEP_FILE)
  previous = _read_json(path) or {}
  commands = [c for c in previous.get('commands', []) if c != command] + [command]
  _write_json(path, {'config': json.loads(config.to_json_best_effort()), 'commands': commands})


def load_sweep(workdir: str) -> ml_collections.ConfigDict:
  """The sweep config a `--mode=sweep` saved in W/sweep.json."""
  saved = _read_json(os.path.join(workdir, SWEEP_FILE))
  if not isinstance(saved, dict) or 'config' not in saved:
    raise SweepError(f'{os.path.join(workdir, SWEEP_FILE)} not found: give --config=configs/sweeps/<x>.py, or run '
                     f'--mode=sweep in {workdir} first.')
  config = new_config('', '')
  saved_config = saved['config']
  axes = saved_config.pop('axes', {})
  config.update(_tuples(saved_config))
  for name, spec in axes.items():
    config.axes[name] = axis(spec['field'] if isinstance(spec['field'], str) else tuple(spec['field']),
                             _tuples(spec['values']), spec.get('labels') or ())
  return config


def _tuples(value: Any) -> Any:
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, command: str = '',
              out: Callable[[str], None] = print) -> int:
  """`--mode=sweep`; returns the exit status: 0 every selected point finished, 1 some failed, 3 some left to run
  (max_points)."""
  all_points = points(config)
  chosen = select(config, all_points)
  os.makedirs(workdir, exist_ok=True)
  _save_sweep(config, workdir, command)
  runner = Runner(config, workdir, out=out)
  finished = [p for p in chosen if is_finished(p, runner.point_dir(p), runner.analyze)]
  todo = [p for p in chosen if p not in finished]
  limit = int(config.max_points)
  left = todo[limit:] if limit > 0 else []
  todo = todo[:limit] if limit > 0 else todo
  out(f'[sweep] {config.name}: {len(chosen)} points in {os.path.abspath(workdir)}; {len(finished)} finished '
      f'(skipped), {len(todo)} to run{f", {len(left)} left for later (max_points={limit})" if left else ""}, '
      f'{config.parallel} at a time')
  for p in finished:
    out(f'[sweep] skip  {p.name} (finished)')
  result = runner.run(todo)
  write_results(config, workdir)
  report_path = write_report(config, workdir)
  out(f'[sweep] results: {os.path.join(workdir, RESULTS_FILE)}, {os.path.join(workdir, MEANS_FILE)}; '
      f'report: {report_path}')
  if result['failed']:
    out(f'[sweep] {len(result["failed"])} of {len(chosen)} points failed: '
        + ', '.join(p.name for p in result['failed']))
    return 1
  if left:
    out(f'[sweep] {len(left)} points not run yet (max_points={limit}); run the same command again to go on.')
    return 3
  out(f'[sweep] all {len(chosen)} points finished.')
  return 0


# --- results -------------------------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = (('test/error_d', 'test_error_d'), ('test/error_n', 'test_error_n'), ('test/ce_d', 'test_ce_d'),
                    ('test/ce_n', 'test_ce_n'))


def _number(value: Any) -> float | None:
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
  summary = _read_json(os.path.join(point_dir, 'summary.json'))
  status = _read_json(os.path.join(point_dir, STATUS_FILE)) or {}
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
  analysis = _read_json(os.path.join(point_dir, 'analysis', 'analysis.json'))
  if isinstance(analysis, dict):
    for layer, value in (analysis.get('info_per_layer') or {}).items():
      row[f'info_layer:{layer}'] = value
    for layer, value in (analysis.get('info_per_unit') or {}).items():
      row[f'info_unit:{layer}'] = value
    tc = analysis.get('total_correlation') or {}
    if tc:
      row['tc_nats'] = tc.get('tc_nats')
      row['tc_per_dim_nats'] = tc.get('tc_per_dim_nats')
    localization = analysis.get('localization') or {}
    for layer, value in (localization.get('mass_in_box') or {}).items():
      row[f'mass_in_box:{layer}'] = value
    for layer, value in (localization.get('pointing') or {}).items():
      row[f'pointing:{layer}'] = value
    if localization:
      row['localization_chance'] = localization.get('chance')
    nuisance = analysis.get('nuisance') or {}
    if nuisance:
      row['nuisance_error'] = nuisance.get('nuisance_error')
      row['nuisance_chance'] = nuisance.get('chance_error')
  return row


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
  tmp = f'{path}.tmp'
  with open(tmp, 'w', encoding='utf-8', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      writer.writerow([_cell(row.get(c)) for c in columns])
  os.replace(tmp, path)


_NOT_METRICS = ('point', 'status', 'steps', 'epochs')


def mean_rows(config: ml_collections.ConfigDict, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Rows of results_mean.csv: one per setting of the axes other than seed, over its finished seeds."""
  names = [a[0] for a in _axes(config) if a[0] != SEED_AXIS]
  groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault(tuple(row[n] for n in names), []).append(row)
  out = []
  for key, members in groups.items():
    done = [r for r in members if r['status'] == 'done']
    mean = {**dict(zip(names, key)), 'seeds': len(members), 'seeds_done': len(done)}
    metrics = [c for c in _columns(done, []) if c not in names and c != SEED_AXIS and c not in _NOT_METRICS]
    for metric in metrics:
      values = [v for v in (_number(r.get(metric)) for r in done) if v is not None and math.isfinite(v)]
      if not values:
        continue
      m = sum(values) / len(values)
      mean[f'{metric}:mean'] = m
      mean[f'{metric}:std'] = (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
                               if len(values) > 1 else None)
    out.append(mean)
  return out


def write_results(config: ml_collections.ConfigDict, workdir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """W/results.csv (one row per point) and W/results_mean.csv (mean and sample std over the finished seeds)."""
  all_points = points(config)
  rows = [point_row(config, p, os.path.join(workdir, p.name)) for p in all_points]
  axis_names = [a[0] for a in _axes(config)]
  _write_csv(os.path.join(workdir, RESULTS_FILE), rows, _columns(rows, [*axis_names, 'point', 'status']))
  means = mean_rows(config, rows)
  mean_first = [n for n in axis_names if n != SEED_AXIS] + ['seeds', 'seeds_done']
  _write_csv(os.path.join(workdir, MEANS_FILE), means, _columns(means, mean_first))
  return rows, means


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
  with open(path, encoding='utf-8', newline='') as f:
    return list(csv.DictReader(f))


# --- checks: does our sweep agree with the paper? ---------------------------------------------------------------


def _expand(metric: str, columns: Iterable[str]) -> list[str]:
  if metric.endswith('*'):
    return sorted(c for c in columns if c.startswith(metric[:-1]))
  return [metric]


def _series(means: list[dict[str, Any]], metric: str, x: str, where: Mapping[str, str]) -> dict[str, float]:
  values: dict[str, list[float]] = {}
  for row in means:
    if any(str(row.get(k)) != str(v) for k, v in where.items()):
      continue
    value = _number(row.get(f'{metric}:mean'))
    if value is not None and math.isfinite(value):
      values.setdefault(str(row.get(x)) if x else '', []).append(value)
  return {k: sum(v) / len(v) for k, v in values.items()}


def _x_order(config: ml_collections.ConfigDict, x: str) -> list[str]:
  for name, _, _, labels, _ in _axes(config):
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
  """(agrees, the numbers) for one metric column; agrees None = cannot tell."""
  kind = spec.check
  x = str(spec.get('along', '') or config.report.x)
  where = _where(spec)
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
    return all(holds), f'{metric} of {spec.a} ≤ {spec.b}{f" + {tol:g}" if tol else ""} at {sum(holds)}/{len(xs)} ({detail})'
  series = _series(means, metric, x, where)
  xs = [v for v in order if v in series]
  if kind in ('increasing', 'decreasing'):
    if len(xs) < 2:
      return None, f'{metric}: fewer than two values of {x} finished'
    first, last = series[xs[0]], series[xs[-1]]
    agrees = last > first + tol if kind == 'increasing' else last < first - tol
    return agrees, (f'{metric} at {x}={xs[0]}: {_fmt(first)}, at {x}={xs[-1]}: {_fmt(last)} '
                    f'(all: {", ".join(f"{v}: {_fmt(series[v])}" for v in xs)})')
  if kind == 'range_le':
    if len(xs) < 2:
      return None, f'{metric}: fewer than two values of {x} finished'
    values = [series[v] for v in xs]
    spread = (max(values) - min(values)) / (abs(sum(values) / len(values)) or 1.0)
    return spread <= tol, f'{metric} varies by {100 * spread:.1f} % of its mean across {x} (allowed {100 * tol:.0f} %)'
  if kind == 'interior_min':
    if len(xs) < 3:
      return None, f'{metric}: fewer than three values of {x} finished'
    best = min(xs, key=lambda v: series[v])
    return best not in (xs[0], xs[-1]), (f'{metric} is lowest at {x}={best} '
                                         f'(all: {", ".join(f"{v}: {_fmt(series[v])}" for v in xs)})')
  if kind == 'above':
    ref = _series(means, str(spec.reference), x, where)
    xs = [v for v in xs if v in ref]
    if not xs:
      return None, f'{metric}: no finished points with {spec.reference}'
    holds = [series[v] > ref[v] + tol for v in xs]
    return all(holds), (f'{metric} above {spec.reference} at {sum(holds)}/{len(xs)} '
                        f'({"; ".join(f"{x}={v}: {_fmt(series[v])} vs {_fmt(ref[v])}" for v in xs)})')
  raise SweepError(f'expect: unknown check {kind!r}; expected one of {CHECKS}.')


CHECKS = ('le', 'increasing', 'decreasing', 'range_le', 'interior_min', 'above')


def verdicts(config: ml_collections.ConfigDict, means: list[dict[str, Any]]) -> tuple[str, list[str]]:
  """('agree' | 'partly' | 'disagree' | 'cannot tell', one line per check with its numbers)."""
  columns = {c.rsplit(':', 1)[0] for row in means for c in row if c.endswith(':mean')}
  lines, outcomes = [], []
  for name in sorted(config.expect.keys()):
    spec = config.expect[name]
    mode = str(spec.get('mode', 'all') or 'all')
    metrics = _expand(str(spec.metric), columns)
    results = [(m, *_check_one(config, means, spec, m)) for m in metrics] if metrics else []
    known = [r for r in results if r[1] is not None]
    if not known:
      outcome = None
    else:
      outcome = (all if mode == 'all' else any)(r[1] for r in known)
    outcomes.append(outcome)
    word = {True: 'agrees', False: 'disagrees', None: 'cannot tell'}[outcome]
    detail = ' | '.join(r[2] for r in results) or f'no column matches {spec.metric}'
    description = f' ({spec.description})' if spec.get('description') else ''
    lines.append(f'`{name}`{description}: **{word}**: {detail}')
  if not outcomes:
    return 'no check declared', lines
  agree, disagree = outcomes.count(True), outcomes.count(False)
  unknown = len(outcomes) - agree - disagree
  word = ('agree' if agree == len(outcomes) else 'disagree' if disagree == len(outcomes)
          else 'cannot tell' if unknown == len(outcomes) else 'partly')
  return f'{word} ({agree} of {len(outcomes)} checks agree, {disagree} disagree, {unknown} cannot tell)', lines


# --- report --------------------------------------------------------------------------------------------------------


def _is_error(metric: str) -> bool:
  return 'error' in metric


# Axis labels for the metrics of results.csv (a column's prefix before ':'), for readers who have not seen the code.
METRIC_LABELS = {
    'test_error_d': 'test error, noise off (D), %',
    'test_error_n': 'test error, noise on (N), %',
    'test_ce_d': 'test cross-entropy, noise off (nats)',
    'kl': 'KL per layer (nats per example)',
    'info_layer': 'information per layer (nats per example)',
    'info_unit': 'information per unit (nats)',
    'mass_in_box': 'share of the KL heat in the digit box',
    'tc_per_dim_nats': 'total correlation per dimension (nats)',
    'nuisance_error': 'nuisance probe error, %',
}


def _metric_label(metric: str) -> str:
  label = METRIC_LABELS.get(metric.split(':', 1)[0])
  if label is None:
    return metric + (' (%)' if _is_error(metric) else '')
  return label


def _x_positions(labels: list[str]) -> tuple[list[float], bool]:
  try:
    return [float(v) for v in labels], True
  except ValueError:
    return list(range(len(labels))), False


def _plot(config, means, metrics_by_panel, path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  x = str(config.report.x)
  series_axis = str(config.report.series or '')
  order = _x_order(config, x)
  positions, numeric = _x_positions(order)
  series_values = _x_order(config, series_axis) if series_axis else ['']
  fig, axes = plt.subplots(1, len(metrics_by_panel), figsize=(5.2 * len(metrics_by_panel), 3.9), squeeze=False)
  for ax, (title, columns) in zip(axes[0], metrics_by_panel):
    scale = 100.0 if _is_error(title) else 1.0
    for column in columns:
      for s in series_values:
        xs, ys, es = [], [], []
        for pos, label in zip(positions, order):
          for row in means:
            if (x and str(row.get(x)) != label) or (series_axis and str(row.get(series_axis)) != s):
              continue
            m = _number(row.get(f'{column}:mean'))
            if m is None or not math.isfinite(m):
              continue
            e = _number(row.get(f'{column}:std'))
            xs.append(pos)
            ys.append(scale * m)
            es.append(scale * e if e is not None and math.isfinite(e) else 0.0)
        if not xs:
          continue
        parts = [p for p in (s if series_axis else '', column.split(':', 1)[1] if len(columns) > 1 else '') if p]
        ax.errorbar(xs, ys, yerr=es, marker='o', capsize=3, label=', '.join(parts) or column)
    if str(config.report.xscale) == 'log' and numeric:
      ax.set_xscale('log')
    if not numeric:
      ax.set_xticks(positions, order)
    ax.set_xlabel(str(config.report.get('x_label', '')) or x)
    ax.set_ylabel(_metric_label(title))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  caption = str(config.report.get('caption', ''))
  fig.suptitle(f'{config.name}: mean ± std over seeds {tuple(config.seeds)}' + (f'\n{caption}' if caption else ''),
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _heatmap_grid(config, all_points, workdir, path) -> bool:
  """Rows: values of report.x (seed = first seed); columns: each layer's KL map for the same test images."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.patches as mpatches  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  x = str(config.report.x)
  first_seed = str(config.seeds[0])
  rows = []
  for p in all_points:
    if p.labels[SEED_AXIS] != first_seed:
      continue
    npz = os.path.join(workdir, p.name, 'analysis', 'heatmaps.npz')
    if os.path.isfile(npz):
      with np.load(npz) as data:
        rows.append((p, {k: data[k] for k in data.files}))
  if not rows:
    return False
  k = int(config.report.heatmap_images)
  layers = [n for n in rows[0][1] if n not in ('indices', 'bbox')]
  cols = [(i, layer) for i in range(k) for layer in layers]
  fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.5 * len(cols), 1.6 * len(rows) + 0.8), squeeze=False)
  for r, (point, data) in enumerate(rows):
    run_config = _read_json(os.path.join(workdir, point.name, 'config.json')) or {}
    size = ((run_config.get('data') or {}).get('cluttered') or {}).get('canvas_size')
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
        ax.set_ylabel(f'{"β" if x == "beta" else x} = {point.labels.get(x, "")}', fontsize=7)
  caption = str(config.report.get('caption', ''))
  fig.suptitle(f'{config.name}: KL per location in nats (noise off; each panel its own colour scale, its range '
               f'below it), the same test images in every row; green: the digit box' + (f'\n{caption}' if caption
                                                                                       else ''), fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def _table(config, means, metrics: list[str]) -> list[str]:
  names = [a[0] for a in _axes(config) if a[0] != SEED_AXIS]
  header = names + ['seeds done'] + [m + (' (%)' if _is_error(m) else '') for m in metrics]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in means:
    cells = [str(row.get(n, '')) for n in names] + [f'{row["seeds_done"]}/{row["seeds"]}']
    for m in metrics:
      mean, std = _number(row.get(f'{m}:mean')), _number(row.get(f'{m}:std'))
      scale = 100.0 if _is_error(m) else 1.0
      if mean is None:
        cells.append('')
      else:
        cells.append(f'{scale * mean:.4g}' + (f' ± {scale * std:.2g}' if std is not None else ''))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def write_report(config: ml_collections.ConfigDict, workdir: str) -> str:
  """W/report.md and its PNGs (from results.csv's numbers and the points' analysis files)."""
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
  saved = _read_json(os.path.join(workdir, SWEEP_FILE)) or {}
  now = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
  lines += [f'Generated {now} (regenerate: `python launch.py --workdir={workdir} --mode=report`).', '']
  if config.claim:
    lines += [f'**The paper\'s claim:** {config.claim}', '']
  verdict, check_lines = verdicts(config, means)
  lines += [f'**Whether our numbers agree:** {verdict}.', '']
  lines += [f'- {line}' for line in check_lines] + ([''] if check_lines else [])
  counts = {s: sum(r['status'] == s for r in rows) for s in ('done', 'failed', 'incomplete', 'pending')}
  lines += ['Points: ' + ', '.join(f'{v} {k}' for k, v in counts.items() if v) + f' of {len(rows)}.', '']
  figure_files = []
  if panels and means:
    png = f'{name}.png'
    _plot(config, means, panels, os.path.join(workdir, png))
    figure_files.append(png)
  if config.report.heatmaps:
    png = f'{name}_heatmaps.png'
    if _heatmap_grid(config, all_points, workdir, os.path.join(workdir, png)):
      figure_files.append(png)
  lines += ['## Figure', '']
  for png in figure_files:
    lines += [f'![{png}]({png})', '']
  if not figure_files:
    lines += ['(nothing to plot yet: no point has finished)', '']
  table_metrics = [c for _, cols in panels for c in cols]
  lines += [f'## Table (mean ± sample std over finished seeds; every number in {RESULTS_FILE} and {MEANS_FILE})',
            ''] + _table(config, means, table_metrics) + ['']
  failed = [r for r in rows if r['status'] != 'done']
  if failed:
    lines += ['## Points not finished', '']
    for r in failed:
      lines.append(f'- `{r["point"]}`: {r["status"]}' + (f' (see `{r["point"]}/{LOG_FILE}`)'
                                                         if r['status'] in ('failed', 'incomplete') else ''))
    lines.append('')
  machines = {}
  for p in all_points:
    status = _read_json(os.path.join(workdir, p.name, STATUS_FILE)) or {}
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
  walls = [_number(r.get('wall_time_s')) for r in rows if r['status'] == 'done']
  walls = [w for w in walls if w is not None]
  if walls:
    lines.append(f'- wall time per point (train + analysis): {min(walls):.0f}–{max(walls):.0f} s, '
                 f'{sum(walls) / 60:.1f} min in all')
  lines += ['', '## Commands', '', 'The sweep (from the repository root):', '', '```bash']
  lines += list(saved.get('commands', [])) or [f'# not recorded ({SWEEP_FILE} has no sweep command)']
  lines += ['```', '', '<details><summary>Every point\'s commands</summary>', '', '```bash']
  for p in all_points:
    point_dir = os.path.join(workdir, p.name)
    lines.append(_display_command(train_command(p, point_dir)))
    if config.analyze:
      lines.append(_display_command(analyze_command(p, point_dir)))
  lines += ['```', '', '</details>', '']
  path = os.path.join(workdir, REPORT_FILE)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  os.replace(path + '.tmp', path)
  return path


# --- entry point ----------------------------------------------------------------------------------------------------

MODES = ('sweep', 'sweep_commands', 'report')


def main(mode: str, config: ml_collections.ConfigDict | None, workdir: str, *, config_file: str | None = None,
         overrides: Mapping[str, Any] | None = None, out: Callable[[str], None] = print) -> int:
  """launch.py's --mode=sweep | sweep_commands | report; returns the exit status."""
  try:
    if config is None:
      if mode != 'report':
        raise SweepError(f'--mode={mode} needs --config=configs/sweeps/<x>.py[:variant].')
      config = load_sweep(workdir)
    if 'axes' not in config or 'base' not in config:
      raise SweepError(f'--mode={mode} needs a sweep config (configs/sweeps/*.py, with base and axes); '
                       f'{config_file or "--config"} is an experiment config.')
    if mode == 'sweep_commands':
      for p in select(config, points(config)):
        out(shell_line(p, workdir, bool(config.analyze)))
      return 0
    if mode == 'report':
      os.makedirs(workdir, exist_ok=True)
      path = write_report(config, workdir)
      out(f'wrote {os.path.join(workdir, RESULTS_FILE)}, {os.path.join(workdir, MEANS_FILE)} and {path}')
      return 0
    return run_sweep(config, workdir, command=_sweep_command(config_file, overrides, workdir, 'sweep'), out=out)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
