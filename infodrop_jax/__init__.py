"""infodrop-jax: Information Dropout, Echo noise and information-plane analysis in JAX/Flax.

The layers, KL helpers, Echo noise and models are importable from the package itself:

    from infodrop_jax import InformationDropoutConv, total_kl

Names resolve on first use, so `import infodrop_jax` (or `infodrop_jax.data`) does not load Flax, and nothing here
loads the data stack (TensorFlow Datasets). Training lives in `infodrop_jax.train` (`train.restore` opens a trained
run), datasets in `infodrop_jax.data`, the opt-in CPU speed-ups in `infodrop_jax.cpu`.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS = {
    # Noise layers (infodrop_jax.layers).
    'InformationDropout': 'layers',
    'InformationDropoutConv': 'layers',
    'InformationDropoutDense': 'layers',
    'BinaryDropout': 'layers',
    'GaussianDropout': 'layers',
    'LogNormalDropout': 'layers',
    'VariationalDropout': 'layers',
    'NoiseModule': 'layers',
    'KLNotCollectedWarning': 'layers',
    # The noise as pure functions, shared by the Linen and the NNX layers (infodrop_jax.noise).
    'NoiseSampler': 'noise',
    'JAX_RANDOM': 'noise',
    'default_prior': 'noise',
    'METHODS': 'noise',
    'ACTIVATIONS': 'noise',
    'PRIORS': 'noise',
    # KL terms and the loss normalisation (infodrop_jax.kl).
    'KL_COLLECTION': 'kl',
    'log_uniform_kl': 'kl',
    'log_normal_kl': 'kl',
    'variational_dropout_kl': 'kl',
    'kl_per_example': 'kl',
    'kl_per_layer': 'kl',
    'kl_maps_by_layer': 'kl',
    'total_kl': 'kl',
    # Echo noise (infodrop_jax.echo).
    'EchoNoise': 'echo',
    'echo_sample': 'echo',
    'echo_rate_map': 'echo',
    'echo_mutual_information': 'echo',
    'default_clip_factor': 'echo',
    'log_scale': 'echo',
    'PAPER_CLIP_FACTOR': 'echo',
    # The paper's classifiers (infodrop_jax.models).
    'create_model': 'models',
    'AllCNN': 'models',
    'MLP': 'models',
    'all_cnn_32': 'models',
    'all_cnn_96': 'models',
    'MODEL_NAMES': 'models',
}

__all__ = sorted(_EXPORTS) + ['__version__']


def __getattr__(name: str) -> Any:
  module = _EXPORTS.get(name)
  if module is None:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(f'{__name__}.{module}'), name)
  globals()[name] = value  # Later lookups skip this function.
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))
