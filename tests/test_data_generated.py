"""Generated datasets: Cluttered MNIST and Occluded CIFAR-10 (determinism, semantics, metadata, caching)."""
import numpy as np
import pytest

from infodrop_jax import data
from infodrop_jax.data import config as config_lib
from infodrop_jax.data import generated
from infodrop_jax.data.splits import Split
from infodrop_jax.data.splits import split_rng


def _digits(n, seed=0):
  """MNIST-like digits: a random blob of ink inside the central 20x20, zero margins."""
  rng = np.random.default_rng(seed)
  digits = np.zeros((n, 28, 28), np.uint8)
  digits[:, 4:24, 4:24] = rng.integers(0, 256, (n, 20, 20)) * (rng.random((n, 20, 20)) < 0.3)
  return digits


def _mnist_like(n_train, n_test, seed=0):
  make = lambda n, s: Split(_digits(n, s)[..., None], (np.arange(n) % 10).astype(np.int32))
  return {'train': make(n_train, seed), 'test': make(n_test, seed + 1)}


def test_clutter_is_deterministic_and_seeded():
  digits = _digits(64)
  a = generated.clutter(digits, split_rng(0, 'train'))
  b = generated.clutter(digits, split_rng(0, 'train'))
  c = generated.clutter(digits, split_rng(1, 'train'))
  for x, y in zip(a, b):
    assert x.tobytes() == y.tobytes()
  assert a[0].tobytes() != c[0].tobytes()
  assert a[0].shape == (64, 96, 96) and a[0].dtype == np.uint8


def test_clutter_digit_box_inside_canvas_and_holds_the_digit():
  digits = _digits(200)
  canvases, bbox, ink = generated.clutter(digits, split_rng(0, 'test'))
  y0, x0, y1, x1 = bbox.T
  assert (y0 >= 0).all() and (x0 >= 0).all() and (y1 <= 96).all() and (x1 <= 96).all()
  np.testing.assert_array_equal(y1 - y0, 28)
  np.testing.assert_array_equal(x1 - x0, 28)
  assert ((ink[:, :2] >= bbox[:, :2]) & (ink[:, 2:] <= bbox[:, 2:]) & (ink[:, :2] < ink[:, 2:])).all()
  # Composition saturates a sum, so the canvas is at least the digit inside its box.
  for i in range(len(digits)):
    assert (canvases[i, y0[i]:y1[i], x0[i]:x1[i]] >= digits[i]).all()
  # The tight ink box is tight: every side touches a non-zero digit pixel.
  for i in range(10):
    digit = digits[i]
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    np.testing.assert_array_equal(ink[i], [y0[i] + rows[0], x0[i] + cols[0], y0[i] + rows[-1] + 1,
                                           x0[i] + cols[-1] + 1])


def test_clutter_semantics_match_the_deepmind_generator():
  """No distractors: the canvas is the digit pasted at its box; with distractors: 21 8x8 crops of digits are added
  (the ink outside the digit box comes only from them) and the sum saturates at 255."""
  digits = _digits(32)
  canvases, bbox, _ = generated.clutter(digits, split_rng(0, 'train'), num_distractors=0)
  for i in range(len(digits)):
    expected = np.zeros((96, 96), np.uint8)
    expected[bbox[i, 0]:bbox[i, 2], bbox[i, 1]:bbox[i, 3]] = digits[i]
    np.testing.assert_array_equal(canvases[i], expected)
  full = np.full((8, 28, 28), 200, np.uint8)
  canvases, bbox, _ = generated.clutter(full, split_rng(0, 'train'), num_distractors=21)
  assert canvases.max() == 255  # 200 + 200 saturates wherever anything overlaps.
  outside = canvases.astype(bool).sum(axis=(1, 2)) - 28 * 28
  assert ((outside > 0) & (outside <= 21 * 64)).all()


def test_cluttered_mnist_splits_follow_deepmind():
  mnist = _mnist_like(120, 40)
  splits = generated.cluttered_mnist(mnist, seed=0, valid_size=20)
  assert {k: len(v) for k, v in splits.items()} == {'train': 100, 'valid': 20, 'test': 40}
  np.testing.assert_array_equal(splits['valid'].labels, mnist['train'].labels[100:])
  np.testing.assert_array_equal(splits['test'].labels, mnist['test'].labels)
  assert splits['train'].images.shape == (100, 96, 96, 1) and splits['train'].extras['bbox'].shape == (100, 4)
  with pytest.raises(ValueError, match='valid_size'):
    generated.cluttered_mnist(mnist, seed=0, valid_size=120)


def test_resize_matrix_rows_are_normalised_antialiased_weights():
  r = generated.resize_matrix(28, 16)
  assert r.shape == (16, 28)
  np.testing.assert_allclose(r.sum(axis=1), 1)
  assert (r >= 0).all() and ((r > 0).sum(axis=1) >= 2).all()
  np.testing.assert_allclose(generated.resize_matrix(5, 5), np.eye(5))


