"""cpu.process: how many CPU devices the launcher asks for when told to (--host_devices), that it does, and that by
default it neither restarts itself nor edits the environment."""
import json
import os
import subprocess
import sys

import ml_collections
import pytest

import train_helpers
from infodrop_jax.cpu import process as cpu_process
from infodrop_jax import metrics


def _config(model='all_cnn_32', task='classification', **train):
  return ml_collections.ConfigDict(dict(task=task, model=dict(name=model),
                                        train=dict(dict(batch_size=100, parallel='jit'), **train),
                                        eval=dict(batch_size=400), distributed=dict(enabled=False)))


def test_auto_host_devices_splits_only_runs_that_can_split():
  assert cpu_process.host_devices(_config(), 'auto', cpu_count=2) == cpu_process.AUTO_DEVICES == 2
  assert cpu_process.host_devices(_config(), 'auto', cpu_count=64) == 2
  assert cpu_process.host_devices(_config(), 'auto', cpu_count=1) == 1
  assert cpu_process.host_devices(_config('all_cnn_96'), 'auto', cpu_count=2) == 1  # Module docstring.
  assert cpu_process.host_devices(_config('mlp'), 'auto', cpu_count=2) == 1  # Slower split (module docstring).
  assert cpu_process.host_devices(_config(task='vae'), 'auto', cpu_count=2) == 1  # Not measured.
  assert cpu_process.host_devices(_config(parallel='pmap'), 'auto', cpu_count=2) == 1  # pmap: no CPU options.
  assert cpu_process.host_devices(_config(batch_size=99), 'auto', cpu_count=2) == 1
  config = _config()
  config.eval.batch_size = 5
  assert cpu_process.host_devices(config, 'auto', cpu_count=2) == 1
  config = _config()
  config.distributed.enabled = True
  assert cpu_process.host_devices(config, 'auto', cpu_count=2) == 1
  assert cpu_process.host_devices(None, 'auto', cpu_count=2) == 2  # A benchmark: no run to fit.
  assert cpu_process.host_devices(_config(batch_size=99), '3', cpu_count=2) == 3  # Asked for: no second guessing.
  for bad in ('0', '-1', 'two', ''):
    with pytest.raises(ValueError, match="--host_devices = .*expected 'auto' or a positive int"):
      cpu_process.host_devices(_config(), bad)


def test_auto_counts_the_cores_this_process_may_use(monkeypatch):
  """A sweep slot pins its run to its share of the cores: one core, one device."""
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {3}, raising=False)
  assert cpu_process.host_devices(_config(), 'auto') == 1
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3}, raising=False)
  assert cpu_process.host_devices(_config(), 'auto') == 2


def test_use_host_devices_sets_xla_flags_unless_the_user_did(monkeypatch):
  monkeypatch.setattr(cpu_process, '_jax_backends_started', lambda: False)  # As in launch.py, before JAX starts.
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_enable_fast_math=false')
  assert cpu_process.use_host_devices(2)
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2'
  assert cpu_process.device_count_in_xla_flags(os.environ['XLA_FLAGS']) == 2
  assert not cpu_process.use_host_devices(4)  # A count is there now: it wins.
  monkeypatch.delenv('XLA_FLAGS')
  assert not cpu_process.use_host_devices(1) and 'XLA_FLAGS' not in os.environ


def test_use_host_devices_after_jax_started_warns_and_changes_nothing(monkeypatch):
  import jax  # pylint: disable=import-outside-toplevel
  jax.devices()  # The test session's backends are up (8 forced devices, conftest).
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  with pytest.warns(UserWarning, match='after JAX started its backends'):
    assert not cpu_process.use_host_devices(2)
  assert 'XLA_FLAGS' not in os.environ


def test_summary_line_names_the_devices():
  summary = dict(wall_time_s=1.25, steps=10, devices=2, device_kind='cpu', parallel='jit')
  assert metrics.format_summary(summary).endswith('wall time: 1.2 s, 10 steps on 2 cpu devices')
  assert metrics.format_summary(dict(summary, devices=1)).endswith('10 steps on 1 cpu device')


