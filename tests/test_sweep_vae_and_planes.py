"""A VAE sweep's and an information-plane sweep's reports (issue 27, items 1 and 2), from fabricated point
directories with known numbers: the columns, seeds only at some points, the at_least / at_most checks, the rate–
distortion figure, and the planes' mean ± std over seeds with the compression sentence.

Pure Python and matplotlib (no training): the file runs in seconds.
"""
import json
import math

import numpy as np
import pytest

import train_helpers
from infodrop_jax import sweep
from infodrop_jax.analysis import plane_figures
from infodrop_jax.sweep.commands import done_record

LOG_M = math.log(1000)


def _finish(config, workdir, summary_of, analysis_of, planes_of=None):
  for p in sweep.points(config):
    point_dir = workdir / p.name
    (point_dir / 'analysis').mkdir(parents=True)
    (point_dir / 'summary.json').write_text(json.dumps(summary_of(p.labels)))
    (point_dir / 'analysis' / 'analysis.json').write_text(json.dumps(analysis_of(p.labels)))
    if planes_of is not None:
      with open(point_dir / 'information_plane.jsonl', 'w') as f:
        for record in planes_of(p.labels):
          f.write(json.dumps(record) + '\n')
    (point_dir / sweep.DONE_FILE).write_text(json.dumps(done_record(p, True)))


def _verdict(text):
  (line,) = [l for l in text.splitlines() if l.startswith('**Whether our numbers agree:**')]
  return line


# --- seeds only at some points -------------------------------------------------------------------------------------


def test_the_vae_preset_runs_three_seeds_at_beta_1_and_one_elsewhere():
  config = train_helpers.load_module('configs/sweeps/vae_mnist.py').get_config('cpu')
  names = [p.name for p in sweep.points(config)]
  assert len(names) == 15 and len(set(names)) == 15
  for latent in ('gaussian', 'information', 'echo'):
    assert [n for n in names if n.startswith(f'latent={latent},beta=1,')] == [
        f'latent={latent},beta=1,seed={s}' for s in (0, 1, 2)]
    for beta in ('0.25', '4'):
      assert [n for n in names if n.startswith(f'latent={latent},beta={beta},')] == [
          f'latent={latent},beta={beta},seed=0']
  assert [p.index for p in sweep.points(config)] == list(range(15))
  assert all('--config=configs/vae_mnist.py:mlp50' in p.train_args for p in sweep.points(config))
  # :anchor is the full variant's training of the Gaussian VAE at β = 1, its bound on the whole test set.
  (anchor,) = sweep.points(train_helpers.load_module('configs/sweeps/vae_mnist.py').get_config('anchor'))
  assert anchor.name == 'latent=gaussian,beta=1,seed=0'
  assert {'--config.train.num_epochs=100', '--config.vae.iw_examples=0'} <= set(anchor.train_args)


def test_seeds_only_at_must_name_an_axis_label():
  config = train_helpers.load_module('configs/sweeps/vae_mnist.py').get_config('cpu')
  for bad in ('beta=2', 'width=1', 'beta'):
    config.seeds_only_at = bad
    with pytest.raises(sweep.SweepError, match='seeds_only_at'):
      sweep.points(config)


def test_seeds_only_at_names_each_axis_once():
  config = train_helpers.load_module('configs/sweeps/vae_mnist.py').get_config('cpu')
  config.seeds_only_at = 'beta=1 beta=4'
  with pytest.raises(sweep.SweepError, match="axis 'beta' is named twice"):
    sweep.points(config)


def test_the_saved_sweep_keeps_the_order_of_its_axes(tmp_path):
  # The points are named with the first axis first; sweep.json's keys are sorted (beta before latent), and
  # --mode=report from the workdir must find the same point directories.
  config = train_helpers.load_module('configs/sweeps/vae_mnist.py').get_config('cpu')
  sweep.spec.save_sweep(config, str(tmp_path), 'python launch.py ...')
  loaded = sweep.load_sweep(str(tmp_path))
  assert [p.name for p in sweep.points(loaded)] == [p.name for p in sweep.points(config)]
  assert [p.train_args for p in sweep.points(loaded)] == [p.train_args for p in sweep.points(config)]
  assert loaded.seeds_only_at == 'beta=1' and loaded.report.rate_distortion is True
  # A file from before the order was saved reads as it did (sorted axes).
  saved = json.loads((tmp_path / sweep.SWEEP_FILE).read_text())
  del saved['axis_order']
  (tmp_path / sweep.SWEEP_FILE).write_text(json.dumps(saved))
  assert list(sweep.load_sweep(str(tmp_path)).axes.keys()) == ['beta', 'latent']


