"""Damaged and misplaced data: corrupt files name themselves and the fix, bad cache entries are rebuilt, an explicit
path that does not hold the data is an error, and a download without network fails fast."""
import gzip
import logging
import pathlib
import re
import shutil
import socket
import tempfile
import time

import numpy as np
import pytest

from infodrop_jax import data
from infodrop_jax.data import cache
from infodrop_jax.data import config as config_lib
from infodrop_jax.data import download
from infodrop_jax.data import loader
from infodrop_jax.data import sources


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path_factory):
  empty = tmp_path_factory.mktemp('empty_root')
  monkeypatch.setenv(config_lib.DATA_DIR_ENV, str(empty))
  monkeypatch.setenv('TFDS_DATA_DIR', str(empty / 'tfds'))
  monkeypatch.setenv(config_lib.CACHE_DIR_ENV, str(tmp_path_factory.mktemp('cache')))


def _write_mnist_like(directory, n_train=20, n_test=10):
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for split, n in (('train', n_train), ('test', n_test)):
    images_name, labels_name = sources.IDX_FILES[split]
    for name, array in ((images_name, rng.integers(0, 256, (n, 28, 28))), (labels_name, np.arange(n) % 10)):
      header = bytes([0, 0, 0x08, array.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
      with gzip.open(directory / f'{name}.gz', 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())
  return directory


# --- corrupt files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('damage', [lambda blob: blob[:len(blob) // 2], lambda blob: b'\x1f\x8b' + b'\xff' * 40,
                                    lambda blob: blob[:10] + bytes(b ^ 0xFF for b in blob[10:])],
                         ids=['truncated', 'garbage', 'flipped'])
def test_corrupt_gzip_idx_names_the_file_and_the_fix(tmp_path, damage):
  _write_mnist_like(tmp_path)
  path = tmp_path / 'train-images-idx3-ubyte.gz'
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(ValueError, match='corrupt or truncated gzip') as err:
    sources.read_idx(tmp_path)
  assert str(path) in str(err.value) and 'fresh copy' in str(err.value)


def test_truncated_array_record_shard_names_the_shard(shared_data, tmp_path):
  source = shared_data / 'tfds' / 'mnist'
  (version,) = [p for p in source.iterdir() if p.is_dir()]
  target = tmp_path / 'tfds' / 'mnist' / version.name
  shutil.copytree(version, target)
  shard = next(target.glob('mnist-test.array_record*'))
  shard.write_bytes(shard.read_bytes()[:300_000])
  cfg = config_lib.get_config('mnist', source='tfds', data_dir=str(tmp_path / 'tfds'), limit=20)
  with pytest.raises(ValueError, match=r"split 'test'.*truncated or corrupt") as err:
    data.load(cfg)
  assert str(shard) in str(err.value) and 'tfds build mnist' in str(err.value)


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
  calls = []

  def build():
    calls.append(1)
    return {'x': np.arange(5)}

  key = {'what': 'test'}
  np.testing.assert_array_equal(cache.cached_arrays(tmp_path, 'kind', key, build)['x'], np.arange(5))
  path = cache.entry_path(tmp_path, 'kind', key)
  for damage in (b'', b'PK\x03\x04 not really a zip', path.read_bytes()[:40]):
    path.write_bytes(damage)
    with pytest.warns(RuntimeWarning, match=f'{path.name} is corrupt.*rebuilding'):
      np.testing.assert_array_equal(cache.cached_arrays(tmp_path, 'kind', key, build)['x'], np.arange(5))
  assert len(calls) == 4
  cache.cached_arrays(tmp_path, 'kind', key, build)  # The rebuilt entry is a hit again.
  assert len(calls) == 4 and not list(tmp_path.glob('*.tmp'))


# --- explicit locations that do not hold the data -------------------------------------------------------------


def test_wrong_explicit_path_is_an_error_even_when_other_data_exists(tmp_path, monkeypatch):
  _write_mnist_like(tmp_path / 'root' / 'mnist')  # What 'auto' would otherwise fall back to.
  monkeypatch.setenv(config_lib.DATA_DIR_ENV, str(tmp_path / 'root'))
  (tmp_path / 'wrong').mkdir()
  (tmp_path / 'wrong' / 'notes.txt').write_text('x')
  for path, found in ((tmp_path / 'wrong', r"holds \['notes.txt'\]"), (tmp_path / 'missing', 'does not exist')):
    cfg = config_lib.get_config('mnist', path=str(path), verify_counts=False)
    with pytest.raises(FileNotFoundError, match=f'config.data.path = .*{found}.*train-images-idx3-ubyte.gz'):
      data.load(cfg)
  # Without a path the default location is used, as before.
  assert len(data.load(config_lib.get_config('mnist', verify_counts=False)).train) == 20


