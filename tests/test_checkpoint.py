"""Checkpointer recovery: corrupt or empty latest checkpoints, and checkpoint directories that cannot be written."""
import errno
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax.training import train_state

from infodrop_jax import checkpoint as checkpoint_lib

_CONFIG = ml_collections.ConfigDict({'seed': 0})


def _state(step, value=None):
  state = train_state.TrainState.create(apply_fn=None, params={'w': jnp.zeros((3,))}, tx=optax.sgd(0.1))
  return state.replace(step=step, params={'w': jnp.full((3,), float(step if value is None else value))})


def _save_steps(workdir, steps):
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), max_to_keep=5)
  for step in steps:
    checkpointer.save(_state(step), _CONFIG)
  checkpointer.close()


def _empty_every_file(directory):
  for root, _, files in os.walk(directory):
    for name in files:
      open(os.path.join(root, name), 'w').close()  # pylint: disable=consider-using-with


def _wipe_step(directory):
  for root, dirs, files in os.walk(directory, topdown=False):
    for name in files:
      os.remove(os.path.join(root, name))
    for name in dirs:
      os.rmdir(os.path.join(root, name))


@pytest.mark.parametrize('damage', [_empty_every_file, _wipe_step], ids=['truncated', 'empty'])
def test_restore_falls_back_to_newest_intact_step_and_moves_the_bad_one_aside(tmp_path, damage):
  _save_steps(tmp_path, [1, 2, 3])
  bad = tmp_path / 'checkpoints' / '3'
  damage(bad)
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5)
  assert checkpointer.latest_step() == 3  # What train.py asks first: the damage is not visible from the listing.
  with pytest.warns(RuntimeWarning, match=r'step 3 .*cannot be read.*moved to'):
    state = checkpointer.restore(_state(0))
  assert int(state.step) == 2
  np.testing.assert_array_equal(state.params['w'], [2.0, 2.0, 2.0])
  # Nothing deleted: the bad step sits outside orbax's step naming, and orbax no longer lists it.
  assert not bad.exists()
  (moved,) = (tmp_path / checkpoint_lib.CORRUPT_DIR).iterdir()
  assert moved.name.startswith('3-')
  assert checkpointer.all_steps() == [1, 2] and checkpointer.latest_step() == 2
  # The resumed run can save step 3 again.
  checkpointer.save(_state(3), _CONFIG)
  checkpointer.wait()
  assert int(checkpointer.restore(_state(0)).step) == 3
  checkpointer.close()


def test_restore_latest_intact_reports_the_step(tmp_path):
  _save_steps(tmp_path, [4, 8])
  _empty_every_file(tmp_path / 'checkpoints' / '8')
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5)
  with pytest.warns(RuntimeWarning, match='step 8'):
    state, step = checkpointer.restore_latest_intact(_state(0))
  assert step == 4 and int(state.step) == 4
  checkpointer.close()


def test_read_only_fallback_leaves_the_bad_step_in_place(tmp_path):
  _save_steps(tmp_path, [1, 2])
  _empty_every_file(tmp_path / 'checkpoints' / '2')
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5, read_only=True)
  with pytest.warns(RuntimeWarning, match='left in place'):
    assert int(checkpointer.restore(_state(0)).step) == 1
  assert (tmp_path / 'checkpoints' / '2').is_dir() and not (tmp_path / checkpoint_lib.CORRUPT_DIR).exists()
  checkpointer.close()


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
  _save_steps(tmp_path, [1, 2])
  for step in (1, 2):
    _empty_every_file(tmp_path / 'checkpoints' / str(step))
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5)
  with pytest.warns(RuntimeWarning), pytest.raises(checkpoint_lib.CorruptCheckpointError) as err:
    checkpointer.restore(_state(0))
  assert str(tmp_path / 'checkpoints') in str(err.value) and 'start the run afresh' in str(err.value)
  assert checkpointer.all_steps() == []
  checkpointer.close()


def test_explicit_corrupt_step_raises_and_stays(tmp_path):
  _save_steps(tmp_path, [1, 2])
  _empty_every_file(tmp_path / 'checkpoints' / '2')
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5)
  with pytest.raises(checkpoint_lib.CorruptCheckpointError, match='step 2'):
    checkpointer.restore(_state(0), 2)
  assert (tmp_path / 'checkpoints' / '2').is_dir()
  assert int(checkpointer.restore(_state(0), 1).step) == 1
  checkpointer.close()


