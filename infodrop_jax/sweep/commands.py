"""One point's commands (its train and analyze steps, as launch.py lines) and its state in W/<point>/.

A point is finished when W/<point>/DONE exists (written after its analysis) for the same commands and its
summary.json (and analysis/analysis.json when the sweep analyses) can be read; `status_of` tells the other states
apart. A point whose files cannot be read is 'unreadable', not finished: no report counts it, and a re-run of the
sweep redoes it.
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


SUMMARY = 'summary.json'
ANALYSIS = os.path.join('analysis', 'analysis.json')


def result_files(analyze: bool) -> list[str]:
  """The files (relative to W/<point>/) a finished point's numbers come from."""
  return [SUMMARY, ANALYSIS] if analyze else [SUMMARY]


def unreadable_files(point_dir: str, analyze: bool) -> list[str]:
  """Those of `result_files` that are missing or hold no JSON object, each with why: ['summary.json (not JSON)']."""
  problems = []
  for name in result_files(analyze):
    path = os.path.join(point_dir, name)
    if not os.path.isfile(path):
      problems.append(f'{name} (missing)')
    elif not isinstance(read_json(path), dict):
      problems.append(f'{name} (cannot be read as a JSON object)')
  return problems


def _done_here(point: Point, point_dir: str, analyze: bool) -> bool:
  """DONE written for these very commands."""
  done = read_json(os.path.join(point_dir, DONE_FILE))
  if not isinstance(done, dict):
    return False
  record = done_record(point, analyze)
  return done.get('train_args') == record['train_args'] and (
      not analyze or done.get('analyze_args') == record['analyze_args'])


def is_finished(point: Point, point_dir: str, analyze: bool) -> bool:
  """DONE written for these very commands, and summary.json (and analysis.json when analysing) readable."""
  return _done_here(point, point_dir, analyze) and not unreadable_files(point_dir, analyze)


def status_of(point: Point, point_dir: str, analyze: bool) -> str:
  """'done'; 'unreadable' (DONE, but a result file is missing or not JSON: its numbers count nowhere); 'failed';
  'incomplete' (started, not finished: killed or still running elsewhere); or 'pending'."""
  if _done_here(point, point_dir, analyze):
    return 'unreadable' if unreadable_files(point_dir, analyze) else 'done'
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
