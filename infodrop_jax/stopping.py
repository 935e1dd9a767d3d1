"""Clean stops: SIGTERM (preemption, `scancel`, `timeout`) and SIGINT (Ctrl-C) become a request that the training
loop honours at its next chunk boundary: it saves a checkpoint and raises `StopRequested`; the launcher prints one
line and exits with 128 + the signal number, as a process killed by it would. A second signal stops at once,
without saving (the default action of that signal).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


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

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    if self.requested is not None:  # The second signal: what it would have done without us.
      signal.signal(signum, signal.SIG_DFL)
      if signum == signal.SIGINT:
        raise KeyboardInterrupt
      os.kill(os.getpid(), signum)
      return
    self.requested = signum
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
