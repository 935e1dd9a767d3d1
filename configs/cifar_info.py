"""Information dropout on CIFAR-10, All-CNN-32, ReLU / log-uniform prior: the original's defaults.

Command (data-parallel over all visible devices; batch 100 divides over 1, 2 or 4, for 8 use batch_size=96):
  python launch.py --config=configs/cifar_info.py --workdir=workdirs/cifar_info
Without canonical CIFAR-10 on disk, the offline JPEG proxy (lossy, not canonical):
  python launch.py --config=configs/cifar_info.py --workdir=W \
    --config.data.source=image_folder --config.data.path=../shared/data/cifar10_jpeg/cifar10_jpeg.tar
CPU smoke run (a minute): python launch.py --config=configs/cifar_info.py:smoke --workdir=/tmp/smoke

Expected time: 200 epochs × 500 steps of batch 100 took 309 s on one H100 (39k images/s, data loading, GCN+ZCA
and five evaluations included; benchmarks/RESULTS.md). Expected result: measured on the lossy JPEG proxy, 13.5 %
test error with the noise off (D) and 20.1 % with it on (N). The paper reports about 10 % for All-CNN-32 on
canonical CIFAR-10 without augmentation (All-CNN-C: 9.08 %, Springenberg et al. 2014); canonical CIFAR-10 has not
been run here (it needs a networked machine for TFDS).
"""
from __future__ import annotations

import ml_collections

from configs import base
from infodrop_jax.data import config as data_config


def proxy_data(config: ml_collections.ConfigDict) -> None:
  """Points `config.data` at the offline CIFAR-10 JPEG proxy (lossy; for CPU variants without canonical CIFAR-10)."""
  root = data_config.default_data_root()
  config.data.source = 'image_folder'
  config.data.path = str(root / 'cifar10_jpeg' / 'cifar10_jpeg.tar') if root else ''


def recipe(dataset: str = 'cifar10', variant: str = '') -> ml_collections.ConfigDict:
  """All-CNN-32 with the original `cifar.py` defaults on a CIFAR-10-based `dataset`; `variant` '' or 'smoke'."""
  config = base.get_base_config(dataset)
  if variant == 'smoke':
    proxy_data(config)
    base.smoke(config)
  return config


def get_config(config_string: str | None = None) -> ml_collections.ConfigDict:
  """The original `cifar.py` defaults; `:smoke` for a tiny CPU run on 512 proxy images."""
  return recipe('cifar10', base.parse_variant(config_string))