def test_occlude_paints_only_inside_the_box_and_is_deterministic():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
  digits = _digits(80)
  out, index, bbox = generated.occlude(images, digits, split_rng(0, 'train'), digit_fraction=0.5)
  again = generated.occlude(images, digits, split_rng(0, 'train'), digit_fraction=0.5)
  assert out.tobytes() == again[0].tobytes() and (index == again[1]).all()
  assert len(set(index.tolist())) == 50  # Without replacement when there are enough digits.
  np.testing.assert_array_equal(bbox[:, 2:] - bbox[:, :2], 16)
  assert (bbox >= 0).all() and (bbox <= 32).all()
  inside = np.zeros(out.shape[:3], bool)
  for i, (y0, x0, y1, x1) in enumerate(bbox):
    inside[i, y0:y1, x0:x1] = True
  np.testing.assert_array_equal(out[~inside], images[~inside])
  assert (out >= images).all()  # White ink only brightens.
  assert (out[inside] != images[inside]).any()


def _write_npz(path, images_train, labels_train, images_test, labels_test):
  np.savez(path, x_train=images_train, y_train=labels_train, x_test=images_test, y_test=labels_test)


def test_occluded_cifar10_end_to_end(tmp_path):
  rng = np.random.default_rng(0)
  _write_npz(tmp_path / 'cifar.npz', rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), np.arange(60) % 10,
             rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10)
  mnist = _mnist_like(70, 30)
  _write_npz(tmp_path / 'mnist.npz', mnist['train'].images, mnist['train'].labels, mnist['test'].images,
             mnist['test'].labels)
  cfg = config_lib.get_config('occluded_cifar10', source='npz', path=str(tmp_path / 'cifar.npz'),
                              occluded=dict(occluder=dict(source='npz', path=str(tmp_path / 'mnist.npz'))),
                              verify_counts=False, valid_size=10, cache_dir=str(tmp_path / 'cache'), seed=3,
                              preprocess='gcn')  # 'gcn_zca' means a 3072x3072 eigh: tested on small images.
  splits = data.load(cfg)
  assert len(splits.train) == 50 and len(splits.valid) == 10 and len(splits.test) == 20
  assert splits.train.images.dtype == np.float32  # Normalised after occlusion.
  for split in splits.splits().values():
    nuisance = split.extras['nuisance_label']
    assert nuisance.dtype == np.int32 and 0 <= nuisance.min() and nuisance.max() < 10
  # The digit classes are those of the occluders drawn from MNIST test for the test split.
  occluded, index, _ = generated.occlude(np.load(tmp_path / 'cifar.npz')['x_test'], mnist['test'].images[..., 0],
                                         split_rng(3, 'test'))
  np.testing.assert_array_equal(splits.test.extras['nuisance_label'], mnist['test'].labels[index])
  again = data.load(cfg)
  assert again.train.images.tobytes() == splits.train.images.tobytes()
  assert len(list((tmp_path / 'cache').glob('occluded_cifar10-*.npz'))) == 1


def test_cluttered_mnist_load_is_cached(tmp_path, monkeypatch):
  mnist = _mnist_like(60, 20)
  _write_npz(tmp_path / 'mnist.npz', mnist['train'].images, mnist['train'].labels, mnist['test'].images,
             mnist['test'].labels)
  cfg = config_lib.get_config('cluttered_mnist', source='npz', path=str(tmp_path / 'mnist.npz'), valid_size=10,
                              verify_counts=False, cache_dir=str(tmp_path / 'cache'))
  first = data.load(cfg)
  assert first.train.images.dtype == np.uint8 and first.train.images.shape == (50, 96, 96, 1)
  assert set(first.train.extras) == {'bbox', 'ink_bbox'}
  monkeypatch.setattr(generated, 'cluttered_mnist', lambda *a, **k: pytest.fail('regenerated despite the cache'))
  second = data.load(cfg)
  assert second.valid.images.tobytes() == first.valid.images.tobytes()
  np.testing.assert_array_equal(second.test.extras['bbox'], first.test.extras['bbox'])


def test_real_cluttered_mnist_subset(shared_data, tmp_path):
  cfg = config_lib.get_config('cluttered_mnist', source='idx', path=str(shared_data / 'mnist'), limit=2000,
                              valid_size=500, cache_dir=str(tmp_path), seed=7)
  splits = data.load(cfg)
  assert {k: len(v) for k, v in splits.splits().items()} == {'train': 1500, 'valid': 500, 'test': 2000}
  bbox = splits.test.extras['bbox']
  assert (bbox[:, :2] >= 0).all() and (bbox[:, 2:] <= 96).all()
  # Every test canvas is at least as bright as its MNIST test digit inside the box.
  mnist = data.load(config_lib.get_config('mnist', source='idx', path=str(shared_data / 'mnist'), limit=2000))
  for i in range(0, 2000, 97):
    y0, x0, y1, x1 = bbox[i]
    assert (splits.test.images[i, y0:y1, x0:x1] >= mnist.test.images[i]).all()
  np.testing.assert_array_equal(splits.test.labels, mnist.test.labels)
