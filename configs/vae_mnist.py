"""VAE on dynamically binarised MNIST: Gaussian, information-dropout or Echo latent (`infodrop_jax.vae`).

Commands:
  python launch.py --config=configs/vae_mnist.py --workdir=W                       # Echo paper's conv VAE, 200 epochs
  python launch.py --config=configs/vae_mnist.py:cpu --workdir=W --config.vae.latent=gaussian   # MLP, 2-d, CPU
  python launch.py --config=configs/vae_mnist.py:mlp50 --workdir=W --config.vae.latent=gaussian  # 784-500-500-50
  python launch.py --config=configs/vae_mnist.py:smoke --workdir=W                 # one-minute CPU check
Latent: --config.vae.latent=gaussian|information|echo; β: --config.loss.beta (loss = D + β·R, nats per example).

Default: the Echo paper's recipe (Brekelmans et al. 2019, brekelma/echo experiments/configs/echo.json): conv encoder
and decoder, 32-d Echo latent, d_max = 99 (all other examples of the batch of 100), batch 100, 200 epochs, Adam
3e-4. Their schedule is constant for 100 epochs then linear to 0; our optimiser has only step drops, so we drop
×0.3 at epochs 100 and 150 (mean rate over the last 100 epochs 5.9e-5 vs their 1.5e-4: not the same schedule).
Their binary MNIST is the fixed (Larochelle) binarisation, 50k train; ours draws a fresh Bernoulli binarisation
every step from the 60k training images and evaluates on one fixed draw of the test set.
`:cpu`: the Keras port's MLP 784-256-2 and its 50 epochs, with Adam 1e-3 (theirs: 1e-4) ×0.3 at epoch 40; 122 s
(Gaussian) / 156 s (Echo) on a free 2-core CPU (2026-11-30; 8–10 minutes when the CPU was shared).
`:mlp50`: the usual MLP VAE of the papers, 784-500-500-50 with ReLU (`vae.hidden_layers=2`), Adam 1e-3 ×0.3 at epoch
15, 20 epochs, the IW bound with k = 100 on 2000 random test images: 4.4 s (Gaussian) per epoch on a free 2-core
CPU, 2.7–5 min per run when two run at once. Expected at β = 1 (3 seeds, 2026-12-02): −ELBO 95.40 ± 0.27 nats and IW
bound 91.78 ± 0.25 (Gaussian), 98.31 ± 0.18 / 94.44 ± 0.26 (information), −ELBO 103.6 ± 1.1 (Echo); trained for
100 epochs the Gaussian VAE reaches an IW bound of 87.73 nats on the whole test set (564 s). Sweeps over latents,
β and seeds: `configs/sweeps/vae_mnist.py` (reports/vae_mnist_cpu, reports/vae_mnist_anchor).
"""
from __future__ import annotations

import ml_collections

from configs import base

VARIANTS = ('', 'smoke', 'cpu', 'mlp50')
MLP50_EPOCHS = 20
MLP50_LR_DROPS = (15,)


def vae_config(**overrides) -> ml_collections.ConfigDict:
  """`config.vae`: the VAE's latent, architecture and analysis settings (fields documented inline)."""
  config = ml_collections.ConfigDict(dict(
      latent='echo',  # 'gaussian' | 'information' | 'echo'.
      architecture='conv',  # 'mlp' (Keras port, 784-256-latent) | 'conv' (Echo paper).
      latent_size=32,
      hidden_size=256,  # MLP hidden width.
      hidden_layers=1,  # MLP hidden layers in the encoder and in the decoder (2 with 500 units: 784-500-500-50).
      likelihood='bernoulli',  # 'bernoulli' | 'continuous_bernoulli' (see infodrop_jax/vae.py).
      info_activation='softplus',  # information latent: softplus + learned log-normal prior | relu + log-uniform.
      max_alpha=1.0,  # information latent: cap of the log-normal noise's α.
      d_max=99,  # Echo terms; at most (batch per model call) − 1 without replacement.
      echo_replace=False,  # draw the echo examples with replacement (then d_max may exceed the batch).
      echo_clip_factor=0.0,  # r of S = r·sigmoid(·); 0 = the largest r that makes the truncation exact in float32.
      echo_f_scale=64.0,  # f = tanh(pre-activation / echo_f_scale) (the original's tanh64).
      iw_samples=1000,  # k of the importance-weighted bound on −log p(x) (`analyze_vae`).
      iw_examples=0,  # test examples it is computed on (a fixed random subset); 0 = all.
      # The bound at each k, on one fixed subset, with the paired change between consecutive k: it must not rise
      # with k (a check of the bound, the sweeps' precondition); () = not measured.
      iw_k_sweep=(1, 10, 100, 1000),
      iw_k_sweep_examples=500,
  ))
  config.update(overrides)
  return config


