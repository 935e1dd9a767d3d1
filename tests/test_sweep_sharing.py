"""Sweeps shared by several processes, and reports that cannot be silently wrong (issue 26, items 1, 3, 13).

- Array tasks running different points of one sweep (`--config.only`) each wrote results.csv and report.md at the
  end with no lock and one shared temporary name; now those files are written under W/.shared_files.lock.
- A second sweep process restarted a point another process was training (then marked it FAILED); now it leaves it.
- A point whose summary.json could not be read stayed 'done' with blank numbers: the mean used the other seed while
  the table said 2/2, a verdict was printed and --mode=report exited 0. Now it is 'unreadable', counts in no mean,
  the report gives no verdict, --mode=report exits 1 and a re-run redoes the point.
- A smoke sweep's report judged the paper from runs at 80 % error; now it says it is smoke and gives no verdict.

Pure Python (no training): the whole file runs in seconds.
"""
import json
import subprocess
import sys
import threading
import time

import pytest

import train_helpers
from infodrop_jax import ownership
from infodrop_jax import sweep
from infodrop_jax.sweep.commands import done_record

_HOLD_SHARED = ('import sys, time\n'
                f'sys.path.insert(0, {str(train_helpers.REPO_ROOT)!r})\n'
                'from infodrop_jax import ownership\n'
                'with ownership.shared_files_lock(sys.argv[1]):\n'
                '  print("locked", flush=True)\n'
                '  time.sleep(float(sys.argv[2]))\n')
_HOLD_RUN = ('import sys, time\n'
             f'sys.path.insert(0, {str(train_helpers.REPO_ROOT)!r})\n'
             'from infodrop_jax import ownership\n'
             'lock = ownership.acquire(sys.argv[1])\n'
             'print("locked", flush=True)\n'
             'time.sleep(600)\n')


def _hold(script, *args):
  process = subprocess.Popen([sys.executable, '-c', script, *map(str, args)], stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == 'locked'
  return process


def _config(seeds=(0, 1), **fields):
  """A sweep over beta (0.01, 1) with one check, no analysis and no figure."""
  config = sweep.new_config('t', 'configs/mnist_fc.py')
  config.axes.beta = sweep.axis('loss.beta', (0.01, 1.0))
  config.seeds = seeds
  config.analyze = False
  config.report.x = 'beta'
  config.report.metrics = ()
  config.expect.rises = dict(check='increasing', metric='test_error_d')
  for key, value in fields.items():
    config[key] = value
  return config


def _finish(config, workdir, errors):
  """Every point as a finished sweep leaves it (DONE, summary.json); errors[(beta label, seed)]."""
  for p in sweep.points(config):
    point_dir = workdir / p.name
    point_dir.mkdir()
    (point_dir / 'summary.json').write_text(json.dumps({'test/error_d': errors[(p.labels['beta'],
                                                                                int(p.labels['seed']))]}))
    (point_dir / sweep.DONE_FILE).write_text(json.dumps(done_record(p, False)))


# Two seeds close together at each beta: a rise of 0.4 that Welch's t (df 2) decides.
ERRORS = {('0.01', 0): 0.1, ('0.01', 1): 0.11, ('1', 0): 0.5, ('1', 1): 0.51}


def _verdict_line(text):
  (line,) = [l for l in text.splitlines() if l.startswith('**Whether our numbers agree:**')]
  return line


# --- item 3: unreadable points ------------------------------------------------------------------------------------


def test_an_unreadable_summary_is_no_finished_point_and_the_report_refuses_a_verdict(tmp_path, capsys):
  config = _config()
  _finish(config, tmp_path, ERRORS)
  broken = tmp_path / 'beta=1,seed=1'
  broken.joinpath('summary.json').write_text('{"test/error_d": 0.9, ')  # cut short (a full disk, a copy)
  point = [p for p in sweep.points(config) if p.name == broken.name][0]
  assert not sweep.is_finished(point, str(broken), False)  # a re-run of the sweep redoes it
  assert sweep.status_of(point, str(broken), False) == 'unreadable'

  assert sweep.main('report', config, str(tmp_path)) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: 1 finished point(s) could not be read, so the report gives no verdict: '
                        'beta=1,seed=1: summary.json (cannot be read as a JSON object)')
  rows = {r['point']: r for r in sweep.read_csv(tmp_path / sweep.RESULTS_FILE)}
  assert rows['beta=1,seed=1']['status'] == 'unreadable' and rows['beta=1,seed=1']['test_error_d'] == ''
  means = {r['beta']: r for r in sweep.read_csv(tmp_path / sweep.MEANS_FILE)}
  assert (means['1']['seeds'], means['1']['seeds_done']) == ('2', '1')  # not 2/2
  assert float(means['1']['test_error_d:mean']) == 0.5
  text = (tmp_path / sweep.REPORT_FILE).read_text()
  assert _verdict_line(text).startswith('**Whether our numbers agree:** not judged: 1 finished point(s) could not '
                                        'be read (`beta=1,seed=1`: summary.json (cannot be read as a JSON object))')
  assert '- (without those points) `rises`' in text  # the checks' numbers, marked as partial
  assert '| 1 | 1/2 |' in text
  assert '- `beta=1,seed=1`: unreadable: summary.json (cannot be read as a JSON object); its numbers count in no ' \
         'mean' in text
  assert 'Points: 3 done, 1 unreadable of 4.' in text


