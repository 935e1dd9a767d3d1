"""Sweeps (`infodrop_jax.sweep`; launch.py --mode=sweep | sweep_commands | report) on the fig3a_mnist :smoke preset."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import train_helpers
from infodrop_jax import sweep
from infodrop_jax.analysis import sweep_figures

LAUNCH = str(train_helpers.REPO_ROOT / 'launch.py')
SMOKE = 'configs/sweeps/fig3a_mnist.py:smoke'
SMOKE_POINTS = ['dropout=information,width=16,seed=0', 'dropout=information,width=16,seed=1',
                'dropout=binary,width=16,seed=0', 'dropout=binary,width=16,seed=1']
PRESETS = ('fig2_cluttered', 'fig3a_mnist', 'fig3b_cifar', 'fig4_occluded', 'fig5_tc', 'fig6_info', 'ip_mnist',
           'vae_mnist')


def _launch(*args, python_flags=()):
  # One CPU device per run (the test session forces 8 for its own process).
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  return subprocess.run([sys.executable, *python_flags, LAUNCH, *args], capture_output=True, text=True, timeout=600,
                        cwd=train_helpers.REPO_ROOT, env=env, check=False)


def _smoke_config(**fields):
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location('fig3a_mnist', train_helpers.REPO_ROOT / 'configs/sweeps/fig3a_mnist.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('smoke')
  for key, value in fields.items():
    config[key] = value
  return config


def test_points_are_the_product_of_axes_and_seeds():
  config = sweep.new_config('t', 'configs/mnist_fc.py', 'smoke')
  config.axes.dropout = sweep.axis('model.dropout', ('information', 'binary'))
  config.axes.size = sweep.axis(('model.hidden_sizes', 'train.batch_size'), [((64, 16), 32), ((8,), 16)])
  config.seeds = (0, 3)
  config.overrides = ('train.num_epochs=1',)
  points = sweep.points(config)
  assert len(points) == 8 and len({p.name for p in points}) == 8
  assert points[0].name == 'dropout=information,size=64x16_32,seed=0'
  assert points[-1].labels == {'dropout': 'binary', 'size': '8_16', 'seed': '3'}
  assert points[1].train_args == ('--config=configs/mnist_fc.py:smoke', '--config.train.num_epochs=1',
                                  '--config.model.dropout=information', '--config.model.hidden_sizes=(64,16)',
                                  '--config.train.batch_size=32', '--config.seed=3')
  assert sweep.format_value((8,)) == '(8,)' and sweep.format_value(0.1) == '0.1' and sweep.label_of(0.1) == '0.1'
  config.axes.size.labels = ('a/b', 'a b')  # both sanitised to a_b
  with pytest.raises(sweep.SweepError, match='both named'):
    sweep.points(config)
  config.axes.size.labels = ()
  config.only = '1 dropout=binary,size=8_16,seed=0'
  assert [p.index for p in sweep.select(config, sweep.points(config))] == [1, 6]
  config.only = 'dropout=none'
  with pytest.raises(sweep.SweepError, match='neither a point name'):
    sweep.select(config, sweep.points(config))


def test_slots_divide_cores_and_gpus():
  slots = sweep.plan_slots(2, env={}, cpus=[0, 1, 2, 3], gpus=['0', '1', '2', '3'])
  assert [s.cpus for s in slots] == [[0, 1], [2, 3]] and [s.gpus for s in slots] == [['0', '1'], ['2', '3']]
  assert slots[1].env['CUDA_VISIBLE_DEVICES'] == '2,3' and 'XLA_FLAGS' not in slots[1].env
  slots = sweep.plan_slots(4, env={'XLA_FLAGS': '--xla_foo=1'}, cpus=[0, 1], gpus=['5'])
  assert [s.cpus for s in slots] == [[0], [1], [0], [1]]
  assert slots[0].env['XLA_FLAGS'].startswith('--xla_cpu_multi_thread_eigen=false') and '--xla_foo=1' in slots[0].env[
      'XLA_FLAGS']
  assert all(s.env['CUDA_VISIBLE_DEVICES'] == '5' and s.env['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.23' for s in slots)
  assert sweep.plan_slots(1)[0].cpus is None and sweep.plan_slots(1)[0].env == {}
  assert sweep.gpu_ids({'INFODROP_SWEEP_GPUS': '2'}) == ['0', '1']
  assert sweep.gpu_ids({'CUDA_VISIBLE_DEVICES': '3,4'}) == ['3', '4']


@pytest.mark.parametrize('name', PRESETS)
def test_presets_have_cpu_and_smoke_variants(name):
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(name, train_helpers.REPO_ROOT / f'configs/sweeps/{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert ':cpu' in module.__doc__ and ':smoke' in module.__doc__ and 'H100' in module.__doc__
  sizes = {}
  for variant in ('', 'cpu', 'smoke'):
    config = module.get_config(variant)
    sizes[variant] = len(sweep.points(config))
    assert config.claim and len(config.expect) and config.report.x in config.axes
    # A reader of the figure gets a readable x axis, a caption, and a label for every plotted metric.
    assert config.report.x_label and config.report.caption
    for metric in config.report.metrics:
      assert sweep_figures.metric_label(str(metric)) != str(metric), metric
  assert sizes[''] >= sizes['cpu'] >= sizes['smoke'] >= 2


def test_sweep_commands_print_one_line_per_point_without_jax(tmp_path):
  result = _launch(f'--config={SMOKE}', f'--workdir={tmp_path}', '--mode=sweep_commands', python_flags=('-X',
                                                                                                        'importtime'))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 4
  for line, name in zip(lines, SMOKE_POINTS):
    assert f'--workdir={tmp_path}/{name} ' in line and f'{tmp_path}/{name}/DONE' in line and '--mode=analyze' in line
  assert not re.search(r'\|\s+jax$', result.stderr, re.M), 'the sweep process imported JAX'


def test_sweep_end_to_end_resumes_and_reports_failures(shared_data, tmp_path):
  del shared_data
  work = tmp_path / 'sweep'
  # 1. A sweep stopped after two points (exit 3: points left), then a third point left as a killed run leaves it.
  first = _launch(f'--config={SMOKE}', f'--workdir={work}', '--mode=sweep', '--config.parallel=2',
                  '--config.max_points=2')
  assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
  assert sorted(p.name for p in work.iterdir() if (p / 'DONE').exists()) == sorted(SMOKE_POINTS[:2])
  killed = work / SMOKE_POINTS[2]
  killed.mkdir()
  (killed / 'status.json').write_text(json.dumps({'status': 'running', 'point': SMOKE_POINTS[2]}))
  report = _launch(f'--workdir={work}', '--mode=report')
  assert report.returncode == 0, report.stderr[-3000:]
  status = {r['point']: r['status'] for r in sweep.read_csv(work / 'results.csv')}
  assert status == dict(zip(SMOKE_POINTS, ['done', 'done', 'incomplete', 'pending']))
  finished_mtimes = {n: (work / n / 'summary.json').stat().st_mtime_ns for n in SMOKE_POINTS[:2]}

  # 2. Re-run with a third, invalid method: finished points are skipped, the rest run, the bad ones are reported.
  second = _launch(f'--config={SMOKE}', f'--workdir={work}', '--mode=sweep', '--config.parallel=2',
                   "--config.axes.dropout.values=('information','binary','bogus')")
  out = second.stdout
  assert second.returncode == 1, out[-3000:] + second.stderr[-3000:]
  for name in SMOKE_POINTS[:2]:
    assert f'[sweep] skip  {name} (finished)' in out
    assert (work / name / 'summary.json').stat().st_mtime_ns == finished_mtimes[name]
  assert all((work / name / 'DONE').exists() for name in SMOKE_POINTS)
  for seed in (0, 1):
    name = f'dropout=bogus,width=16,seed={seed}'
    assert f'[sweep] FAILED {name}: train exited with status 1' in out
    assert "expected one of" in out.split(f'FAILED {name}')[1]  # the log's tail says why
    assert not (work / name / 'DONE').exists()
  assert '2 of 6 points failed' in out

  # 3. results.csv holds the points' summary.json and analysis.json numbers; the means are over seeds.
  rows = {r['point']: r for r in sweep.read_csv(work / 'results.csv')}
  assert len(rows) == 6 and [rows[n]['status'] for n in SMOKE_POINTS] == ['done'] * 4
  assert rows['dropout=bogus,width=16,seed=0']['status'] == 'failed'
  for name in SMOKE_POINTS:
    summary = json.loads((work / name / 'summary.json').read_text())
    analysis = json.loads((work / name / 'analysis' / 'analysis.json').read_text())
    row = rows[name]
    assert (row['dropout'], row['width'], row['seed']) == tuple(name.replace(',', '=').split('=')[1::2])
    assert float(row['test_error_d']) == summary['test/error_d'] and float(row['test_error_n']) == summary[
        'test/error_n']
    assert float(row['test_ce_d']) == summary['test/ce_d'] and int(row['steps']) == summary['steps']
    for key, value in summary.items():
      if key.startswith('test/kl/'):
        assert float(row['kl:' + key[len('test/kl/'):]]) == value
    for layer, value in (analysis.get('info_per_unit') or {}).items():
      assert float(row[f'info_unit:{layer}']) == value
    for key in ('train_error_d', 'train_error_n', 'generalization_gap_d'):
      assert float(row[key]) == analysis['train_error'][key]
    assert float(row['wall_time_s']) > 0
  assert rows[SMOKE_POINTS[0]]['info_unit:hidden1/noise'] and not rows[SMOKE_POINTS[2]].get('info_unit:hidden1/noise')
  means = {r['dropout']: r for r in sweep.read_csv(work / 'results_mean.csv')}
  errors = [float(rows[n]['test_error_d']) for n in SMOKE_POINTS[:2]]
  assert means['information']['seeds_done'] == '2' and means['bogus']['seeds_done'] == '0'
  assert float(means['information']['test_error_d:mean']) == pytest.approx(sum(errors) / 2)
  assert float(means['information']['test_error_d:std']) == pytest.approx(abs(errors[0] - errors[1]) / 2 ** 0.5)

  # 4. report.md: the claim, the checks' numbers (no verdict: a smoke sweep), the commands, and only PNGs that exist.
  text = (work / 'report.md').read_text()
  images = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
  assert images and all((work / image).is_file() for image in images)
  assert "**The paper's claim:** Information dropout outperforms binary dropout" in text
  # A smoke sweep judges nothing: its checks' numbers are listed, marked as no verdict.
  assert '**Whether our numbers agree:** not judged: a smoke sweep' in text
  # With two seeds of a 1-epoch net the outcome may be any of the three words; the line and its numbers must be there.
  (line,) = [l for l in text.splitlines() if l.startswith('- (smoke, not a verdict) `information_le_binary`')]
  assert any(f'**{word}**' in line for word in ('agrees', 'disagrees', 'cannot tell'))
  assert 'claim test_error_d at dropout=information − at dropout=binary < 0' in line and '(Welch t, df ' in line
  assert 'width=16: ' in line and 'n = 2 vs 2' in line
  assert f'--config={SMOKE}' in text and '--mode=sweep' in text and 'dropout=bogus,width=16,seed=0' in text
  assert 'Machine and date' in text


def test_heatmap_grid_draws_one_row_per_point_and_names_the_seed_it_shows(tmp_path, monkeypatch):
  # The grid shows the maps of the first seed only; with several seeds its title must say which one.
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  maps = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
  rows = []
  for beta in ('0.05', '0.5'):
    npz = tmp_path / f'{beta}.npz'
    np.savez(npz, **{'block1/noise': maps, 'block2/noise': maps[:, :2, :2], 'indices': np.arange(2),
                     'bbox': np.array([[0, 0, 8, 8], [4, 4, 12, 12]])})
    rows.append((beta, str(npz), 16.0))
  titles = []
  saved = Figure.savefig
  monkeypatch.setattr(Figure, 'savefig', lambda self, *a, **k: (titles.append(
      (self._suptitle.get_text(), [ax.get_ylabel() for ax in self.axes if ax.get_ylabel()])), saved(self, *a, **k)))
  config = sweep.new_config('t', 'configs/cluttered_info.py')
  config.axes.beta = sweep.axis('loss.beta', (0.05, 0.5))
  config.report.x = 'beta'
  config.report.heatmap_images = 2
  for seeds, which in (((0, 1, 2), 'seed 0 (of seeds 0, 1, 2)'), ((3,), 'seed 3;')):
    config.seeds = seeds
    assert sweep_figures.heatmap_grid(config, rows, str(tmp_path / 'grid.png'))
    title, row_labels = titles.pop()
    assert which in title, title
    assert row_labels == ['β = 0.05', 'β = 0.5']
  assert (tmp_path / 'grid.png').stat().st_size > 0
  assert not sweep_figures.heatmap_grid(config, [], str(tmp_path / 'none.png'))