def vae_base_config(dataset: str, preprocess: str) -> ml_collections.ConfigDict:
  """The trainer's config for a VAE on `dataset` (the Echo paper's recipe; see the module docstring)."""
  config = base.get_base_config(dataset, preprocess=preprocess)
  config.task = 'vae'
  config.vae = vae_config()
  config.loss.beta = 1.0
  config.loss.weight_decay = 0.0
  config.optim.name = 'adam'
  config.optim.learning_rate = 3e-4
  config.optim.lr_drop_epochs = (100, 150)
  config.optim.lr_drop_factor = 0.3
  config.train.num_epochs = 200
  config.train.batch_size = 100
  config.train.checkpoint_every_steps = 6000
  # Echo's noisy test pass draws its noise from the other examples of each test batch: keep it the training batch.
  config.eval.batch_size = 100
  config.eval.every_epochs = 10
  config.eval.bn_reestimate_steps = 0  # no BatchNorm
  return config


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """`:cpu`: the Keras port's MLP 784-256-2, Adam 1e-3, 50 epochs; `:mlp50`: MLP 784-500-500-50, Adam 1e-3, 20 epochs;
  `:smoke`: tiny MLP, a few hundred examples."""
  if variant in ('cpu', 'smoke'):
    config.vae.architecture = 'mlp'
    config.vae.latent_size = 2
    config.optim.learning_rate = 1e-3
    config.optim.lr_drop_epochs = (25,)
    config.optim.lr_drop_factor = 0.3
  if variant == 'cpu':
    config.train.num_epochs = 50
    config.optim.lr_drop_epochs = (40,)
    config.train.steps_per_call = 100
    config.eval.every_epochs = 10
    config.vae.iw_samples = 100
  if variant == 'mlp50':
    config.vae.update(architecture='mlp', hidden_layers=2, hidden_size=500, latent_size=50, iw_samples=100,
                      iw_examples=2000)
    config.optim.update(learning_rate=1e-3, lr_drop_epochs=MLP50_LR_DROPS, lr_drop_factor=0.3)
    config.train.update(num_epochs=MLP50_EPOCHS, steps_per_call=100)
    config.eval.every_epochs = 0
    config.logging.progress_bar = False
  if variant == 'smoke':
    base.smoke(config, data_limit=512, batch_size=32, num_epochs=2)
    config.eval.batch_size = 64
    config.eval.bn_reestimate_steps = 0
    config.vae.hidden_size = 32
    config.vae.d_max = config.train.batch_size - 1
    config.vae.iw_samples = 10
    config.vae.iw_examples = 64
    config.vae.iw_k_sweep = (1, 10)
    config.vae.iw_k_sweep_examples = 16
  return config


def get_config(config_string: str | None = None) -> ml_collections.ConfigDict:
  """Binary MNIST (a fresh Bernoulli draw per step), Echo latent, the Echo paper's conv VAE; `:cpu`, `:mlp50`, `:smoke`."""
  variant = base.parse_variant(config_string, VARIANTS)
  return apply_variant(vae_base_config('mnist', 'binarize_stochastic'), variant)
