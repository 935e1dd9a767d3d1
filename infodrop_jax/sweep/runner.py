"""Running a sweep on this machine: `run_sweep` (`--mode=sweep`) runs the unfinished points, `parallel` at a time,
each pinned to its share of the CPU cores and GPUs (`plan_slots`), then writes the results and the report.

Every point runs into W/<point>/ (a normal run: config.json, checkpoints, metrics, summary.json, then analysis/),
logging to W/<point>/run.log. A re-run skips finished points and resumes the others from their checkpoints. A
failing point is reported with the tail of its log and the others go on. Then `W/results.csv`,
`W/results_mean.csv` and `W/report.md` are written (also by `--mode=report` alone).
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from infodrop_jax import ownership
from infodrop_jax import stopping
from infodrop_jax.cpu import process as cpu_process
from infodrop_jax.sweep.commands import (analyze_command, display_command, done_record, is_finished, log_tail,
                                         train_command)
from infodrop_jax.sweep.files import DONE_FILE, LOG_FILE, MEANS_FILE, REPO_ROOT, RESULTS_FILE, STATUS_FILE, write_json
from infodrop_jax.sweep.report import write_report
from infodrop_jax.sweep.spec import Point, SweepError, points, save_sweep, select

GPU_ENV = 'INFODROP_SWEEP_GPUS'


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


class SweepStopped(Exception):
  """The sweep process got SIGTERM or SIGINT; its running points were stopped (each saved a checkpoint)."""

  def __init__(self, signum: int, stopped: list[str]):
    self.signum, self.stopped = signum, stopped
    names = ', '.join(stopped) if stopped else 'none was running'
    super().__init__(f'[sweep] stopped on {signal.Signals(signum).name}; the points that were running saved their '
                     f'checkpoints and are marked stopped ({names}). Run the same command again to resume.')

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


def _raise_stop(signum: int, frame: Any) -> None:
  del frame
  raise SweepStopped(signum, [])


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


# How long a stopped sweep waits for a running point to save its checkpoint and exit before killing it.
STOP_TIMEOUT_S = 300


class Runner:
  """Runs the unfinished points, `parallel` at a time, each train then analyze, as subprocesses. SIGTERM or SIGINT
  to the sweep stops them (each saves a checkpoint), marks them 'stopped' and raises `SweepStopped`."""

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
    # The child stops (a trainer saves first) when this process dies, however it dies: no orphan keeps training a
    # point that a re-run of the sweep would start again (stopping.stop_with_parent, called by launch.py).
    env = {**os.environ, **slot.env, 'PYTHONUNBUFFERED': '1', stopping.PARENT_ENV: str(os.getpid())}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               cwd=str(REPO_ROOT), preexec_fn=slot.preexec())  # pylint: disable=subprocess-popen-preexec-fn
    self._status(point, 'running', stage=stage, start=start, slot=slot.describe())
    return _Job(point, point_dir, slot, stage, process, log, start, time.time())

  def _status(self, point: Point, status: str, **fields: Any) -> None:
    record = {'status': status, 'point': point.name, 'labels': point.labels, 'machine': self.machine,
              'commands': [display_command(train_command(point, self.point_dir(point)))]
              + ([display_command(analyze_command(point, self.point_dir(point)))] if self.analyze else []),
              'updated': datetime.datetime.now().isoformat(timespec='seconds'), **fields}
    write_json(os.path.join(self.point_dir(point), STATUS_FILE), record)

  def run(self, to_run: list[Point]) -> dict[str, list[Point]]:
    """Runs `to_run`; returns {'done': [...], 'failed': [...], 'elsewhere': [...]}, the last the points another
    process was running (their trainer held the point's workdir): they are left to it."""
    slots = plan_slots(int(self.config.parallel))
    queue = list(to_run)
    free = list(slots)
    jobs: list[_Job] = []
    result: dict[str, list[Point]] = {'done': [], 'failed': [], 'elsewhere': []}
    previous = (signal.signal(signal.SIGTERM, _raise_stop)
                if threading.current_thread() is threading.main_thread() else None)
    try:
      while queue or jobs:
        while queue and free:
          point = queue.pop(0)
          owner = ownership.live_owner(self.point_dir(point))
          if owner is not None:  # Another sweep process or array task runs it: neither restart nor mark it.
            result['elsewhere'].append(point)
            self.out(f'[sweep] skip  {point.name} (running in another process: {ownership.describe_owner(owner)})')
            continue
          slot = free.pop(0)
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
          if rc == ownership.BUSY_EXIT_CODE:  # Taken by another process between our look and the child's start.
            result['elsewhere'].append(job.point)
            self.out(f'[sweep] skip  {job.point.name} (another process started it first; see '
                     f'{os.path.join(job.point_dir, LOG_FILE)})')
          elif rc == 0:
            wall = now - job.start
            self._status(job.point, 'done', start=job.start, wall_time_s=wall)
            write_json(os.path.join(job.point_dir, DONE_FILE),
                       {**done_record(job.point, self.analyze), 'by': 'sweep', 'wall_time_s': wall,
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
    except (KeyboardInterrupt, SweepStopped) as stop:
      # Each trainer saves a checkpoint on SIGTERM and stops at its next chunk of steps (infodrop_jax/stopping.py).
      for job in jobs:
        if job.process.poll() is None:
          job.process.send_signal(signal.SIGTERM)
      for job in jobs:
        try:
          rc = job.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
          job.process.kill()
          rc = job.process.wait()
        job.log.close()
        self._status(job.point, 'stopped', stage=job.stage, returncode=rc, start=job.start,
                     wall_time_s=time.time() - job.start)
      signum = stop.signum if isinstance(stop, SweepStopped) else int(signal.SIGINT)
      raise SweepStopped(signum, [job.point.name for job in jobs]) from None
    finally:
      if previous is not None:
        signal.signal(signal.SIGTERM, previous)
    return result


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, command: str = '',
              out: Callable[[str], None] = print) -> int:
  """`--mode=sweep`; returns the exit status: 0 every selected point finished, 1 some failed, 3 some left to run
  (max_points) or running in other processes."""
  all_points = points(config)
  chosen = select(config, all_points)
  os.makedirs(workdir, exist_ok=True)
  with ownership.shared_files_lock(workdir):
    save_sweep(config, workdir, command)
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
  try:
    result = runner.run(todo)
  except SweepStopped as stop:
    out(str(stop))
    return stop.exit_code
  with ownership.shared_files_lock(workdir):  # Array tasks of one sweep finish at once: one writer at a time.
    report_path = write_report(config, workdir)
  out(f'[sweep] results: {os.path.join(workdir, RESULTS_FILE)}, {os.path.join(workdir, MEANS_FILE)}; '
      f'report: {report_path}')
  if result['failed']:
    out(f'[sweep] {len(result["failed"])} of {len(chosen)} points failed: '
        + ', '.join(p.name for p in result['failed']))
    return 1
  if result['elsewhere']:
    out(f'[sweep] {len(result["elsewhere"])} points are running in other processes; when they end, '
        f'`python launch.py --workdir={workdir} --mode=report` reports them all.')
    return 3
  if left:
    out(f'[sweep] {len(left)} points not run yet (max_points={limit}); run the same command again to go on.')
    return 3
  out(f'[sweep] all {len(chosen)} points finished.')
  return 0

