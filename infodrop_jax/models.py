"""The paper's classifiers: All-CNN-32 (CIFAR-10), All-CNN-96 (Cluttered MNIST) and fully connected MNIST nets.

Architectures follow the original code (see docs/ORIGINALS.md). Every model takes its noise method and
activation from the config, so one model serves Information Dropout and all its controls. All models are called as

  model.apply(variables, images, deterministic=..., use_running_average=..., rngs={'noise': key}, mutable=[...])

`deterministic` switches every noise layer off; `use_running_average` switches BatchNorm to its running statistics
(the original's BN re-estimation pass runs deterministic=True, use_running_average=False). Logits are float32.
KL maps go to the 'kl' collection (`infodrop_jax.kl`), BatchNorm statistics to 'batch_stats'.

The models are plain Flax by default (`nn.Conv`, `nn.BatchNorm`, `jax.random`). Like Flax's ImageNet ResNet they take
their parts as fields, `conv`, `norm` and `sampler` (`layers.NoiseSampler`), passed down to every layer, so a faster
variant (e.g. `infodrop_jax.cpu.model_parts()`) is injected without touching the model code. `axis_name` names the
pmap axis over which BatchNorm averages its batch statistics, so that a pmapped model normalises over the global
batch as one device (or `jax.jit` over a mesh) does.
"""

from collections.abc import Sequence
import functools
from typing import Any
import warnings

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from infodrop_jax import config_checks
from infodrop_jax import layers

MODEL_NAMES = ('all_cnn_32', 'all_cnn_96', 'mlp')

# The original's BatchNorm is tf.contrib.layers.batch_norm with its defaults: a learned shift but no scale γ,
# epsilon 1e-3 (the decay is the config's bn_momentum).
ORIGINAL_BN = dict(use_scale=False, epsilon=1e-3)
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


ModuleDef = Any


class _NoiseSettings(nn.Module):
  """Fields every model shares: which noise, which activation, how the noise layers are configured, and the noise's
  random-number functions (`sampler`)."""
  num_classes: int = 10
  dropout: str = 'information'
  activation: str = 'relu'
  max_alpha: float = 0.7
  dropout_rate: float = 0.5
  lognormal_alpha: float = 0.5
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  fuse_alpha: bool = False
  sampler: layers.NoiseSampler = layers.JAX_RANDOM

  def _noisy(self, layer_cls: type[nn.Module], features: int, name: str, **kwargs) -> nn.Module:
    return layer_cls(features, method=self.dropout, activation=self.activation, max_alpha=self.max_alpha,
                     rate=self.dropout_rate, lognormal_alpha=self.lognormal_alpha, bn_momentum=self.bn_momentum,
                     bn_epsilon=ORIGINAL_BN['epsilon'], bn_use_scale=ORIGINAL_BN['use_scale'], dtype=self.dtype,
                     fuse_alpha=self.fuse_alpha, sampler=self.sampler, name=name, **kwargs)


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
    conv, norm: the convolution and BatchNorm modules (`nn.Conv`, `nn.BatchNorm`), called with their fields.
    axis_name: the pmap axis BatchNorm averages its statistics over (None under jit or on one device).
  """
  block_features: Sequence[int] = (96, 192)
  top_features: int = 192
  convs_per_block: int = 2
  input_dropout_rate: float = 0.0
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = nn.BatchNorm
  axis_name: str | None = None

  def _norm(self) -> ModuleDef:
    return self.norm if self.axis_name is None else functools.partial(self.norm, axis_name=self.axis_name)

  def _conv_bn_act(self, x: jax.Array, features: int, kernel: int, name: str, use_running_average: bool) -> jax.Array:
    x = self.conv(features, (kernel, kernel), padding='SAME', use_bias=False, dtype=self.dtype, name=name)(x)
    x = self._norm()(use_running_average=use_running_average, momentum=self.bn_momentum, dtype=self.dtype,
                     name=f'{name}_bn', **ORIGINAL_BN)(x)
    return layers.ACTIVATIONS[self.activation](x)

  def _classifier_head(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    """conv num_classes 1x1 (+BN, act) → spatial mean → dense num_classes, as both All-CNNs of the original."""
    x = self._conv_bn_act(x, self.num_classes, 1, 'class_conv', use_running_average)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='logits')(x).astype(jnp.float32)

  @nn.compact
  def __call__(self, images: jax.Array, *, deterministic: bool, use_running_average: bool | None = None) -> jax.Array:
    use_running_average = deterministic if use_running_average is None else use_running_average
    x = images.astype(self.dtype)
    if self.input_dropout_rate > 0:
      x = layers.BinaryDropout(rate=self.input_dropout_rate, sampler=self.sampler, name='input_dropout')(
          x, deterministic=deterministic)
    for block, features in enumerate(self.block_features, start=1):
      for i in range(1, self.convs_per_block + 1):
        x = self._conv_bn_act(x, features, 3, f'block{block}_conv{i}', use_running_average)
      x = self._noisy(layers.InformationDropoutConv, features, f'block{block}_pool', use_bn=True, conv=self.conv,
                      norm=self._norm())(
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


def scaled_width(width: int, filter_percentage: float) -> int:
  """int(width · filter_percentage), at least 1: the original's filter_percentage."""
  if not 0 < filter_percentage <= 1:
    raise ValueError(f'filter_percentage must be in (0, 1], got {filter_percentage!r}.')
  return max(1, int(width * filter_percentage))


