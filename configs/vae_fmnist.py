"""VAE on Fashion-MNIST grey levels: Gaussian, information-dropout or Echo latent (`infodrop_jax.vae`).

Commands:
  python launch.py --config=configs/vae_fmnist.py --workdir=W                     # Echo paper's conv VAE, 200 epochs
  python launch.py --config=configs/vae_fmnist.py:cpu --workdir=W --config.vae.latent=gaussian  # MLP, 2-d, CPU
  python launch.py --config=configs/vae_fmnist.py:smoke --workdir=W
The images stay grey levels in [0, 1] (as the Echo paper's fMNIST). The default likelihood is the Bernoulli cross-
entropy on grey levels, which the Echo paper reports (comparable, but not a normalised density: D is offset by the
images' pixel entropy and D + R is no bound on −log p(x)); --config.vae.likelihood=continuous_bernoulli gives a
proper density on [0, 1]. Everything else as configs/vae_mnist.py.
"""
from __future__ import annotations

import ml_collections

from configs import base
from configs import vae_mnist


def get_config(config_string: str | None = None) -> ml_collections.ConfigDict:
  """Fashion-MNIST grey levels, Bernoulli cross-entropy, Echo latent, the Echo paper's conv VAE; `:cpu`, `:smoke`."""
  variant = base.parse_variant(config_string, vae_mnist.VARIANTS)
  return vae_mnist.apply_variant(vae_mnist.vae_base_config('fashion_mnist', 'none'), variant)
