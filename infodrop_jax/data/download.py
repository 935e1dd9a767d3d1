"""Downloads of the original MNIST, Fashion-MNIST and CIFAR-10 files, checked against their published checksums.

    path = download.fetch('mnist')   # → <download root>/mnist/ holding the four IDX .gz files

`config.data.download=True` with `source='auto'` (and no explicit `data_dir`) calls this when no copy is found
offline: the files go to `download_root()/<dataset>/`, where later runs find them without a download. No TensorFlow
is needed. Each file is streamed to a temporary file beside its destination, its size and checksums are verified,
and only then is it renamed into place, so an interrupted or corrupt download leaves nothing behind.

Where from: every dataset has a list of mirrors, tried in order (MNIST: the PyTorch S3 mirror first, as torchvision
does, then LeCun's page). `$INFODROP_DOWNLOAD_URL` (or `base_urls=`) replaces them with base URLs that hold
`<dataset>/<file>` (a local mirror; the tests serve files from 127.0.0.1).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from infodrop_jax.data import config as config_lib

DOWNLOAD_URL_ENV = 'INFODROP_DOWNLOAD_URL'
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  name: str
  size: int
  md5: str
  sha256: str | None = None


MNIST_FILES = (
    RemoteFile('train-images-idx3-ubyte.gz', 9912422, 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
               '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609'),
    RemoteFile('train-labels-idx1-ubyte.gz', 28881, 'd53e105ee54ea40749a09fcbcd1e9432',
               '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c'),
    RemoteFile('t10k-images-idx3-ubyte.gz', 1648877, '9fb629c4189551a2d022fa330f9573f3',
               '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6'),
    RemoteFile('t10k-labels-idx1-ubyte.gz', 4542, 'ec29112dd5afa0611ce80d1b7f02629c',
               'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'),
)
FASHION_MNIST_FILES = (
    RemoteFile('train-images-idx3-ubyte.gz', 26421880, '8d4fb7e6c68d591d4c3dfef9ec88bf0d',
               '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84'),
    RemoteFile('train-labels-idx1-ubyte.gz', 29515, '25c81989df183df01b3e8a0aad5dffbe',
               'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845'),
    RemoteFile('t10k-images-idx3-ubyte.gz', 4422102, 'bef4ecab320f06d8554ea6380940ec79',
               '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073'),
    RemoteFile('t10k-labels-idx1-ubyte.gz', 5148, 'bb300cfdad3c16e7a12a480ee83cd310',
               '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5'),
)
CIFAR10_FILES = (RemoteFile('cifar-10-python.tar.gz', 170498071, 'c58f30108f718f92721af3b95e74349a'),)

FILES = {'mnist': MNIST_FILES, 'fashion_mnist': FASHION_MNIST_FILES, 'cifar10': CIFAR10_FILES}
MIRRORS = {
    'mnist': ('https://ossci-datasets.s3.amazonaws.com/mnist/', 'http://yann.lecun.com/exdb/mnist/'),
    'fashion_mnist': ('http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',),
    'cifar10': ('https://www.cs.toronto.edu/~kriz/',),
}


class ChecksumError(ValueError):
  """A downloaded file is not the published one (size or checksum differs); nothing was kept."""


def download_root() -> pathlib.Path:
  """Where downloads go: $INFODROP_DATA_DIR if set, else `<cache dir>/data` (default `~/.cache/infodrop_jax/data`)."""
  env = os.environ.get(config_lib.DATA_DIR_ENV, '')
  return pathlib.Path(env).expanduser() if env else config_lib.default_cache_dir() / 'data'


def base_urls_for(name: str, base_urls: tuple[str, ...] | list[str] | None = None) -> list[str]:
  """The base URLs to fetch `name`'s files from: `base_urls` or $INFODROP_DOWNLOAD_URL (+ '<name>/'), else its
  mirrors."""
  if base_urls is None and os.environ.get(DOWNLOAD_URL_ENV):
    base_urls = [u for u in os.environ[DOWNLOAD_URL_ENV].split(',') if u]
  if base_urls is not None:
    return [u.rstrip('/') + f'/{name}/' for u in base_urls]
  return list(MIRRORS[name])


def missing_files(name: str, directory: str | os.PathLike[str]) -> list[RemoteFile]:
  directory = pathlib.Path(directory)
  return [f for f in FILES[name] if not (directory / f.name).is_file()]


def manual_steps(name: str, directory: str | os.PathLike[str], base_urls: list[str] | None = None) -> str:
  """What to fetch by hand and where to put it (for error messages)."""
  base = (base_urls or base_urls_for(name))[0]
  lines = [f'  {base}{f.name}  ({f.size} bytes, md5 {f.md5})' for f in FILES[name]]
  return f'put these files in {directory}/ (or set ${config_lib.DATA_DIR_ENV} to a directory holding ' \
         f'{name}/ with them):\n' + '\n'.join(lines)


def _targets(urls: list[str]) -> list[tuple[str, int]]:
  """The (host, port) a download from `urls` connects to first: the proxy when one is set."""
  targets = []
  for url in urls:
    parsed = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ''):
      proxied = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
      targets.append((proxied.hostname, proxied.port or 80))
    else:
      targets.append((parsed.hostname, parsed.port or (443 if parsed.scheme == 'https' else 80)))
  return list(dict.fromkeys(targets))


class _Progress:
  """Bytes so far of one file: redrawn in place on a terminal, a few plain lines otherwise."""

  def __init__(self, label: str, total: int, stream=None):
    self.label, self.total = label, total
    self.stream = sys.stderr if stream is None else stream
    try:
      self.interactive = bool(self.stream.isatty())
    except (AttributeError, ValueError, OSError):
      self.interactive = False
    self._start = time.perf_counter()
    self._last = -1.0

  def update(self, done: int, final: bool = False) -> None:
    fraction = done / self.total if self.total else 1.0
    now = time.perf_counter()
    if not final and (now - self._last < (0.2 if self.interactive else 10.0)):
      return
    self._last = now
    rate = done / max(now - self._start, 1e-9) / 2**20
    width = 30
    bar = '#' * int(width * min(fraction, 1.0))
    text = f'{self.label}: [{bar:<{width}}] {100 * fraction:5.1f} % of {self.total / 2**20:.1f} MiB, {rate:.1f} MiB/s'
    self.stream.write(('\r' + text + ('\n' if final else '')) if self.interactive else text + '\n')
    self.stream.flush()


def _fetch_file(url: str, remote: RemoteFile, destination: pathlib.Path, progress: bool) -> None:
  """Streams `url` into a temp file beside `destination`, verifies it, renames it into place; raises
  ChecksumError (nothing kept) or OSError (urllib.error.URLError, timeouts) on failure."""
  tmp = destination.with_name(f'.{destination.name}.part-{os.getpid()}')
  md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
  bar = _Progress(f'{destination.parent.name}/{remote.name}', remote.size) if progress else None
  try:
    with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as response, open(tmp, 'wb') as out:
      while True:
        chunk = response.read(_CHUNK)
        if not chunk:
          break
        out.write(chunk)
        md5.update(chunk)
        sha256.update(chunk)
        size += len(chunk)
        if size > remote.size:
          break  # Not the published file; no need to read on.
        if bar:
          bar.update(size)
      out.flush()
      os.fsync(out.fileno())
    if bar:
      bar.update(size, final=True)
    problems = []
    if size != remote.size:
      problems.append(f'{"more than " if size > remote.size else ""}{size} bytes, expected {remote.size}')
    elif md5.hexdigest() != remote.md5:
      problems.append(f'md5 {md5.hexdigest()}, expected {remote.md5}')
    elif remote.sha256 and sha256.hexdigest() != remote.sha256:
      problems.append(f'sha256 {sha256.hexdigest()}, expected {remote.sha256}')
    if problems:
      raise ChecksumError(f'{url}: {"; ".join(problems)} (a corrupt or cut-short download, or another file); '
                          'nothing was kept')
    os.replace(tmp, destination)
  finally:
    if tmp.exists():
      tmp.unlink()


def reachable(host: str, port: int, timeout: float) -> bool:
  """Whether a TCP connection to host:port opens within `timeout` seconds (name lookup included)."""
  result = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      result.append(True)
    except OSError:
      result.append(False)

  # getaddrinfo ignores socket timeouts; a thread bounds the name lookup too.
  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(result and result[0])


def fetch(name: str, directory: str | os.PathLike[str] | None = None, *,
          base_urls: tuple[str, ...] | list[str] | None = None, progress: bool = True) -> pathlib.Path:
  """Downloads the original files of `name` that `directory` (default `download_root()/name`) lacks; returns it.

  Raises:
    ConnectionError: no mirror can be reached (checked within seconds), or every mirror failed to deliver a file.
    ChecksumError (a ValueError): every mirror that answered served a file that is not the published one.
  """
  if name not in FILES:
    raise ValueError(f'no original files to download for {name!r}; downloadable: {tuple(FILES)}.')
  directory = pathlib.Path(directory) if directory is not None else download_root() / name
  urls = base_urls_for(name, base_urls)
  todo = missing_files(name, directory)
  if not todo:
    return directory
  targets = _targets(urls)
  if not any(reachable(host, port, CONNECT_TIMEOUT_S) for host, port in targets):
    where = ', '.join(f'{host}:{port}' for host, port in targets)
    raise ConnectionError(
        f'config.data.download=True, but the download servers of {name!r} cannot be reached ({where}, '
        f'{CONNECT_TIMEOUT_S:g} s timeout): no network access? Run where there is network access, or fetch the '
        f'files elsewhere and set config.data.download=False; {manual_steps(name, directory, urls)}')
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f'cannot create the download directory {directory} ({e}); set ${config_lib.DATA_DIR_ENV} to a '
                     'writable directory.') from e
  for remote in todo:
    errors: list[Exception] = []
    for base in urls:
      try:
        _fetch_file(base + remote.name, remote, directory / remote.name, progress)
        break
      except (ChecksumError, OSError) as e:  # urllib.error.URLError and timeouts are OSErrors.
        errors.append(e if isinstance(e, ChecksumError) else ConnectionError(f'{base + remote.name}: {e}'))
    else:
      detail = '; '.join(str(e) for e in errors)
      cls = ChecksumError if any(isinstance(e, ChecksumError) for e in errors) else ConnectionError
      raise cls(f'could not download {remote.name} of {name!r}: {detail}. Try again later, or fetch it yourself: '
                f'{manual_steps(name, directory, urls)}')
  return directory