def all_cnn_32_sizes(filter_percentage: float = 1.0) -> dict[str, Any]:
  """All-CNN-32 of the original cifar.py: blocks of 96 and 192 filters (× filter_percentage), input dropout 0.2."""
  n1, n2 = scaled_width(96, filter_percentage), scaled_width(192, filter_percentage)
  return dict(block_features=(n1, n2), top_features=n2, input_dropout_rate=0.2)


# All-CNN-96 of the original cluttered.py: four noisy pooling layers at 48, 24, 12 and 6 px, no input dropout.
ALL_CNN_96_SIZES = dict(block_features=(32, 64, 96, 192), top_features=192, input_dropout_rate=0.0)


def all_cnn_32(filter_percentage: float = 1.0, **kwargs) -> AllCNN:
  """All-CNN-32 (`all_cnn_32_sizes`) as a Linen module."""
  return AllCNN(**{**all_cnn_32_sizes(filter_percentage), **kwargs})


def all_cnn_96(**kwargs) -> AllCNN:
  """All-CNN-96 (`ALL_CNN_96_SIZES`) as a Linen module."""
  return AllCNN(**{**ALL_CNN_96_SIZES, **kwargs})


# Fields a model does not read, with the base config's default: another value there would be silently ignored.
_IGNORED_FIELDS = {
    'mlp': {'filter_percentage': 1.0, 'input_dropout_rate': 0.2},
    'all_cnn_96': {'filter_percentage': 1.0, 'input_dropout_rate': 0.2},
}
_REQUIRED_FIELDS = ('name', 'dropout', 'activation', 'max_alpha', 'dropout_rate', 'lognormal_alpha', 'bn_momentum',
                    'dtype')
_REQUIRED_BY = {'all_cnn_32': ('filter_percentage', 'input_dropout_rate'), 'all_cnn_96': (),
                'mlp': ('hidden_sizes',)}


