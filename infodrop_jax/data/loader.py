"""`load(data_config)`: the one entry point from a data config to DatasetSplits."""
from __future__ import annotations

import ml_collections
import numpy as np

from infodrop_jax.data import cache
from infodrop_jax.data import config as config_lib
from infodrop_jax.data import generated
from infodrop_jax.data import preprocess
from infodrop_jax.data import sources
from infodrop_jax.data.splits import DatasetSplits, Split, split_rng

NUM_CLASSES = 10  # Every supported dataset (main task) has ten classes.


def holdout(splits: dict[str, Split], valid_size: int, seed: int) -> dict[str, Split]:
  """Moves a seeded random `valid_size` examples of train into a 'valid' split (order otherwise kept)."""
  if not valid_size:
    return splits
  n = len(splits['train'])
  if not 0 < valid_size < n:
    raise ValueError(f'config.data.valid_size = {valid_size}: expected in [0, {n}) (the training split size).')
  is_valid = np.zeros(n, bool)
  is_valid[split_rng(seed, 'holdout').permutation(n)[:valid_size]] = True
  return {**splits, 'train': sources.subset(splits['train'], np.flatnonzero(~is_valid)),
          'valid': sources.subset(splits['train'], np.flatnonzero(is_valid))}


def _occluder_config(data_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The MNIST config of Occluded CIFAR-10's occluders: their own source, everything else shared."""
  occluder = data_config.occluded.occluder
  data_dir = occluder.data_dir
  # The top-level data_dir was set for CIFAR-10; the occluders share it only where it holds MNIST too, since a
  # data_dir set explicitly must hold the dataset.
  if not data_dir and data_config.data_dir and sources.tfds_prepared('mnist', data_config.data_dir):
    data_dir = data_config.data_dir
  return config_lib.get_config(
      'mnist', source=occluder.source, path=occluder.path, data_dir=data_dir,
      cache_dir=data_config.cache_dir, download=data_config.download, limit=data_config.limit,
      verify_counts=data_config.verify_counts)


def _read_from(where: str) -> str:
  """`read_base`'s description of the copy it read, as a DatasetSplits.origin."""
  return f'read from {where.removesuffix(" (found)")}'


def _fingerprint_splits(splits: dict[str, Split]) -> str:
  return cache.fingerprint(*(a for s in splits.values() for a in (s.images, s.labels)))


def _cluttered_mnist(data_config: ml_collections.ConfigDict) -> tuple[dict[str, Split], str]:
  mnist, where = sources.read_base(data_config, 'mnist')
  params = dict(data_config.cluttered.to_dict(), valid_size=data_config.valid_size, seed=data_config.seed)
  return cache.cached_splits(
      cache.cache_dir(data_config), 'cluttered_mnist', {'mnist': _fingerprint_splits(mnist), **params},
      lambda: generated.cluttered_mnist(mnist, **params)), f'generated from MNIST {_read_from(where)}'


def _occluded_cifar10(data_config: ml_collections.ConfigDict) -> tuple[dict[str, Split], str]:
  cifar, cifar_where = sources.read_base(data_config, 'cifar10')
  mnist, mnist_where = sources.read_base(_occluder_config(data_config), 'mnist')
  params = dict(seed=data_config.seed, digit_fraction=data_config.occluded.digit_fraction)
  key = {'cifar10': _fingerprint_splits(cifar), 'mnist': _fingerprint_splits(mnist), **params}
  splits = cache.cached_splits(cache.cache_dir(data_config), 'occluded_cifar10', key,
                               lambda: generated.occluded_cifar10(cifar, mnist, **params))
  return (holdout(splits, data_config.valid_size, data_config.seed),
          f'generated from CIFAR-10 {_read_from(cifar_where)} and MNIST {_read_from(mnist_where)}')


def load(data_config: ml_collections.ConfigDict) -> DatasetSplits:
  """Loads the dataset `data_config` (see `config.get_config`) names: read, verify, generate, preprocess.

  Slow steps are cached under `data_config.cache_dir`: TFDS and image-folder decodes, generated datasets and
  the fitted ZCA transform (fitted on the whole training split only, whatever `limit` is).

  Raises:
    ValueError: invalid config, or data that is not what the dataset should be.
    FileNotFoundError: the data cannot be found offline (the message says where it looked and how to provide it).
  """
  config_lib.validate(data_config)
  name = data_config.name
  if name == 'cluttered_mnist':
    splits, origin = _cluttered_mnist(data_config)
  elif name == 'occluded_cifar10':
    splits, origin = _occluded_cifar10(data_config)
  else:
    splits, where = sources.read_base(data_config, name)
    origin = _read_from(where)
    splits = holdout(splits, data_config.valid_size, data_config.seed)
  fit_images = None
  if data_config.preprocess == 'gcn_zca' and data_config.limit:
    # A ZCA fitted on the subset spans only its few hundred or thousand images: fit it on the whole training
    # split (read or generated once, and the fit cached), so a limited run sees inputs of the full run's scale.
    whole = ml_collections.ConfigDict(data_config.to_dict())
    whole.limit, whole.preprocess = 0, 'none'
    fit_images = load(whole).train.images
  splits = preprocess.apply(data_config, splits, fit_images)
  return DatasetSplits(name=name, num_classes=NUM_CLASSES, train=splits['train'], test=splits['test'],
                       valid=splits.get('valid'), origin=origin)
