"""Preprocessing: GCN + ZCA as in the original (fit on train, identity covariance, cached), binarisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax.data import cache
from infodrop_jax.data import config as config_lib
from infodrop_jax.data import preprocess
from infodrop_jax.data import sources
from infodrop_jax.data.splits import Split


def _images(n, shape=(4, 4, 3), seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def test_gcn_per_image_zero_mean_unit_std():
  images = _images(50)
  images[3] = 7  # Constant image: std 0 -> divided by 1, all zeros.
  x = preprocess.global_contrast_normalize(images)
  assert x.shape == (50, 48) and x.dtype == np.float64
  np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-12)
  np.testing.assert_allclose(np.delete(x, 3, axis=0).std(axis=1, ddof=1), 1, rtol=1e-12)
  np.testing.assert_array_equal(x[3], 0)


def test_zca_covariance_form_equals_the_svd_form():
  """The eigendecomposition of the covariance gives the original's W from the SVD of (D - m) / sqrt(n - 1)."""
  x = np.random.default_rng(1).normal(size=(200, 12)) @ np.random.default_rng(2).normal(size=(12, 12))
  mean, w = preprocess.fit_zca(x, epsilon=1e-5)
  centred = (x - x.mean(axis=0)) / np.sqrt(len(x) - 1)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  w_svd = vt.T @ np.diag(1 / (s + 1e-5)) @ vt
  np.testing.assert_allclose(mean, x.mean(axis=0), atol=1e-12)
  np.testing.assert_allclose(w, w_svd, rtol=1e-8, atol=1e-10)


def test_zca_of_fewer_rows_than_dimensions_is_the_svd_form_on_their_span_and_zero_elsewhere():
  """Issue 25, item 0: with n <= d the original's W multiplied every direction the rows do not span by 1/eps = 1e5.
  Now W is the SVD form restricted to the n - 1 nonzero singular values, and the rest of the space maps to 0."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(10, 30)) @ rng.normal(size=(30, 30))
  with pytest.warns(RuntimeWarning, match='fitted on 10 examples of 30 dimensions: they span 9 directions'):
    mean, w = preprocess.fit_zca(x, epsilon=1e-5)
  centred = (x - x.mean(axis=0)) / np.sqrt(len(x) - 1)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  s, vt = s[:9], vt[:9]  # the 10th singular value is 0 (the rows are centred)
  np.testing.assert_allclose(w, vt.T @ np.diag(1 / (s + 1e-5)) @ vt, rtol=1e-7, atol=1e-9)
  unseen = rng.normal(size=30)
  unseen -= vt.T @ (vt @ unseen)  # orthogonal to every row of the fit
  np.testing.assert_allclose(unseen @ w, 0, atol=1e-8)
  np.testing.assert_allclose(np.cov(preprocess.apply_zca(x, mean, w), rowvar=False), vt.T @ vt, atol=1e-4)


def test_zca_whitens_full_rank_training_data():
  """Whitened covariance is U diag(S^2 / (S + eps)^2) U^T: the identity up to eps / S on full-rank data."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(3000, 20)) @ rng.normal(size=(20, 20)) + 5
  mean, w = preprocess.fit_zca(x, epsilon=1e-5)
  white = preprocess.apply_zca(x, mean, w).astype(np.float64)
  np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(20), atol=1e-4)
  np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-5)
  # ZCA is the symmetric whitening: the closest whitened data to the input.
  np.testing.assert_allclose(w, w.T, atol=1e-10)


