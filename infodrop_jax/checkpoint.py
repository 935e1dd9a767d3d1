"""Training checkpoints with orbax: periodic + final, keep-last-k, atomic, with the run's config beside them.

A checkpoint holds the whole `TrainState` as a state dict (params, optimizer state, BatchNorm statistics, the noise
key and the step; the epoch follows from the step) plus the config as JSON. Arrays are saved from the global
replicated layout (see `infodrop_jax.parallel`), so a checkpoint written in 'pmap' mode restores in 'jit' mode and
on a different device count.

A checkpoint that cannot be read (a run killed while the disk filled up, a copy cut short) does not block a resume:
`restore` falls back to the newest intact step and moves the bad one aside to `workdir/checkpoints_corrupt/`, where
orbax no longer sees it, so nothing is deleted.
"""
from __future__ import annotations

import contextlib
import errno
import logging as std_logging
import os
import shutil
import time
from typing import Any
import warnings

from absl import logging
import flax.serialization
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from infodrop_jax import ownership

CHECKPOINT_DIR = 'checkpoints'
# Unreadable checkpoints are moved here, beside (not inside) CHECKPOINT_DIR: orbax treats every integer-named
# directory in CHECKPOINT_DIR as a step.
CORRUPT_DIR = 'checkpoints_corrupt'
# How often a reader lists the steps again when one it was reading was deleted by the training's rotation.
_ROTATION_RETRIES = 5
# Enough bytes that a full disk fails the probe rather than the first save, minutes into training.
_PROBE_BYTES = 1 << 16


def _write_probe(path: str) -> None:
  """Writes, syncs and removes a small file at `path`: what a checkpoint save needs of its directory."""
  with open(path, 'wb') as f:
    f.write(b'\0' * _PROBE_BYTES)
    f.flush()
    os.fsync(f.fileno())
  os.remove(path)


def write_error(directory: str) -> OSError | None:
  """Creates `directory` if needed and writes a probe file in it; returns the error that stopped it, else None."""
  try:
    os.makedirs(directory, exist_ok=True)
    # Named per process: two processes starting on one workdir must not remove each other's probe.
    _write_probe(os.path.join(directory, f'.write_probe_{jax.process_index()}_{os.getpid()}'))
  except OSError as e:
    return e
  return None


def unwritable_reason(error: OSError) -> str:
  """`write_error`'s error as a reader would say it: 'the disk is full', 'the file system is read-only', ..."""
  return {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is exceeded',
          errno.EROFS: 'the file system is read-only', errno.EACCES: 'permission denied',
          errno.EPERM: 'permission denied', errno.ENOTDIR: 'a parent is a file, not a directory'
          }.get(error.errno, 'it cannot be written')


def _check_writable_dir(directory: str, what: str, fix: str) -> None:
  """Creates `directory` if needed and raises ValueError unless a file can be written in it."""
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise ValueError(f'{what} {directory!r} is not a writable directory: it is a file, not a directory. {fix}')
  error = write_error(directory)
  if error is not None:
    raise ValueError(f'{what} {directory!r} is not a writable directory: {unwritable_reason(error)} ({error}). '
                     f'{fix}') from error


def check_workdir(workdir: str) -> None:
  """Creates `workdir` and its checkpoint directory; raises ValueError if either cannot be written.

  Runs before anything is loaded or compiled: an unusable checkpoint directory otherwise surfaces only at the first
  save, as orbax retrying for minutes.
  """
  _check_writable_dir(workdir, '--workdir', 'Pass a writable directory as --workdir.')
  _check_writable_dir(os.path.join(workdir, CHECKPOINT_DIR), 'The checkpoint directory',
                      f'It must be a writable directory inside --workdir: free some space, fix its permissions, or '
                      f'move the {CHECKPOINT_DIR!r} entry out of the way.')


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a finished checkpoint step (orbax names them by their step; unfinished ones carry a
  temporary suffix). Reads the directory only: no orbax manager."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  try:
    return any(name.isdigit() and os.path.isdir(os.path.join(directory, name)) for name in os.listdir(directory))
  except OSError:
    return False


# What orbax logs at WARNING for every read-only manager (eval, analyze): that it is read-only, which is what was asked.
_READ_ONLY_NOTICES = ('CheckpointManagerOptions.read_only=True', 'Given directory is read only')


class _DropReadOnlyNotices(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_READ_ONLY_NOTICES)


@contextlib.contextmanager
def _quiet_read_only_notices():
  """Drops orbax's read-only notices (and nothing else) while a read-only manager is made."""
  target = std_logging.getLogger('absl')
  notice_filter = _DropReadOnlyNotices()
  target.addFilter(notice_filter)
  try:
    yield
  finally:
    target.removeFilter(notice_filter)


