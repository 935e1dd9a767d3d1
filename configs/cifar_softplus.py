"""Information dropout with softplus units and the trainable log-normal prior (the original's `softplus` config).

Command: python launch.py --config=configs/cifar_softplus.py --workdir=workdirs/cifar_softplus
CPU smoke run: --config=configs/cifar_softplus.py:smoke
Expected time: as configs/cifar_info.py. Expected result: comparable error to ReLU information dropout, with
disentangled (low total correlation) representations (paper, Sec. 6); not yet reproduced here.
"""
from __future__ import annotations

import ml_collections

from configs import cifar_info


def get_config(config_string: str | None = None) -> ml_collections.ConfigDict:
  config = cifar_info.get_config(config_string)
  config.model.activation = 'softplus'
  return config