def test_the_information_plane_preset_narrows_the_noisy_layer():
  config = train_helpers.load_module('configs/sweeps/ip_mnist.py').get_config('cpu')
  points = sweep.points(config)
  assert [p.name for p in points] == [f'dropout={d},seed={s}' for d in ('information', 'gaussian_p0.2',
                                                                        'gaussian_p0.05') for s in (0, 1, 2)]
  assert all('--config.model.hidden_sizes=(512,128,2)' in p.train_args for p in points)
  assert {('--config.model.dropout=gaussian', '--config.model.dropout_rate=0.05')} == {
      p.train_args[-3:-1] for p in points if p.labels['dropout'] == 'gaussian_p0.05'}
  assert all(p.train_args[0] == '--config=configs/mnist_ip.py:cpu' for p in points)


# --- the VAE sweep's report ----------------------------------------------------------------------------------------


def _vae_numbers(labels):
  """Rate falls and distortion rises with β; the Gaussian IW bound at β = 1 is 88 + seed nats."""
  beta, seed = float(labels['beta']), int(labels['seed'])
  offset = {'gaussian': 0.0, 'information': 2.0, 'echo': 4.0}[labels['latent']]
  rate, distortion = 30.0 / (1.0 + beta) + offset, 60.0 + 10.0 * beta + offset
  summary = {'test/rate': rate, 'test/distortion': distortion, 'test/neg_elbo': rate + distortion}
  analysis = {'test/rate': rate}
  if labels['latent'] != 'echo':
    analysis.update({'test/iw_nll': 88.0 + seed + offset, 'test/iw_nll_stderr': 0.3})
  else:
    analysis['iw_nll_unavailable'] = 'Echo'
  return summary, analysis


def _vae_sweep(tmp_path, anchor=None):
  config = train_helpers.load_module('configs/sweeps/vae_mnist.py').get_config('cpu')
  if anchor is not None:
    config.expect.gaussian_near_the_iwae_anchor.value = anchor
  _finish(config, tmp_path, lambda l: _vae_numbers(l)[0], lambda l: _vae_numbers(l)[1])
  return config


def test_a_vae_sweep_tabulates_elbo_iw_bound_rate_and_distortion(tmp_path):
  config = _vae_sweep(tmp_path)
  path = sweep.write_report(config, str(tmp_path))
  text = open(path).read()
  rows = {r['point']: r for r in sweep.read_csv(tmp_path / sweep.RESULTS_FILE)}
  row = rows['latent=gaussian,beta=4,seed=0']
  assert float(row['test_rate']) == pytest.approx(6.0) and float(row['test_distortion']) == pytest.approx(100.0)
  assert float(row['test_neg_elbo']) == pytest.approx(106.0) and float(row['iw_nll']) == pytest.approx(88.0)
  assert rows['latent=echo,beta=1,seed=0']['iw_nll'] == ''
  means = {(r['latent'], r['beta']): r for r in sweep.read_csv(tmp_path / sweep.MEANS_FILE)}
  gaussian = means[('gaussian', '1')]
  assert gaussian['seeds_done'] == '3' and gaussian['seeds'] == '3'
  assert float(gaussian['iw_nll:mean']) == pytest.approx(89.0) and float(gaussian['iw_nll:std']) == pytest.approx(1.0)
  assert float(gaussian['iw_nll:min']) == 88.0 and float(gaussian['iw_nll:max']) == 90.0
  assert means[('echo', '4')]['seeds'] == '1'
  # The table: mean ± std at β = 1, a single number elsewhere; the rate–distortion figure and its arrays.
  assert '| gaussian | 1 | 3/3 | 85 ± 0 | 89 ± 1 | 15 ± 0 | 70 ± 0 |' in text
  assert '| echo | 4 | 1/1 | 114 |  | 10 | 104 |' in text
  assert (tmp_path / 'vae_mnist_cpu_rate_distortion.png').stat().st_size > 10_000
  arrays = np.load(tmp_path / 'vae_mnist_cpu_rate_distortion.npz')
  order = np.lexsort((arrays['beta'], arrays['latent']))
  assert list(arrays['latent'][order]) == ['echo'] * 3 + ['gaussian'] * 3 + ['information'] * 3
  np.testing.assert_allclose(arrays['rate'][order][3:6], [24.0, 15.0, 6.0])
  assert '![vae_mnist_cpu_rate_distortion.png](vae_mnist_cpu_rate_distortion.png)' in text


