"""Base dataset sources: MNIST, Fashion-MNIST and CIFAR-10 as uint8 NHWC images + int32 labels per split.

Every reader returns {'train': Split, 'test': Split}. `read_base` resolves a data config to a reader, caches slow
decodes (TFDS, image folders), and verifies the result against the published shapes and label counts.

Readers:
  read_tfds            a prepared TFDS data_dir through `tfds.data_source` (array_record; no TensorFlow needed).
  read_idx             MNIST-format IDX files (`train-images-idx3-ubyte[.gz]`, ...).
  read_cifar_archive   `cifar-10-python.tar.gz` (pickled batches) or `cifar-10-binary.tar.gz` (3073-byte
                       records), or their extracted directories.
  read_image_folder    `<split>/<class>/<image>` trees, as a directory or a tar (e.g. the CIFAR-10 JPEG proxy).
  read_npz             `.npz` with x_train, y_train, x_test, y_test.
"""
from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gzip
import io
import logging as python_logging
import os
import pathlib
import pickle
import tarfile
from typing import Callable
import urllib.parse
import urllib.request
import zlib

from absl import logging
import ml_collections
import numpy as np

from infodrop_jax.data import cache
from infodrop_jax.data import config as config_lib
from infodrop_jax.data import download
from infodrop_jax.data.splits import Split

