"""Information planes of MNIST dropout nets (Adilova, Geiger & Fischer, ICLR 2023): FC 784-512-128-32-10, noise on
the 32-unit layer only, I(X;Z) and I(Z;Y) of that layer captured every 2 epochs (`infodrop_jax.information_plane`).

Variants (--config=configs/mnist_ip.py:<variant>):
  ''             information dropout (ReLU, log-uniform prior, max_alpha 0.7), β = 3; the paper's 200 epochs.
  'gaussian'     Gaussian dropout N(1, p/(1−p)) with p = 0.2 (σ = 0.5; our choice, not taken from the paper) on
                 the same layer, otherwise identical (no KL term, so β has no effect).
  'cpu', 'cpu_gaussian'   the same for 100 epochs (cosine over 100), evaluated at the end only, for a 2-core CPU.
  'smoke', 'smoke_gaussian'   one-minute CPU checks on 1024 examples.

Commands:
  python launch.py --config=configs/mnist_ip.py:cpu --workdir=workdirs/mnist_ip_cpu_info
  python launch.py --config=configs/mnist_ip.py:cpu_gaussian --workdir=workdirs/mnist_ip_cpu_gaussian
  python launch.py --config=configs/mnist_ip.py --workdir=workdirs/mnist_ip_info   (full run; ':gaussian' too)
Expected time: 91 s for ':cpu' and for ':cpu_gaussian' on a free 2-core CPU (Xeon, 2026-11-30; 542 s and 367 s
when the CPU was shared with other jobs, load about 7); the 200-epoch runs take about twice that.
Expected result (CPU variants, benchmarks/information_plane_results.md): test error 1.47 % (D) / 1.52 % (N) with
information dropout and 1.45 % / 1.64 % with Gaussian dropout. On the M = 1000 fixed training examples the 32-unit
layer's I(X;Z) stays at the estimator's ceiling log M = 6.908 nats under information dropout (its KL, the quantity
the loss controls, rises from 22 to 48 nats by epoch 2 and falls to 37), while under Gaussian dropout it drops to
5.81 nats by epoch 32 and rises again to 6.25 ± 0.04. The mixture I(Z;Y) sits at H(Y) = 2.299 nats for both; the
bound H(Y) − CE (noise on) ends at 2.29 nats (train), 2.24 (test).
That plane cannot show compression or its absence. `configs/sweeps/ip_mnist.py:cpu` runs this net with a 2-unit
noisy layer (`--config.model.hidden_sizes=(512,128,2)`) for information dropout and Gaussian dropout at p = 0.2
and 0.05, 3 seeds each; its report checks that every capture stays at least 1 nat below log M and draws the planes
with error bars (reports/ip_mnist_cpu).
"""
from __future__ import annotations

import ml_collections

from configs import base

VARIANTS = ('', 'gaussian', 'cpu', 'cpu_gaussian', 'smoke', 'smoke_gaussian')


def get_config(config_string: str | None = None) -> ml_collections.ConfigDict:
  """SGD 0.1 momentum 0.9 (heavy ball), cosine to 0, weight decay 1e-3, batch 256, β 3, noise on hidden layer 3."""
  variant = base.parse_variant(config_string, VARIANTS)
  config = base.get_base_config('mnist')
  config.model.name = 'mlp'
  config.model.hidden_sizes = (512, 128, 32)
  config.model.noisy_layers = (3,)
  config.model.dropout = 'gaussian' if variant.endswith('gaussian') else 'information'
  config.model.activation = 'relu'
  config.model.max_alpha = 0.7
  config.model.dropout_rate = 0.2
  config.loss.beta = 3.0
  config.loss.weight_decay = 1e-3
  config.optim.name = 'sgd_momentum'
  config.optim.learning_rate = 0.1
  config.optim.momentum = 0.9
  config.optim.schedule = 'cosine'
  config.optim.lr_drop_epochs = ()
  config.train.batch_size = 256
  config.train.num_epochs = 200
  config.train.steps_per_call = 78  # 234 steps per epoch (60 000 // 256) in 3 calls.
  config.train.log_every_steps = 234
  config.train.checkpoint_every_steps = 2340
  config.eval.batch_size = 400
  config.eval.every_epochs = 10
  config.information_plane.enabled = True
  config.information_plane.every_epochs = 2
  config.information_plane.num_examples = 1000
  if variant.startswith('cpu'):
    config.train.num_epochs = 100
    config.eval.every_epochs = 0
    config.logging.progress_bar = False
  if variant.startswith('smoke'):
    base.smoke(config, data_limit=1024)
    config.information_plane.every_epochs = 1
    config.information_plane.num_examples = 256
  config.optim.decay_epochs = config.train.num_epochs
  return config