def test_wrong_explicit_data_dir_is_an_error_even_when_other_data_exists(tmp_path, monkeypatch):
  _write_mnist_like(tmp_path / 'root' / 'mnist')
  monkeypatch.setenv(config_lib.DATA_DIR_ENV, str(tmp_path / 'root'))
  cfg = config_lib.get_config('mnist', data_dir=str(tmp_path / 'not_tfds'), verify_counts=False)
  with pytest.raises(FileNotFoundError, match=r"config.data.data_dir = .*not_tfds.* holds no prepared TFDS 'mnist'"):
    data.load(cfg)
  # A valid explicit path is read first and never consults the data_dir.
  cfg = config_lib.get_config('mnist', path=str(tmp_path / 'root' / 'mnist'), data_dir=str(tmp_path / 'not_tfds'),
                              verify_counts=False)
  assert len(data.load(cfg).test) == 10


def test_occluders_inherit_the_data_dir_only_where_it_holds_mnist(tmp_path):
  cfg = config_lib.get_config('occluded_cifar10', data_dir=str(tmp_path / 'cifar_only'))
  assert loader._occluder_config(cfg).data_dir == ''  # pylint: disable=protected-access
  cfg = config_lib.get_config('occluded_cifar10', data_dir=str(tmp_path / 'a'), occluded=dict(
      occluder=dict(data_dir=str(tmp_path / 'b'))))
  assert loader._occluder_config(cfg).data_dir == str(tmp_path / 'b')  # pylint: disable=protected-access


# --- downloads without network --------------------------------------------------------------------------------


@pytest.mark.parametrize('source', ['tfds', 'auto'])
def test_download_without_network_fails_fast(tmp_path, monkeypatch, source):
  monkeypatch.setattr(download, 'reachable', lambda host, port, timeout: False)
  monkeypatch.delenv('https_proxy', raising=False)
  monkeypatch.delenv('HTTPS_PROXY', raising=False)
  cfg = config_lib.get_config('mnist', source=source, data_dir=str(tmp_path / 'tfds'), download=True)
  start = time.perf_counter()
  with pytest.raises(ConnectionError, match=r'download=True.*cannot be reached.*config.data.download=False'):
    data.load(cfg)
  assert time.perf_counter() - start < 10


def test_reachability_check_is_bounded_and_local():
  """Against local sockets only: a closed port is refused at once, a listening one accepted."""
  with socket.socket() as closed:
    closed.bind(('127.0.0.1', 0))
    port = closed.getsockname()[1]
    start = time.perf_counter()
    assert not download.reachable('127.0.0.1', port, 1.0)
    assert time.perf_counter() - start < 2
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen()
    assert download.reachable('127.0.0.1', server.getsockname()[1], 1.0)


def test_download_check_goes_through_the_https_proxy(monkeypatch):
  seen = []
  monkeypatch.setattr(download, 'reachable', lambda host, port, timeout: seen.append((host, port)) or True)
  monkeypatch.setenv('https_proxy', 'http://proxy.example:3128')
  sources.check_download_possible('mnist')
  assert seen == [('proxy.example', 3128)]


# --- the test suite's own cache -------------------------------------------------------------------------------


def test_suite_cache_is_private(monkeypatch):
  """conftest points the data cache at a temporary directory, not ~/.cache."""
  monkeypatch.undo()  # This module's fixture sets its own; look at what the session set.
  cache_dir = config_lib.default_cache_dir().resolve()
  assert pathlib.Path(tempfile.gettempdir()).resolve() in cache_dir.parents
  assert pathlib.Path('~/.cache').expanduser().resolve() not in cache_dir.parents


# --- what a missing dataset's message says ----------------------------------------------------------------------

_NUMBER_WORDS = {'two': 2, 'three': 3, 'four': 4, 'five': 5}