SPLITS = ('train', 'test')
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
CIFAR_ARCHIVES = ('cifar-10-python.tar.gz', 'cifar-10-binary.tar.gz', 'cifar-10-batches-py', 'cifar-10-batches-bin')
_CIFAR_PY_FILES = {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']}
_CIFAR_BIN_FILES = {s: [f'{name}.bin' for name in names] for s, names in _CIFAR_PY_FILES.items()}
_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a correct copy of a known dataset looks like."""
  image_shape: tuple[int, int, int]
  label_counts: dict[str, tuple[int, ...]]
  original_files: str  # For error messages: what the original distribution consists of.
  class_names: tuple[str, ...] | None = None  # Folder names of an image-folder copy, in label order.

  @property
  def num_classes(self) -> int:
    return len(self.label_counts['train'])


SPECS = {
    'mnist': DatasetSpec(
        (28, 28, 1),
        {'train': (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
         'test': (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)},
        'IDX files ' + ', '.join(f'{f}.gz' for files in IDX_FILES.values() for f in files)),
    'fashion_mnist': DatasetSpec(
        (28, 28, 1), {'train': (6000,) * 10, 'test': (1000,) * 10},
        'IDX files ' + ', '.join(f'{f}.gz' for files in IDX_FILES.values() for f in files)),
    'cifar10': DatasetSpec(
        (32, 32, 3), {'train': (5000,) * 10, 'test': (1000,) * 10},
        ' or '.join(CIFAR_ARCHIVES[:2]) + ' (or its extracted directory)', CIFAR10_CLASSES),
}


# ----------------------------------------------------------------------------------------------------------------
# Readers.


def read_idx_file(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads one IDX file (gzip-compressed or not) of unsigned bytes."""
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == '.gz' else open
  try:
    with opener(path, 'rb') as f:
      data = f.read()
  except (EOFError, zlib.error, gzip.BadGzipFile) as err:
    raise ValueError(f'{path}: corrupt or truncated gzip file ({type(err).__name__}: {err}). Replace it with a fresh '
                     'copy of the original download (or its uncompressed IDX file, without .gz).') from err
  if len(data) < 4 or data[:2] != b'\0\0' or data[2] != 0x08:
    raise ValueError(f'{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()}, expected 000008nn).')
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  offset = 4 + 4 * ndim
  if len(data) - offset != int(np.prod(dims)):
    raise ValueError(f'{path}: header says shape {dims} ({int(np.prod(dims))} bytes) but the file holds '
                     f'{len(data) - offset} bytes of data (truncated download?).')
  return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _find_idx(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
  for name in (f'{stem}.gz', stem):
    if (directory / name).is_file():
      return directory / name
  return None


def _missing_idx(directory: pathlib.Path) -> list[str]:
  return [f'{stem}[.gz]' for files in IDX_FILES.values() for stem in files if _find_idx(directory, stem) is None]


def read_idx(directory: str | os.PathLike[str]) -> dict[str, Split]:
  """Reads MNIST-format IDX files (train-/t10k-images/labels, `.gz` or not) from a directory."""
  directory = pathlib.Path(directory)
  missing = _missing_idx(directory)
  if missing:
    raise FileNotFoundError(f'{directory}: missing IDX files {missing}.')
  splits = {}
  for split, (images_stem, labels_stem) in IDX_FILES.items():
    images = read_idx_file(_find_idx(directory, images_stem))
    labels = read_idx_file(_find_idx(directory, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise ValueError(f'{directory}: {split} images {images.shape} and labels {labels.shape} do not pair up '
                       '(expected (N, H, W) and (N,)).')
    splits[split] = Split(images[..., None], labels.astype(np.int32))
  return splits


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles only plain containers and numpy arrays: a CIFAR batch cannot run code."""
  _NUMPY = {'_reconstruct': np.empty(0).__reduce__()[0], 'ndarray': np.ndarray, 'dtype': np.dtype}

  def find_class(self, module: str, name: str):
    if module.split('.')[0] == 'numpy' and name in self._NUMPY:
      return self._NUMPY[name]
    if (module, name) == ('_codecs', 'encode'):  # Python 3 writes protocol-2 array bytes through it.
      return codecs.encode
    raise pickle.UnpicklingError(f'CIFAR-10 batch refers to {module}.{name}; only numpy arrays are allowed.')


def _cifar_py_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
  batch = _ArrayUnpickler(io.BytesIO(blob), encoding='bytes').load()
  try:
    data, labels = np.asarray(batch[b'data'], np.uint8), np.asarray(batch[b'labels'])
  except (KeyError, TypeError) as err:
    raise ValueError(f'{where}: not a CIFAR-10 python batch (expected a dict with b"data", b"labels").') from err
  if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
    raise ValueError(f'{where}: CIFAR-10 batch data {data.shape} / labels {labels.shape}, expected (N, 3072) / (N,).')
  return data, labels


def _cifar_bin_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
  if len(blob) % 3073:
    raise ValueError(f'{where}: {len(blob)} bytes is not a whole number of 3073-byte CIFAR-10 records.')
  records = np.frombuffer(blob, np.uint8).reshape(-1, 3073)
  return records[:, 1:], records[:, 0]


def _cifar_files(path: pathlib.Path) -> tuple[Callable[[str], bytes | None], str]:
  """A reader of batch files by base name for a CIFAR-10 tarball or directory, and a description of it."""
  if path.is_file():
    archive = tarfile.open(path, 'r:*')
    members = {pathlib.PurePosixPath(m.name).name: m for m in archive.getmembers() if m.isfile()}
    return lambda name: archive.extractfile(members[name]).read() if name in members else None, f'tarball {path}'
  for directory in (path, path / 'cifar-10-batches-py', path / 'cifar-10-batches-bin'):
    if (directory / 'data_batch_1').is_file() or (directory / 'data_batch_1.bin').is_file():
      return lambda name: (directory / name).read_bytes() if (directory / name).is_file() else None, str(directory)
  for tarball in CIFAR_ARCHIVES[:2]:
    if (path / tarball).is_file():
      return _cifar_files(path / tarball)
  raise FileNotFoundError(f'{path}: no CIFAR-10 batches (data_batch_1[.bin]) or {CIFAR_ARCHIVES[:2]} found.')


def read_cifar_archive(path: str | os.PathLike[str]) -> dict[str, Split]:
  """Reads CIFAR-10 from its python or binary tarball, its extracted directory, or a directory holding either."""
  read, where = _cifar_files(pathlib.Path(path))
  binary = read('data_batch_1') is None
  names, parse = (_CIFAR_BIN_FILES, _cifar_bin_batch) if binary else (_CIFAR_PY_FILES, _cifar_py_batch)
  splits = {}
  for split, files in names.items():
    parts = []
    for name in files:
      blob = read(name)
      if blob is None:
        raise FileNotFoundError(f'{where}: CIFAR-10 batch {name!r} is missing.')
      parts.append(parse(blob, f'{where}:{name}'))
    data = np.concatenate([d for d, _ in parts])
    # Rows are channel-major (1024 R, 1024 G, 1024 B values, each row-major 32x32).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    splits[split] = Split(np.ascontiguousarray(images), np.concatenate([l for _, l in parts]).astype(np.int32))
  return splits


def evenly_spaced(n: int, limit: int) -> np.ndarray:
  """`limit` indices spread evenly over range(n) (all of them when limit is 0 or >= n)."""
  if not limit or limit >= n:
    return np.arange(n)
  return np.arange(limit) * n // limit


def read_image_folder(path: str | os.PathLike[str], channels: int = 3, limit: int = 0,
                      class_names: tuple[str, ...] | None = None) -> dict[str, Split]:
  """Decodes a `<split>/<class>/<image>` tree (directory or tar) for splits train and test.

  Labels index the class folder names in sorted order (or in `class_names` order when given; then the folders
  must be exactly those). Examples are ordered by (label, file path). Only the folder's last three path
  components matter, so a leading top directory is fine.

  Args:
    path: directory or tar file.
    channels: 1 (decode as grayscale) or 3 (RGB).
    limit: decode only this many evenly spaced examples per split (0 = all).
    class_names: expected class folder names in label order.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if path.is_dir():
    entries = [(p.relative_to(path).parts, p) for p in sorted(path.rglob('*')) if p.is_file()]
    open_bytes = lambda p: p.read_bytes()
  elif path.is_file() and tarfile.is_tarfile(path):
    archive = tarfile.open(path, 'r:*')
    entries = [(pathlib.PurePosixPath(m.name).parts, m) for m in archive.getmembers() if m.isfile()]
    open_bytes = lambda m: archive.extractfile(m).read()
  else:
    raise FileNotFoundError(f'{path}: not a directory or tar file of <split>/<class>/<image> files.')
  by_split = {split: [] for split in SPLITS}
  for parts, handle in entries:
    if len(parts) >= 3 and parts[-3] in by_split and parts[-1].lower().endswith(_IMAGE_SUFFIXES):
      by_split[parts[-3]].append((parts[-2], '/'.join(parts), handle))
  found = sorted({cls for items in by_split.values() for cls, _, _ in items})
  names = tuple(class_names) if class_names is not None else tuple(found)
  if not all(by_split.values()) or set(found) != set(names):
    counts = {split: len(items) for split, items in by_split.items()}
    raise ValueError(f'{path}: expected images under train/<class>/ and test/<class>/ with classes {names}; '
                     f'found {counts} images per split, classes {found}.')
  mode = {1: 'L', 3: 'RGB'}[channels]
  splits = {}
  for split, items in by_split.items():
    items.sort(key=lambda item: (names.index(item[0]), item[1]))
    items = [items[i] for i in evenly_spaced(len(items), limit)]
    images = np.stack([np.asarray(Image.open(io.BytesIO(open_bytes(h))).convert(mode)) for _, _, h in items])
    labels = np.array([names.index(cls) for cls, _, _ in items], np.int32)
    splits[split] = Split(images.reshape(images.shape[:3] + (channels,)), labels)
  return splits


def read_npz(path: str | os.PathLike[str]) -> dict[str, Split]:
  """Reads x_train, y_train, x_test, y_test from an .npz (images (N, H, W) or (N, H, W, C), uint8)."""
  with np.load(path, allow_pickle=False) as data:
    missing = [k for s in SPLITS for k in (f'x_{s}', f'y_{s}') if k not in data.files]
    if missing:
      raise ValueError(f'{path}: missing arrays {missing}; found {data.files}.')
    splits = {}
    for split in SPLITS:
      images, labels = data[f'x_{split}'], data[f'y_{split}']
      if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f'{path}: x_{split} is {images.dtype} {images.shape}; expected uint8 (N, H, W[, C]).')
      if not np.issubdtype(labels.dtype, np.integer) or labels.shape != images.shape[:1]:
        raise ValueError(f'{path}: y_{split} is {labels.dtype} {labels.shape}; expected integers '
                         f'{images.shape[:1]}.')
      splits[split] = Split(images if images.ndim == 4 else images[..., None], labels.astype(np.int32))
  return splits


class _AbsentVariantFilter(python_logging.Filter):
  """Drops TFDS's warning "Variant folder X has no dataset_info.json" where X does not exist.

  TFDS logs it whenever it checks a data_dir that lacks the dataset, and every 'auto' load checks TFDS's default
  data_dir (~/tensorflow_datasets) first; the sources report an unprepared data_dir themselves. A version folder
  that exists without the file, and every other warning, still get through.
  """

  def filter(self, record: python_logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else ()
    return not (record.msg == 'Variant folder %s has no %s' and len(args) == 2 and args[1] == 'dataset_info.json'
                and not os.path.isdir(str(args[0])))


@contextlib.contextmanager
def _quiet_absent_variants():
  """_AbsentVariantFilter on the absl logger (the one TFDS logs to), for the duration of a TFDS call."""
  logger, quiet = logging.get_absl_logger(), _AbsentVariantFilter()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def _tfds_builder(name: str, data_dir: str | None):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(name, data_dir=data_dir)


def _is_prepared(builder) -> bool:
  with _quiet_absent_variants():
    return bool(builder.is_prepared())


def tfds_prepared(name: str, data_dir: str | None) -> bool:
  """Whether TFDS `data_dir` holds a prepared copy of `name`."""
  return _is_prepared(_tfds_builder(name, data_dir))


def read_tfds(name: str, data_dir: str | None = None, download: bool = False, limit: int = 0
              ) -> dict[str, Split]:
  """Reads splits train and test with `tfds.data_source` (array_record; works without TensorFlow).

  Args:
    name: TFDS dataset name.
    data_dir: TFDS data_dir; None = $TFDS_DATA_DIR or TFDS's default.
    download: let TFDS download and prepare the dataset when it is not prepared (needs network access and
      whatever the TFDS builder needs to prepare it, normally TensorFlow).
    limit: read only this many evenly spaced examples per split (0 = all).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if download and not tfds_prepared(name, data_dir):
    check_download_possible(name)
  splits = {}
  for split in SPLITS:
    try:
      with _quiet_absent_variants():
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    # KeyError: TFDS 4.9 on a data_dir that lacks the dataset ("`splits` is empty").
    except (NotImplementedError, FileNotFoundError, AssertionError, KeyError) as err:
      hint = '' if download else ' Set config.data.download=True to let TFDS download and prepare it.'
      raise FileNotFoundError(
          f'TFDS could not open a prepared {name!r} (split {split!r}) in data_dir '
          f'{_tfds_builder(name, data_dir).data_path} with download={download}: {err}.{hint}') from err
    try:
      # One example at a time: `__getitems__` is faster but tfds.testing.mock_data does not support it.
      examples = [source[int(i)] for i in evenly_spaced(len(source), limit)]
    except (RuntimeError, ValueError, OSError, EOFError) as err:
      data_path = pathlib.Path(str(_tfds_builder(name, data_dir).data_path))
      shards = sorted(str(p) for p in data_path.glob(f'{name}-{split}.*')) or [str(data_path)]
      raise ValueError(
          f'TFDS {name!r} split {split!r} in {data_path} cannot be read ({type(err).__name__}: {err}); its shard '
          f'files {shards} are truncated or corrupt. Prepare the data_dir again (delete {data_path}, then '
          f'`tfds build {name} --data_dir=DIR` or copy an intact one), or read the original files with '
          'config.data.source/path.') from err
    images = np.stack([np.asarray(e['image'], np.uint8) for e in examples])
    labels = np.array([int(e['label']) for e in examples], np.int32)
    splits[split] = Split(images, labels)
  return splits


# Where a TFDS download goes first: TFDS fetches MNIST, Fashion-MNIST and CIFAR-10 from these hosts.
DOWNLOAD_CHECK_HOSTS = (('storage.googleapis.com', 443),)
DOWNLOAD_CHECK_TIMEOUT_S = 5.0


def check_download_possible(name: str) -> None:
  """Raises ConnectionError quickly when a TFDS download of `name` cannot reach the network.

  Without this TFDS retries for minutes before failing with a traceback. Behind an HTTPS proxy the proxy is checked.
  """
  proxy = urllib.request.getproxies().get('https')
  if proxy:
    parsed = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
    targets = ((parsed.hostname, parsed.port or 80),)
  else:
    targets = DOWNLOAD_CHECK_HOSTS
  if any(download.reachable(host, port, DOWNLOAD_CHECK_TIMEOUT_S) for host, port in targets):
    return
  where = ', '.join(f'{host}:{port}' for host, port in targets)
  raise ConnectionError(
      f'config.data.download=True, but {name!r} is not prepared and the download servers cannot be reached '
      f'({where}, {DOWNLOAD_CHECK_TIMEOUT_S:g} s timeout): no network access? Either run where there is network '
      f'access, or provide the data offline (a prepared TFDS data_dir via config.data.data_dir, or the original files '
      f'via config.data.path) and set config.data.download=False.')


# ----------------------------------------------------------------------------------------------------------------
# Verification.


def verify(name: str, splits: dict[str, Split], where: str, check_counts: bool) -> None:
  """Raises ValueError unless `splits` look like dataset `name` (shapes, dtype, label range, label counts)."""
  spec = SPECS[name]
  for split in SPLITS:
    if split not in splits or not len(splits[split]):
      raise ValueError(f'{name} from {where}: split {split!r} is missing or empty.')
    s = splits[split]
    if s.images.dtype != np.uint8 or s.images.shape[1:] != spec.image_shape:
      raise ValueError(f'{name} from {where}: {split} images are {s.images.dtype} {s.images.shape}; expected uint8 '
                       f'(N, {", ".join(map(str, spec.image_shape))}).')
    if s.labels.min() < 0 or s.labels.max() >= spec.num_classes:
      raise ValueError(f'{name} from {where}: {split} labels span [{s.labels.min()}, {s.labels.max()}]; expected '
                       f'[0, {spec.num_classes - 1}].')
    counts = tuple(np.bincount(s.labels, minlength=spec.num_classes).tolist())
    if check_counts and counts != spec.label_counts[split]:
      raise ValueError(f'{name} from {where}: {split} label counts {counts} differ from the published '
                       f'{spec.label_counts[split]}: incomplete or wrong data. (Set config.data.limit for a '
                       'subset, or config.data.verify_counts=False for a deliberately modified copy.)')


# ----------------------------------------------------------------------------------------------------------------
# Resolution of a data config to a reader.


def _default_original_location(name: str) -> pathlib.Path | None:
  for location in _original_locations(name):
    if location.exists():
      return location
  root = config_lib.default_data_root()
  return root / name if root is not None else None


def _original_locations(name: str) -> list[pathlib.Path]:
  """Where original files are looked for by default: the data root, then where `download` puts them."""
  root = config_lib.default_data_root()
  locations = [root / name] if root is not None else []
  downloaded = download.download_root() / name
  if downloaded not in locations:
    locations.append(downloaded)
  return locations


def _detect_source(name: str, path: pathlib.Path) -> str | None:
  """Which file-based source `path` holds, judged from names only (nothing is decoded)."""
  if path.is_file():
    if path.suffix == '.npz':
      return 'npz'
    if path.name.endswith(('.tar.gz', '.tgz')) and name == 'cifar10':
      return 'cifar_archive'
    return 'image_folder' if tarfile.is_tarfile(path) else None
  if not path.is_dir():
    return None
  if name != 'cifar10' and not _missing_idx(path):
    return 'idx'
  if name == 'cifar10' and any((path / f).exists() for f in CIFAR_ARCHIVES + ('data_batch_1', 'data_batch_1.bin')):
    return 'cifar_archive'
  if all((path / split).is_dir() for split in SPLITS):
    return 'image_folder'
  return None


def _read_file_source(source: str, name: str, path: pathlib.Path, data_config: ml_collections.ConfigDict
                      ) -> dict[str, Split]:
  """Reads a file-based source, caching image-folder decodes (keyed by the files' path, size and mtime)."""
  if source == 'idx':
    return read_idx(path)
  if source == 'cifar_archive':
    return read_cifar_archive(path)
  if source == 'npz':
    return read_npz(path)
  spec = SPECS[name]
  key = {'identity': cache.file_identity(path), 'limit': data_config.limit, 'channels': spec.image_shape[-1],
         'classes': spec.class_names}
  return cache.cached_splits(
      cache.cache_dir(data_config), f'{name}-image_folder', key,
      lambda: read_image_folder(path, spec.image_shape[-1], data_config.limit, spec.class_names))


def _read_tfds_cached(name: str, data_dir: str | None, data_config: ml_collections.ConfigDict) -> dict[str, Split]:
  """read_tfds, cached (keyed by the prepared files) because decoding every PNG takes seconds."""
  data_path = pathlib.Path(str(_tfds_builder(name, data_dir).data_path))
  read = lambda: read_tfds(name, data_dir, data_config.download, data_config.limit)
  if not data_path.is_dir():  # Nothing on disk to key a cache entry on (e.g. TFDS mock data).
    return read()
  return cache.cached_splits(cache.cache_dir(data_config), f'{name}-tfds',
                             {'identity': cache.file_identity(data_path), 'limit': data_config.limit}, read)


def _explicit_path_error(name: str, path: pathlib.Path) -> FileNotFoundError:
  spec = SPECS[name]
  if not path.exists():
    found = 'it does not exist'
  elif path.is_dir():
    entries = sorted(p.name for p in path.iterdir())
    found = f'it holds {entries[:10]}{" ..." if len(entries) > 10 else ""}'
  else:
    found = 'it is a file of no recognised format'
  return FileNotFoundError(
      f'config.data.path = {str(path)!r} does not hold {name!r}: {found}. Expected {spec.original_files}, or a '
      f'.npz with x_train/y_train/x_test/y_test, or an image folder (<split>/<class>/<image>, directory or tar). '
      "Fix the path, or set config.data.path='' to search the default locations.")


def _offline_folder() -> str:
  """The offline data folder (the default data root), as the messages name it."""
  env = os.environ.get(config_lib.DATA_DIR_ENV, '')
  if env:
    return f'${config_lib.DATA_DIR_ENV} = {env} (set, so ../shared/data beside the repository is not used)'
  shared = config_lib.shared_data_dir()
  return (f'../shared/data beside the repository ({shared}{"" if shared.is_dir() else ", absent"}), or the folder '
          f'${config_lib.DATA_DIR_ENV} names')


_NUMBERS = ('no', 'one', 'two', 'three', 'four', 'five')


def _not_found(name: str, tried: list[str], source: str) -> FileNotFoundError:
  lines = [f'No copy of {name!r} could be read offline. Tried:', *(f'  - {t}' for t in tried)]
  if source != 'auto':
    lines.append(f"config.data.source={source!r} reads only there: put the data there, or set "
                 "config.data.source='auto' and config.data.path='' to search the default locations.")
    return FileNotFoundError('\n'.join(lines))
  ways = [
      f'the offline data folder, {_offline_folder()}: the original files in {name}/ ({SPECS[name].original_files}), '
      f'or a prepared TFDS data_dir in tfds/ (tfds/{name}/<version>/; read when config.data.data_dir and '
      '$TFDS_DATA_DIR are unset)',
      'a copy elsewhere: config.data.path = the original files, or config.data.data_dir (or $TFDS_DATA_DIR) = a '
      f'prepared TFDS data_dir, made on a machine with internet access and TensorFlow by `tfds build {name} '
      '--data_dir=DIR`',
      'on a machine with network access, set config.data.download=True to fetch the original files (checked '
      f'against their published checksums, no TensorFlow needed) into {download.download_root() / name}',
  ]
  if name == 'cifar10':
    ways.append("the lossy JPEG proxy, not canonical CIFAR-10: config.data.source='image_folder' and "
                f'config.data.path = {config_lib.CIFAR10_PROXY} in the offline data folder')
  lines.append(f'Provide it in one of {_NUMBERS[len(ways)]} ways:')
  lines += [f'  {i}. {way}{"." if i == len(ways) else ";"}' for i, way in enumerate(ways, 1)]
  return FileNotFoundError('\n'.join(lines))


def _no_path_error(name: str, source: str) -> Exception:
  """source='image_folder' or 'npz' without config.data.path; for CIFAR-10 the JPEG proxy's folder is missing."""
  if name != 'cifar10' or source != 'image_folder' or config_lib.default_data_root() is not None:
    return ValueError(f'config.data.path must name the {source} file or directory for source={source!r}.')
  # The CIFAR configs' CPU variants point source='image_folder' at the proxy in the data root, and leave the path
  # empty when there is no data root: the user set neither field.
  shared = config_lib.shared_data_dir()
  return FileNotFoundError(
      f"No CIFAR-10 to read: config.data.source='image_folder' reads the lossy JPEG proxy, "
      f'{config_lib.CIFAR10_PROXY} in the offline data folder, and there is none: ${config_lib.DATA_DIR_ENV} is '
      f'unset and ../shared/data beside the repository ({shared}) does not exist.\n'
      'Provide it in one of two ways:\n'
      f'  1. the proxy: put the offline data folder at {shared}, or set ${config_lib.DATA_DIR_ENV} to one;\n'
      "  2. canonical CIFAR-10: set config.data.source='auto' and config.data.data_dir to a prepared TFDS data_dir "
      '(`tfds build cifar10 --data_dir=DIR` on a machine with internet access and TensorFlow), or set '
      'config.data.download=True on a machine with network access.')


def _tfds_data_dirs(data_config: ml_collections.ConfigDict) -> list[str | None]:
  """TFDS data_dirs to try: config.data_dir, else $TFDS_DATA_DIR, else TFDS's default (None) and then
  `<data root>/tfds`."""
  configured = data_config.data_dir or os.environ.get('TFDS_DATA_DIR') or None
  dirs = [configured]
  root = config_lib.default_data_root()
  if configured is None and root is not None and (root / 'tfds').is_dir():
    dirs.append(str(root / 'tfds'))
  return dirs


def _file_reader(source: str | None, name: str, path: pathlib.Path, data_config: ml_collections.ConfigDict
                 ) -> Callable[[], dict[str, Split]] | None:
  if source is None:
    return None
  return lambda: _read_file_source(source, name, path, data_config)


def _tfds_candidate(name: str, data_dir: str | None, data_config: ml_collections.ConfigDict
                    ) -> tuple[str, Callable[[], dict[str, Split]] | None]:
  builder = _tfds_builder(name, data_dir)
  prepared = _is_prepared(builder)
  read = (lambda: _read_tfds_cached(name, data_dir, data_config)) if prepared else None
  return f'TFDS data_dir {builder.data_path} ({"prepared" if prepared else "not prepared"})', read


def _candidates(data_config: ml_collections.ConfigDict, name: str
                ) -> list[tuple[str, Callable[[], dict[str, Split]] | None]]:
  """(description, reader or None when absent) of every place `data_config` lets us read `name` from, in order."""
  source, path = data_config.source, pathlib.Path(data_config.path).expanduser() if data_config.path else None
  tfds_dirs = _tfds_data_dirs(data_config)
  if source == 'tfds':  # read_tfds itself reports an unprepared data_dir, or downloads when allowed.
    return [(f'TFDS data_dir {tfds_dirs[0] or "(default)"}', lambda: _read_tfds_cached(name, tfds_dirs[0],
                                                                                       data_config))]
  if source in ('image_folder', 'npz') and path is None:
    raise _no_path_error(name, source)
  if source != 'auto':
    path = path or _default_original_location(name)
    exists = path is not None and path.exists()
    return [(f'{source} at {path or "(no path: set config.data.path)"}{"" if exists else " (does not exist)"}',
             _file_reader(source if exists else None, name, path, data_config))]

  # What the user set explicitly must hold the data: silently reading another copy from elsewhere would train on
  # data they did not ask for.
  candidates = []
  if path is not None:
    detected = _detect_source(name, path)
    if detected is None:
      raise _explicit_path_error(name, path)
    candidates.append((f'config.data.path {path} ({detected})', _file_reader(detected, name, path, data_config)))
  where, read = _tfds_candidate(name, tfds_dirs[0], data_config)
  if read is None and data_config.data_dir and not data_config.download:
    def read(data_dir=tfds_dirs[0]):
      raise FileNotFoundError(
          f'config.data.data_dir = {data_dir!r} holds no prepared TFDS {name!r} (looked for '
          f'{_tfds_builder(name, data_dir).data_path}). Point it at the TFDS data_dir that holds {name} (the '
          f'directory above `{name}/<version>/`), set config.data.download=True to prepare it there, or set '
          "config.data.data_dir='' to search the default locations.")
  candidates.append((where, read))
  for location in _original_locations(name):
    detected = _detect_source(name, location)
    detected = detected if detected in ('idx', 'cifar_archive') else None
    candidates.append((f'original files in {location} ({"found" if detected else "not found"})',
                       _file_reader(detected, name, location, data_config)))
  candidates.extend(_tfds_candidate(name, data_dir, data_config) for data_dir in tfds_dirs[1:])
  target = download.download_root() / name
  if data_config.download and data_config.data_dir:  # An explicit data_dir: TFDS downloads and prepares it there.
    candidates.append(('TFDS download', lambda: read_tfds(name, tfds_dirs[0], True, data_config.limit)))
  elif data_config.download:
    def fetch_and_read():
      directory = download.fetch(name, target)
      return _read_file_source(_detect_source(name, directory), name, directory, data_config)
    candidates.append((f'download of the original files into {target}', fetch_and_read))
  else:
    candidates.append((f'download of the original files into {target} (off: config.data.download=False)', None))
  return candidates


def read_base(data_config: ml_collections.ConfigDict, name: str) -> tuple[dict[str, Split], str]:
  """Reads base dataset `name` the way `data_config` says, then subsets (`limit`) and verifies it.

  `source='auto'` tries, in order: `path` (if set), the TFDS data_dir (`data_dir`, else $TFDS_DATA_DIR or TFDS's
  default), the original files under `$INFODROP_DATA_DIR/<name>` (default `../shared/data/<name>`), a TFDS
  data_dir at `$INFODROP_DATA_DIR/tfds`, and finally a TFDS download when `download` is True. A `path` or `data_dir`
  set in the config must hold the dataset (a `data_dir` may instead be prepared by a download): otherwise it is an
  error, not a reason to read another copy. The CIFAR-10 JPEG proxy is lossy and is only read when asked for
  (`source='image_folder'`).

  Returns:
    The splits and a description of where they came from.
  Raises:
    FileNotFoundError: nothing found, or `path`/`data_dir` set but without the data; the message lists where it
      looked and how to provide the data.
    ValueError: the data found is not a correct copy of `name`, or its files are corrupt.
    ConnectionError: `download` is needed but the download servers cannot be reached.
  """
  candidates = _candidates(data_config, name)
  for where, read in candidates:
    if read is not None:
      splits = read()
      break
  else:
    raise _not_found(name, [where for where, _ in candidates], data_config.source)
  logging.info('Read %s from %s.', name, where)
  if data_config.limit:
    splits = {s: subset(split, evenly_spaced(len(split), data_config.limit)) for s, split in splits.items()}
  verify(name, splits, where, check_counts=data_config.verify_counts and not data_config.limit)
  return splits, where


def subset(split: Split, indices: np.ndarray) -> Split:
  """The examples of `split` at `indices`, extras included."""
  return Split(split.images[indices], split.labels[indices], {k: v[indices] for k, v in split.extras.items()})
