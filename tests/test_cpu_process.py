"""cpu_process: when the launcher restarts with huge pages, how many CPU devices it asks for, and that it does."""
import json
import os
import subprocess
import sys

import ml_collections
import pytest

import train_helpers
from infodrop_jax import cpu_process
from infodrop_jax import metrics


def _config(model='all_cnn_32', task='classification', **train):
  return ml_collections.ConfigDict(dict(task=task, model=dict(name=model),
                                        train=dict(dict(batch_size=100, parallel='jit'), **train),
                                        eval=dict(batch_size=400), distributed=dict(enabled=False)))


def test_huge_pages_environment_adds_the_tunable_only_where_it_helps():
  env = cpu_process.huge_pages_environment({'PATH': '/bin'}, on_request=True, glibc_ok=True)
  assert env['GLIBC_TUNABLES'] == cpu_process.HUGE_PAGES and env['PATH'] == '/bin'
  # Other tunables are kept, in front.
  env = cpu_process.huge_pages_environment({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, on_request=True,
                                           glibc_ok=True)
  assert env['GLIBC_TUNABLES'] == f'glibc.malloc.arena_max=2:{cpu_process.HUGE_PAGES}'
  # The user's own setting (the opt-out included) is left alone, which also stops a second restart.
  for tunables in (cpu_process.HUGE_PAGES, 'glibc.malloc.hugetlb=0'):
    assert cpu_process.huge_pages_environment({'GLIBC_TUNABLES': tunables}, on_request=True, glibc_ok=True) is None
  # Kernel not in madvise mode (always: huge pages anyway; never: none to get), or a glibc without the tunable.
  assert cpu_process.huge_pages_environment({}, on_request=False, glibc_ok=True) is None
  assert cpu_process.huge_pages_environment({}, on_request=True, glibc_ok=False) is None


@pytest.mark.parametrize('setting, expected', [('always [madvise] never', True), ('[always] madvise never', False),
                                               ('always madvise [never]', False)])
def test_huge_pages_on_request_reads_the_kernel_setting(tmp_path, setting, expected):
  path = tmp_path / 'enabled'
  path.write_text(setting + '\n')
  assert cpu_process.huge_pages_on_request(str(path)) is expected
  assert cpu_process.huge_pages_on_request(str(tmp_path / 'missing')) is False


def test_reexec_restarts_once_with_the_tunable_and_the_same_command_line(tmp_path):
  script = tmp_path / 'show.py'
  script.write_text(
      'import json, os, sys\n'
      f'sys.path.insert(0, {str(train_helpers.REPO_ROOT)!r})\n'
      'from infodrop_jax import cpu_process\n'
      'print("start", flush=True)\n'
      'cpu_process.reexec_with_huge_pages()\n'
      'print(json.dumps([os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], sys.flags.optimize]))\n')
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  result = subprocess.run([sys.executable, '-O', str(script), 'a', '--b=1'], capture_output=True, text=True,
                          env=env, check=True, timeout=60)
  tunables, args, optimize = json.loads(result.stdout.splitlines()[-1])
  assert args == ['a', '--b=1'] and optimize == 1  # Interpreter options and arguments survive the restart.
  if cpu_process.huge_pages_environment(env) is not None:
    assert result.stdout.count('start') == 2 and tunables == cpu_process.HUGE_PAGES
  else:  # This machine gains nothing from it (kernel setting or glibc): no restart.
    assert result.stdout.count('start') == 1 and tunables is None


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


def test_launch_asks_for_the_devices_and_records_them(shared_data, tmp_path):
  del shared_data
  result = _launch(tmp_path / 'auto')  # An MLP: 'auto' keeps one device.
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / 'auto' / 'summary.json').read_text())
  assert (summary['devices'], summary['device_kind'], summary['parallel']) == (1, 'cpu', 'jit')
  assert isinstance(summary['native_cpu_kernels_available'], bool)
  assert 'on 1 cpu device' in result.stdout
  result = _launch(tmp_path / 'two', '--host_devices=2')
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((tmp_path / 'two' / 'summary.json').read_text())['devices'] == 2
  assert 'on 2 cpu devices' in result.stdout
  # The user's XLA_FLAGS count wins over the flag.
  result = _launch(tmp_path / 'user', '--host_devices=2', devices=4)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((tmp_path / 'user' / 'summary.json').read_text())['devices'] == 4


def test_launch_rejects_a_bad_host_device_count(tmp_path):
  result = _launch(tmp_path, '--host_devices=many')
  assert result.returncode != 0
  assert "--host_devices = 'many': expected 'auto' or a positive int" in result.stderr