def _no_data_root(monkeypatch, tmp_path):
  """No $INFODROP_DATA_DIR and no ../shared/data beside the checkout."""
  monkeypatch.delenv(config_lib.DATA_DIR_ENV)
  monkeypatch.setattr(config_lib, 'shared_data_dir', lambda: tmp_path / 'shared' / 'data')
  return tmp_path / 'shared' / 'data'


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist', 'cifar10'])
def test_not_found_lists_as_many_ways_as_it_says_and_the_offline_folder(tmp_path, monkeypatch, name):
  shared = _no_data_root(monkeypatch, tmp_path)
  with pytest.raises(FileNotFoundError) as err:
    data.load(config_lib.get_config(name))
  message = str(err.value)
  (count,) = re.findall(r'Provide it in one of (\w+) ways:', message)
  ways = re.findall(r'^  (\d+)\. ', message, re.MULTILINE)
  assert ways == [str(i) for i in range(1, _NUMBER_WORDS[count] + 1)], message
  # The offline copy's layout (shared/data/README.md): <root>/<name>/ original files, <root>/tfds/ prepared TFDS.
  for expected in ('../shared/data beside the repository', f'{shared}, absent', f'${config_lib.DATA_DIR_ENV}',
                   f'original files in {name}/', f'tfds/{name}/<version>/', f'tfds build {name}'):
    assert expected in message
  assert ('cifar10_jpeg/cifar10_jpeg.tar' in message) == (name == 'cifar10')


def test_not_found_names_the_data_root_that_is_set():
  with pytest.raises(FileNotFoundError) as err:
    data.load(config_lib.get_config('mnist'))
  root = config_lib.default_data_root()
  assert f'${config_lib.DATA_DIR_ENV} = {root} (set, so ../shared/data beside the repository is not used)' in str(
      err.value)


def test_cifar_proxy_variant_without_data_says_what_is_missing(tmp_path, monkeypatch):
  from configs import cifar_info  # pylint: disable=import-outside-toplevel
  shared = _no_data_root(monkeypatch, tmp_path)
  cfg = cifar_info.get_config('smoke').data  # The lossy JPEG proxy; with no data root the config sets no path.
  with pytest.raises(FileNotFoundError) as err:
    data.load(cfg)
  message = str(err.value)
  assert 'config.data.path' not in message  # The user never set it.
  (count,) = re.findall(r'Provide it in one of (\w+) ways:', message)
  assert re.findall(r'^  (\d+)\. ', message, re.MULTILINE) == ['1', '2'] and count == 'two'
  for expected in ('No CIFAR-10 to read', 'JPEG proxy', 'cifar10_jpeg/cifar10_jpeg.tar', str(shared),
                   f'${config_lib.DATA_DIR_ENV} is unset', 'tfds build cifar10', 'config.data.download=True'):
    assert expected in message


def test_source_tfds_on_an_unprepared_data_dir_is_a_message_not_a_key_error():
  cfg = config_lib.get_config('mnist', source='tfds')  # $TFDS_DATA_DIR: an empty folder.
  with pytest.raises(FileNotFoundError, match=r"(?s)TFDS could not open a prepared 'mnist'.*config.data.download=True"):
    data.load(cfg)


# --- TFDS's warnings ---------------------------------------------------------------------------------------------


def _variant_warnings(caplog):
  return [r.getMessage() for r in caplog.records if 'Variant folder' in r.getMessage()]


def test_reading_the_shared_tfds_data_dir_logs_no_absent_variant_warning(shared_data, tmp_path, monkeypatch, caplog):
  """'auto' first checks TFDS's default data_dir, which lacks MNIST: TFDS warns about the absent folder (noise)."""
  from tensorflow_datasets.core import constants  # pylint: disable=import-outside-toplevel
  root = tmp_path / 'root'
  root.mkdir()
  (root / 'tfds').symlink_to(shared_data / 'tfds')  # The data root's TFDS data_dir, without IDX files beside it.
  monkeypatch.setenv(config_lib.DATA_DIR_ENV, str(root))
  monkeypatch.delenv('TFDS_DATA_DIR')  # Else the data root's tfds/ is not looked at.
  monkeypatch.setattr(constants, 'DATA_DIR', str(tmp_path / 'tensorflow_datasets'))  # TFDS's default; absent.
  with caplog.at_level(logging.WARNING):
    splits, where = sources.read_base(config_lib.get_config('mnist', limit=20), 'mnist')
  assert str(root / 'tfds') in where and len(splits['test']) == 20
  assert 'not prepared' not in where
  assert not _variant_warnings(caplog)


def test_a_version_folder_without_dataset_info_still_warns(tmp_path, caplog):
  (tmp_path / 'tfds' / 'mnist' / '3.0.1').mkdir(parents=True)  # Half-prepared: worth a warning.
  with caplog.at_level(logging.WARNING):
    assert not sources.tfds_prepared('mnist', str(tmp_path / 'tfds'))
  assert any('has no dataset_info.json' in m for m in _variant_warnings(caplog))
