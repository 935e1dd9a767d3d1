"""Binary dropout baseline on CIFAR-10 (All-CNN-32, keep 0.5 after each stride-2 conv), else as cifar_info.

Command: python launch.py --config=configs/cifar_binary.py --workdir=workdirs/cifar_binary
CPU smoke run: --config=configs/cifar_binary.py:smoke
Expected time: as configs/cifar_info.py. Expected result: slightly higher test error than information dropout
(paper, Fig. 3); not yet reproduced here.
"""
from __future__ import annotations

import ml_collections

from configs import cifar_info


def get_config(config_string: str | None = None) -> ml_collections.ConfigDict:
  config = cifar_info.get_config(config_string)
  config.model.dropout = 'binary'
  return config