def test_gcn_zca_covariance_on_train_is_identity_off_the_constant_direction(tmp_path):
  """GCN removes each image's mean, so the data spans d - 1 dimensions: whitened covariance = I - 11^T / d."""
  images = _images(4000, shape=(3, 3, 2))
  cfg = config_lib.get_config('cifar10', cache_dir=str(tmp_path))
  out = preprocess.apply(cfg, {'train': Split(images, np.zeros(4000, np.int32)),
                               'test': Split(images[:10], np.zeros(10, np.int32))})
  train = out['train'].images
  assert train.dtype == np.float32 and train.shape == images.shape
  d = 18
  flat = train.reshape(len(train), d).astype(np.float64)
  np.testing.assert_allclose(np.cov(flat, rowvar=False), np.eye(d) - np.ones((d, d)) / d, atol=2e-3)
  # The test split goes through the train fit (same transform, so identical images map identically).
  np.testing.assert_allclose(out['test'].images, train[:10], rtol=1e-5, atol=1e-5)


def test_zca_is_cached_and_refits_only_when_parameters_or_data_change(tmp_path, monkeypatch):
  calls = []
  real_fit = preprocess.fit_zca
  monkeypatch.setattr(preprocess, 'fit_zca', lambda *a, **k: calls.append(1) or real_fit(*a, **k))
  train, other = _images(300, seed=4), _images(300, seed=5)

  def fitted(images, epsilon=1e-5):
    return preprocess.fitted_zca(images, 1e-8, epsilon, tmp_path)

  first = fitted(train)
  assert len(calls) == 1
  second = fitted(train)
  assert len(calls) == 1  # Served from the cache.
  np.testing.assert_array_equal(first[1], second[1])
  fitted(train, epsilon=1e-3)
  assert len(calls) == 2  # New parameter: refit.
  fitted(other)
  assert len(calls) == 3  # New training data: refit.
  assert len(list(tmp_path.glob('zca-*.npz'))) == 3 and not list(tmp_path.glob('*.tmp'))


def test_cache_entry_key_depends_on_every_part(tmp_path):
  a = cache.entry_path(tmp_path, 'zca', {'train': 'x', 'zca_epsilon': 1e-5})
  assert a == cache.entry_path(tmp_path, 'zca', {'zca_epsilon': 1e-5, 'train': 'x'})
  assert a != cache.entry_path(tmp_path, 'zca', {'train': 'x', 'zca_epsilon': 1e-4})
  assert a != cache.entry_path(tmp_path, 'zca', {'train': 'y', 'zca_epsilon': 1e-5})


def test_fixed_binarisations():
  images = np.array([[0, 127, 128, 255]], np.uint8)
  np.testing.assert_array_equal(preprocess.binarize_threshold(images), [[0, 0, 255, 255]])
  many = np.full((200, 28, 28), 64, np.uint8)
  sample = preprocess.binarize_sample(many, np.random.default_rng(0))
  assert set(np.unique(sample)) == {0, 255}
  np.testing.assert_array_equal(sample, preprocess.binarize_sample(many, np.random.default_rng(0)))
  assert not np.array_equal(sample, preprocess.binarize_sample(many, np.random.default_rng(1)))
  # Bernoulli(64 / 255) over 156800 pixels: the frequency is within 5 standard errors.
  p = 64 / 255
  assert abs((sample == 255).mean() - p) < 5 * np.sqrt(p * (1 - p) / many.size)
  np.testing.assert_array_equal(preprocess.binarize_threshold(np.array([0, 255], np.uint8)), [0, 255])


def test_binarize_preprocess_per_split_draws(tmp_path):
  cfg = config_lib.get_config('mnist', preprocess='binarize_sample', cache_dir=str(tmp_path))
  images = np.full((50, 28, 28, 1), 128, np.uint8)
  out = preprocess.apply(cfg, {'train': Split(images, np.zeros(50, np.int32)),
                               'test': Split(images, np.zeros(50, np.int32))})
  assert out['train'].images.dtype == np.uint8
  assert not np.array_equal(out['train'].images, out['test'].images)


