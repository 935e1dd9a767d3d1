"""Where a sweep keeps its files: the repository's launch.py, the names of the files in a sweep's workdir W and in
each point's W/<point>/, and the JSON reads and writes they go through."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any, TextIO

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = REPO_ROOT / 'launch.py'
DONE_FILE = 'DONE'
STATUS_FILE = 'status.json'
LOG_FILE = 'run.log'
SWEEP_FILE = 'sweep.json'
RESULTS_FILE = 'results.csv'
MEANS_FILE = 'results_mean.csv'
REPORT_FILE = 'report.md'


def read_json(path: str | os.PathLike) -> Any:
  """The JSON value in `path`, or None when the file is missing or not JSON."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


@contextlib.contextmanager
def replacing(path: str | os.PathLike, newline: str | None = None) -> Iterator[TextIO]:
  """A text file to write `path`'s new contents into; it replaces `path` in one step when the block ends. The
  temporary file is this process's own: processes writing the same file never share one."""
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'w', encoding='utf-8', newline=newline) as f:
    yield f
  os.replace(tmp, path)


def write_json(path: str | os.PathLike, value: Any) -> None:
  """`value` as indented JSON in `path`, replacing the file in one step."""
  with replacing(path) as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write('\n')
