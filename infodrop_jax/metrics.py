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


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites the JSON-lines file at `path` without records past `step`, atomically (temp file + os.replace)."""
  with open(path, encoding='utf-8') as f:
    kept = [line for line in f if line.strip() and json.loads(line)['step'] <= step]
  tmp = f'{path}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(kept)
  os.replace(tmp, path)


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and (optionally) TensorBoard event files under `workdir/tensorboard`."""

  def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int = 0):
    """Opens the writers; `resume_step` > 0 first drops what a crashed run logged after that checkpointed step.

    A resumed run recomputes those steps exactly, so keeping the old records would log them twice.
    """
    self.active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self.active:
      return
    path = os.path.join(workdir, METRICS_FILE)
    if resume_step and os.path.exists(path):
      _drop_records_after(path, resume_step)
    self._jsonl = open(path, 'a', encoding='utf-8')
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        raise ImportError('config.logging.tensorboard is True but tensorboardX is not installed '
                          '(pip install tensorboardX), or set --config.logging.tensorboard=False.') from e
      # purge_step hides the crashed run's events from resume_step + 1 on in TensorBoard.
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                            purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, scalars: Mapping[str, Any], prefix: str = '') -> None:
    if not self.active:
      return
    record = {'step': int(step), **{prefix + k: _plain(v) for k, v in scalars.items()}}
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


def format_summary(summary: Mapping[str, Any]) -> str:
  """A few human-readable lines: test error D/N, KL per layer, wall time."""
  lines = [f"test error: {100 * summary['test/error_d']:.2f} % deterministic (D), "
           f"{100 * summary['test/error_n']:.2f} % with noise (N)"]
  for name in sorted(k for k in summary if k.startswith('test/kl/')):
    lines.append(f'  KL {name[len("test/kl/"):]}: {summary[name]:.4g} nats/example')
  lines.append(f"wall time: {summary['wall_time_s']:.1f} s, {summary['steps']} steps")
  return '\n'.join(lines)


class ProgressBar:
  """One console line, redrawn in place: step, epoch, images/s, ETA and the latest loss."""

  def __init__(self, total_steps: int, batch_size: int, *, enabled: bool = True, stream=sys.stdout):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.enabled = enabled and jax.process_index() == 0
    self.stream = stream
    self._start_time = None
    self._start_step = 0

  def start(self, step: int) -> None:
    self._start_time = time.perf_counter()
    self._start_step = step

  def update(self, step: int, epoch: int, loss: float) -> None:
    if not self.enabled:
      return
    elapsed = time.perf_counter() - self._start_time
    done = step - self._start_step
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total_steps - step) / rate if rate > 0 else float('inf')
    width = 30
    filled = int(width * step / max(self.total_steps, 1))
    eta_text = time.strftime('%H:%M:%S', time.gmtime(eta)) if math.isfinite(eta) else '--:--:--'
    self.stream.write(f'\r[{"#" * filled}{"." * (width - filled)}] step {step}/{self.total_steps} '
                      f'epoch {epoch} | {rate * self.batch_size:,.0f} img/s | ETA {eta_text} | loss {loss:.4f}')
    self.stream.flush()

  def finish(self) -> None:
    if self.enabled:
      self.stream.write('\n')
      self.stream.flush()