def test_a_missing_analysis_json_of_an_analysed_sweep_is_unreadable_too(tmp_path):
  config = _config(seeds=(0,), analyze=True)
  for p in sweep.points(config):
    (tmp_path / p.name).mkdir()
    (tmp_path / p.name / 'summary.json').write_text(json.dumps({'test/error_d': 0.1}))
    (tmp_path / p.name / sweep.DONE_FILE).write_text(json.dumps(done_record(p, True)))
  rows, _ = sweep.write_results(config, str(tmp_path))
  assert {r['status'] for r in rows} == {'unreadable'}
  assert rows[0]['problem'] == 'analysis/analysis.json (missing)'


def test_a_readable_sweep_still_gets_its_verdict_and_exit_0(tmp_path):
  config = _config()
  _finish(config, tmp_path, ERRORS)
  assert sweep.main('report', config, str(tmp_path)) == 0
  assert _verdict_line((tmp_path / sweep.REPORT_FILE).read_text()) == (
      '**Whether our numbers agree:** agree (1 of 1 checks agree, 0 disagree, 0 cannot tell).')


# --- item 13: smoke sweeps ----------------------------------------------------------------------------------------


def test_a_smoke_sweep_says_so_and_gives_no_verdict(tmp_path):
  config = _config(variant='smoke')
  assert sweep.is_smoke(config)
  _finish(config, tmp_path, ERRORS)
  assert sweep.main('report', config, str(tmp_path)) == 0
  text = (tmp_path / sweep.REPORT_FILE).read_text()
  assert _verdict_line(text) == ('**Whether our numbers agree:** not judged: a smoke sweep (tiny data and epochs) '
                                 'checks that the code runs, not the paper; run the full or :cpu variant for a '
                                 'verdict.')
  assert '- (smoke, not a verdict) `rises`' in text


def test_full_and_cpu_presets_are_not_smoke_and_smoke_presets_are():
  for preset in ('fig2_cluttered', 'fig3a_mnist', 'fig3b_cifar', 'fig4_occluded', 'fig5_tc', 'fig6_info', 'ip_mnist',
                 'vae_mnist'):
    for variant, smoke in (('', False), ('cpu', False), ('smoke', True)):
      config = train_helpers.load_module(f'configs/sweeps/{preset}.py').get_config(variant)
      assert sweep.is_smoke(config) == smoke, (preset, variant)


