"""One point's commands (its train and analyze steps, as launch.py lines) and its state in W/<point>/.

A point is finished when W/<point>/DONE exists (written after its analysis) for the same commands and its
summary.json is there; `status_of` tells the other states apart.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from infodrop_jax.sweep.files import DONE_FILE, LAUNCH, LOG_FILE, REPO_ROOT, STATUS_FILE, read_json
from infodrop_jax.sweep.spec import Point

TAIL_LINES = 20


def _python() -> str:
  return sys.executable or 'python'


def train_command(point: Point, point_dir: str) -> list[str]:
  return [_python(), str(LAUNCH), *point.train_args, f'--workdir={point_dir}']


def analyze_command(point: Point, point_dir: str) -> list[str]:
  return [_python(), str(LAUNCH), f'--workdir={point_dir}', *point.analyze_args]


def done_record(point: Point, analyze: bool) -> dict[str, Any]:
  """What W/<point>/DONE records: the commands the point finished with."""
  return {'point': point.name, 'train_args': list(point.train_args),
          'analyze_args': list(point.analyze_args) if analyze else None}


def display_command(args: Sequence[str]) -> str:
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
  done = json.dumps({**done_record(point, analyze), 'by': 'sweep_commands'})
  return (f'cd {shlex.quote(str(REPO_ROOT))} && mkdir -p {shlex.quote(point_dir)} && {{ '
          + ' && '.join(steps) + f'; }} >> {log} 2>&1 && printf "%s\\n" {shlex.quote(done)} > '
          + shlex.quote(os.path.join(point_dir, DONE_FILE)))


# --- the state of a point ------------------------------------------------------------------------------------------


def is_finished(point: Point, point_dir: str, analyze: bool) -> bool:
  """DONE written for these very commands, and summary.json (and analysis.json when analysing) present."""
  done = read_json(os.path.join(point_dir, DONE_FILE))
  if not isinstance(done, dict):
    return False
  record = done_record(point, analyze)
  if done.get('train_args') != record['train_args'] or (analyze and done.get('analyze_args') != record['analyze_args']):
    return False
  if not os.path.isfile(os.path.join(point_dir, 'summary.json')):
    return False
  return not analyze or os.path.isfile(os.path.join(point_dir, 'analysis', 'analysis.json'))


def status_of(point: Point, point_dir: str, analyze: bool) -> str:
  """'done', 'failed', 'incomplete' (started, not finished: killed or still running elsewhere) or 'pending'."""
  if is_finished(point, point_dir, analyze):
    return 'done'
  status = read_json(os.path.join(point_dir, STATUS_FILE))
  if isinstance(status, dict) and status.get('status') == 'failed':
    return 'failed'
  return 'incomplete' if os.path.isdir(point_dir) else 'pending'


def log_tail(path: str | os.PathLike, lines: int = TAIL_LINES) -> str:
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return '(no log)'
