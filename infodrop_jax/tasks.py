"""What the one trainer optimises and reports: a task is the model it builds, its loss and its test metrics.

`train.train_and_evaluate(config, workdir)` takes the task named by `config.task` ('classification' unless a
config says otherwise) from `TASKS`; a caller may also pass its own object with the same methods:

  create_model(config, splits) -> nn.Module       the model, called as every model here (see `models`)
  validate_config(config, check) -> None          task-specific fields; check(ok, 'field.path', 'what was expected')
  loss(outputs, batch, kl_collection, *, beta, n_train) -> (loss, metrics)
                                                  the per-batch objective without weight decay, and train metrics
  eval_sums(outputs, batch, kl_collection, mask) -> sums over the batch's real examples ('count' included)
  eval_results(sums_d, sums_n) -> {'test/...': float}
                                                  from the test-set sums with the noise off (D) and on (N)

`outputs` is whatever the model returns; `kl_collection` is the 'kl' collection the call sowed (see `kl`). All of
these run inside the compiled step, so they must be pure jnp functions of their arguments.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol
import warnings

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from infodrop_jax import kl as kl_lib
from infodrop_jax import layers
from infodrop_jax import models

Check = Callable[[bool, str, str], None]
Sums = dict[str, jax.Array]


class Task(Protocol):
  """The contract of a task (see the module docstring)."""

  def create_model(self, config: ml_collections.ConfigDict, splits: Any) -> nn.Module: ...

  def validate_config(self, config: ml_collections.ConfigDict, check: Check) -> None: ...

  def loss(self, outputs: Any, batch: Mapping[str, jax.Array], kl_collection: Any, *, beta: float,
           n_train: int) -> tuple[jax.Array, dict[str, jax.Array]]: ...

  def eval_sums(self, outputs: Any, batch: Mapping[str, jax.Array], kl_collection: Any, mask: jax.Array) -> Sums: ...

  def eval_results(self, sums_d: Mapping[str, Any], sums_n: Mapping[str, Any]) -> dict[str, float]: ...


def is_int(value: Any) -> bool:
  """An int (numpy ints too), not a bool: what an int config field must hold."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_finite_real(value: Any) -> bool:
  """A finite int or float (not a bool, nan or inf): what a float config field must hold."""
  return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
          and math.isfinite(value))


# Fields a model does not read, with the base config's default: another value there would be silently ignored.
_IGNORED_MODEL_FIELDS = {
    'mlp': {'filter_percentage': 1.0, 'input_dropout_rate': 0.2},
    'all_cnn_96': {'filter_percentage': 1.0, 'input_dropout_rate': 0.2},
}


def masked_kl_per_layer_sums(kl_collection: Any, mask: jax.Array) -> Sums:
  """{'kl/<layer>': Σ over the real examples of Σ_units KL}: the per-layer KL of a padded evaluation batch."""
  masked = jax.tree.map(lambda m: m * mask.reshape((-1,) + (1,) * (m.ndim - 1)).astype(m.dtype), kl_collection)
  # kl_per_layer averages over the batch; scaling back by the batch size gives the sum over the unpadded examples.
  return {f'kl/{name}': value * mask.shape[0] for name, value in kl_lib.kl_per_layer(masked).items()}


