"""The paper's classifiers: All-CNN-32 (CIFAR-10), All-CNN-96 (Cluttered MNIST) and fully connected MNIST nets.

Architectures follow the original code (see docs/ORIGINALS.md). Every model takes its noise method and
activation from the config, so one model serves Information Dropout and all its controls. All models are called as

  model.apply(variables, images, deterministic=..., use_running_average=..., rngs={'noise': key}, mutable=[...])

`deterministic` switches every noise layer off; `use_running_average` switches BatchNorm to its running statistics
(the original's BN re-estimation pass runs deterministic=True, use_running_average=False). Logits are float32.
KL maps go to the 'kl' collection (`infodrop_jax.kl`), BatchNorm statistics to 'batch_stats'.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from infodrop_jax import batch_norm
from infodrop_jax import convolution
from infodrop_jax import layers

MODEL_NAMES = ('all_cnn_32', 'all_cnn_96', 'mlp')

# The original's BatchNorm is tf.contrib.layers.batch_norm with its defaults: a learned shift but no scale γ,
# epsilon 1e-3 (the decay is the config's bn_momentum).
_ORIGINAL_BN = dict(use_scale=False, epsilon=1e-3)
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class _NoiseSettings(nn.Module):
  """Fields every model shares: which noise, which activation, and how the noise layers are configured."""
  num_classes: int = 10
  dropout: str = 'information'
  activation: str = 'relu'
  max_alpha: float = 0.7
  dropout_rate: float = 0.5
  lognormal_alpha: float = 0.5
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  fuse_alpha: bool = False

  def _noisy(self, layer_cls: type[nn.Module], features: int, name: str, **kwargs) -> nn.Module:
    return layer_cls(features, method=self.dropout, activation=self.activation, max_alpha=self.max_alpha,
                     rate=self.dropout_rate, lognormal_alpha=self.lognormal_alpha, bn_momentum=self.bn_momentum,
                     bn_epsilon=_ORIGINAL_BN['epsilon'], bn_use_scale=_ORIGINAL_BN['use_scale'], dtype=self.dtype,
                     fuse_alpha=self.fuse_alpha, name=name, **kwargs)

  def _conv_bn_act(self, x: jax.Array, features: int, kernel: int, name: str, use_running_average: bool) -> jax.Array:
    x = convolution.Conv(features, (kernel, kernel), padding='SAME', use_bias=False, dtype=self.dtype, name=name)(x)
    x = batch_norm.BatchNorm(use_running_average=use_running_average, momentum=self.bn_momentum, dtype=self.dtype,
                             name=f'{name}_bn', **_ORIGINAL_BN)(x)
    return layers.ACTIVATIONS[self.activation](x)

  def _classifier_head(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    """conv num_classes 1x1 (+BN, act) → spatial mean → dense num_classes, as both All-CNNs of the original."""
    x = self._conv_bn_act(x, self.num_classes, 1, 'class_conv', use_running_average)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x).astype(jnp.float32)


class AllCNN(_NoiseSettings):
  """All-CNN with noisy stride-2 pooling convs: the family of All-CNN-32 and All-CNN-96.

  Each block is `convs_per_block` 3x3 convs followed by a stride-2 noisy conv (the information_pool of the
  original); then a 3x3 conv and a 1x1 conv (the representation), and the classifier head.

  Attributes:
    block_features: channels of each block; one noisy pooling layer per block.
    top_features: channels of the 3x3 and 1x1 convs after the last block.
    convs_per_block: plain 3x3 convs before each noisy pooling conv.
    input_dropout_rate: Bernoulli drop probability on the input pixels (All-CNN-32 uses 0.2 for every noise method,
      as the original); 0 disables it.
  """
  block_features: Sequence[int] = (96, 192)
  top_features: int = 192
  convs_per_block: int = 2
  input_dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, images: jax.Array, *, deterministic: bool, use_running_average: bool | None = None) -> jax.Array:
    use_running_average = deterministic if use_running_average is None else use_running_average
    x = images.astype(self.dtype)
    if self.input_dropout_rate > 0:
      x = layers.BinaryDropout(rate=self.input_dropout_rate, name='input_dropout')(x, deterministic=deterministic)
    for block, features in enumerate(self.block_features, start=1):
      for i in range(1, self.convs_per_block + 1):
        x = self._conv_bn_act(x, features, 3, f'block{block}_conv{i}', use_running_average)
      x = self._noisy(layers.InformationDropoutConv, features, f'block{block}_pool', use_bn=True)(
          x, deterministic=deterministic, use_running_average=use_running_average)
    x = self._conv_bn_act(x, self.top_features, 3, 'top_conv3x3', use_running_average)
    x = self._conv_bn_act(x, self.top_features, 1, 'top_conv1x1', use_running_average)
    return self._classifier_head(x, use_running_average)


class MLP(_NoiseSettings):
  """Fully connected classifier with a noisy layer after hidden projections (paper Fig. 3a); no BatchNorm.

  Attributes:
    hidden_sizes: widths of the hidden layers, `hidden1`, `hidden2`, ... from the input.
    noisy_layers: 1-based indices of the hidden layers that carry the noise of `dropout`; empty = every hidden layer
      (the paper's Fig. 3a). The others are plain dense + activation: no noise and no KL. Adilova et al. (2023)
      put the noise on the 32-unit layer of 784-512-128-32-10 only, i.e. `noisy_layers=(3,)`.
  """
  hidden_sizes: Sequence[int] = (512, 512, 512)
  noisy_layers: Sequence[int] = ()

  @nn.compact
  def __call__(self, images: jax.Array, *, deterministic: bool, use_running_average: bool | None = None) -> jax.Array:
    del use_running_average  # No BatchNorm; accepted so every model has the same call.
    x = images.reshape(images.shape[0], -1).astype(self.dtype)
    for i, width in enumerate(self.hidden_sizes, start=1):
      if not self.noisy_layers or i in self.noisy_layers:
        x = self._noisy(layers.InformationDropoutDense, width, f'hidden{i}')(x, deterministic=deterministic)
      else:
        # method='none' is dense + activation; the same module keeps the parameter tree (hidden{i}/signal) of a
        # noisy layer, so checkpoints and analyses address layers alike whichever are noisy.
        x = layers.InformationDropoutDense(width, method='none', activation=self.activation, dtype=self.dtype,
                                           name=f'hidden{i}')(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x).astype(jnp.float32)


def _scaled(width: int, filter_percentage: float) -> int:
  if not 0 < filter_percentage <= 1:
    raise ValueError(f'filter_percentage must be in (0, 1], got {filter_percentage!r}.')
  return max(1, int(width * filter_percentage))


def all_cnn_32(filter_percentage: float = 1.0, **kwargs) -> AllCNN:
  """All-CNN-32 of the original cifar.py: blocks of 96 and 192 filters (× filter_percentage), input dropout 0.2."""
  n1, n2 = _scaled(96, filter_percentage), _scaled(192, filter_percentage)
  kwargs.setdefault('input_dropout_rate', 0.2)
  return AllCNN(block_features=(n1, n2), top_features=n2, **kwargs)


def all_cnn_96(**kwargs) -> AllCNN:
  """All-CNN-96 of the original cluttered.py: four noisy pooling layers at 48, 24, 12 and 6 px, no input dropout."""
  return AllCNN(block_features=(32, 64, 96, 192), top_features=192, **kwargs)


def _require(config: ml_collections.ConfigDict, field: str, allowed: Sequence[Any] | None = None) -> Any:
  if field not in config:
    raise ValueError(f'config.model.{field} is missing; it is required by model {config.get("name")!r}.')
  value = config[field]
  if allowed is not None and value not in allowed:
    raise ValueError(f'config.model.{field}={value!r} is not one of {", ".join(map(repr, allowed))}.')
  return value


def create_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds the model named by `model_config.name`; all noise settings come from the config (see module doc)."""
  name = _require(model_config, 'name', MODEL_NAMES)
  common = dict(
      num_classes=num_classes,
      dropout=_require(model_config, 'dropout', layers.METHODS),
      activation=_require(model_config, 'activation', tuple(layers.ACTIVATIONS)),
      max_alpha=_require(model_config, 'max_alpha'),
      dropout_rate=_require(model_config, 'dropout_rate'),
      lognormal_alpha=_require(model_config, 'lognormal_alpha'),
      bn_momentum=_require(model_config, 'bn_momentum'),
      dtype=DTYPES[_require(model_config, 'dtype', tuple(DTYPES))],
      fuse_alpha=_fuse_alpha(model_config),
  )
  if name != 'mlp' and model_config.get('noisy_layers'):
    raise ValueError(f'config.model.noisy_layers={model_config.noisy_layers!r} applies to model \'mlp\' only; '
                     f'model {name!r} has noise on every pooling layer. Leave it ().')
  if name == 'all_cnn_32':
    return all_cnn_32(filter_percentage=_require(model_config, 'filter_percentage'),
                      input_dropout_rate=_require(model_config, 'input_dropout_rate'), **common)
  if name == 'all_cnn_96':
    return all_cnn_96(**common)
  hidden_sizes = tuple(_require(model_config, 'hidden_sizes'))
  return MLP(hidden_sizes=hidden_sizes, noisy_layers=_noisy_layers(model_config, len(hidden_sizes)), **common)


def _fuse_alpha(model_config: ml_collections.ConfigDict) -> bool:
  value = model_config.get('fuse_alpha', False)  # Configs saved before the field existed: two projections.
  if not isinstance(value, bool):
    raise ValueError(f'config.model.fuse_alpha = {value!r}: expected True or False.')
  return value


def _noisy_layers(model_config: ml_collections.ConfigDict, num_hidden: int) -> tuple[int, ...]:
  """config.model.noisy_layers checked: distinct 1-based hidden-layer indices, or () for every hidden layer."""
  value = model_config.get('noisy_layers', ())  # Configs saved before the field existed: every layer noisy.
  value = () if value is None else value
  indices = tuple(value) if isinstance(value, (tuple, list)) else None
  if indices is None or not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= num_hidden
                                for i in indices) or len(set(indices)) != len(indices):
    raise ValueError(f'config.model.noisy_layers={value!r}: expected distinct 1-based indices of hidden layers '
                     f'(1..{num_hidden} for hidden_sizes of length {num_hidden}), or () for every hidden layer.')
  return tuple(sorted(indices))