def validate_config(model_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first invalid `config.model` field and what it must hold (before any compile).

  Fields added after a run's config.json was written (`fuse_alpha`, `noisy_layers`) may be missing: such runs used
  two projections and noise on every hidden layer. A field the model does not read but that differs from its
  default is warned about, since it would be silently ignored.
  """
  check = config_checks.checker(model_config, 'model')
  config_checks.require(model_config, 'model', ('name',), 'every model')
  check(model_config.name in MODEL_NAMES, 'name', f'one of {MODEL_NAMES}')
  name = model_config.name
  config_checks.require(model_config, 'model', _REQUIRED_FIELDS + _REQUIRED_BY[name], f'model {name!r}')
  real = config_checks.is_finite_real
  check(model_config.dropout in layers.METHODS, 'dropout', f'one of {layers.METHODS}')
  check(model_config.activation in layers.ACTIVATIONS, 'activation', f'one of {tuple(layers.ACTIVATIONS)}')
  check(model_config.dtype in DTYPES, 'dtype', f'one of {tuple(DTYPES)}')
  check(real(model_config.max_alpha) and model_config.max_alpha > 0, 'max_alpha', 'a finite positive float')
  check(real(model_config.dropout_rate) and 0 <= model_config.dropout_rate < 1, 'dropout_rate',
        'a drop probability in [0, 1)')
  check(real(model_config.lognormal_alpha) and model_config.lognormal_alpha > 0, 'lognormal_alpha',
        'a finite positive float')
  check(real(model_config.bn_momentum) and 0 < model_config.bn_momentum < 1, 'bn_momentum',
        'a float in (0, 1) (the BatchNorm moving-average decay)')
  check(config_checks.is_bool(model_config.get('fuse_alpha', False)), 'fuse_alpha', 'True or False')
  if name == 'all_cnn_32':
    check(real(model_config.filter_percentage) and 0 < model_config.filter_percentage <= 1, 'filter_percentage',
          'a float in (0, 1]')
    check(real(model_config.input_dropout_rate) and 0 <= model_config.input_dropout_rate < 1, 'input_dropout_rate',
          'a drop probability in [0, 1)')
  noisy = model_config.get('noisy_layers', ()) or ()
  if name == 'mlp':
    hidden = model_config.hidden_sizes
    check(isinstance(hidden, (tuple, list)) and len(hidden) > 0 and all(
        config_checks.is_int(h) and h > 0 for h in hidden), 'hidden_sizes', 'a non-empty tuple of positive ints')
    check(isinstance(noisy, (tuple, list)) and len(set(noisy)) == len(noisy) and all(
        config_checks.is_int(i) and 1 <= i <= len(hidden) for i in noisy), 'noisy_layers',
          f'distinct 1-based hidden-layer indices (1..{len(hidden)}), or () for every hidden layer')
  else:
    check(not noisy, 'noisy_layers', f"() (it applies to model 'mlp' only; {name!r} has noise on every pooling "
          'layer)')
  for field, default in _IGNORED_FIELDS.get(name, {}).items():
    if field in model_config and model_config[field] != default:
      message = (f'config.model.{field} = {model_config[field]!r} has no effect: model {name!r} does not use it '
                 '(only all_cnn_32 does).')
      warnings.warn(message, UserWarning, stacklevel=2)
      logging.warning(message)


def model_settings(model_config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
  """The noise settings every model (Linen or NNX) takes from `config.model` (validated first)."""
  validate_config(model_config)
  return dict(num_classes=num_classes, dropout=model_config.dropout, activation=model_config.activation,
              max_alpha=model_config.max_alpha, dropout_rate=model_config.dropout_rate,
              lognormal_alpha=model_config.lognormal_alpha, bn_momentum=model_config.bn_momentum,
              dtype=DTYPES[model_config.dtype])


def create_model(model_config: ml_collections.ConfigDict, num_classes: int, **parts: Any) -> nn.Module:
  """Builds the model named by `model_config.name` (validated first); all noise settings come from the config.

  `parts` (`conv`, `norm`, `sampler`, `axis_name`: the fields of the module docstring) replace Flax's defaults;
  those a model does not have (an MLP has no conv or BatchNorm) are left out.
  """
  common = dict(model_settings(model_config, num_classes), fuse_alpha=model_config.get('fuse_alpha', False))
  name = model_config.name
  if name == 'all_cnn_32':
    return all_cnn_32(filter_percentage=model_config.filter_percentage,
                      input_dropout_rate=model_config.input_dropout_rate, **common, **with_fields(AllCNN, parts))
  if name == 'all_cnn_96':
    return all_cnn_96(**common, **with_fields(AllCNN, parts))
  return MLP(hidden_sizes=tuple(model_config.hidden_sizes),
             noisy_layers=tuple(sorted(model_config.get('noisy_layers', ()) or ())), **common, **with_fields(MLP, parts))


def with_fields(module_cls: type[nn.Module], parts: dict[str, Any]) -> dict[str, Any]:
  """The entries of `parts` that `module_cls` has fields for."""
  return {k: v for k, v in parts.items() if k in module_cls.__dataclass_fields__}