class Classification:
  """The paper's classifiers: loss = CE + beta·Lz with Lz = Σ_layers mean_batch(Σ_units KL) / N_train.

  Train metrics: ce, beta_lz, accuracy, kl/<layer> (nats per example). Test results: error and CE with the noise
  off (D) and on (N), and the per-layer KL (the KL depends on the noise only through its parameters, so the noisy
  pass reports it for every method).
  """
  name = 'classification'

  def create_model(self, config: ml_collections.ConfigDict, splits: Any) -> nn.Module:
    return models.create_model(config.model, splits.num_classes)

  def validate_config(self, config: ml_collections.ConfigDict, check: Check) -> None:
    model, real = config.model, is_finite_real
    check(model.name in models.MODEL_NAMES, 'model.name', f'one of {models.MODEL_NAMES}')
    check(model.dropout in layers.METHODS, 'model.dropout', f'one of {layers.METHODS}')
    check(model.activation in layers.ACTIVATIONS, 'model.activation', f'one of {tuple(layers.ACTIVATIONS)}')
    check(model.dtype in models.DTYPES, 'model.dtype', f'one of {tuple(models.DTYPES)}')
    check(real(model.max_alpha) and 0 < model.max_alpha, 'model.max_alpha', 'a finite positive float')
    check(real(model.filter_percentage) and 0 < model.filter_percentage <= 1, 'model.filter_percentage',
          'a float in (0, 1]')
    check(real(model.dropout_rate) and 0 <= model.dropout_rate < 1, 'model.dropout_rate',
          'a drop probability in [0, 1)')
    check(real(model.input_dropout_rate) and 0 <= model.input_dropout_rate < 1, 'model.input_dropout_rate',
          'a drop probability in [0, 1)')
    if 'lognormal_alpha' in model:
      check(real(model.lognormal_alpha) and model.lognormal_alpha > 0, 'model.lognormal_alpha',
            'a finite positive float')
    if 'bn_momentum' in model:
      check(real(model.bn_momentum) and 0 < model.bn_momentum < 1, 'model.bn_momentum',
            'a float in (0, 1) (the BatchNorm moving-average decay)')
    check(isinstance(model.hidden_sizes, (tuple, list)) and len(model.hidden_sizes) > 0 and all(
        is_int(h) and h > 0 for h in model.hidden_sizes), 'model.hidden_sizes', 'a non-empty tuple of positive ints')
    noisy = model.get('noisy_layers', ()) or ()
    if model.name == 'mlp':
      check(isinstance(noisy, (tuple, list)) and len(set(noisy)) == len(noisy) and all(
          is_int(i) and 1 <= i <= len(model.hidden_sizes) for i in noisy), 'model.noisy_layers',
            f'distinct 1-based hidden-layer indices (1..{len(model.hidden_sizes)}), or () for every hidden layer')
    else:
      check(not noisy, 'model.noisy_layers', f"() (it applies to model 'mlp' only; {model.name!r} has noise on "
            'every pooling layer)')
    for field, default in _IGNORED_MODEL_FIELDS.get(model.name, {}).items():
      if field in model and model[field] != default:
        message = (f'config.model.{field} = {model[field]!r} has no effect: model {model.name!r} does not use it '
                   f'(only all_cnn_32 does).')
        warnings.warn(message, UserWarning, stacklevel=2)
        logging.warning(message)

  def loss(self, outputs, batch, kl_collection, *, beta, n_train):
    logits = outputs.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels']).mean()
    beta_lz = beta * kl_lib.total_kl(kl_collection, n_train)
    metrics = {'ce': ce, 'beta_lz': beta_lz, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['labels'])}
    metrics.update({f'kl/{name}': value for name, value in kl_lib.kl_per_layer(kl_collection).items()})
    return ce + beta_lz, metrics

  def eval_sums(self, outputs, batch, kl_collection, mask):
    logits = outputs.astype(jnp.float32)
    mask = mask.astype(jnp.float32)
    sums = {'correct': jnp.sum(mask * (jnp.argmax(logits, -1) == batch['labels'])),
            'ce': jnp.sum(mask * optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels'])),
            'count': jnp.sum(mask)}
    sums.update(masked_kl_per_layer_sums(kl_collection, mask))
    return sums

  def eval_results(self, sums_d, sums_n):
    count = float(sums_d['count'])
    result = {'test/error_d': 1.0 - float(sums_d['correct']) / count,
              'test/error_n': 1.0 - float(sums_n['correct']) / count,
              'test/ce_d': float(sums_d['ce']) / count, 'test/ce_n': float(sums_n['ce']) / count}
    result.update({f'test/{k}': float(v) / count for k, v in sums_n.items() if k.startswith('kl/')})
    return result


TASKS: dict[str, Callable[[], Task]] = {
    'classification': Classification,
    # Imported on first use: `vae` imports this module, and classification runs need none of it.
    'vae': lambda: importlib.import_module('infodrop_jax.vae').VAETask(),
}


def register_task(name: str, factory: Callable[[], Task]) -> None:
  """Makes `config.task = name` select `factory()`: how a new experiment type plugs into the one trainer."""
  TASKS[name] = factory


def task_name(config: ml_collections.ConfigDict) -> str:
  # Workdirs written before tasks existed have no `task` field: they are classification runs.
  return config.get('task', 'classification')


def create_task(config: ml_collections.ConfigDict) -> Task:
  name = task_name(config)
  if name not in TASKS:
    raise ValueError(f'config.task = {name!r}: expected one of {tuple(TASKS)}.')
  return TASKS[name]()
