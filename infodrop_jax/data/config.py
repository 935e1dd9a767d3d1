"""Data configuration: `config.data` for every dataset, and where data is looked for by default.

Environment variables:
  INFODROP_DATA_DIR: root holding original files as `<root>/<dataset>/...` (MNIST-like IDX `.gz`,
    CIFAR-10 tarballs) and, optionally, a prepared TFDS data_dir at `<root>/tfds`. Default: `../shared/data`
    beside the repository checkout, when it exists. `download=True` fetches the original files into
    `$INFODROP_DATA_DIR/<dataset>/`, or `<cache dir>/data/<dataset>/` when it is not set (`data.download`).
  INFODROP_CACHE_DIR: where decoded, generated and preprocessed arrays are cached.
    Default: `~/.cache/infodrop_jax`.
  INFODROP_DOWNLOAD_URL: base URL(s), comma-separated, holding `<dataset>/<file>`, used by `download=True` instead
    of the datasets' canonical mirrors.
  TFDS_DATA_DIR: TFDS's own data_dir, used when `config.data_dir` is empty.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

import ml_collections

from infodrop_jax import config_checks

DATASETS = ('mnist', 'fashion_mnist', 'cifar10', 'cluttered_mnist', 'occluded_cifar10')
SOURCES = ('auto', 'tfds', 'idx', 'cifar_archive', 'image_folder', 'npz')
PREPROCESSINGS = (
    'none',  # uint8 raw pixels; the input pipeline scales them to [0, 1].
    'scale',  # float32 in [0, 1] on the host.
    'binarize_threshold',  # uint8 in {0, 255}: pixel/255 > 0.5, fixed once.
    'binarize_sample',  # uint8 in {0, 255}: one seeded Bernoulli(pixel/255) draw, fixed once.
    'binarize_stochastic',  # uint8 raw; the train step draws a fresh binarisation per step.
    'gcn',  # float32, per-image global contrast normalisation.
    'gcn_zca',  # float32, GCN then ZCA whitening fitted on the whole training split (whatever limit is).
)
DATA_DIR_ENV = 'INFODROP_DATA_DIR'
CACHE_DIR_ENV = 'INFODROP_CACHE_DIR'

_DEFAULT_PREPROCESS = {
    'mnist': 'none',
    'fashion_mnist': 'none',
    'cifar10': 'gcn_zca',
    'cluttered_mnist': 'none',
    'occluded_cifar10': 'gcn_zca',
}


# The lossy CIFAR-10 JPEG proxy inside the data root (the CPU variants of the CIFAR configs read it).
CIFAR10_PROXY = 'cifar10_jpeg/cifar10_jpeg.tar'


def shared_data_dir() -> pathlib.Path:
  """`../shared/data` beside the checkout, whether or not it exists."""
  # infodrop_jax/data/config.py -> repository root -> its parent.
  return pathlib.Path(__file__).resolve().parents[3] / 'shared' / 'data'


def default_data_root() -> pathlib.Path | None:
  """Root of offline original files: $INFODROP_DATA_DIR, else `../shared/data` beside the checkout, else None."""
  env = os.environ.get(DATA_DIR_ENV, '')
  if env:
    return pathlib.Path(env).expanduser()
  shared = shared_data_dir()
  return shared if shared.is_dir() else None


def default_cache_dir() -> pathlib.Path:
  """$INFODROP_CACHE_DIR, else `~/.cache/infodrop_jax`."""
  env = os.environ.get(CACHE_DIR_ENV, '')
  return pathlib.Path(env or '~/.cache/infodrop_jax').expanduser()


def _source_config() -> ml_collections.ConfigDict:
  """Where a base dataset comes from (the fields shared by every dataset and by occluders)."""
  return ml_collections.ConfigDict({
      # 'auto' tries, in order: `path` if set, the TFDS data_dir, original files under the default data root,
      # then a TFDS download if `download` is True.
      'source': 'auto',
      # An explicit file or directory: IDX directory, CIFAR-10 tarball or extracted batches directory,
      # image-folder directory or tar, or .npz with x_train/y_train/x_test/y_test. '' = default locations.
      'path': '',
      # TFDS data_dir; '' = $TFDS_DATA_DIR, else TFDS's default (~/tensorflow_datasets).
      'data_dir': '',
  })


def get_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """Returns `config.data` for dataset `name` with `overrides` applied.

  Args:
    name: one of DATASETS.
    **overrides: field values; a dict value updates a sub-config (e.g. `cluttered=dict(num_distractors=4)`).

  Raises:
    ValueError: on an unknown dataset name, an unknown field or a value outside the allowed choices.
  """
  if name not in DATASETS:
    raise ValueError(f'config.data.name: unknown dataset {name!r}; expected one of {DATASETS}.')
  config = _source_config()
  config.name = name
  config.preprocess = _DEFAULT_PREPROCESS[name]
  config.cache_dir = ''  # '' = $INFODROP_CACHE_DIR or ~/.cache/infodrop_jax.
  config.seed = 0  # Generated datasets, holdout split and 'binarize_sample'.
  # When nothing is found offline: True fetches the original files (IDX .gz, cifar-10-python.tar.gz; checksums
  # verified, no TensorFlow) into the data root (`data.download`); with source='tfds' or an explicit data_dir, TFDS
  # downloads and prepares its data_dir instead.
  config.download = False
  # Examples held out of the training split as the valid split (deterministic, seeded); 0 = no valid split.
  # Cluttered MNIST builds its valid split from the last `valid_size` MNIST training digits, as DeepMind's
  # generator does (50k/10k/10k).
  config.valid_size = 10000 if name == 'cluttered_mnist' else 0
  # Keep only this many evenly spaced examples per split (0 = all): fast tests and smoke runs.
  # Known-count checks are skipped when set.
  config.limit = 0
  # Check label counts against the published ones for known datasets (shapes, dtypes and label range are
  # always checked). Turn off only for a deliberately modified copy.
  config.verify_counts = True
  config.gcn_min_std = 1e-8  # GCN: per-image std below this is replaced by 1.
  config.zca_epsilon = 1e-5  # ZCA: W = U diag(1 / (S + zca_epsilon)) U^T.
  if name == 'cluttered_mnist':
    config.cluttered = ml_collections.ConfigDict({
        'canvas_size': 96,  # DeepMind `megapatch_w`.
        'num_distractors': 21,  # `num_dist`.
        'distractor_size': 8,  # `dist_w`.
    })
  if name == 'occluded_cifar10':
    config.occluded = ml_collections.ConfigDict({
        # Side of the square occluding digit as a fraction of the 32-pixel image side. 0.5 (16x16) hides about a
        # quarter of the image area, so both the object and the digit stay recognisable.
        'digit_fraction': 0.5,
        # Where the occluding MNIST digits come from ('' data_dir = the top-level data_dir).
        'occluder': _source_config(),
    })
  _apply_overrides(config, overrides, 'config.data')
  validate(config)
  return config


def _apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any], where: str) -> None:
  for key, value in overrides.items():
    if key not in config:
      raise ValueError(f'{where}: unknown field {key!r}; known fields: {sorted(config.keys())}.')
    if isinstance(config[key], ml_collections.ConfigDict):
      if not isinstance(value, (dict, ml_collections.ConfigDict)):
        raise ValueError(f'{where}.{key}: expected a dict of sub-fields, got {value!r}.')
      _apply_overrides(config[key], dict(value), f'{where}.{key}')
    else:
      config[key] = value


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first invalid field of a data config."""
  check = config_checks.checker(config, 'data')

  check(config.name in DATASETS, 'name', f'one of {DATASETS}')
  check(config.source in SOURCES, 'source', f'one of {SOURCES}')
  check(config.preprocess in PREPROCESSINGS, 'preprocess', f'one of {PREPROCESSINGS}')
  check(config_checks.is_int(config.valid_size) and config.valid_size >= 0, 'valid_size', 'a non-negative int')
  check(config_checks.is_int(config.limit) and config.limit >= 0, 'limit', 'a non-negative int (0 = all)')
  check(config_checks.is_finite_real(config.zca_epsilon) and config.zca_epsilon >= 0, 'zca_epsilon', 'a finite float >= 0')
  # Fields a config saved by an older version may lack are checked where present.
  if 'seed' in config:
    check(config_checks.is_int(config.seed) and 0 <= config.seed < 2**32, 'seed', 'an int in [0, 2**32)')
  if 'gcn_min_std' in config:
    check(config_checks.is_finite_real(config.gcn_min_std) and config.gcn_min_std > 0, 'gcn_min_std',
          'a finite float > 0 (a per-image std below it is replaced by 1)')
  for field in ('download', 'verify_counts'):
    if field in config:
      check(isinstance(config[field], bool), field, 'True or False')
  for field in ('path', 'data_dir', 'cache_dir'):
    if field in config:
      check(isinstance(config[field], str), field, "a path, or '' for the default")
  if config.name in ('cifar10', 'occluded_cifar10'):
    check(config.source != 'idx', 'source', f'not "idx" for {config.name}')
  if config.name in ('mnist', 'fashion_mnist', 'cluttered_mnist'):
    check(config.source not in ('cifar_archive',), 'source', f'not "cifar_archive" for {config.name}')
    check(config.preprocess not in ('gcn', 'gcn_zca'), 'preprocess',
          f'an MNIST-like preprocessing for {config.name} (GCN/ZCA are for CIFAR)')
  else:
    check(not config.preprocess.startswith('binarize'), 'preprocess', f'no binarisation for {config.name}')
  if config.name == 'cluttered_mnist':
    c = config.cluttered
    if not 28 <= c.canvas_size:
      raise ValueError(f'config.data.cluttered.canvas_size = {c.canvas_size}: expected >= 28.')
    if not 1 <= c.distractor_size <= 28:
      raise ValueError(f'config.data.cluttered.distractor_size = {c.distractor_size}: expected in [1, 28].')
    if c.num_distractors < 0:
      raise ValueError(f'config.data.cluttered.num_distractors = {c.num_distractors}: expected >= 0.')
  if config.name == 'occluded_cifar10':
    f = config.occluded.digit_fraction
    if not 0 < f <= 1:
      raise ValueError(f'config.data.occluded.digit_fraction = {f}: expected in (0, 1].')
    if config.occluded.occluder.source not in ('auto', 'tfds', 'idx', 'npz'):
      raise ValueError(f'config.data.occluded.occluder.source = {config.occluded.occluder.source!r}: '
                       "expected one of ('auto', 'tfds', 'idx', 'npz').")
