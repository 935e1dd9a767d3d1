"""On-disk cache for decoded, generated and preprocessed arrays.

An entry is one uncompressed `.npz` named by a digest of everything its content depends on: what it is, the
identity of its inputs (file path + size + mtime, or a content fingerprint of input arrays), its parameters and
CODE_VERSION. Entries are written to a temporary file and renamed into place, so a crashed or concurrent writer
never leaves a partial entry behind; an entry damaged later (a full disk, a copy cut short) is detected when read and
rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any, Callable, Mapping
import warnings
import zipfile

from absl import logging
import ml_collections
import numpy as np

from infodrop_jax.data import config as config_lib
from infodrop_jax.data.splits import Split

# Bump when a change to the code alters what a cached entry would contain.
CODE_VERSION = 1


def cache_dir(data_config: ml_collections.ConfigDict) -> pathlib.Path:
  """The cache directory of a data config (its `cache_dir`, else the default)."""
  if data_config.cache_dir:
    return pathlib.Path(data_config.cache_dir).expanduser()
  return config_lib.default_cache_dir()


def file_identity(path: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
  """(path, size, mtime_ns) of a file, or of every file under a directory, sorted."""
  path = pathlib.Path(path).resolve()
  files = sorted(p for p in path.rglob('*') if p.is_file()) if path.is_dir() else [path]
  return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def fingerprint(*arrays: np.ndarray) -> str:
  """A content digest of arrays (dtype, shape and bytes)."""
  digest = hashlib.blake2b(digest_size=16)
  for array in arrays:
    array = np.ascontiguousarray(array)
    digest.update(f'{array.dtype.str}{array.shape}'.encode())
    digest.update(memoryview(array).cast('B'))
  return digest.hexdigest()


def entry_path(directory: pathlib.Path, kind: str, parts: Mapping[str, Any]) -> pathlib.Path:
  """Where the entry of `kind` with key `parts` (JSON-serialisable) lives."""
  blob = json.dumps({'kind': kind, 'code_version': CODE_VERSION, **parts}, sort_keys=True, default=str)
  return directory / f'{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.npz'


def cached_arrays(directory: pathlib.Path, kind: str, parts: Mapping[str, Any],
                  build: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Returns the cached arrays for (kind, parts), building and storing them on a miss."""
  path = entry_path(directory, kind, parts)
  if path.exists():
    try:
      with np.load(path, allow_pickle=False) as entry:
        arrays = {name: entry[name] for name in entry.files}
      if not arrays:
        raise ValueError('the entry holds no arrays')
      logging.info('Data cache hit: %s', path)
      return arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
      # Only a damaged file gets here (entries are renamed into place whole): e.g. a disk that filled up, or a copy
      # of the cache cut short. The entry is derived data, so it is rebuilt rather than trusted or reported.
      message = (f'Data cache entry {path} is corrupt ({type(err).__name__}: {err}); deleting and rebuilding it.')
      warnings.warn(message, RuntimeWarning, stacklevel=2)
      logging.warning(message)
      path.unlink(missing_ok=True)
  arrays = dict(build())
  directory.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=directory, prefix=path.stem, suffix='.tmp', delete=False) as f:
    tmp = f.name
    try:
      np.savez(f, **arrays)
    except BaseException:
      os.unlink(tmp)
      raise
  os.chmod(tmp, 0o644)  # NamedTemporaryFile makes it private; a cache may be shared.
  os.replace(tmp, path)
  logging.info('Data cache stored: %s', path)
  return arrays


def splits_to_arrays(splits: Mapping[str, Split]) -> dict[str, np.ndarray]:
  """Flattens named splits into 'split/images', 'split/labels', 'split/extras/<key>' arrays."""
  arrays = {}
  for name, split in splits.items():
    arrays[f'{name}/images'] = split.images
    arrays[f'{name}/labels'] = split.labels
    arrays.update({f'{name}/extras/{key}': value for key, value in split.extras.items()})
  return arrays


def arrays_to_splits(arrays: Mapping[str, np.ndarray]) -> dict[str, Split]:
  """Inverse of splits_to_arrays."""
  names = dict.fromkeys(key.split('/')[0] for key in arrays)
  extras_of = lambda name: {key.split('/', 2)[2]: value for key, value in arrays.items()
                            if key.startswith(f'{name}/extras/')}
  return {name: Split(arrays[f'{name}/images'], arrays[f'{name}/labels'], extras_of(name)) for name in names}


def cached_splits(directory: pathlib.Path, kind: str, parts: Mapping[str, Any],
                  build: Callable[[], Mapping[str, Split]]) -> dict[str, Split]:
  """cached_arrays for a dict of named splits."""
  return arrays_to_splits(cached_arrays(directory, kind, parts, lambda: splits_to_arrays(build())))