def test_intact_checkpoint_of_another_model_is_not_moved(tmp_path):
  _save_steps(tmp_path, [1])
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5)
  other = train_state.TrainState.create(apply_fn=None, params={'v': jnp.zeros((3,))}, tx=optax.sgd(0.1))
  with pytest.raises(ValueError, match='intact but does not match'):
    checkpointer.restore(other)
  assert checkpointer.all_steps() == [1] and not (tmp_path / checkpoint_lib.CORRUPT_DIR).exists()
  checkpointer.close()


def test_checkpoint_dir_that_is_a_file_fails_fast(tmp_path):
  (tmp_path / 'checkpoints').write_text('not a directory')
  for make in (lambda: checkpoint_lib.check_workdir(str(tmp_path)),
               lambda: checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2)):
    with pytest.raises(ValueError, match='checkpoints.* is not a writable directory: it is a file'):
      make()


@pytest.mark.parametrize('code,reason', [(errno.EACCES, 'permission denied'), (errno.ENOSPC, 'the disk is full'),
                                         (errno.EROFS, 'read-only')])
def test_unwritable_checkpoint_dir_fails_fast(tmp_path, monkeypatch, code, reason):
  """Root ignores permission bits, so the failing write is simulated; the real read-only case is below."""
  real_probe = checkpoint_lib._write_probe  # pylint: disable=protected-access

  def probe(path):
    if os.path.basename(os.path.dirname(path)) == checkpoint_lib.CHECKPOINT_DIR:
      raise OSError(code, os.strerror(code), path)
    real_probe(path)

  monkeypatch.setattr(checkpoint_lib, '_write_probe', probe)
  with pytest.raises(ValueError, match=f'{reason}.*checkpoints'):
    checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2)


def test_read_only_checkpoint_dir_fails_fast(tmp_path):
  """A directory the kernel refuses to write to, for root too (permission bits alone do not stop root)."""
  if not os.path.isdir('/sys'):
    pytest.skip('no sysfs (not Linux): no directory that even root cannot write to')
  with pytest.raises(ValueError, match=r"--workdir '/sys' is not a writable directory: permission denied"):
    checkpoint_lib.check_workdir('/sys')
  directory = tmp_path / 'checkpoints'
  directory.mkdir()
  directory.chmod(0o555)
  try:
    if not os.access(directory, os.W_OK):  # Enforced for this user: the same error for the checkpoints directory.
      with pytest.raises(ValueError, match='permission denied'):
        checkpoint_lib.check_workdir(str(tmp_path))
  finally:
    directory.chmod(0o755)


def test_a_reader_during_rotation_reads_the_newest_step_not_calls_them_corrupt(tmp_path):
  # Issue 26, item 5: --mode=analyze while the run saved and deleted old steps said the healthy checkpoints were
  # "all corrupt or incomplete" and advised deleting them.
  writer = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2)
  for step in (1, 2):
    writer.save(_state(step), _CONFIG)
  writer.wait()
  reader = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=2, read_only=True)
  assert reader.all_steps() == [1, 2]
  for step in (3, 4):  # the training goes on: steps 1 and 2 are rotated away under the reader
    writer.save(_state(step), _CONFIG)
  writer.wait()
  assert not (tmp_path / 'checkpoints' / '2').exists()
  state, step = reader.restore_latest_intact(_state(0))
  assert step == 4 and int(state.step) == 4
  np.testing.assert_array_equal(state.params['w'], [4.0, 4.0, 4.0])
  assert not (tmp_path / checkpoint_lib.CORRUPT_DIR).exists()
  reader.close()
  writer.close()


def test_unreadable_checkpoints_of_a_run_in_training_are_never_advised_deleted(tmp_path):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  _save_steps(tmp_path, [1, 2])
  for step in (1, 2):
    _empty_every_file(tmp_path / 'checkpoints' / str(step))
  hold = ('import sys, time\nfrom infodrop_jax import ownership\nlock = ownership.acquire(sys.argv[1])\n'
          'print("locked", flush=True)\ntime.sleep(600)\n')
  holder = subprocess.Popen([sys.executable, '-c', hold, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    assert holder.stdout.readline().strip() == 'locked'
    reader = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5, read_only=True)
    with pytest.warns(RuntimeWarning), pytest.raises(checkpoint_lib.CorruptCheckpointError) as err:
      reader.restore(_state(0))
    reader.close()
  finally:
    holder.kill()
    holder.wait()
  message = str(err.value)
  assert f'while its run is training (pid {holder.pid} on ' in message and 'Run this command again' in message
  assert 'Delete' not in message and 'afresh' not in message