# --- item 1: a sweep's shared files and points run by other processes ------------------------------------------------


def test_the_shared_files_lock_excludes_other_processes_and_times_out_with_a_clear_error(tmp_path):
  holder = _hold(_HOLD_SHARED, tmp_path, 600)
  try:
    with pytest.raises(ownership.WorkdirBusyError, match='writing this sweep\'s shared files for over 0 s'):
      with ownership.shared_files_lock(str(tmp_path), timeout_s=0.3):
        pass
  finally:
    holder.kill()
    holder.wait()
  with ownership.shared_files_lock(str(tmp_path), timeout_s=0.3):  # free once its holder is gone, however it went
    pass


def test_report_waits_for_another_process_writing_the_shared_files(tmp_path):
  config = _config()
  _finish(config, tmp_path, ERRORS)
  holder = _hold(_HOLD_SHARED, tmp_path, 1.5)
  released = time.monotonic() + 1.0  # at the earliest (the holder sleeps 1.5 s after saying 'locked')
  try:
    assert sweep.main('report', config, str(tmp_path), out=lambda _: None) == 0
    assert time.monotonic() >= released  # it waited for the holder instead of writing beside it
  finally:
    holder.kill()
    holder.wait()
  assert not list(tmp_path.glob('*.tmp'))


def test_reports_written_at_once_by_many_processes_are_whole(tmp_path):
  config = _config()
  _finish(config, tmp_path, ERRORS)
  errors = []

  def report():
    try:
      sweep.main('report', config, str(tmp_path), out=lambda _: None)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=report) for _ in range(6)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert len(sweep.read_csv(tmp_path / sweep.RESULTS_FILE)) == 4 and not list(tmp_path.glob('*.tmp'))


def test_a_sweep_leaves_a_point_that_another_process_is_running(tmp_path):
  config = train_helpers.load_module('configs/sweeps/fig3a_mnist.py').get_config('smoke')
  config.only = 'dropout=information,width=16,seed=0'
  config.report.metrics = ()
  point_dir = tmp_path / config.only
  point_dir.mkdir()
  holder = _hold(_HOLD_RUN, point_dir)
  lines = []
  try:
    assert sweep.run_sweep(config, str(tmp_path), out=lines.append) == 3
  finally:
    holder.kill()
    holder.wait()
  text = '\n'.join(lines)
  assert f'[sweep] skip  {config.only} (running in another process: pid {holder.pid} on ' in text
  assert '1 points are running in other processes' in text and '--mode=report' in text
  assert not (point_dir / sweep.STATUS_FILE).exists() and not (point_dir / sweep.LOG_FILE).exists()
  status = {r['point']: r['status'] for r in sweep.read_csv(tmp_path / sweep.RESULTS_FILE)}
  assert status[config.only] == 'incomplete'


def test_array_tasks_record_one_sweep_command_not_one_per_point(tmp_path):
  config = train_helpers.load_module('configs/sweeps/fig3a_mnist.py').get_config('smoke')
  config.report.metrics = ()
  holders = []
  try:
    for index in (0, 1):  # two array tasks, each with its point (owned elsewhere, so nothing trains here)
      name = sweep.points(config)[index].name
      (tmp_path / name).mkdir()
      holders.append(_hold(_HOLD_RUN, tmp_path / name))
      config.only = name
      assert sweep.main('sweep', config, str(tmp_path), config_file='configs/sweeps/fig3a_mnist.py:smoke',
                        overrides={'only': name, 'parallel': 1}, out=lambda _: None) == 3
  finally:
    for holder in holders:
      holder.kill()
      holder.wait()
  recorded = json.loads((tmp_path / sweep.SWEEP_FILE).read_text())['commands']
  assert recorded == [f'python launch.py --config=configs/sweeps/fig3a_mnist.py:smoke --config.parallel=1 '
                      f'--workdir={tmp_path} --mode=sweep']