def _launch(tmp_path, *args, devices=None):
  return train_helpers.launch('--config=configs/mnist_fc.py:smoke', f'--workdir={tmp_path}',
                              '--config.train.num_epochs=1', *args, devices=devices)


def _launch_in_this_process_watched(workdir, *args):
  """launch.py run through a wrapper that registers an exit handler first and compares the environment at exit with
  the one at start: a re-exec would replace the process (the handler never fires), an edit shows as a change."""
  wrapper = workdir.parent / 'wrapper.py'
  wrapper.write_text(
      'import atexit, os, runpy, sys\n'
      f'sys.path[0] = {str(train_helpers.REPO_ROOT)!r}  # As when launch.py runs itself.\n'
      'before = dict(os.environ)\n'
      # google-crc32c (under orbax) sets CRC32C_SW_MODE when it is imported: not the launcher's doing.
      'changed = lambda: {k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k)} - '
      '{"CRC32C_SW_MODE"}\n'
      'atexit.register(lambda: print("SAME PROCESS, ENVIRONMENT " + ("UNCHANGED" if not changed() '
      'else "CHANGED: " + repr(changed()))))\n'
      f'sys.argv = [{str(train_helpers.REPO_ROOT / "launch.py")!r}] + sys.argv[1:]\n'
      'runpy.run_path(sys.argv[0], run_name="__main__")\n')
  env = train_helpers.launch_env()
  env.pop('GLIBC_TUNABLES', None)
  return subprocess.run(
      [sys.executable, str(wrapper), '--config=configs/mnist_fc.py:smoke', f'--workdir={workdir}',
       '--config.train.num_epochs=1', *args],
      capture_output=True, text=True, timeout=600, cwd=train_helpers.REPO_ROOT, env=env, check=False)


def test_the_launcher_neither_restarts_itself_nor_edits_the_environment_and_records_the_devices(shared_data,
                                                                                              tmp_path):
  """By default a training run stays in the launcher's own process with the environment it started with (XLA_FLAGS
  and GLIBC_TUNABLES included, which the launcher used to edit) on one CPU device; --host_devices=2 splits the CPU
  into two devices, with the same result. (The user's own XLA_FLAGS count winning over the flag:
  test_use_host_devices_sets_xla_flags_unless_the_user_did.)"""
  del shared_data
  result = _launch_in_this_process_watched(tmp_path / 'default')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'SAME PROCESS, ENVIRONMENT UNCHANGED' in result.stdout, result.stdout[-2000:]
  summary = json.loads((tmp_path / 'default' / 'summary.json').read_text())
  assert (summary['devices'], summary['device_kind'], summary['parallel']) == (1, 'cpu', 'jit')
  assert summary['cpu_speedups'] is True  # 'auto' on a CPU backend.
  assert 'on 1 cpu device' in result.stdout
  result = _launch(tmp_path / 'two', '--host_devices=2', devices=None)
  assert result.returncode == 0, result.stderr[-3000:]
  two = json.loads((tmp_path / 'two' / 'summary.json').read_text())
  assert two['devices'] == 2
  assert 'on 2 cpu devices' in result.stdout
  # The batch split over two devices is the same SPMD program (same data order and noise draws): the same result
  # here, to float rounding (a long run can drift apart, see README).
  for key in ('test/error_d', 'test/error_n', 'test/ce_d', 'test/ce_n', 'test/kl/hidden1/noise'):
    assert two[key] == pytest.approx(summary[key], rel=1e-4, abs=1e-6), key


def test_launch_rejects_a_bad_host_device_count(tmp_path):
  result = _launch(tmp_path, '--host_devices=many')
  assert result.returncode != 0
  assert "--host_devices = 'many': expected 'auto' or a positive int" in result.stderr