def test_the_anchor_check_takes_every_seed_not_the_mean(tmp_path):
  # Seeds 88, 89, 90: every seed ≤ 91.76 agrees; a bound of 89.5 is met by the mean (89) but not by seed 2 (90).
  (tmp_path / 'a').mkdir()
  text = open(sweep.write_report(_vae_sweep(tmp_path / 'a'), str(tmp_path / 'a'))).read()
  assert 'agree (1 of 1 checks agree' in _verdict(text)
  assert 'iw_nll ≤ 91.76 in every run with latent=gaussian,beta=1: largest 90' in text
  (tmp_path / 'b').mkdir()
  text = open(sweep.write_report(_vae_sweep(tmp_path / 'b', anchor=89.5), str(tmp_path / 'b'))).read()
  assert 'disagree (0 of 1 checks agree, 1 disagree' in _verdict(text)


def test_a_finished_seed_without_a_finite_bound_leaves_the_anchor_check_undecided(tmp_path):
  config = _vae_sweep(tmp_path)
  analysis = tmp_path / 'latent=gaussian,beta=1,seed=1' / 'analysis' / 'analysis.json'
  analysis.write_text(json.dumps({**json.loads(analysis.read_text()), 'test/iw_nll': float('nan')}))
  text = open(sweep.write_report(config, str(tmp_path))).read()
  assert 'cannot tell' in _verdict(text) and '1 finished run(s) have no finite iw_nll' in text
  # But a finite seed above the bound still disagrees.
  config.expect.gaussian_near_the_iwae_anchor.value = 89.5
  assert 'disagree' in _verdict(open(sweep.write_report(config, str(tmp_path))).read())


def test_a_check_whose_where_names_no_axis_is_an_error(tmp_path):
  config = _vae_sweep(tmp_path)
  config.expect.gaussian_near_the_iwae_anchor.where = 'Beta=1,latent=gaussian'
  with pytest.raises(sweep.SweepError, match="names \\['Beta'\\], which are not axes"):
    sweep.write_report(config, str(tmp_path))


def test_an_unfinished_seed_leaves_the_anchor_check_undecided(tmp_path):
  config = _vae_sweep(tmp_path)
  (tmp_path / 'latent=gaussian,beta=1,seed=2' / sweep.DONE_FILE).unlink()
  text = open(sweep.write_report(config, str(tmp_path))).read()
  assert 'cannot tell' in _verdict(text)
  assert 'not every seed finished' in text


# --- the information-plane sweep -----------------------------------------------------------------------------------


def _record(epoch, ixz, izy=2.0, method='information'):
  layer = {'ixz': ixz, 'ixz_stderr': 0.02, 'izy': izy, 'izy_stderr': 0.01, 'kl': 3.0, 'units': 2}
  split = {'h_y': 2.3, 'izy_ce_n': izy - 0.1, 'izy_ce_d': izy - 0.05, 'error_n': 0.1, 'error_d': 0.1,
           'layers': {'hidden3': layer}}
  return {'step': int(epoch * 10), 'epoch': float(epoch), 'method': method, 'beta': 3.0, 'num_examples': 1000,
          'log_m': LOG_M, 'train': split, 'test': json.loads(json.dumps(split))}


