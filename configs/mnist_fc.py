"""Fully connected MNIST net 784-512-128-32-10, the noise of `model.dropout` after every hidden layer.

Command (CPU, minutes): python launch.py --config=configs/mnist_fc.py --workdir=workdirs/mnist_fc
Other methods: --config.model.dropout=binary|gaussian|lognormal_constant|variational|none
CPU smoke run: --config=configs/mnist_fc.py:smoke
Expected time: about a minute for 20 epochs on a 2-core CPU (56 s measured on 2026-12-02, the CPU speed-ups on).
Expected result: 1.43 % test error with the noise off (D), 1.64 % with it on (N), information dropout, ReLU
(2026-12-02; single runs spread by about 0.1 point: 1.32 / 1.53 % on 2026-11-29; benchmarks/RESULTS.md).
"""
from __future__ import annotations

import ml_collections

from configs import base


def get_config(config_string: str | None = None) -> ml_collections.ConfigDict:
  """Adam 1e-3 (Keras-style recipe), ×0.1 at epoch 15, 20 epochs, batch 100, beta 1, no weight decay."""
  variant = base.parse_variant(config_string)
  config = base.get_base_config('mnist')
  config.model.name = 'mlp'
  config.model.hidden_sizes = (512, 128, 32)
  config.model.max_alpha = 0.7
  config.loss.beta = 1.0
  config.loss.weight_decay = 0.0
  config.optim.name = 'adam'
  config.optim.learning_rate = 1e-3
  config.optim.lr_drop_epochs = (15,)
  config.train.num_epochs = 20
  config.eval.every_epochs = 5
  if variant == 'smoke':
    base.smoke(config, data_limit=1024)
  return config
