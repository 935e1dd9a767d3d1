"""Clean stops: SIGTERM (preemption, `scancel`, `timeout`) and SIGINT (Ctrl-C) become a request that the training
loop honours at its next chunk boundary: it saves a checkpoint and raises `StopRequested`; the launcher prints one
line and exits with 128 + the signal number, as a process killed by it would. A second signal, 3 s or more after
the first, stops at once without saving (the default action of that signal).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A second signal within this many seconds of the first is the same stop, delivered twice; later, it stops at once.
REPEAT_WINDOW_S = 3.0


class StopRequested(Exception):
  """Training stopped on a signal after saving a checkpoint at `step`."""

  def __init__(self, signum: int, step: int, checkpoint_dir: str):
    self.signum, self.step, self.checkpoint_dir = signum, step, checkpoint_dir
    super().__init__(f'stopped at step {step} on {signal.Signals(signum).name}, checkpoint saved in '
                     f'{checkpoint_dir}; re-run the same command to resume.')

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class StopSignals:
  """Between `install()` and `restore()` (or as a context manager), SIGTERM and SIGINT set `requested` to the signal
  number instead of ending the process; the handlers in place before come back on `restore()`. Does nothing
  outside the main thread (Python runs handlers there only) or when not `enabled`."""

  def __init__(self, *, enabled: bool = True, announce: bool = True):
    self.requested: int | None = None
    self._enabled = enabled
    self._announce = announce
    self._previous: dict[int, Any] = {}
    self._first_at = 0.0

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    if self.requested is not None:
      if time.monotonic() - self._first_at < REPEAT_WINDOW_S:
        return  # The same stop delivered twice (a scheduler signals every process, and a sweep forwards it).
      signal.signal(signum, signal.SIG_DFL)  # A second stop: what the signal would have done without us.
      if signum == signal.SIGINT:
        raise KeyboardInterrupt
      os.kill(os.getpid(), signum)
      return
    self.requested, self._first_at = signum, time.monotonic()
    if self._announce:
      print(f'\n{signal.Signals(signum).name}: stopping after the current steps and saving a checkpoint '
            '(send it again to stop at once, without saving).', file=sys.stderr, flush=True)

  def install(self) -> None:
    if self._enabled and not self._previous and threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)

  def restore(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def __enter__(self) -> StopSignals:
    self.install()
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.restore()


# A process started by a sweep finds the sweep's pid here (infodrop_jax/sweep/runner.py).
PARENT_ENV = 'INFODROP_STOP_WITH_PARENT'


def stop_with_parent(environ: dict[str, str] | None = None, poll_s: float = 1.0) -> bool:
  """If `$INFODROP_STOP_WITH_PARENT` names this process's parent, watches it from a daemon thread and sends this
  process SIGTERM once the parent is gone (a trainer then saves and stops). Returns whether it watches."""
  value = (os.environ if environ is None else environ).get(PARENT_ENV, '')
  if not value.isdigit():
    return False
  parent = int(value)

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=watch, name='stop-with-parent', daemon=True).start()
  return True