# I(X;Z) per capture (epochs 0, 2, …, 14) and seed, the same on the training and test examples. Information
# dropout rises to 4 + d by epoch 2 and ends at 3: falls of 1.0, 1.2, 0.8 nats from the captures around its peak
# to the last three (mean 1.0 ± 0.2, t = 8.7 against 4.3 needed: compression). Gaussian dropout rises to 5 and
# stays, but for one 5.1 in seed 0 (falls 0.033, 0, 0: none that the seeds' spread allows).
CURVES = {
    'information': {s: [2.0] + [4.0 + d] * 3 + [3.5] + [3.0] * 3 for s, d in ((0, 0.0), (1, 0.2), (2, -0.2))},
    'gaussian': {0: [3.0] + [5.0] * 3 + [5.1] + [5.0] * 3, 1: [3.0] + [5.0] * 7, 2: [3.0] + [5.0] * 7},
}
PRESET_CURVES = {'information': CURVES['information'], 'gaussian_p0.2': CURVES['gaussian'],
                 'gaussian_p0.05': {s: [v - 1.0 for v in c] for s, c in CURVES['gaussian'].items()}}


def _planes(labels):
  curve = PRESET_CURVES[labels['dropout']][int(labels['seed'])]
  return [_record(2 * i, v, method=labels['dropout']) for i, v in enumerate(curve)]


def _plane_analysis(labels):
  records = _planes(labels)
  ixz = [r['train']['layers']['hidden3']['ixz'] for r in records]
  layer = {'peak_ixz': max(ixz), 'final_ixz': ixz[-1], 'compression': max(ixz) - ixz[-1]}
  # The test examples' estimate peaks 0.3 nats higher: the headroom is to the highest capture of either split.
  return {'information_plane': {'log_m': LOG_M, 'splits': {
      'train': {'layers': {'hidden3': layer}}, 'test': {'layers': {'hidden3': {**layer, 'peak_ixz': max(ixz) + 0.3}}}}}}


def _plane_sweep(tmp_path, config=None):
  config = config or train_helpers.load_module('configs/sweeps/ip_mnist.py').get_config('cpu')
  _finish(config, tmp_path, lambda l: {'test/error_d': 0.03, 'test/error_n': 0.035}, _plane_analysis, _planes)
  return config


def _runs(curves):
  return {m: [[_record(2 * i, v, method=m) for i, v in enumerate(curve)] for curve in by_seed.values()]
          for m, by_seed in curves.items()}


def test_summarize_seed_planes_known_answers():
  summary = plane_figures.summarize_seed_planes(_runs(CURVES))
  info, gauss = summary['methods']['information']['hidden3'], summary['methods']['gaussian']['hidden3']
  assert info['peak_ixz'] == pytest.approx(4.0) and info['peak_epoch'] == 2.0 and info['final_ixz'] == 3.0
  assert info['compression'] == pytest.approx(1.0) and info['compression_std'] == pytest.approx(0.2)
  assert info['t'] == pytest.approx(1.0 / (0.2 / math.sqrt(3))) and info['t_needed'] == pytest.approx(4.303, abs=1e-3)
  assert info['compresses'] is True and info['peak_chosen_on'] == 'test'
  assert gauss['peak_epoch'] == 8.0 and gauss['compression'] == pytest.approx(0.1 / 9)
  assert gauss['compresses'] is False
  assert gauss['max_ixz'] == 5.1 and gauss['headroom'] == pytest.approx(LOG_M - 5.1)
  lines = plane_figures.describe_seed_planes(summary)
  assert '**compression**' in lines[0] and '1.00 ± 0.20 nats' in lines[0] and 't = 8.7 > 4.3' in lines[0]
  assert 'no compression we can tell apart' in lines[1]
  # One seed decides nothing, however large its fall.
  one = plane_figures.summarize_seed_planes({'information': _runs(CURVES)['information'][:1]})
  assert one['methods']['information']['hidden3']['compresses'] is None
  assert '**cannot tell**' in plane_figures.describe_seed_planes(one)[0]


