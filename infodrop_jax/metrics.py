"""Run records in the workdir: JSON lines, TensorBoard event files, a console progress line, the final summary.

Only process 0 writes in multi-host runs; on other processes every method is a no-op.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any
import warnings

from absl import logging
import jax
import numpy as np

METRICS_FILE = 'metrics.jsonl'
SUMMARY_FILE = 'summary.json'
TENSORBOARD_DIR = 'tensorboard'


def _plain(value: Any) -> Any:
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf.
  return value


def read_records(path: str) -> list[str]:
  """The lines of the JSON-lines file at `path`, without a torn last line (a run killed mid-write).

  A torn last line is dropped with a warning; a damaged line anywhere else is not a kill mid-write, and dropping it
  would lose a record silently, so it raises ValueError.
  """
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = [line if line.endswith('\n') else line + '\n' for line in f if line.strip()]
  for number, line in enumerate(lines, start=1):
    try:
      record = json.loads(line)
      record['step'] = int(record['step'])
    except (ValueError, TypeError, KeyError) as e:
      if number == len(lines):
        message = (f'{path}: dropping the torn last line {number} (the previous run was killed while writing it): '
                   f'{line.strip()[:80]!r}')
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logging.warning(message)
        return lines[:-1]
      raise ValueError(f'{path}, line {number}: not a JSON record with an integer "step" ({e}): '
                       f'{line.strip()[:80]!r}. Fix or delete that line, then resume.') from e
  return lines


def drop_records_after(path: str, step: int | None) -> None:
  """Rewrites the JSON-lines file at `path` without records past `step` (None: keep every step) and without a torn
  last line, atomically (temp file + os.replace)."""
  lines = read_records(path)
  kept = [line for line in lines if step is None or json.loads(line)['step'] <= step]
  with open(path, 'rb') as f:
    unchanged = f.read() == ''.join(lines).encode('utf-8') and len(kept) == len(lines)
  if unchanged:
    return
  tmp = f'{path}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(kept)
  os.replace(tmp, path)


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and (optionally) TensorBoard event files under `workdir/tensorboard`."""

  def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int = 0):
    """Opens the writers; first drops what an earlier attempt logged after `resume_step`, the checkpointed step
    training continues from (0: a fresh start, which drops every record: the run logs them all again).

    A resumed run recomputes those steps exactly, so keeping the old records would log them twice.
    `discarded_up_to` is the last step a fresh start dropped (None if it dropped nothing).
    """
    self.active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    self._logged: dict[int, set[str]] = {}
    self.discarded_up_to: int | None = None
    if not self.active:
      return
    path = os.path.join(workdir, METRICS_FILE)
    purge_step = resume_step + 1 if resume_step else None
    if os.path.exists(path):
      records = [json.loads(line) for line in read_records(path)]
      if not resume_step and records:
        self.discarded_up_to, purge_step = max(r['step'] for r in records), 0
      # (A torn last line goes on a resume too: the next record would otherwise be appended to it.)
      drop_records_after(path, resume_step if resume_step else -1)
      for record in records:
        step = int(record.pop('step'))
        if resume_step and step <= resume_step:  # What drop_records_after kept.
          self._logged.setdefault(step, set()).update(record)
    self._jsonl = open(path, 'a', encoding='utf-8')
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        raise ImportError('config.logging.tensorboard is True but tensorboardX is not installed '
                          '(pip install tensorboardX), or set --config.logging.tensorboard=False.') from e
      # purge_step hides the earlier attempt's events from resume_step + 1 on (all, on a fresh start) in TensorBoard.
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), purge_step=purge_step)

  def logged(self, step: int) -> frozenset[str]:
    """The keys metrics.jsonl holds for `step` (kept from before a resume, or written since); empty on processes
    other than 0, which write nothing."""
    return frozenset(self._logged.get(int(step), ()))

  def write(self, step: int, scalars: Mapping[str, Any], prefix: str = '') -> None:
    if not self.active:
      return
    record = {'step': int(step), **{prefix + k: _plain(v) for k, v in scalars.items()}}
    self._logged.setdefault(int(step), set()).update(k for k in record if k != 'step')
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(prefix + name, float(value), int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def write_summary(workdir: str, summary: Mapping[str, Any]) -> None:
  """`workdir/summary.json` (process 0 only)."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, SUMMARY_FILE), 'w', encoding='utf-8') as f:
      json.dump({k: _plain(v) for k, v in summary.items()}, f, indent=2, sort_keys=True)


def format_summary(summary: Mapping[str, Any], *, evaluated_only: bool = False) -> str:
  """A few human-readable lines: the test results (classifiers: error D/N and KL per layer), wall time (of the
  training; with `evaluated_only`, of the evaluation of the checkpoint at step `steps`)."""
  lines = []
  if 'test/error_d' in summary:
    lines.append(f"test error: {100 * summary['test/error_d']:.2f} % deterministic (D), "
                 f"{100 * summary['test/error_n']:.2f} % with noise (N)")
  lines.extend(f'  KL {name[len("test/kl/"):]}: {summary[name]:.4g} nats/example'
               for name in sorted(k for k in summary if k.startswith('test/kl/')))
  # Other tasks' results (e.g. a VAE's test/neg_elbo, rate, distortion), whatever they are called.
  lines.extend(f'{name}: {summary[name]:.4g}' for name in sorted(summary) if name.startswith('test/')
               and not name.startswith(('test/kl/', 'test/error_')) and isinstance(summary[name], (int, float)))
  on = f" on {summary['devices']} {summary['device_kind']} device{'s' * (summary['devices'] != 1)}" \
      if 'devices' in summary else ''
  if evaluated_only:
    lines.append(f"evaluated the checkpoint at step {summary['steps']} in {summary['wall_time_s']:.1f} s{on}")
  else:
    lines.append(f"wall time: {summary['wall_time_s']:.1f} s, {summary['steps']} steps{on}")
  return '\n'.join(lines)


class ProgressBar:
  """Progress: step, epoch, images/s, ETA and the latest loss.

  On a terminal one line is redrawn in place (carriage returns); on anything else (a log file, a pipe, a notebook
  capturing stdout) it prints plain lines, at most one per `log_interval_s` seconds plus the last step, so logs stay
  readable.
  """

  def __init__(self, total_steps: int, batch_size: int, *, enabled: bool = True, stream=None,
               log_interval_s: float = 30.0):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.enabled = enabled and jax.process_index() == 0
    # Resolved at call time, not import time, so a redirected sys.stdout (pytest, notebooks) is honoured.
    self.stream = sys.stdout if stream is None else stream
    self.log_interval_s = log_interval_s
    isatty = getattr(self.stream, 'isatty', None)
    try:
      self.interactive = bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # A closed or detached stream.
      self.interactive = False
    self._start_time = None
    self._start_step = 0
    self._last_line_time = None
    self._drawn = False

  def start(self, step: int) -> None:
    self._start_time = time.perf_counter()
    self._start_step = step
    self._last_line_time = None

  def update(self, step: int, epoch: int, loss: float) -> None:
    if not self.enabled:
      return
    now = time.perf_counter()
    if not self.interactive and step < self.total_steps and self._last_line_time is not None and (
        now - self._last_line_time < self.log_interval_s):
      return
    elapsed = now - self._start_time
    done = step - self._start_step
    if done <= 0:  # Nothing timed yet (the clock restarts after compilation): no speed or ETA to show.
      return
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total_steps - step) / rate if rate > 0 else float('inf')
    eta_text = time.strftime('%H:%M:%S', time.gmtime(eta)) if math.isfinite(eta) else '--:--:--'
    text = (f'step {step}/{self.total_steps} epoch {epoch} | {rate * self.batch_size:,.0f} img/s | ETA {eta_text} | '
            f'loss {loss:.4f}')
    if self.interactive:
      width = 30
      filled = int(width * step / max(self.total_steps, 1))
      self.stream.write(f'\r[{"#" * filled}{"." * (width - filled)}] {text}')
      self._drawn = True
    else:
      self.stream.write(text + '\n')
    self._last_line_time = now
    self.stream.flush()

  def finish(self) -> None:
    if self.enabled and self.interactive and self._drawn:
      self.stream.write('\n')
      self.stream.flush()
