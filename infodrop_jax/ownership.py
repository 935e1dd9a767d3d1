"""One owner per run workdir: an exclusive lock on `W/.lock`, held while a training runs in W.

The lock is flock(2) on the file, so the kernel drops it when its process ends, however it ends (SIGKILL, a crash,
a lost node): a lock left by a dead process is free, and the next run takes it over without guessing from pids.
(Linux emulates flock with POSIX record locks on NFS, so it also holds between hosts there.) The file names the
owner (pid, host, start time, command) for the error a second process gets, and is removed when the owner
releases it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

LOCK_FILE = '.lock'
# A sweep's own files (sweep.json, results*.csv, report.md) are written under this lock in the sweep's workdir,
# held for the seconds a write takes: array tasks running different points of one sweep share them.
SHARED_FILES_LOCK = '.shared_files.lock'
# launch.py's exit status when the workdir is owned by another live process (EX_TEMPFAIL: try again later).
BUSY_EXIT_CODE = 75


class WorkdirBusyError(RuntimeError):
  """Another live process owns the workdir."""


@dataclasses.dataclass
class WorkdirLock:
  """The held lock of `workdir`; `previous_owner` is what a dead owner's file said (None if there was none)."""
  workdir: str
  _fd: int | None = None
  previous_owner: dict[str, Any] | None = None

  @property
  def path(self) -> str:
    return os.path.join(self.workdir, LOCK_FILE)

  def release(self) -> None:
    """Removes the file, then drops the lock (a process that opened the file meanwhile sees it unlinked and retries
    on a fresh one). Idempotent."""
    if self._fd is None:
      return
    try:
      if _same_file(self._fd, self.path):
        os.unlink(self.path)
    finally:
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> WorkdirLock:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.release()


def describe_owner(owner: dict[str, Any] | None) -> str:
  if not owner:
    return 'a process that has not written its name yet'
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(owner.get('started', 0)))
  return f"pid {owner.get('pid')} on {owner.get('host')}, started {started}: {owner.get('command', '?')}"


def acquire(workdir: str) -> WorkdirLock:
  """Takes the lock of `workdir` (which must exist), or raises WorkdirBusyError naming the live owner."""
  path = os.path.join(workdir, LOCK_FILE)
  for _ in range(10):  # Only retried when the owner released (unlinked) the file between our open and our lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = _read_owner(path)
      os.close(fd)
      raise WorkdirBusyError(
          f'{workdir} is in use by another run ({describe_owner(owner)}). One process owns a workdir: wait for '
          'that run to end or stop it (it saves a checkpoint on SIGTERM or Ctrl-C), or use another --workdir.'
      ) from None
    except OSError:
      os.close(fd)
      raise
    if not _same_file(fd, path):
      os.close(fd)
      continue
    previous = _read_fd(fd)
    me = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.time(), 'command': ' '.join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + '\n').encode('utf-8'), 0)
    os.fsync(fd)
    return WorkdirLock(workdir, fd, previous or None)
  raise WorkdirBusyError(f'{path}: the lock file kept changing under this process; is a run starting and ending '
                         'in a loop in this workdir?')


def _same_file(fd: int, path: str) -> bool:
  try:
    here, there = os.fstat(fd), os.stat(path)
  except FileNotFoundError:
    return False
  return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_fd(fd: int) -> dict[str, Any] | None:
  try:
    text = os.pread(fd, 4096, 0).decode('utf-8', errors='replace').strip()
    owner = json.loads(text) if text else None
  except (OSError, ValueError):
    return None
  return owner if isinstance(owner, dict) else None


def _read_owner(path: str) -> dict[str, Any] | None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return None
  try:
    return _read_fd(fd)
  finally:
    os.close(fd)


def live_owner(workdir: str) -> dict[str, Any] | None:
  """What the owner of `workdir` wrote of itself if a live process holds its lock (`{}` if it has not written yet),
  else None. Takes nothing: a free lock is released again at once."""
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDONLY)
  except FileNotFoundError:
    return None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return _read_fd(fd) or {}
    fcntl.flock(fd, fcntl.LOCK_UN)
    return None
  finally:
    os.close(fd)


@contextlib.contextmanager
def shared_files_lock(directory: str, timeout_s: float = 600.0) -> Iterator[None]:
  """Holds `directory`/.shared_files.lock exclusively while the block writes files that several processes share
  (a sweep's results and report). Waits for another holder up to `timeout_s`, then raises WorkdirBusyError."""
  path = os.path.join(directory, SHARED_FILES_LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    deadline = time.monotonic() + timeout_s
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if time.monotonic() > deadline:
          raise WorkdirBusyError(f'{path}: another process has been writing this sweep\'s shared files for over '
                                 f'{timeout_s:.0f} s; is one hung? (lsof {path} names it.)') from None
        time.sleep(0.05)
    yield
  finally:
    os.close(fd)  # Closing drops the lock; the file stays (removing it would race a waiter's open).
