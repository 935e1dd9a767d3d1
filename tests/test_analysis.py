"""`--mode=analyze`: every analysis on tiny trained workdirs, exact array identities, statistics and bad input."""
import math
import json
import os
import shutil

import jax
import numpy as np
import pytest

import train_helpers
from configs import cluttered_info
from infodrop_jax import analysis
from infodrop_jax import kl as kl_lib
from infodrop_jax import models
from infodrop_jax import train
from infodrop_jax.analysis import figures
from infodrop_jax.analysis import stats
from infodrop_jax.data import preprocess
from infodrop_jax.data.splits import DatasetSplits, Split


def _boxed_split(n, rng, size=16, box=6):
  """Noise images with one bright square whose brightness is the class; the square's side picks the nuisance."""
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.integers(0, 40, (n, size, size, 1)).astype(np.uint8)
  y0, x0 = rng.integers(0, size - box, n), rng.integers(0, size - box, n)
  for i in range(n):
    images[i, y0[i]:y0[i] + box, x0[i]:x0[i] + box, 0] = 80 + 80 * labels[i]
  bbox = np.stack([y0, x0, y0 + box, x0 + box], 1).astype(np.int32)
  return Split(images, labels, {'bbox': bbox, 'nuisance_label': (x0 >= (size - box) // 2).astype(np.int32)})


def _boxed_splits():
  rng = np.random.default_rng(0)
  return DatasetSplits('generated', 3, _boxed_split(256, rng), _boxed_split(96, rng))


def _small_all_cnn():
  return models.AllCNN(num_classes=3, block_features=(4, 8), top_features=8, convs_per_block=1, max_alpha=1.0,
                       bn_momentum=0.9)


def _boxed_config():
  config = cluttered_info.get_config('smoke')
  config.train.num_epochs = 2
  config.eval.batch_size = 32
  return config


def _options(**overrides):
  options = analysis.get_config()
  options.probe_epochs = 3
  options.update(overrides)
  return options


@pytest.fixture(scope='module')
def boxed_run(tmp_path_factory):
  """A trained All-CNN with two noisy conv layers on data with boxes and nuisance labels, analysed once."""
  workdir = str(tmp_path_factory.mktemp('boxed'))
  model, splits, config = _small_all_cnn(), _boxed_splits(), _boxed_config()
  train.train_and_evaluate(config, workdir, model=model, splits=splits)
  result = analysis.analyze(workdir, options=_options(), model=model, splits=splits, log=lambda _: None)
  return workdir, model, splits, config, result


@pytest.fixture(scope='module')
def mlp_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('mlp'))
  splits = train_helpers.tiny_splits()
  config = train_helpers.tiny_config()
  config.train.num_epochs = 1
  config.information_plane.enabled = True
  config.information_plane.every_epochs = 1
  config.information_plane.num_examples = 16
  train.train_and_evaluate(config, workdir, splits=splits)
  return workdir, splits


def test_every_analysis_writes_its_files(boxed_run):
  workdir, _, _, _, result = boxed_run
  out = os.path.join(workdir, 'analysis')
  for name in ('analysis.json', 'heatmaps.png', 'heatmaps.npz', 'info_per_layer.png', 'info_per_layer.npz',
               'prior_fit.png', 'prior_fit.npz', 'total_correlation.npz', 'curves.png', 'curves.npz',
               'train_error.npz'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert set(result['files']) <= set(os.listdir(out))
  with open(os.path.join(out, 'analysis.json'), encoding='utf-8') as f:
    saved = json.load(f)
  for key in ('train_error', 'info_per_layer', 'info_per_unit', 'localization', 'total_correlation', 'prior_fit',
              'nuisance'):
    assert key in saved, key
  assert saved['skipped'] == {'information_plane': result['skipped']['information_plane']}
  assert saved['test']['test/error_d'] == pytest.approx(result['test']['test/error_d'])


def test_train_error_is_every_training_image_classified_again_and_the_test_error_is_the_evaluations(boxed_run):
  workdir, model, splits, config, result = boxed_run
  fit = result['train_error']
  # Known answer 1: the evaluation's own test error (D), reached by another code path (the trainer's compiled pass).
  assert fit['test_error_d'] == pytest.approx(result['test']['test/error_d'], abs=1e-12)
  # Known answer 2: the training images through the restored model by hand, noise off.
  with train.restore(workdir, config, model=model, splits=splits) as restored:
    variables = restored.variables()
  logits = model.apply(variables, preprocess.to_unit_interval(splits.train.images), deterministic=True,
                       use_running_average=True)
  expected = float(np.mean(np.asarray(logits).argmax(-1) != splits.train.labels))
  assert fit['train_error_d'] == pytest.approx(expected, abs=1e-12)
  assert fit['train_examples'] == len(splits.train) and fit['test_examples'] == len(splits.test)
  assert fit['generalization_gap_d'] == pytest.approx(fit['test_error_d'] - fit['train_error_d'])
  assert 0 <= fit['train_error_n'] <= 1
  arrays = np.load(os.path.join(workdir, 'analysis', 'train_error.npz'))
  assert arrays['train_wrong_d'].shape == (len(splits.train),)
  assert arrays['train_wrong_d'].mean() == fit['train_error_d']
  assert arrays['test_wrong_d'].mean() == fit['test_error_d']


def test_heatmaps_npz_layout_and_boxes(boxed_run):
  workdir, _, splits, _, result = boxed_run
  arrays = np.load(os.path.join(workdir, 'analysis', 'heatmaps.npz'))
  layers = sorted(result['info_per_layer'])
  assert sorted(arrays.files) == sorted(layers + ['indices', 'bbox'])
  indices = arrays['indices']
  assert indices.shape == (16,) and len(set(indices.tolist())) == 16
  np.testing.assert_array_equal(arrays['bbox'], splits.test.extras['bbox'][indices])
  assert arrays['block1_pool/noise'].shape == (16, 8, 8) and arrays['block2_pool/noise'].shape == (16, 4, 4)


def test_heatmaps_summed_over_locations_equal_the_per_example_kl(boxed_run):
  workdir, model, splits, config, _ = boxed_run
  arrays = np.load(os.path.join(workdir, 'analysis', 'heatmaps.npz'))
  with train.restore(workdir, config, model=model, splits=splits) as restored:
    variables = restored.variables()
  images = preprocess.to_unit_interval(splits.test.images[arrays['indices']])
  _, updates = model.apply(variables, images, deterministic=True, use_running_average=True, mutable=['kl'])
  expected = np.asarray(kl_lib.kl_per_example(updates['kl']))
  from_maps = sum(arrays[name].sum(axis=(1, 2)) for name in ('block1_pool/noise', 'block2_pool/noise'))
  np.testing.assert_allclose(from_maps, expected, rtol=1e-5)


def test_info_per_unit_times_units_is_info_per_layer_and_matches_the_evaluation(boxed_run):
  _, _, _, _, result = boxed_run
  for name, per_layer in result['info_per_layer'].items():
    assert result['info_per_unit'][name] * result['units'][name] == pytest.approx(per_layer, rel=1e-12)
    assert per_layer > 0
  # Same noisy test pass as the evaluation's test/kl, with other noise draws: the KL is a function of the noise
  # parameters only for the first layer, so it matches exactly there.
  assert result['info_per_layer']['block1_pool/noise'] == pytest.approx(result['test']['test/kl/block1_pool/noise'],
                                                                         rel=1e-4)
  # The later layer differs by the noise's Monte Carlo error, which analysis.json states (issue 26, item 14).
  stderr = result['info_per_layer_stderr']['block2_pool/noise']
  assert 0 < stderr < 0.1 * result['info_per_layer']['block2_pool/noise']
  assert abs(result['info_per_layer']['block2_pool/noise'] - result['test']['test/kl/block2_pool/noise']) < 5 * stderr
  assert 'info_per_layer_stderr' in result['info_note'] and 'test/kl' in result['info_note']


def test_localization_numbers_are_fractions(boxed_run):
  _, _, splits, _, result = boxed_run
  loc = result['localization']
  assert loc['num_images'] == len(splits.test)
  assert loc['chance'] == pytest.approx(36 / 256)
  for layer in ('block1_pool/noise', 'block2_pool/noise'):
    assert 0 <= loc['mass_in_box'][layer] <= 1 and 0 <= loc['pointing'][layer] <= 1


def test_total_correlation_falls_back_to_locations_when_samples_do_not_exceed_dims(boxed_run):
  _, _, _, _, result = boxed_run
  tc = result['total_correlation']
  # 96 test images, last noisy layer 4×4×8 = 128 dims: the flattened correlation would be singular.
  assert tc['variant'] == 'per_location' and 'singular' in tc['note']
  assert tc['samples'] == 96 * 16 and tc['dims'] + tc['constant_dims'] == 8
  assert tc['tc_per_dim_nats'] == pytest.approx(tc['tc_nats'] / tc['dims'])


def test_total_correlation_of_the_noise_off_representation_comes_with_its_floor(boxed_run):
  _, _, _, _, result = boxed_run
  clean, noisy = result['total_correlation_clean'], result['total_correlation']
  assert clean['variant'] == noisy['variant'] == 'per_location' and clean['samples'] == noisy['samples']
  assert clean['floor_method'].startswith('shuffled columns')
  assert clean['floor_closed_form_per_dim_nats'] == pytest.approx(stats.independence_floor(clean['dims'],
                                                                                           clean['samples']))
  assert clean['excess_per_dim_nats'] == pytest.approx(clean['tc_per_dim_nats'] - clean['floor_per_dim_nats'])
  assert clean['floor_per_dim_nats'] >= 0


def test_the_final_ixz_is_estimated_on_m_and_on_2m_other_examples(mlp_run):
  workdir, splits = mlp_run
  result = analysis.analyze(workdir, options=_options(only='information_plane', output_subdir='analysis_m'),
                            splits=splits, log=lambda _: None)
  stability = result['information_plane']['m_stability']
  assert sorted(stability) == ['hidden1', 'hidden2', 'hidden3']  # the tiny MLP's noisy layers
  for layer in stability.values():
    assert layer['m'] == 16
    assert 0 <= layer['ixz'] <= math.log(16) + 1e-4 and 0 <= layer['ixz_2m'] <= math.log(32) + 1e-4
    assert layer['ixz_stderr'] > 0 and layer['ixz_2m_stderr'] > 0


def test_nuisance_probe_is_reported_beside_the_main_errors(boxed_run):
  _, _, _, _, result = boxed_run
  nuisance = result['nuisance']
  assert 0 <= nuisance['nuisance_error'] <= 1
  assert nuisance['error_d'] == result['test']['test/error_d']
  assert nuisance['probe']['epochs'] == 3 and nuisance['probe']['seed'] == 0


def test_same_checkpoint_gives_the_same_numbers(boxed_run, tmp_path):
  workdir, model, splits, _, result = boxed_run
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('analysis'))
  again = analysis.analyze(copy, options=_options(), model=model, splits=splits, log=lambda _: None)
  for key in ('info_per_layer', 'localization', 'nuisance', 'prior_fit'):
    assert again[key] == result[key], key
  assert again['total_correlation']['tc_nats'] == result['total_correlation']['tc_nats']
  first = np.load(os.path.join(workdir, 'analysis', 'heatmaps.npz'))
  second = np.load(os.path.join(copy, 'analysis', 'heatmaps.npz'))
  for name in first.files:
    np.testing.assert_array_equal(first[name], second[name])


# --- statistics on known answers ----------------------------------------------------------------------------------


def test_total_correlation_of_gaussian_samples_matches_the_analytic_value():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(4, 4))
  covariance = a @ a.T + 0.5 * np.eye(4)
  std = np.sqrt(np.diag(covariance))
  true_tc = -0.5 * np.linalg.slogdet(covariance / np.outer(std, std))[1]
  estimates = []
  for seed in range(20):
    samples = np.random.default_rng(seed + 1).multivariate_normal(np.zeros(4), covariance, size=20000)
    moments = stats.MomentAccumulator(4)
    for chunk in np.array_split(samples, 7):
      moments.add(chunk)
    estimates.append(stats.gaussian_total_correlation(moments.covariance(), moments.n)['tc_nats'])
  estimates = np.array(estimates)
  spread = estimates.std(ddof=1)
  # MC error of one estimate (about 0.005 nats here) and of the mean of 20; the bias ~D²/N is far below both.
  assert abs(estimates[0] - true_tc) < 4 * spread
  assert abs(estimates.mean() - true_tc) < 4 * spread / np.sqrt(len(estimates)) + 1e-3
  assert stats.gaussian_total_correlation(covariance, 10**9)['tc_nats'] == pytest.approx(true_tc, rel=1e-12)


def test_independent_features_give_the_independence_floor():
  # The closed form is the mean Gaussian TC of independent features at this (d, n); the shuffled-columns floor of
  # strongly correlated data is that floor too (its dependence destroyed, its marginals kept).
  rng = np.random.default_rng(3)
  d, n, sims = 10, 100, 400
  tcs = np.array([stats.gaussian_total_correlation(np.cov(rng.standard_normal((n, d)), rowvar=False), n)
                  ['tc_per_dim_nats'] for _ in range(sims)])
  floor = stats.independence_floor(d, n)
  assert abs(tcs.mean() - floor) < 4 * tcs.std(ddof=1) / math.sqrt(sims)
  assert stats.independence_floor(3072, 10_000) == pytest.approx(0.0861, abs=1e-4)  # fig 5's layer
  assert stats.independence_floor(10, 10) == math.inf
  latent = rng.standard_normal((n, 1))
  correlated = latent + 0.3 * rng.standard_normal((n, d))
  shuffled = [stats.shuffled_total_correlation(correlated, rng)['tc_per_dim_nats'] for _ in range(100)]
  assert abs(np.mean(shuffled) - floor) < 4 * np.std(shuffled, ddof=1) / 10
  assert stats.gaussian_total_correlation(np.cov(correlated, rowvar=False), n)['tc_per_dim_nats'] > 10 * floor
  # One feature (a 1-unit noisy layer): no correlation to have, TC 0.
  one = stats.shuffled_total_correlation(rng.standard_normal((n, 1)), rng)
  assert one['tc_nats'] == pytest.approx(0.0, abs=1e-12) and one['dims'] == 1 and stats.independence_floor(1, n) == 0.0
  # No dimension that varies (a dead unit): TC 0 and no value per dimension, not a division by zero.
  dead = stats.shuffled_total_correlation(np.zeros((n, 1)), rng)
  assert dead['dims'] == 0 and dead['tc_nats'] == 0.0 and dead['tc_per_dim_nats'] is None
  assert stats.independence_floor(0, n) == 0.0


def test_a_known_correlation_gives_its_closed_form_above_the_floor():
  # Equicorrelated Gaussian features, correlation ρ: TC = −½[(d − 1) log(1 − ρ) + log(1 + (d − 1)ρ)].
  rng = np.random.default_rng(4)
  d, n, rho = 5, 50_000, 0.5
  covariance = np.full((d, d), rho) + (1 - rho) * np.eye(d)
  true_tc = -0.5 * ((d - 1) * math.log(1 - rho) + math.log(1 + (d - 1) * rho))
  samples = rng.multivariate_normal(np.zeros(d), covariance, size=n)
  tc = stats.gaussian_total_correlation(np.cov(samples, rowvar=False), n)['tc_nats']
  floor = stats.shuffled_total_correlation(samples, rng)['tc_nats']
  # One estimate's error at n = 50 000 is about sqrt(2·TC'/n)·… ≈ 0.005 nats; the floor is d²/(4n) ≈ 1e-4.
  assert tc == pytest.approx(true_tc, abs=0.02) and 0 <= floor < 1e-3


def test_total_correlation_reports_singular_and_constant_dimensions():
  samples = np.random.default_rng(0).normal(size=(5, 8))
  moments = stats.MomentAccumulator(8)
  moments.add(samples)
  result = stats.gaussian_total_correlation(moments.covariance(), moments.n)
  assert result['singular'] and result['tc_nats'] is None
  samples = np.concatenate([np.random.default_rng(1).normal(size=(500, 3)), np.ones((500, 1))], axis=1)
  moments = stats.MomentAccumulator(4)
  moments.add(samples)
  result = stats.gaussian_total_correlation(moments.covariance(), moments.n)
  assert result['constant_dims'] == 1 and result['dims'] == 3 and not result['singular']


def test_box_localization_on_known_maps():
  loc = stats.BoxLocalization(input_height=8, input_width=8)
  maps = np.zeros((3, 4, 4))
  maps[0, 1, 1] = 5.0  # all mass in the cell covering pixels 2..3, inside the box
  maps[1] += 2.0  # constant map: no information → the box's share of the image
  maps[2, 3, 3] = 1.0  # all mass outside the box
  boxes = np.array([[2, 2, 6, 6]] * 3)
  loc.add(maps, boxes)
  result = loc.result()
  assert result['chance'] == pytest.approx(16 / 64)
  assert result['mass_in_box'] == pytest.approx((1.0 + 16 / 64 + 0.0) / 3)
  assert result['pointing'] == pytest.approx(1 / 3)  # a constant map's argmax is cell (0, 0): outside the box


def test_box_localization_with_sizes_that_do_not_divide():
  # 6 cells over 16 pixels: nearest neighbour shows cell floor(y·6/16) at pixel y (3,3,2,3,3,2 pixels per cell).
  loc = stats.BoxLocalization(input_height=16, input_width=16)
  maps = np.zeros((1, 6, 6))
  maps[0, 2, :] = 1.0  # row of cells 2 covers pixel rows 6..7
  loc.add(maps, np.array([[0, 0, 7, 16]]))  # box rows 0..6: one of the two pixel rows of cell row 2
  assert loc.result()['mass_in_box'] == pytest.approx(0.5)


@pytest.mark.parametrize('informative', [True, False])
def test_probe_finds_a_nuisance_that_is_there_and_not_one_that_is_not(informative):
  rng = np.random.default_rng(0)
  def make(n):
    labels = rng.integers(0, 4, n).astype(np.int32)
    features = rng.normal(size=(n, 16)).astype(np.float32)
    if informative:
      features[np.arange(n), labels] += 4.0
    return features, labels
  (x_train, y_train), (x_test, y_test) = make(2000), make(1000)
  result = stats.train_softmax_probe(lambda x, key: x, x_train, y_train, x_test, y_test, 4, epochs=5,
                                     batch_size=100, learning_rate=0.05, key=jax.random.PRNGKey(0))
  if informative:
    assert result['test_error'] < 0.03
  else:
    assert result['test_error'] > 0.65  # chance is 0.75 for 4 balanced classes


# --- bad input -----------------------------------------------------------------------------------------------------


def test_missing_workdir_config_and_checkpoint_are_clear_errors(tmp_path):
  with pytest.raises(analysis.AnalysisError, match='does not exist'):
    analysis.analyze(str(tmp_path / 'nope'))
  with pytest.raises(analysis.AnalysisError, match='config.json not found'):
    analysis.analyze(str(tmp_path))
  (tmp_path / 'config.json').write_text('{"foo": 1}')
  with pytest.raises(analysis.AnalysisError, match='not an infodrop-jax experiment config'):
    analysis.analyze(str(tmp_path))
  config = train_helpers.tiny_config()
  (tmp_path / 'config.json').write_text(config.to_json_best_effort())
  with pytest.raises(analysis.AnalysisError, match='no checkpoint'):
    analysis.analyze(str(tmp_path), splits=train_helpers.tiny_splits())


def test_a_config_that_disagrees_with_the_run_is_named(mlp_run):
  workdir, splits = mlp_run
  config = train_helpers.tiny_config()
  config.train.num_epochs = 1
  config.information_plane.enabled = True
  config.information_plane.every_epochs = 1
  config.information_plane.num_examples = 16
  config.loss.beta = 7.0
  config.logging.progress_bar = True  # free to differ
  with pytest.raises(analysis.AnalysisError, match=r'loss\.beta: --config 7\.0 vs run 1\.0'):
    analysis.analyze(workdir, config, splits=splits)


def test_an_analysis_that_does_not_apply_is_skipped_or_refused(mlp_run):
  workdir, splits = mlp_run
  result = analysis.analyze(workdir, options=_options(), splits=splits, log=lambda _: None)
  assert 'convolutional' in result['skipped']['heatmaps'] and 'nuisance' in result['skipped']['nuisance_probe']
  assert result['total_correlation']['variant'] == 'flattened'
  assert result['information_plane']['records'] == 2  # step 0 and the end of the only epoch
  assert os.path.isfile(os.path.join(workdir, 'analysis', 'information_plane.png'))
  with pytest.raises(analysis.AnalysisError, match='heatmaps does not apply to this run: no convolutional'):
    analysis.analyze(workdir, options=_options(only='heatmaps'), splits=splits)
  with pytest.raises(analysis.AnalysisError, match='unknown analysis heatmap'):
    analysis.analyze(workdir, options=_options(only='heatmap'), splits=splits)


def test_launch_analyze_reports_errors_without_a_traceback(tmp_path):
  result = train_helpers.launch(f'--workdir={tmp_path}', '--mode=analyze', '--analysis.num_images=4')
  assert result.returncode == 1
  assert 'error: ' in result.stderr and 'config.json not found' in result.stderr
  assert 'Traceback' not in result.stderr


# --- a trained boxed run: analysis.json's localisation recomputed from its own heatmaps --------------------------


@pytest.fixture(scope='module')
def boxed_run_all_maps(boxed_run):
  """The boxed run's heatmaps analysed again with num_images = the whole test split (into analysis_all_maps/), so
  heatmaps.npz holds the maps of exactly the images analysis.json's localisation averages over."""
  workdir, model, splits, _, _ = boxed_run
  options = _options(only='heatmaps', num_images=len(splits.test), output_subdir='analysis_all_maps')
  with pytest.MonkeyPatch.context() as patch:
    # A 96-row figure takes longer than the rest of the analysis; the numbers do not depend on it.
    patch.setattr(figures, 'heatmaps', lambda path, *args, **kwargs: open(path, 'wb').close())
    analysis.analyze(workdir, options=options, model=model, splits=splits, log=lambda _: None)
  with open(os.path.join(workdir, 'analysis_all_maps', 'analysis.json'), encoding='utf-8') as f:
    saved = json.load(f)
  with np.load(os.path.join(workdir, 'analysis_all_maps', 'heatmaps.npz')) as npz:
    arrays = dict(npz)
  return splits, saved, arrays


def _boxes_from_pixels(images):
  """(y0, x0, y1, x1), end exclusive, of each image's bright square (pixels >= 80; the noise is below 40)."""
  bright = images[..., 0] >= 80
  rows, cols = bright.any(axis=2), bright.any(axis=1)
  first = lambda mask: mask.argmax(axis=1)
  end = lambda mask: mask.shape[1] - mask[:, ::-1].argmax(axis=1)
  return np.stack([first(rows), first(cols), end(rows), end(cols)], axis=1)


def _recompute(maps, boxes, height, width, transpose_peak=False):
  """mass in box and pointing, written independently of BoxLocalization (maps whose size divides the input's)."""
  n, h, w = maps.shape
  assert height % h == 0 and width % w == 0
  up = np.repeat(np.repeat(maps.astype(np.float64), height // h, axis=1), width // w, axis=2)
  up -= up.min(axis=(1, 2), keepdims=True)
  mass, hit = [], []
  for m, u, (y0, x0, y1, x1) in zip(maps, up, boxes):
    assert u.sum() > 0
    mass.append(u[y0:y1, x0:x1].sum() / u.sum())
    r, c = np.unravel_index(np.argmax(m), m.shape)
    if transpose_peak:
      r, c = c, r
    cy, cx = (r + 0.5) * height / h, (c + 0.5) * width / w
    hit.append(y0 <= cy < y1 and x0 <= cx < x1)
  return float(np.mean(mass)), float(np.mean(hit))


def test_trained_run_localisation_equals_a_recomputation_from_its_heatmaps(boxed_run_all_maps):
  splits, saved, arrays = boxed_run_all_maps
  test = splits.test
  n, height, width = len(test), test.images.shape[1], test.images.shape[2]
  boxes = _boxes_from_pixels(test.images)  # the squares as drawn, whatever order bbox is stored in
  np.testing.assert_array_equal(test.extras['bbox'], boxes)
  np.testing.assert_array_equal(arrays['indices'], np.arange(n))
  np.testing.assert_array_equal(arrays['bbox'], boxes)
  loc = saved['localization']
  assert loc['num_images'] == n
  assert loc['chance'] == pytest.approx(36 / 256, abs=1e-12)  # every box is 6 × 6 on 16 × 16
  for layer, shape in (('block1_pool/noise', (8, 8)), ('block2_pool/noise', (4, 4))):
    maps = arrays[layer]
    assert maps.shape == (n,) + shape
    mass, pointing = _recompute(maps, boxes, height, width)
    # heatmaps.npz holds the maps as float32, the analysis used them in float64: the mass agrees to rounding.
    assert loc['mass_in_box'][layer] == pytest.approx(mass, abs=1e-6), layer
    # The peak can only move between cells whose values tie in float32.
    flat = np.sort(maps.reshape(n, -1).astype(np.float64), axis=1)
    near_ties = int(np.sum(flat[:, -1] - flat[:, -2] <= 1e-6 * np.abs(flat[:, -1])))
    assert abs(loc['pointing'][layer] - pointing) <= near_ties / n + 1e-12, layer
    # The comparison can tell the bugs it is meant to catch apart on this run: x and y of the boxes swapped, or row
    # and column of the peak, move the numbers by far more than the tolerances above.
    swapped_mass, swapped_pointing = _recompute(maps, boxes[:, [1, 0, 3, 2]], height, width)
    assert abs(swapped_mass - mass) > 1e-3 and swapped_pointing != pointing, layer
    assert _recompute(maps, boxes, height, width, transpose_peak=True)[1] != pointing, layer


def test_a_read_only_workdir_is_one_clear_error_before_anything_loads_and_out_dir_writes_elsewhere(
    mlp_run, tmp_path, monkeypatch):
  # Issue 26, item 11: --mode=analyze on a read-only workdir was a traceback (Read-only file system: …/analysis).
  import errno  # pylint: disable=import-outside-toplevel
  workdir, splits = mlp_run
  real_makedirs = os.makedirs

  def read_only_under_workdir(path, *args, **kwargs):
    if os.path.abspath(path).startswith(os.path.abspath(workdir)):
      raise OSError(errno.EROFS, 'Read-only file system', path)
    return real_makedirs(path, *args, **kwargs)

  monkeypatch.setattr(os, 'makedirs', read_only_under_workdir)
  loaded = []
  monkeypatch.setattr(train, 'restore', lambda *a, **k: loaded.append(1))
  with pytest.raises(analysis.AnalysisError) as err:
    analysis.analyze(workdir, options=_options(only='curves'), splits=splits, log=lambda _: None)
  assert str(err.value) == (f'cannot write the analysis into {os.path.join(workdir, "analysis")}: the file system is '
                            'read-only. Pass --analysis.out_dir=<a writable directory> to write it elsewhere (the '
                            'workdir itself is only read).')
  assert not loaded  # refused before the data or the checkpoint were read
  monkeypatch.undo()
  monkeypatch.setattr(os, 'makedirs', read_only_under_workdir)
  out = tmp_path / 'elsewhere'
  result = analysis.analyze(workdir, options=_options(only='curves', out_dir=str(out)), splits=splits,
                            log=lambda _: None)
  assert (out / 'analysis.json').is_file() and (out / 'curves.png').is_file() and 'curves.png' in result['files']