def test_the_untrained_capture_is_no_peak_and_nan_ends_decide_nothing():
  # Highest at epoch 0 (the untrained net), then flat: no fall after the peak of the trained captures.
  falling_from_init = {'m': {s: [6.0] + [5.0] * 7 for s in range(3)}}
  s = plane_figures.summarize_seed_planes(_runs(falling_from_init))['methods']['m']['hidden3']
  assert s['peak_epoch'] > 0 and s['compression'] == 0.0 and s['compresses'] is False
  assert '**no compression**' in plane_figures.describe_seed_planes(
      plane_figures.summarize_seed_planes(_runs(falling_from_init)))[0]
  # The last three captures not finite in every seed: no fall to measure, and the JSON stays valid.
  nan_end = {'m': {s: [2.0, 4.0, 4.0, 4.0, 3.0] + [float('nan')] * 3 for s in range(3)}}
  summary = plane_figures.summarize_seed_planes(_runs(nan_end))
  s = summary['methods']['m']['hidden3']
  assert s['compresses'] is None and s['compression'] is None and s['final_ixz'] is None
  json.dumps(summary, allow_nan=False)
  assert '**cannot tell**' in plane_figures.describe_seed_planes(summary)[0]


def test_the_plane_report_draws_mean_and_std_and_checks_the_ceiling(tmp_path):
  config = _plane_sweep(tmp_path)
  text = open(sweep.write_report(config, str(tmp_path))).read()
  arrays = np.load(tmp_path / 'ip_mnist_cpu_information_plane.npz')
  np.testing.assert_allclose(arrays['information/hidden3/ixz'], [CURVES['information'][s] for s in range(3)])
  np.testing.assert_allclose(arrays['gaussian_p0.2/hidden3/epoch'], np.arange(0, 16, 2))
  np.testing.assert_allclose(arrays['gaussian_p0.05/hidden3/ixz'][1], [2.0] + [4.0] * 7)
  assert (tmp_path / 'ip_mnist_cpu_information_plane.png').stat().st_size > 20_000
  assert '## Information planes' in text and '**compression**' in text
  # The highest capture of any run is 5.1 + 0.3 nats (test examples), 1.51 below log M: the check agrees.
  assert 'agree (1 of 1 checks agree' in _verdict(text)
  assert f'ixz_headroom:hidden3 ≥ 1 in every run: smallest {LOG_M - 5.4:.4g}' in text


def test_a_run_at_the_ceiling_fails_the_check(tmp_path):
  backup = PRESET_CURVES['gaussian_p0.2'][1]
  PRESET_CURVES['gaussian_p0.2'][1] = [3.0, 6.5, 6.2] + [6.0] * 5
  try:
    text = open(sweep.write_report(_plane_sweep(tmp_path), str(tmp_path))).read()
  finally:
    PRESET_CURVES['gaussian_p0.2'][1] = backup
  assert 'disagree' in _verdict(text)


def test_an_unreadable_plane_is_named_not_drawn(tmp_path):
  config = _plane_sweep(tmp_path)
  (tmp_path / 'dropout=gaussian_p0.2,seed=2' / 'information_plane.jsonl').write_text('{"not a record"\n{also not}\n')
  text = open(sweep.write_report(config, str(tmp_path))).read()
  assert 'Not drawn, their information_plane.jsonl could not be read: `dropout=gaussian_p0.2,seed=2`' in text
  summary = json.loads((tmp_path / 'ip_mnist_cpu_information_plane.json').read_text())
  assert summary['methods']['gaussian_p0.2']['hidden3']['seeds'] == 2
  assert summary['methods']['information']['hidden3']['seeds'] == 3


# --- the committed reports and the README's numbers ----------------------------------------------------------------

README = train_helpers.REPO_ROOT / 'README.md'
REPORTS = train_helpers.REPO_ROOT / 'reports'


def _readme_row(report):
  (row,) = [line for line in README.read_text().splitlines() if line.startswith(f'| [`reports/{report}`]')]
  return row


def _means(report):
  return {tuple(v for k, v in r.items() if k in ('dropout', 'latent', 'beta')): r
          for r in sweep.read_csv(REPORTS / report / sweep.MEANS_FILE)}