class CorruptCheckpointError(ValueError):
  """A checkpoint step that cannot be read back (truncated, empty or partly deleted)."""


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for `TrainState`s in the global layout."""

  def __init__(self, workdir: str, *, max_to_keep: int, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.corrupt_directory = os.path.abspath(os.path.join(workdir, CORRUPT_DIR))
    self.read_only = read_only
    if not read_only:
      check_workdir(workdir)
    elif os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise ValueError(f'The checkpoint directory {self.directory!r} is a file, not a directory.')
    with _quiet_read_only_notices() if read_only else contextlib.nullcontext():
      options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only, read_only=read_only)
      self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state: Any, config: ml_collections.ConfigDict) -> None:
    """Saves `state` (global layout) at its step. Returns once the arrays are copied off device; writes finish in
    the background and become visible atomically."""
    step = int(jax.device_get(state.step))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
        config=ocp.args.JsonSave(config.to_dict())), force=True)

  def restore(self, template: Any, step: int | None = None) -> Any:
    """The state saved at `step`, with `template`'s structure and shardings (global layout).

    With `step=None`, the newest intact checkpoint (see `restore_latest_intact`); its step is the returned state's
    `.step`. An explicit `step` that cannot be read raises `CorruptCheckpointError` and is left where it is.
    """
    if step is None:
      return self.restore_latest_intact(template)[0]
    return self._restore_step(template, step)

  def restore_latest_intact(self, template: Any) -> tuple[Any, int]:
    """(state, step) of the newest checkpoint that reads back, moving unreadable newer ones aside.

    Each unreadable step is reported with a warning and moved to `<workdir>/checkpoints_corrupt/<step>-<time>`
    (left in place when read-only), so the resumed run can save that step again.

    Raises:
      FileNotFoundError: there is no checkpoint at all.
      CorruptCheckpointError: no checkpoint reads back.
      ValueError: the newest intact checkpoint does not match `template` (another model or optimizer config).
    """
    # A reader (--mode=analyze, eval) may look while the run's owner saves and deletes old steps: a step that
    # vanished under it was rotated away, not corrupt, so the list is read again.
    for _ in range(_ROTATION_RETRIES):
      steps = sorted(self.all_steps(), reverse=True)
      if not steps:
        raise FileNotFoundError(f'no checkpoint in {self.directory}.')
      bad, rotated = [], False
      for step in steps:
        try:
          state = self._restore_step(template, step)
        except CorruptCheckpointError as e:
          if not os.path.isdir(self._step_directory(step)):
            rotated = True
            break
          bad.append(self._set_aside(step, e))
          continue
        if bad:
          self._manager.reload()
        return state, step
      self._manager.reload()
      if not rotated:
        break
    owner = ownership.live_owner(os.path.dirname(self.directory))
    if owner is not None:  # Never advise deleting the checkpoints of a run that is training.
      raise CorruptCheckpointError(
          f'No checkpoint in {self.directory} could be read while its run is training '
          f'({ownership.describe_owner(owner)}): steps {steps} changed or could not be read ({"; ".join(bad)}). '
          'Run this command again, or after that training ends.')
    raise CorruptCheckpointError(
        f'No checkpoint in {self.directory} can be read; steps {steps} are all corrupt or incomplete '
        f'({"; ".join(bad)}). Delete {self.directory} (and {self.corrupt_directory}) to start the run afresh, or '
        'restore the checkpoints from a backup.')

  def _step_directory(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _restore_step(self, template: Any, step: int) -> Any:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # pylint: disable=broad-exception-caught
      # Orbax raises KeyError, ValueError, JSONDecodeError, FileNotFoundError... for damaged files, and ValueError for
      # an intact checkpoint of another model too. Only a checkpoint that reads back on its own, without the
      # template, is intact: that failure is a mismatch, and moving the checkpoint aside would lose it.
      problem = self._unreadable(step)
      if problem is None:
        raise ValueError(f'The checkpoint at step {step} in {self.directory} is intact but does not match this run\'s '
                         f'train state (was the model or optimizer config changed?): {e}') from e
      raise CorruptCheckpointError(f'checkpoint step {step} ({self._step_directory(step)}) cannot be read: '
                                   f'{problem}') from e
    return flax.serialization.from_state_dict(template, restored['state'])

  def _unreadable(self, step: int) -> str | None:
    """Why the state saved at `step` cannot be read back as plain arrays, or None when it can."""
    path = os.path.join(self._step_directory(step), 'state')
    try:
      with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        tree = getattr(getattr(metadata, 'item_metadata', metadata), 'tree', None)
        if tree is None:
          return 'no readable array metadata'
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    except Exception as e:  # pylint: disable=broad-exception-caught
      return f'{type(e).__name__}: {str(e)[:300]}'
    return None

  def _set_aside(self, step: int, error: CorruptCheckpointError) -> str:
    """Warns about the unreadable `step` and moves it out of orbax's sight; returns a description."""
    source = self._step_directory(step)
    if self.read_only or jax.process_index() != 0:
      where = f'left in place at {source}'
    else:
      os.makedirs(self.corrupt_directory, exist_ok=True)
      target = os.path.join(self.corrupt_directory, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
      suffix = 0
      while os.path.exists(target + (f'.{suffix}' if suffix else '')):
        suffix += 1
      target += f'.{suffix}' if suffix else ''
      shutil.move(source, target)
      where = f'moved to {target}'
    message = f'{error}. Falling back to an older checkpoint; the bad one is {where}.'
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    logging.warning(message)
    return f'step {step}: {where}'

  def restore_config(self, step: int | None = None) -> dict[str, Any]:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}.')
    return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
