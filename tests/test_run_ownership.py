"""One owner per workdir, clean stops and fresh starts (issue 26, items 1, 4, 6, 7): each case here failed before.

- Two trainings started together in one workdir: both crashed inside orbax and metrics.jsonl held steps twice.
  Now the second stops at once with one line naming the first (pid, host), and a dead owner's lock is taken over.
- SIGTERM killed a run silently, losing everything since the last checkpoint; Ctrl-C printed orbax's traceback.
  Now both save, print one line and exit with 128 + the signal number.
- A fresh start (no checkpoint) appended to the old metrics.jsonl: now it drops the earlier attempt's records.
- A non-finite loss before the first checkpoint said "the last good checkpoint is step None", and re-running with a
  corrected learning rate was refused as a config change although nothing had been saved.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import train_helpers
from infodrop_jax import checkpoint as checkpoint_lib
from infodrop_jax import metrics
from infodrop_jax import ownership
from infodrop_jax import stopping
from infodrop_jax import train
from infodrop_jax.sweep import files as sweep_files

_HOLD = ('import sys, time\n'
         f'sys.path.insert(0, {str(train_helpers.REPO_ROOT)!r})\n'
         'from infodrop_jax import ownership\n'
         'lock = ownership.acquire(sys.argv[1])\n'
         'print("locked", flush=True)\n'
         'time.sleep(600)\n')


def _holder(workdir):
  """A process that owns `workdir` until killed."""
  process = subprocess.Popen([sys.executable, '-c', _HOLD, str(workdir)], stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == 'locked'
  return process


def _train(workdir, config=None, hooks=None):
  config = config or train_helpers.tiny_config()
  return train.train_and_evaluate(config, str(workdir), model=train_helpers.TinyNoisyNet(),
                                  splits=train_helpers.tiny_splits(), hooks=hooks)


def _steps(workdir):
  return [json.loads(line)['step'] for line in metrics.read_records(os.path.join(workdir, metrics.METRICS_FILE))
          if any(k.startswith('train/') for k in json.loads(line))]


def test_a_live_owner_keeps_the_workdir_and_a_dead_ones_lock_is_taken_over(tmp_path):
  holder = _holder(tmp_path)
  try:
    with pytest.raises(ownership.WorkdirBusyError, match=rf'is in use by another run \(pid {holder.pid} on '):
      ownership.acquire(str(tmp_path))
    with pytest.raises(ownership.WorkdirBusyError, match=f'pid {holder.pid}'):
      _train(tmp_path)  # Refused before anything is written.
    assert not (tmp_path / metrics.METRICS_FILE).exists() and not (tmp_path / train.CONFIG_FILE).exists()
  finally:
    holder.kill()  # SIGKILL: no chance to release anything.
    holder.wait()
  with ownership.acquire(str(tmp_path)) as lock:
    assert lock.previous_owner['pid'] == holder.pid
  assert not (tmp_path / ownership.LOCK_FILE).exists()  # Released on exit.
  with ownership.acquire(str(tmp_path)) as lock:
    assert lock.previous_owner is None


def test_a_run_holds_its_workdir_only_while_it_trains(tmp_path):
  seen = []

  def probe(run, state, step):
    del run, state
    if step == 6:
      with pytest.raises(ownership.WorkdirBusyError, match=f'pid {os.getpid()}'):
        ownership.acquire(str(tmp_path))
      seen.append(step)

  _train(tmp_path, hooks=[probe])
  assert seen == [6] and not (tmp_path / ownership.LOCK_FILE).exists()


def test_two_trainings_started_together_one_runs_the_other_names_it(shared_data, tmp_path):
  del shared_data
  env = train_helpers.launch_env()
  command = [sys.executable, str(train_helpers.REPO_ROOT / 'launch.py'), '--config=configs/mnist_fc.py:smoke',
             f'--workdir={tmp_path}', '--config.train.num_epochs=2']
  processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=train_helpers.REPO_ROOT, env=env) for _ in range(2)]
  results = [(p.pid, *p.communicate(timeout=600), p.returncode) for p in processes]
  codes = sorted(r[3] for r in results)
  assert codes == [0, ownership.BUSY_EXIT_CODE], [(r[3], r[2][-2000:]) for r in results]
  (winner,), (loser,) = [r for r in results if r[3] == 0], [r for r in results if r[3] != 0]
  assert loser[2].strip().splitlines() == [loser[2].strip()]  # One line, no traceback.
  assert f'is in use by another run (pid {winner[0]} on ' in loser[2]
  steps = _steps(tmp_path)
  assert steps == sorted(set(steps))  # Every step once.
  assert json.loads((tmp_path / metrics.SUMMARY_FILE).read_text())['steps'] == steps[-1]


def test_sigterm_saves_a_checkpoint_prints_one_line_and_exits_143(shared_data, tmp_path):
  del shared_data
  env = train_helpers.launch_env()
  process = subprocess.Popen(
      [sys.executable, str(train_helpers.REPO_ROOT / 'launch.py'), '--config=configs/mnist_fc.py:smoke',
       f'--workdir={tmp_path}', '--config.train.num_epochs=10000', '--config.train.checkpoint_every_steps=100000',
       '--config.eval.every_epochs=0'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=train_helpers.REPO_ROOT, env=env)
  try:
    deadline = time.monotonic() + 300
    while not (tmp_path / metrics.METRICS_FILE).exists() or not _steps(tmp_path):
      assert process.poll() is None and time.monotonic() < deadline, process.communicate()
      time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
  finally:
    if process.poll() is None:  # It did not stop: no orphan left training.
      process.kill()
      process.wait()
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  step = int(last.split('stopped at step ')[1].split(' ')[0])
  assert last == (f'stopped at step {step} on SIGTERM, checkpoint saved in {tmp_path / "checkpoints"}; re-run the '
                  'same command to resume.')
  assert 'Traceback' not in stderr
  assert checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5, read_only=True).latest_step() == step
  assert not (tmp_path / ownership.LOCK_FILE).exists()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason='Python delivers signals to the main thread only')
def test_ctrl_c_stops_at_the_next_chunk_with_a_checkpoint_and_restores_the_handlers(tmp_path):
  before = signal.getsignal(signal.SIGINT)

  def interrupt(run, state, step):
    del run, state
    if step == 6:
      signal.raise_signal(signal.SIGINT)

  with pytest.raises(stopping.StopRequested, match='stopped at step 6 on SIGINT') as stop:
    _train(tmp_path, config=train_helpers.tiny_config(checkpoint_every_steps=100), hooks=[interrupt])
  assert stop.value.exit_code == 130
  assert checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=5, read_only=True).latest_step() == 6
  assert signal.getsignal(signal.SIGINT) is before
  summary = _train(tmp_path, config=train_helpers.tiny_config(checkpoint_every_steps=100))  # Resumes at 6.
  assert summary['steps'] == 12 and _steps(tmp_path) == [2, 4, 6, 8, 10, 12]


def test_a_failure_before_the_first_checkpoint_says_so_and_a_corrected_rerun_starts_afresh(tmp_path, capsys):
  config = train_helpers.tiny_config(checkpoint_every_steps=100)
  config.optim.lr_drop_factor = 1e30  # lr 0.05 → 5e28 at step 6: the weights blow up right after.
  with pytest.raises(FloatingPointError, match='No checkpoint was saved before it, so there is nothing to resume'):
    _train(tmp_path, config=config)
  assert not checkpoint_lib.has_checkpoint(str(tmp_path)) and _steps(tmp_path)
  config.optim.lr_drop_factor = 0.1  # A config change, but nothing was saved: accepted.
  summary = _train(tmp_path, config=config)
  assert 'Starting again from step 0' in capsys.readouterr().out
  assert summary['steps'] == 12 and _steps(tmp_path) == [2, 4, 6, 8, 10, 12]  # The failed attempt's records gone.
  assert np.isfinite(summary['test/ce_d'])
  with open(tmp_path / train.CONFIG_FILE, encoding='utf-8') as f:
    assert json.load(f)['optim']['lr_drop_factor'] == 0.1


# --- a sweep's points stop with it (item 2: a killed sweep left its training running as an orphan) ---

def _long_sweep(work):
  """A one-point sweep whose training runs until stopped; (process, the point's directory once it trains)."""
  env = train_helpers.launch_env()
  overrides = ("('data.limit=256','train.num_epochs=10000','eval.every_epochs=0','logging.tensorboard=False',"
               "'train.checkpoint_every_steps=100000')")
  process = subprocess.Popen(
      [sys.executable, str(train_helpers.REPO_ROOT / 'launch.py'), '--config=configs/sweeps/fig3a_mnist.py:smoke',
       f'--workdir={work}', '--mode=sweep', '--config.max_points=1', '--config.analyze=False',
       f'--config.overrides={overrides}'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=train_helpers.REPO_ROOT, env=env)
  deadline = time.monotonic() + 300
  while True:
    trained = [p.parent for p in work.glob('*/metrics.jsonl') if _steps(p.parent)]
    if trained and (trained[0] / ownership.LOCK_FILE).exists():
      return process, trained[0]
    if process.poll() is not None or time.monotonic() > deadline:
      process.kill()
      raise AssertionError(process.communicate())
    time.sleep(0.2)


def _stopped_training(point):
  last = (point / sweep_files.LOG_FILE).read_text().strip().splitlines()[-1]
  assert last.startswith('stopped at step ') and ' on SIGTERM, checkpoint saved in ' in last, last
  step = int(last.split('stopped at step ')[1].split(' ')[0])
  assert checkpoint_lib.Checkpointer(str(point), max_to_keep=5, read_only=True).latest_step() == step


def test_sigterm_to_a_sweep_stops_its_points_with_a_checkpoint_and_marks_them_stopped(shared_data, tmp_path):
  del shared_data
  process, point = _long_sweep(tmp_path)
  try:
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=200)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 143, stdout[-3000:]
  assert f'[sweep] stopped on SIGTERM; the points that were running saved their checkpoints and are marked ' \
         f'stopped ({point.name}). Run the same command again to resume.' in stdout
  status = json.loads((point / sweep_files.STATUS_FILE).read_text())
  assert (status['status'], status['returncode']) == ('stopped', 143)
  _stopped_training(point)
  assert not (point / ownership.LOCK_FILE).exists()


def test_a_killed_sweep_leaves_no_training_behind(shared_data, tmp_path):
  del shared_data
  process, point = _long_sweep(tmp_path)
  process.kill()  # SIGKILL: the sweep cannot forward anything; the child watches it (stopping.stop_with_parent).
  process.communicate()
  deadline = time.monotonic() + 120
  while (point / ownership.LOCK_FILE).exists():  # Held until the training ends.
    if time.monotonic() > deadline:
      orphan = json.loads((point / ownership.LOCK_FILE).read_text())['pid']
      os.kill(orphan, signal.SIGKILL)  # Not left running after the test.
      raise AssertionError(f'the training (pid {orphan}) outlived its sweep')
    time.sleep(0.2)
  _stopped_training(point)