def test_the_readme_quotes_the_committed_information_planes():
  row = _readme_row('ip_mnist_cpu')
  summary = json.loads((REPORTS / 'ip_mnist_cpu' / 'ip_mnist_cpu_information_plane.json').read_text())['methods']
  info, p02, p005 = (summary[m]['hidden3'] for m in ('information', 'gaussian_p0.2', 'gaussian_p0.05'))
  assert (info['compresses'], p02['compresses'], p005['compresses']) == (False, False, True)
  assert (f'{info["peak_ixz"]:.2f} at epoch {info["peak_epoch"]:g} → {info["final_ixz"]:.2f} ± '
          f'{info["final_ixz_std"]:.2f}; fall {info["compression"]:.2f} ± '.replace('-', '−')) in row
  assert f'{p02["compression"]:.2f} ± {p02["compression_std"]:.2f}, t = {p02["t"]:.1f} < {p02["t_needed"]:.1f}' in row
  assert (f'{p005["peak_ixz"]:.2f} at epoch {p005["peak_epoch"]:g} → {p005["final_ixz"]:.2f} ± '
          f'{p005["final_ixz_std"]:.2f}; {p005["compression"]:.2f} ± {p005["compression_std"]:.2f}, '
          f't = {p005["t"]:.1f}') in row
  means = _means('ip_mnist_cpu')
  headroom = min(float(r['ixz_headroom:hidden3:min']) for r in means.values())
  assert headroom >= 1.0 and f'the closest, {LOG_M - headroom:.2f} nats' in row
  errors = [100 * float(means[(m,)]['test_error_d:mean']) for m in ('information', 'gaussian_p0.2', 'gaussian_p0.05')]
  assert f'{errors[0]:.2f} ± ' in row and f'{errors[1]:.1f} ± ' in row and f'{errors[2]:.1f} ± ' in row


def test_the_readme_quotes_the_committed_vae_sweep():
  row = _readme_row('vae_mnist_cpu')
  means = _means('vae_mnist_cpu')
  at_1 = {latent: means[(latent, '1')] for latent in ('gaussian', 'information', 'echo')}
  for latent, digits in (('gaussian', 2), ('information', 2), ('echo', 1)):
    m, s = float(at_1[latent]['test_neg_elbo:mean']), float(at_1[latent]['test_neg_elbo:std'])
    assert f'{m:.{digits}f} ± {s:.{digits if digits == 1 else 2}f}' in row, latent
  for latent in ('gaussian', 'information'):
    m, s = float(at_1[latent]['iw_nll:mean']), float(at_1[latent]['iw_nll:std'])
    assert f'{m:.2f} ± {s:.2f}' in row, latent
  seeds = sorted(float(r['iw_nll']) for r in sweep.read_csv(REPORTS / 'vae_mnist_cpu' / sweep.RESULTS_FILE)
                 if r['point'].startswith('latent=gaussian,beta=1,'))
  assert ', '.join(f'{v:.2f}' for v in seeds) in row
  rates = {latent: float(means[(latent, '0.25')]['test_rate:mean']) for latent in ('gaussian', 'information', 'echo')}
  assert f'({rates["echo"]:.1f} against {min(rates["gaussian"], rates["information"]):.0f} nats)' in row
  assert rates['echo'] < min(rates['gaussian'], rates['information'])


def test_the_readme_quotes_the_committed_anchor():
  row = _readme_row('vae_mnist_anchor')
  (r,) = sweep.read_csv(REPORTS / 'vae_mnist_anchor' / sweep.RESULTS_FILE)
  assert f'**{float(r["iw_nll"]):.2f} ± {float(r["iw_nll_stderr"]):.2f} nats**' in row
  assert f'within {float(r["iw_nll"]) - 86.76:.1f} nat of' in row
  for column in ('test_neg_elbo', 'test_rate', 'test_distortion'):
    assert f'{float(r[column]):.2f}' in row, column


def test_the_anchor_check_counts_seeds_as_numbers_when_read_from_the_csv():
  # results_mean.csv gives text: as text '9' < '10' is False, so 9 of 10 seeds passed for all of them.
  config = train_helpers.load_module('configs/sweeps/vae_mnist.py').get_config('cpu')
  row = {'latent': 'gaussian', 'beta': '1', 'seeds': '10', 'seeds_done': '9', 'iw_nll:mean': '90.0',
         'iw_nll:max': '90.5', 'iw_nll:n': '9'}
  verdict, lines = sweep.verdicts(config, [row])
  assert verdict.startswith('cannot tell') and 'not every seed finished' in lines[0]
  verdict, _ = sweep.verdicts(config, [{**row, 'seeds_done': '10', 'iw_nll:n': '10'}])
  assert verdict.startswith('agree')
