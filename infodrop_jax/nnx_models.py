"""The paper's classifiers as native Flax NNX modules: All-CNN-32, All-CNN-96 and the fully connected MLP.

The same architectures as `infodrop_jax.models` (their sizes come from there: `all_cnn_32_sizes`,
`ALL_CNN_96_SIZES`, `ORIGINAL_BN`), built from `infodrop_jax.nnx_layers`, with the same module names, so that

    model = nnx_models.create_model(config.model, num_classes=10, in_features=3, rngs=nnx.Rngs(params=0, noise=1))
    nnx_models.load_linen_variables(model, restored.variables())   # e.g. a run our (Linen) trainer wrote

gives the Linen model's logits and KL. `model(images)` trains (noise on, BatchNorm on the batch's statistics);
`model.eval()` evaluates; `kl.total_kl(model, n_train)` is the loss's KL term of the last call.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from infodrop_jax import models
from infodrop_jax import nnx_layers
from infodrop_jax import noise as noise_lib
from infodrop_jax.noise import JAX_RANDOM, NoiseSampler

Array = jax.Array


def _noisy_settings(*, dropout: str, activation: str, max_alpha: float, dropout_rate: float, lognormal_alpha: float,
                    bn_momentum: float, dtype: Any, sampler: NoiseSampler, keep_kl_map: bool,
                    rngs: nnx.Rngs) -> dict[str, Any]:
  """The fields every classifier passes to its noisy layers (the Linen models' `_NoiseSettings._noisy`)."""
  return dict(method=dropout, activation=activation, max_alpha=max_alpha, rate=dropout_rate,
              lognormal_alpha=lognormal_alpha, bn_momentum=bn_momentum, bn_epsilon=models.ORIGINAL_BN['epsilon'],
              bn_use_scale=models.ORIGINAL_BN['use_scale'], dtype=dtype, sampler=sampler, keep_kl_map=keep_kl_map,
              rngs=rngs)


class AllCNN(nnx.Module):
  """All-CNN with noisy stride-2 pooling convs (`models.AllCNN`): per block `convs_per_block` 3×3 conv + BN + act,
  then the noisy conv; then a 3×3 and a 1×1 conv, the 1×1 class conv, the spatial mean and the dense head."""

  def __init__(self, in_features: int, *, block_features: Sequence[int] = (96, 192), top_features: int = 192,
               convs_per_block: int = 2, input_dropout_rate: float = 0.0, num_classes: int = 10,
               dropout: str = 'information', activation: str = 'relu', max_alpha: float = 0.7,
               dropout_rate: float = 0.5, lognormal_alpha: float = 0.5, bn_momentum: float = 0.9,
               dtype: Any = jnp.float32, sampler: NoiseSampler = JAX_RANDOM, keep_kl_map: bool = False,
               rngs: nnx.Rngs):
    noisy = _noisy_settings(dropout=dropout, activation=activation, max_alpha=max_alpha, dropout_rate=dropout_rate,
                            lognormal_alpha=lognormal_alpha, bn_momentum=bn_momentum, dtype=dtype, sampler=sampler,
                            keep_kl_map=keep_kl_map, rngs=rngs)
    self.activation, self.dtype = activation, dtype
    self.input_dropout = (nnx_layers.BinaryDropout(input_dropout_rate, rngs=rngs, sampler=sampler)
                          if input_dropout_rate > 0 else None)
    order = []  # (kind, name) in the order the forward pass runs them
    channels = in_features
    for block, features in enumerate(block_features, start=1):
      for i in range(1, convs_per_block + 1):
        channels = self._conv_bn(f'block{block}_conv{i}', channels, features, 3, bn_momentum, rngs)
        order.append(('conv', f'block{block}_conv{i}'))
      setattr(self, f'block{block}_pool', nnx_layers.InformationDropoutConv(channels, features, use_bn=True, **noisy))
      order.append(('noisy', f'block{block}_pool'))
    for name, kernel in (('top_conv3x3', 3), ('top_conv1x1', 1)):
      channels = self._conv_bn(name, channels, top_features, kernel, bn_momentum, rngs)
      order.append(('conv', name))
    self.order = tuple(order)
    self._conv_bn('class_conv', channels, num_classes, 1, bn_momentum, rngs)
    self.logits = nnx.Linear(num_classes, num_classes, dtype=dtype, rngs=rngs)

  def _conv_bn(self, name: str, in_features: int, features: int, kernel: int, momentum: float,
               rngs: nnx.Rngs) -> int:
    setattr(self, name, nnx.Conv(in_features, features, (kernel, kernel), padding='SAME', use_bias=False,
                                 dtype=self.dtype, rngs=rngs))
    setattr(self, f'{name}_bn', nnx.BatchNorm(features, momentum=momentum, dtype=self.dtype, rngs=rngs,
                                              **models.ORIGINAL_BN))
    return features

  def _conv_bn_act(self, name: str, x: Array, use_running_average: bool | None) -> Array:
    x = getattr(self, f'{name}_bn')(getattr(self, name)(x), use_running_average=use_running_average)
    return noise_lib.ACTIVATIONS[self.activation](x)

  def __call__(self, images: Array, *, deterministic: bool | None = None,
               use_running_average: bool | None = None) -> Array:
    noise_lib.check_input_rank(type(self).__name__, images, 4, '(batch, height, width, channels)')
    if deterministic is not None and use_running_average is None:
      use_running_average = deterministic  # as the Linen models: evaluation uses the running statistics
    x = images.astype(self.dtype)
    if self.input_dropout is not None:
      x = self.input_dropout(x, deterministic=deterministic)
    for kind, name in self.order:
      if kind == 'conv':
        x = self._conv_bn_act(name, x, use_running_average)
      else:
        x = getattr(self, name)(x, deterministic=deterministic, use_running_average=use_running_average)
    x = self._conv_bn_act('class_conv', x, use_running_average)
    return self.logits(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)


class MLP(nnx.Module):
  """Fully connected classifier (`models.MLP`): hidden layers `hidden1`, ... with the noise on `noisy_layers`
  (empty: every hidden layer), then the dense head `logits`."""

  def __init__(self, in_features: int, *, hidden_sizes: Sequence[int] = (512, 512, 512),
               noisy_layers: Sequence[int] = (), num_classes: int = 10, dropout: str = 'information',
               activation: str = 'relu', max_alpha: float = 0.7, dropout_rate: float = 0.5,
               lognormal_alpha: float = 0.5, bn_momentum: float = 0.9, dtype: Any = jnp.float32,
               sampler: NoiseSampler = JAX_RANDOM, keep_kl_map: bool = False, rngs: nnx.Rngs):
    noisy = _noisy_settings(dropout=dropout, activation=activation, max_alpha=max_alpha, dropout_rate=dropout_rate,
                            lognormal_alpha=lognormal_alpha, bn_momentum=bn_momentum, dtype=dtype, sampler=sampler,
                            keep_kl_map=keep_kl_map, rngs=rngs)
    self.in_features, self.dtype = in_features, dtype
    self.hidden = tuple(f'hidden{i}' for i in range(1, len(hidden_sizes) + 1))
    width_in = in_features
    for i, width in enumerate(hidden_sizes, start=1):
      settings = noisy if not noisy_layers or i in noisy_layers else dict(noisy, method='none')
      setattr(self, f'hidden{i}', nnx_layers.InformationDropoutDense(width_in, width, **settings))
      width_in = width
    self.logits = nnx.Linear(width_in, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, images: Array, *, deterministic: bool | None = None,
               use_running_average: bool | None = None) -> Array:
    del use_running_average  # no BatchNorm; accepted so every model has the same call
    x = images.reshape(images.shape[0], -1).astype(self.dtype)
    if x.shape[-1] != self.in_features:
      raise ValueError(f'MLP: expected images of {self.in_features} values each (in_features), got shape '
                       f'{tuple(images.shape)}.')
    for name in self.hidden:
      x = getattr(self, name)(x, deterministic=deterministic)
    return self.logits(x).astype(jnp.float32)


def all_cnn_32(in_features: int = 3, filter_percentage: float = 1.0, **kwargs) -> AllCNN:
  """All-CNN-32 (`models.all_cnn_32_sizes`) as an NNX module."""
  return AllCNN(in_features, **{**models.all_cnn_32_sizes(filter_percentage), **kwargs})


def all_cnn_96(in_features: int = 1, **kwargs) -> AllCNN:
  """All-CNN-96 (`models.ALL_CNN_96_SIZES`) as an NNX module."""
  return AllCNN(in_features, **{**models.ALL_CNN_96_SIZES, **kwargs})


def create_model(model_config: ml_collections.ConfigDict, num_classes: int, in_features: int, *,
                 rngs: nnx.Rngs, **kwargs: Any) -> nnx.Module:
  """The NNX model named by `model_config.name` (validated as the Linen `models.create_model` validates it).
  `in_features`: image channels for the All-CNNs, values per image (e.g. 784) for the MLP."""
  common = dict(models.model_settings(model_config, num_classes), rngs=rngs, **kwargs)
  name = model_config.name
  if name == 'all_cnn_32':
    return all_cnn_32(in_features, model_config.filter_percentage,
                      input_dropout_rate=model_config.input_dropout_rate, **common)
  if name == 'all_cnn_96':
    return all_cnn_96(in_features, **common)
  return MLP(in_features, hidden_sizes=tuple(model_config.hidden_sizes),
             noisy_layers=tuple(sorted(model_config.get('noisy_layers', ()) or ())), **common)


def load_linen_variables(model: nnx.Module, variables: Mapping[str, Any]) -> nnx.Module:
  """Copies the Linen variables of the same architecture ({'params': ..., 'batch_stats': ...}, e.g.
  `train.restore(workdir).variables()`) into `model`'s parameters and BatchNorm statistics, in place.

  Raises ValueError naming the first parameter the two do not share (a missing one, or another shape).
  """
  collections = {nnx.Param: 'params', nnx.BatchStat: 'batch_stats'}
  loaded = 0
  for path, node in nnx.iter_graph(model):
    kind = next((c for c in collections if isinstance(node, c)), None)
    if kind is None:
      continue
    source: Any = variables.get(collections[kind], {})
    for part in path:
      if not isinstance(source, Mapping) or str(part) not in source:
        raise ValueError(f'load_linen_variables: {collections[kind]}/{"/".join(map(str, path))} of the NNX model is '
                         f'not in the Linen variables (is it the same architecture and config?).')
      source = source[str(part)]
    value = jnp.asarray(source)
    if value.shape != node.get_value().shape:
      raise ValueError(f'load_linen_variables: {collections[kind]}/{"/".join(map(str, path))} has shape '
                       f'{value.shape} in the Linen variables, {node.get_value().shape} in the NNX model.')
    node.set_value(value.astype(node.get_value().dtype))
    loaded += 1
  if not loaded:
    raise ValueError('load_linen_variables: the NNX model has no parameters to load.')
  return model
