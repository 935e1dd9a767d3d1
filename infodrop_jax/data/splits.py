"""The in-memory dataset types every loader returns, and the checks that guard them."""
from __future__ import annotations

import dataclasses

import numpy as np

_SPLIT_IDS = {'train': 0, 'valid': 1, 'test': 2, 'holdout': 3}


def split_rng(seed: int, split: str) -> np.random.Generator:
  """The numpy generator of one split's random draws (split='holdout': the train/valid partition)."""
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _SPLIT_IDS[split]])))


@dataclasses.dataclass(frozen=True, eq=False)  # Array fields: identity, not elementwise, equality.
class Split:
  """One split of a dataset, all arrays indexed by example.

  Attributes:
    images: NHWC, uint8 raw pixels (the input pipeline maps them to float32 in [0, 1]) or float32 already
      preprocessed (e.g. GCN + ZCA CIFAR-10).
    labels: int32 (N,) class labels of the main task.
    extras: per-example metadata, e.g. 'bbox' (N, 4) int32 (y0, x0, y1, x1) for Cluttered MNIST,
      'nuisance_label' (N,) int32 for Occluded CIFAR-10.
  """
  images: np.ndarray
  labels: np.ndarray
  extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = len(self.images)
    if self.images.ndim != 4:
      raise ValueError(f'Split.images: expected NHWC (4 dims), got shape {self.images.shape}.')
    if self.images.dtype not in (np.uint8, np.float32):
      raise ValueError(f'Split.images: expected uint8 or float32, got {self.images.dtype}.')
    if self.labels.shape != (n,) or self.labels.dtype != np.int32:
      raise ValueError(f'Split.labels: expected int32 of shape ({n},), got {self.labels.dtype} '
                       f'{self.labels.shape}.')
    for key, value in self.extras.items():
      if len(value) != n:
        raise ValueError(f'Split.extras[{key!r}]: expected {n} rows, got shape {value.shape}.')

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True, eq=False)  # Array fields: identity, not elementwise, equality.
class DatasetSplits:
  """A dataset ready for the input pipeline; `valid` is None when there is no validation split."""
  name: str
  num_classes: int
  train: Split
  test: Split
  valid: Split | None = None
  origin: str = ''  # which copy was read (a directory, a TFDS data_dir, ...), for the run's first line

  def splits(self) -> dict[str, Split]:
    """The present splits by name."""
    out = {'train': self.train, 'test': self.test}
    if self.valid is not None:
      out['valid'] = self.valid
    return out
