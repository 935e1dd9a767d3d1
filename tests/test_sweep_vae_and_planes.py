"""A VAE sweep's and an information-plane sweep's reports, from fabricated point directories with known numbers:
the columns, seeds only at some points, the anchor check (two-sided, each seed with its Monte Carlo error) and its
precondition, the rate–distortion figure, and the planes' mean ± std over seeds with the compression claims over
fixed windows.

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
  rate, distortion = 30.0 / (1.0 + beta) + offset, 70.0 + 10.0 * beta + offset
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
    config.expect.gaussian_near_the_iwae_anchor.high = anchor
  _finish(config, tmp_path, lambda l: _vae_numbers(l)[0], lambda l: _vae_numbers(l)[1])
  return config


def test_a_vae_sweep_tabulates_elbo_iw_bound_rate_and_distortion(tmp_path):
  config = _vae_sweep(tmp_path)
  path = sweep.write_report(config, str(tmp_path))
  text = open(path).read()
  rows = {r['point']: r for r in sweep.read_csv(tmp_path / sweep.RESULTS_FILE)}
  row = rows['latent=gaussian,beta=4,seed=0']
  assert float(row['test_rate']) == pytest.approx(6.0) and float(row['test_distortion']) == pytest.approx(110.0)
  assert float(row['test_neg_elbo']) == pytest.approx(116.0) and float(row['iw_nll']) == pytest.approx(88.0)
  assert rows['latent=echo,beta=1,seed=0']['iw_nll'] == ''
  means = {(r['latent'], r['beta']): r for r in sweep.read_csv(tmp_path / sweep.MEANS_FILE)}
  gaussian = means[('gaussian', '1')]
  assert gaussian['seeds_done'] == '3' and gaussian['seeds'] == '3'
  assert float(gaussian['iw_nll:mean']) == pytest.approx(89.0) and float(gaussian['iw_nll:std']) == pytest.approx(1.0)
  assert float(gaussian['iw_nll:min']) == 88.0 and float(gaussian['iw_nll:max']) == 90.0
  assert means[('echo', '4')]['seeds'] == '1'
  # The table: mean ± std at β = 1, a single number elsewhere; the rate–distortion figure and its arrays.
  assert '| gaussian | 1 | 3/3 | 95 ± 0 | 89 ± 1 | 15 ± 0 | 80 ± 0 |' in text
  assert '| echo | 4 | 1/1 | 124 |  | 10 | 114 |' in text
  assert (tmp_path / 'vae_mnist_cpu_rate_distortion.png').stat().st_size > 10_000
  arrays = np.load(tmp_path / 'vae_mnist_cpu_rate_distortion.npz')
  order = np.lexsort((arrays['beta'], arrays['latent']))
  assert list(arrays['latent'][order]) == ['echo'] * 3 + ['gaussian'] * 3 + ['information'] * 3
  np.testing.assert_allclose(arrays['rate'][order][3:6], [24.0, 15.0, 6.0])
  assert '![vae_mnist_cpu_rate_distortion.png](vae_mnist_cpu_rate_distortion.png)' in text


def test_the_anchor_check_takes_every_seed_with_its_monte_carlo_error(tmp_path):
  # Seeds 88, 89, 90 nats, each ± 0.3: inside (84.78, 91.76) at 1 − 0.05/3 (z = 2.39) in every seed: agrees.
  (tmp_path / 'a').mkdir()
  text = open(sweep.write_report(_vae_sweep(tmp_path / 'a'), str(tmp_path / 'a'))).read()
  assert 'agree (1 of 1 checks agree' in _verdict(text)
  assert 'claim iw_nll in (84.78, 91.76) in every run with latent=gaussian,beta=1' in text
  assert 'latent=gaussian,beta=1,seed=2: 90 [89.28, 90.72] (z, Monte Carlo error iw_nll_stderr' in text
  assert 'precondition `iw_bound_below_the_elbo`' in text and 'iw_nll − test_neg_elbo < 0' in text
  # A bound of 89.5: the mean (89) meets it, seed 2's interval straddles it, so cannot tell; at 89.2 seed 2 fails.
  (tmp_path / 'b').mkdir()
  text = open(sweep.write_report(_vae_sweep(tmp_path / 'b', anchor=89.5), str(tmp_path / 'b'))).read()
  assert 'cannot tell (0 of 1 checks agree, 0 disagree' in _verdict(text)
  (tmp_path / 'c').mkdir()
  text = open(sweep.write_report(_vae_sweep(tmp_path / 'c', anchor=89.2), str(tmp_path / 'c'))).read()
  assert 'disagree (0 of 1 checks agree, 1 disagree' in _verdict(text)


def test_an_iw_bound_above_the_elbo_gates_the_anchor(tmp_path):
  config = _vae_sweep(tmp_path)
  for seed in range(3):
    summary = tmp_path / f'latent=gaussian,beta=1,seed={seed}' / 'summary.json'
    summary.write_text(json.dumps({**json.loads(summary.read_text()), 'test/neg_elbo': 87.0}))
  text = open(sweep.write_report(config, str(tmp_path))).read()
  assert 'cannot tell' in _verdict(text)
  assert '(precondition `iw_bound_below_the_elbo` disagrees; the test alone: agrees)' in text


def test_a_finished_seed_without_a_finite_bound_leaves_the_anchor_check_undecided(tmp_path):
  config = _vae_sweep(tmp_path)
  analysis = tmp_path / 'latent=gaussian,beta=1,seed=1' / 'analysis' / 'analysis.json'
  analysis.write_text(json.dumps({**json.loads(analysis.read_text()), 'test/iw_nll': float('nan')}))
  text = open(sweep.write_report(config, str(tmp_path))).read()
  assert 'cannot tell' in _verdict(text) and 'latent=gaussian,beta=1,seed=1: no value (no finite iw_nll)' in text
  # But a finite seed clearly above the bound still disagrees.
  config.expect.gaussian_near_the_iwae_anchor.high = 89.2
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
  assert 'latent=gaussian,beta=1,seed=2: no value (not finished' in text


# --- the information-plane sweep -----------------------------------------------------------------------------------


def _record(epoch, ixz, izy=2.0, method='information'):
  layer = {'ixz': ixz, 'ixz_stderr': 0.02, 'izy': izy, 'izy_stderr': 0.01, 'kl': 3.0, 'units': 2}
  split = {'h_y': 2.3, 'izy_ce_n': izy - 0.1, 'izy_ce_d': izy - 0.05, 'error_n': 0.1, 'error_d': 0.1,
           'layers': {'hidden3': layer}}
  return {'step': int(epoch * 10), 'epoch': float(epoch), 'method': method, 'beta': 3.0, 'num_examples': 1000,
          'log_m': LOG_M, 'train': split, 'test': json.loads(json.dumps(split))}


# I(X;Z) per capture (epochs 0, 2, …, 14) and seed, the same on the training and test examples. Information
# dropout rises to 4 + d by epoch 2 and ends at 3: over the windows of `_plane_sweep` (epochs 2–6 against 10–14)
# its seeds fall by 1.0, 1.2, 0.8 nats. Gaussian dropout rises to 5 and stays, but for one 5.1 in seed 0 at epoch 8
# (outside both windows): every seed's fall is 0.
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
  return {'information_plane': {'log_m': LOG_M, 'splits': {
      'train': {'layers': {'hidden3': layer}}, 'test': {'layers': {'hidden3': {**layer, 'peak_ixz': max(ixz) + 0.3}}}}}}


def _plane_sweep(tmp_path, config=None):
  config = config or train_helpers.load_module('configs/sweeps/ip_mnist.py').get_config('cpu')
  for claim in config.expect.values():  # the fabricated runs are 14 epochs long
    claim.early, claim.late = (2, 6), (10, 14)
  _finish(config, tmp_path, lambda l: {'test/error_d': 0.03, 'test/error_n': 0.035}, _plane_analysis, _planes)
  return config


def _runs(curves):
  return {m: [[_record(2 * i, v, method=m) for i, v in enumerate(curve)] for curve in by_seed.values()]
          for m, by_seed in curves.items()}


def test_summarize_seed_planes_known_answers():
  summary = plane_figures.summarize_seed_planes(_runs(CURVES))
  info, gauss = summary['methods']['information']['hidden3'], summary['methods']['gaussian']['hidden3']
  assert info['peak_ixz'] == pytest.approx(4.0) and info['peak_epoch'] == 2.0 and info['final_ixz'] == 3.0
  assert info['first_ixz'] == 2.0 and info['final_ixz_std'] == 0.0 and info['seeds'] == 3
  assert gauss['peak_epoch'] == 8.0 and gauss['peak_ixz'] == pytest.approx(5.0 + 0.1 / 3)
  assert gauss['max_ixz'] == 5.1 and gauss['headroom'] == pytest.approx(LOG_M - 5.1)
  assert not {'compression', 'compresses', 't'} & set(info)  # the claims decide, not the summary
  lines = plane_figures.describe_seed_planes(summary)
  assert 'highest 4.00 (epoch 2), 3.00 ± 0.00 at the end' in lines[0]
  assert not any(w in ' '.join(lines) for w in ('compression', 'cannot tell'))


def test_the_untrained_capture_is_no_peak_and_nan_ends_stay_valid_json():
  # Highest at epoch 0 (the untrained net), then flat: the highest capture is among the trained ones.
  falling_from_init = {'m': {s: [6.0] + [5.0] * 7 for s in range(3)}}
  s = plane_figures.summarize_seed_planes(_runs(falling_from_init))['methods']['m']['hidden3']
  assert s['peak_epoch'] > 0 and s['peak_ixz'] == 5.0
  # The last capture not finite in every seed: no final value, and the JSON stays valid.
  nan_end = {'m': {s: [2.0, 4.0, 4.0, 4.0, 3.0] + [float('nan')] * 3 for s in range(3)}}
  summary = plane_figures.summarize_seed_planes(_runs(nan_end))
  assert summary['methods']['m']['hidden3']['final_ixz'] is None
  json.dumps(summary, allow_nan=False)
  assert 'not finite at some captures' in plane_figures.describe_seed_planes(summary)[0]


def test_the_plane_report_decides_compression_over_fixed_windows(tmp_path):
  config = _plane_sweep(tmp_path)
  text = open(sweep.write_report(config, str(tmp_path))).read()
  arrays = np.load(tmp_path / 'ip_mnist_cpu_information_plane.npz')
  np.testing.assert_allclose(arrays['information/hidden3/ixz'], [CURVES['information'][s] for s in range(3)])
  np.testing.assert_allclose(arrays['gaussian_p0.2/hidden3/epoch'], np.arange(0, 16, 2))
  np.testing.assert_allclose(arrays['gaussian_p0.05/hidden3/ixz'][1], [2.0] + [4.0] * 7)
  assert (tmp_path / 'ip_mnist_cpu_information_plane.png').stat().st_size > 20_000
  assert '## Information planes' in text
  # Information dropout falls 1.0 ± 0.2 / sqrt(3) (df 2, 3 methods: t quantile 1 − 0.05/6), Gaussian by exactly 0:
  # compression in some setting, none (within ± 0.1 nats) in another. But M-stability was not measured here, so
  # both claims are gated: cannot tell, the test alone agreeing.
  from scipy import stats  # pylint: disable=g-import-not-at-top
  h = stats.t.ppf(1 - 0.05 / 6, 2) * 0.2 / math.sqrt(3)
  assert f'dropout=information: 1 [{1 - h:.4g}, {1 + h:.4g}] (one-sample t, df 2, 3 seeds' in text
  assert 'dropout=gaussian_p0.2: 0 (exact)' in text
  assert text.count('(precondition `stable_in_m` not measured; the test alone: agrees)') == 2
  assert 'cannot tell (0 of 2 checks agree' in _verdict(text)


def test_the_plane_claims_decide_once_m_stability_is_measured(tmp_path):
  config = _plane_sweep(tmp_path)
  for p in sweep.points(config):
    path = tmp_path / p.name / 'analysis' / 'analysis.json'
    analysis = json.loads(path.read_text())
    analysis['information_plane']['m_stability'] = {'hidden3': {
        'ixz': 3.0, 'ixz_stderr': 0.02, 'ixz_2m': 3.01, 'ixz_2m_stderr': 0.02, 'm': 1000}}
    path.write_text(json.dumps(analysis))
  text = open(sweep.write_report(config, str(tmp_path))).read()
  assert 'agree (2 of 2 checks agree' in _verdict(text), _verdict(text)
  # A move of 0.2 nats against errors of 0.02: the estimate is not stable in M, so the claims cannot tell.
  for p in sweep.points(config):
    path = tmp_path / p.name / 'analysis' / 'analysis.json'
    analysis = json.loads(path.read_text())
    analysis['information_plane']['m_stability']['hidden3']['ixz_2m'] = 3.2
    path.write_text(json.dumps(analysis))
  text = open(sweep.write_report(config, str(tmp_path))).read()
  assert 'cannot tell (0 of 2 checks agree' in _verdict(text)
  assert 'precondition `stable_in_m` (the final I(X;Z) estimate moves by less than its noise when M is doubled): ' \
         '**disagrees**' in text


def test_an_unreadable_plane_is_named_not_drawn(tmp_path):
  config = _plane_sweep(tmp_path)
  (tmp_path / 'dropout=gaussian_p0.2,seed=2' / 'information_plane.jsonl').write_text('{"not a record"\n{also not}\n')
  text = open(sweep.write_report(config, str(tmp_path))).read()
  assert 'Not drawn, their information_plane.jsonl could not be read: `dropout=gaussian_p0.2,seed=2`' in text
  summary = json.loads((tmp_path / 'ip_mnist_cpu_information_plane.json').read_text())
  assert summary['methods']['gaussian_p0.2']['hidden3']['seeds'] == 2
  assert summary['methods']['information']['hidden3']['seeds'] == 3


def test_the_anchor_check_reads_numbers_from_the_csv_s_text():
  # results.csv gives text: '9' < '10' is False as text; the checks must read numbers.
  config = train_helpers.load_module('configs/sweeps/vae_mnist.py').get_config('cpu')
  rows = [{'latent': 'gaussian', 'beta': '1', 'seed': str(s), 'point': f'latent=gaussian,beta=1,seed={s}',
           'status': 'done', 'iw_nll': '88.0', 'iw_nll_stderr': '0.3', 'test_neg_elbo': '95'} for s in range(3)]
  verdict, _ = sweep.verdicts(config, rows)
  assert verdict.startswith('agree')
  rows[2]['iw_nll'] = '9'  # below the lower margin: a bug would show here
  assert sweep.verdicts(config, rows)[0].startswith('disagree')
