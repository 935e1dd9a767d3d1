"""download=True fetches the original files, checked against their published checksums, atomically; offline it fails
fast with the manual steps. Everything here runs against an HTTP server on 127.0.0.1, never the internet."""
import functools
import http.server
import os
import threading

import pytest

from infodrop_jax import data
from infodrop_jax.data import config as config_lib
from infodrop_jax.data import download


@pytest.fixture
def serve():
  """serve(directory) → base URL of an HTTP server on 127.0.0.1 serving `directory`; stopped after the test."""
  servers = []

  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass

  def start(directory):
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return f'http://127.0.0.1:{server.server_address[1]}/'

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
  """No data anywhere by default: an empty data root (where downloads go) and an empty TFDS data_dir."""
  for name in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv(config_lib.DATA_DIR_ENV, str(tmp_path / 'data'))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  monkeypatch.delenv(download.DOWNLOAD_URL_ENV, raising=False)
  return tmp_path / 'data'


def test_download_fetches_verifies_and_is_found_offline_afterwards(shared_data, serve, isolated, monkeypatch, capfd):
  monkeypatch.setenv(download.DOWNLOAD_URL_ENV, serve(shared_data))
  config = config_lib.get_config('mnist', download=True, limit=100)
  splits = data.load(config)
  assert len(splits.train) == 100 and len(splits.test) == 100
  assert sorted(os.listdir(isolated / 'mnist')) == sorted(f.name for f in download.MNIST_FILES)  # No temp files.
  assert '100.0 %' in capfd.readouterr().err  # The progress bar.
  # Offline now: the downloaded files are found without download=True.
  monkeypatch.setenv(download.DOWNLOAD_URL_ENV, 'http://127.0.0.1:9/')
  splits = data.load(config_lib.get_config('mnist', limit=100))
  assert len(splits.train) == 100


def test_corrupt_download_is_refused_and_nothing_kept(shared_data, serve, isolated, tmp_path):
  mirror = tmp_path / 'mirror' / 'fashion_mnist'
  mirror.mkdir(parents=True)
  for f in download.FASHION_MNIST_FILES:
    blob = (shared_data / 'fashion_mnist' / f.name).read_bytes()
    if f.name == 't10k-labels-idx1-ubyte.gz':
      blob = blob[:100] + bytes([blob[100] ^ 1]) + blob[101:]  # One flipped bit: same size, other checksum.
    (mirror / f.name).write_bytes(blob)
  with pytest.raises(download.ChecksumError, match=r't10k-labels-idx1-ubyte.gz: md5 [0-9a-f]+, expected '
                     r'bb300cfdad3c16e7a12a480ee83cd310.*nothing was kept') as error:
    download.fetch('fashion_mnist', base_urls=[serve(tmp_path / 'mirror')], progress=False)
  assert 'put these files in' in str(error.value)
  kept = sorted(os.listdir(isolated / 'fashion_mnist'))
  assert 't10k-labels-idx1-ubyte.gz' not in kept and not any('.part' in name for name in kept)
  assert isinstance(error.value, ValueError)  # launch.py reports it in one line.


def test_a_failing_mirror_falls_back_to_the_next(shared_data, serve, isolated, tmp_path):
  (tmp_path / 'empty').mkdir()
  directory = download.fetch('mnist', base_urls=[serve(tmp_path / 'empty'), serve(shared_data)], progress=False)
  assert directory == isolated / 'mnist' and not download.missing_files('mnist', directory)


def test_offline_download_fails_fast_with_the_manual_steps(isolated, monkeypatch):
  reached = []
  monkeypatch.setattr(download, 'reachable', lambda host, port, timeout: reached.append((host, port)) or False)
  with pytest.raises(ConnectionError) as error:
    data.load(config_lib.get_config('cifar10', download=True))
  message = str(error.value)
  assert reached == [('www.cs.toronto.edu', 443)]
  for expected in ('cannot be reached', 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
                   'c58f30108f718f92721af3b95e74349a', str(isolated / 'cifar10'), 'config.data.download=False'):
    assert expected in message
  assert not (isolated / 'cifar10').exists()


def test_without_download_the_error_names_the_download_option(isolated):
  with pytest.raises(FileNotFoundError, match=r'config.data.download=True to fetch the original files'):
    data.load(config_lib.get_config('fashion_mnist'))