def test_stochastic_binarisation_is_a_pure_jittable_function():
  x = jnp.full((64, 28, 28, 1), 0.3)
  fn = jax.jit(preprocess.binarize_stochastic)
  a, b = fn(x, jax.random.key(0)), fn(x, jax.random.key(0))
  c = fn(x, jax.random.fold_in(jax.random.key(0), 1))
  assert a.dtype == jnp.float32 and set(np.unique(np.asarray(a))) <= {0.0, 1.0}
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert abs(float(a.mean()) - 0.3) < 5 * np.sqrt(0.3 * 0.7 / a.size)


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_to_unit_interval(dtype):
  images = np.array([0, 51, 255], dtype)
  expected = [0.0, 0.2, 1.0] if dtype == np.uint8 else [0.0, 51.0, 255.0]
  out = preprocess.to_unit_interval(images)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_whitened_splits_are_cached(tmp_path, monkeypatch):
  cfg = config_lib.get_config('cifar10', cache_dir=str(tmp_path))
  splits = {'train': Split(_images(200, seed=6), np.zeros(200, np.int32)),
            'test': Split(_images(20, seed=7), np.zeros(20, np.int32))}
  first = preprocess.apply(cfg, splits)
  monkeypatch.setattr(preprocess, '_gcn_zca', lambda *a: pytest.fail('re-applied despite the cache'))
  second = preprocess.apply(cfg, splits)
  assert second['test'].images.tobytes() == first['test'].images.tobytes()


def _whitened_norm_ratio(fit_images, train_images, test_images):
  """Median norm of whitened test images over that of whitened train images, with the ZCA fitted on `fit_images`."""
  mean, w = preprocess.fit_zca(preprocess.global_contrast_normalize(fit_images))
  norm = lambda images: np.median(np.linalg.norm(
      preprocess.apply_zca(preprocess.global_contrast_normalize(images), mean, w), axis=1))
  return norm(test_images) / norm(train_images)


@pytest.mark.filterwarnings('ignore:ZCA fitted on')
def test_a_limited_cifar_run_is_whitened_as_the_full_split_whitens_it(shared_data, tmp_path):
  """Issue 25, item 0, on the CIFAR-10 JPEG proxy: fitted on the 512 images of a limited run, the original's ZCA
  made whitened test images ~48 000 times the norm of whitened training images (the full split: 1.05). The loader
  now fits on the whole training split whatever data.limit is; and a fit on 512 images alone stays under 2x."""
  from infodrop_jax import data  # pylint: disable=import-outside-toplevel
  tar = shared_data / 'cifar10_jpeg' / 'cifar10_jpeg.tar'
  full = data.load(config_lib.get_config('cifar10', source='image_folder', path=str(tar), verify_counts=False,
                                         preprocess='none'))
  limited = data.load(config_lib.get_config('cifar10', source='image_folder', path=str(tar), verify_counts=False,
                                            limit=512))
  assert len(limited.train) == 512 and 'read from image_folder' in limited.origin
  # The known answer: the ZCA of the whole training split applied to the limited run's raw images.
  picked = sources.evenly_spaced(len(full.train), 512)  # the examples data.limit keeps
  mean, w = preprocess.fitted_zca(full.train.images, 1e-8, 1e-5, cache.cache_dir(config_lib.get_config('cifar10')))
  raw_test = full.test.images[sources.evenly_spaced(len(full.test), 512)]
  expected = preprocess.apply_zca(preprocess.global_contrast_normalize(raw_test), mean, w)
  np.testing.assert_allclose(limited.test.images.reshape(512, -1), expected, rtol=1e-4, atol=1e-4)
  ratio = (np.median(np.linalg.norm(limited.test.images.reshape(512, -1), axis=1))
           / np.median(np.linalg.norm(limited.train.images.reshape(512, -1), axis=1)))
  assert 0.9 < ratio < 1.2, ratio
  # A 512-image fit on its own (what generated data with few images gets) no longer explodes the test images.
  assert _whitened_norm_ratio(full.train.images[picked], full.train.images[picked], raw_test) < 2.0
