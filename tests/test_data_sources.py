"""Dataset sources: every reader on small files in the original formats, the real copies in ../shared/data,
source resolution, verification and config errors."""
import gzip
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from infodrop_jax import data
from infodrop_jax.data import config as config_lib
from infodrop_jax.data import sources

MNIST_COUNTS = {'train': [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                'test': [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
FASHION_COUNTS = {'train': [6000] * 10, 'test': [1000] * 10}


@pytest.fixture(autouse=True)
def _no_default_data(monkeypatch, tmp_path_factory):
  """Hermetic resolution: no default data root, no TFDS data_dir from the environment, a private cache."""
  empty = tmp_path_factory.mktemp('empty_root')
  monkeypatch.setenv(config_lib.DATA_DIR_ENV, str(empty))
  monkeypatch.setenv('TFDS_DATA_DIR', str(empty / 'tfds'))
  monkeypatch.setenv(config_lib.CACHE_DIR_ENV, str(tmp_path_factory.mktemp('cache')))


def _rng(seed=0):
  return np.random.default_rng(seed)


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _write_mnist_like(directory, n_train=30, n_test=20, seed=0):
  """IDX .gz files as in the MNIST distribution; returns the arrays written."""
  rng = _rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {}
  for split, n, (images_name, labels_name) in (('train', n_train, sources.IDX_FILES['train']),
                                                ('test', n_test, sources.IDX_FILES['test'])):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    _write_idx(directory / f'{images_name}.gz', images)
    _write_idx(directory / f'{labels_name}.gz', labels)
    arrays[split] = (images, labels)
  return arrays


def _cifar_arrays(n_per_batch, seed=0):
  """Six batches (5 train, 1 test) of (uint8 (n, 3072) channel-major rows, labels)."""
  rng = _rng(seed)
  return [(rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8), rng.integers(0, 10, n_per_batch))
          for _ in range(6)]


def _add_bytes(archive, name, blob):
  info = tarfile.TarInfo(name)
  info.size = len(blob)
  archive.addfile(info, io.BytesIO(blob))


def _write_cifar_python(path, batches):
  """cifar-10-python.tar.gz layout: protocol-2 pickles of dicts with bytes keys, as Python 2 wrote them."""
  names = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
  with tarfile.open(path, 'w:gz') as archive:
    for name, (rows, labels) in zip(names, batches):
      blob = pickle.dumps({b'batch_label': name.encode(), b'labels': [int(l) for l in labels], b'data': rows,
                           b'filenames': [b'x.png'] * len(rows)}, protocol=2)
      _add_bytes(archive, f'cifar-10-batches-py/{name}', blob)
    _add_bytes(archive, 'cifar-10-batches-py/batches.meta', b'unused')


def _write_cifar_binary(path, batches):
  """cifar-10-binary.tar.gz layout: 3073-byte records <label byte><3072 pixel bytes>."""
  names = [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']
  with tarfile.open(path, 'w:gz') as archive:
    for name, (rows, labels) in zip(names, batches):
      _add_bytes(archive, f'cifar-10-batches-bin/{name}',
                 np.concatenate([labels.astype(np.uint8)[:, None], rows], axis=1).tobytes())


def _expected_cifar(batches):
  to_nhwc = lambda rows: rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return {'train': (to_nhwc(np.concatenate([r for r, _ in batches[:5]])),
                    np.concatenate([l for _, l in batches[:5]])),
          'test': (to_nhwc(batches[5][0]), batches[5][1])}


def _assert_splits_equal(splits, expected):
  for split, (images, labels) in expected.items():
    assert splits[split].images.dtype == np.uint8 and splits[split].labels.dtype == np.int32
    np.testing.assert_array_equal(splits[split].images, images.reshape(splits[split].images.shape))
    np.testing.assert_array_equal(splits[split].labels, labels)


# ----------------------------------------------------------------------------------------------------------------
# Readers on synthetic files in the original formats.


def test_idx_reader_synthetic(tmp_path):
  written = _write_mnist_like(tmp_path / 'mnist')
  splits = sources.read_idx(tmp_path / 'mnist')
  assert splits['train'].images.shape == (30, 28, 28, 1)
  _assert_splits_equal(splits, written)


def test_idx_reader_rejects_truncated_file(tmp_path):
  _write_mnist_like(tmp_path)
  path = tmp_path / 'train-images-idx3-ubyte.gz'
  blob = gzip.decompress(path.read_bytes())
  path.write_bytes(gzip.compress(blob[:-5]))
  with pytest.raises(ValueError, match='truncated'):
    sources.read_idx(tmp_path)


@pytest.mark.parametrize('writer', [_write_cifar_python, _write_cifar_binary])
def test_cifar_archive_readers(tmp_path, writer):
  batches = _cifar_arrays(4)
  archive = tmp_path / 'cifar.tar.gz'
  writer(archive, batches)
  splits = sources.read_cifar_archive(archive)
  assert splits['train'].images.shape == (20, 32, 32, 3)
  _assert_splits_equal(splits, _expected_cifar(batches))
  # The extracted directory reads the same.
  with tarfile.open(archive) as t:
    t.extractall(tmp_path / 'extracted', filter='data')
  _assert_splits_equal(sources.read_cifar_archive(tmp_path / 'extracted'), _expected_cifar(batches))


def test_cifar_python_reader_refuses_code_in_pickles(tmp_path):
  batches = _cifar_arrays(2)
  _write_cifar_python(tmp_path / 'ok.tar.gz', batches)
  with tarfile.open(tmp_path / 'evil.tar.gz', 'w:gz') as archive:
    _add_bytes(archive, 'cifar-10-batches-py/data_batch_1', pickle.dumps({b'data': print}, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match='only numpy arrays'):
    sources.read_cifar_archive(tmp_path / 'evil.tar.gz')


def test_cifar10_loads_from_archive(tmp_path):
  """End to end through load(): the archive found in a directory, counts check off for the tiny copy."""
  _write_cifar_python(tmp_path / 'cifar-10-python.tar.gz', _cifar_arrays(40))
  # 'gcn' rather than the default 'gcn_zca': a 3072 x 3072 eigendecomposition is too slow for a unit test
  # (test_data_preprocess covers GCN + ZCA on small images).
  cfg = config_lib.get_config('cifar10', source='auto', path=str(tmp_path), verify_counts=False, preprocess='gcn',
                              cache_dir=str(tmp_path / 'cache'))
  splits = data.load(cfg)
  assert splits.train.images.shape == (200, 32, 32, 3) and splits.train.images.dtype == np.float32
  assert splits.test.images.shape == (40, 32, 32, 3) and splits.valid is None and splits.num_classes == 10
  # Counts are checked by default: the tiny copy is refused.
  with pytest.raises(ValueError, match='label counts'):
    data.load(config_lib.get_config('cifar10', source='cifar_archive', path=str(tmp_path)))


def _write_image_tree(root, classes, per_class, size=(32, 32)):
  rng = _rng(3)
  for split, n in per_class.items():
    for cls in classes:
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(root / split / cls / f'{i:04d}.png')


def test_image_folder_directory_and_tar(tmp_path):
  _write_image_tree(tmp_path / 'tree', ['b', 'a'], {'train': 3, 'test': 2})
  with tarfile.open(tmp_path / 'tree.tar', 'w') as archive:
    archive.add(tmp_path / 'tree', arcname='top')
  from_dir = sources.read_image_folder(tmp_path / 'tree')
  from_tar = sources.read_image_folder(tmp_path / 'tree.tar')
  for split, n in (('train', 6), ('test', 4)):
    assert from_dir[split].images.shape == (n, 32, 32, 3)
    np.testing.assert_array_equal(from_dir[split].images, from_tar[split].images)
    np.testing.assert_array_equal(from_dir[split].labels, [0] * (n // 2) + [1] * (n // 2))  # 'a' < 'b'.
  png = np.asarray(Image.open(tmp_path / 'tree' / 'train' / 'b' / '0001.png'))
  np.testing.assert_array_equal(from_tar['train'].images[4], png)
  with pytest.raises(ValueError, match='classes'):
    sources.read_image_folder(tmp_path / 'tree', class_names=sources.CIFAR10_CLASSES)


def test_npz_source(tmp_path):
  rng = _rng(1)
  arrays = {'x_train': rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), 'y_train': np.arange(20) % 10,
            'x_test': rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), 'y_test': np.arange(10)}
  np.savez(tmp_path / 'mnist.npz', **arrays)
  splits = data.load(config_lib.get_config('fashion_mnist', source='npz', path=str(tmp_path / 'mnist.npz'),
                                           verify_counts=False, valid_size=5))
  assert splits.train.images.shape == (15, 28, 28, 1) and splits.valid.images.shape == (5, 28, 28, 1)
  assert splits.train.images.dtype == np.uint8
  # The holdout is a partition of the training split.
  together = np.concatenate([splits.train.images, splits.valid.images])
  assert sorted(map(bytes, together)) == sorted(map(bytes, arrays['x_train'][..., None]))
  np.savez(tmp_path / 'bad.npz', **{**arrays, 'x_train': arrays['x_train'].astype(np.float32)})
  with pytest.raises(ValueError, match='x_train'):
    sources.read_npz(tmp_path / 'bad.npz')


# ----------------------------------------------------------------------------------------------------------------
# TFDS path (mock data; no TensorFlow).


@pytest.mark.parametrize('name,shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_tfds_source_with_mock_data(tmp_path, name, shape):
  with tfds.testing.mock_data(num_examples=12):
    cfg = config_lib.get_config(name, source='tfds', data_dir=str(tmp_path / 'tfds'), verify_counts=False,
                                preprocess='none')
    splits = data.load(cfg)
  for split in (splits.train, splits.test):
    assert split.images.shape == (12,) + shape and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32 and 0 <= split.labels.min() and split.labels.max() < 10


def test_tfds_source_reports_unprepared_data_dir(tmp_path):
  cfg = config_lib.get_config('mnist', source='tfds', data_dir=str(tmp_path / 'nothing'))
  with pytest.raises(FileNotFoundError, match='prepared'):
    data.load(cfg)


# ----------------------------------------------------------------------------------------------------------------
# Resolution, verification, config errors.


def test_auto_resolution_prefers_explicit_path_and_reports_everything_tried(tmp_path):
  _write_mnist_like(tmp_path / 'mine')
  cfg = config_lib.get_config('mnist', path=str(tmp_path / 'mine'), verify_counts=False,
                              data_dir=str(tmp_path / 'tfds'))
  assert len(data.load(cfg).train) == 30

  # Nothing set explicitly (an explicit data_dir without the data is an error of its own: test_data_errors.py).
  cfg = config_lib.get_config('mnist')
  with pytest.raises(FileNotFoundError) as err:
    data.load(cfg)
  message = str(err.value)
  for expected in (os.environ['TFDS_DATA_DIR'], 'original files in', 'download of the original files', '(off: config.data.download=False)', 'tfds build mnist',
                   'config.data.path', 'train-images-idx3-ubyte.gz'):
    assert expected in message


def test_default_data_root_holds_original_files(tmp_path, monkeypatch):
  _write_mnist_like(tmp_path / 'root' / 'fashion_mnist')
  monkeypatch.setenv(config_lib.DATA_DIR_ENV, str(tmp_path / 'root'))
  splits, where = sources.read_base(config_lib.get_config('fashion_mnist', verify_counts=False), 'fashion_mnist')
  assert str(tmp_path / 'root' / 'fashion_mnist') in where and len(splits['test']) == 20


def test_verify_rejects_wrong_data(tmp_path):
  _write_mnist_like(tmp_path)
  good = sources.read_idx(tmp_path)
  with pytest.raises(ValueError, match='label counts'):
    sources.verify('mnist', good, 'test', check_counts=True)
  bad_labels = {**good, 'test': data.Split(good['test'].images, good['test'].labels + 5)}
  with pytest.raises(ValueError, match='labels span'):
    sources.verify('mnist', bad_labels, 'test', check_counts=False)
  with pytest.raises(ValueError, match='images are'):
    sources.verify('cifar10', good, 'test', check_counts=False)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match='config.data.name'):
    config_lib.get_config('svhn')
  with pytest.raises(ValueError, match='unknown field'):
    config_lib.get_config('mnist', batch_size=3)
  with pytest.raises(ValueError, match='config.data.preprocess'):
    config_lib.get_config('mnist', preprocess='gcn_zca')
  with pytest.raises(ValueError, match='config.data.source'):
    config_lib.get_config('cifar10', source='idx')
  with pytest.raises(ValueError, match='digit_fraction'):
    config_lib.get_config('occluded_cifar10', occluded=dict(digit_fraction=1.5))
  with pytest.raises(ValueError, match='config.data.path'):
    data.load(config_lib.get_config('cifar10', source='image_folder'))


# ----------------------------------------------------------------------------------------------------------------
# The real copies in ../shared/data.


@pytest.mark.parametrize('name,counts', [('mnist', MNIST_COUNTS), ('fashion_mnist', FASHION_COUNTS)])
def test_real_idx_files(shared_data, name, counts):
  splits = data.load(config_lib.get_config(name, source='idx', path=str(shared_data / name)))
  assert splits.train.images.shape == (60000, 28, 28, 1) and splits.test.images.shape == (10000, 28, 28, 1)
  assert splits.train.images.dtype == np.uint8 and splits.train.images.max() == 255
  for split in ('train', 'test'):
    assert np.bincount(getattr(splits, split).labels).tolist() == counts[split]


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist'])
def test_real_tfds_data_dir_matches_idx(shared_data, name):
  """TFDS reads the prepared data_dir without TensorFlow; a spread subset is found, label and all, in the IDX set
  (TFDS keeps its own example order)."""
  assert 'tensorflow' not in __import__('sys').modules
  tfds_splits = data.load(config_lib.get_config(name, source='tfds', data_dir=str(shared_data / 'tfds'),
                                                limit=300))
  idx_splits = sources.read_idx(shared_data / name)
  for split in ('train', 'test'):
    reference = dict(zip(map(bytes, idx_splits[split].images), idx_splits[split].labels))
    subset = getattr(tfds_splits, split)
    assert subset.images.shape == (300, 28, 28, 1)
    assert [reference.get(bytes(image)) for image in subset.images] == subset.labels.tolist()


def test_real_cifar10_jpeg_proxy_subset(shared_data):
  tar = shared_data / 'cifar10_jpeg' / 'cifar10_jpeg.tar'
  cfg = config_lib.get_config('cifar10', source='image_folder', path=str(tar), limit=50, preprocess='none')
  splits = data.load(cfg)
  assert splits.train.images.shape == (50, 32, 32, 3) and splits.train.images.dtype == np.uint8
  assert np.bincount(splits.train.labels).tolist() == [5] * 10
  assert np.bincount(splits.test.labels).tolist() == [5] * 10
  with tarfile.open(tar) as archive:
    first = np.asarray(Image.open(archive.extractfile('train/airplane/0000.jpg')).convert('RGB'))
  np.testing.assert_array_equal(splits.train.images[0], first)
  # The second load is served from the decode cache.
  digest = hashlib.md5(splits.test.images.tobytes()).hexdigest()
  again = data.load(cfg)
  assert hashlib.md5(again.test.images.tobytes()).hexdigest() == digest
