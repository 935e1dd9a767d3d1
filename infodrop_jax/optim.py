"""Optimizers, learning-rate schedules and the weight-decay penalty of the training recipes."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('sgd_nesterov', 'sgd_momentum', 'adam')
SCHEDULES = ('piecewise', 'cosine')

# Noise-distribution parameters, not weights. The original decays the log-normal prior's μ/σ too, pulling the
# prior towards N(0, 0) and σ towards 0: a bug we avoid. Decaying the variational log α would pull it towards α = 1
# regardless of the data.
NO_DECAY_PARAMS = ('prior_mu', 'prior_log_sigma', 'log_alpha')


def create_schedule(optim_config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate per step, by `optim_config.schedule`.

  'piecewise' (the default): constant, ×`lr_drop_factor` at each epoch of `lr_drop_epochs`.
  'cosine': lr·½(1 + cos(π·min(t, T)/T)) with T = `decay_epochs`·steps_per_epoch: from lr down to 0 at T.
  """
  schedule = optim_config.get('schedule', 'piecewise')  # Configs saved before the field existed: piecewise.
  if schedule not in SCHEDULES:
    raise ValueError(f'config.optim.schedule = {schedule!r}: expected one of {SCHEDULES}.')
  if schedule == 'cosine':
    decay_epochs = optim_config.get('decay_epochs', 0)
    if not (isinstance(decay_epochs, int) and decay_epochs > 0):
      raise ValueError(f'config.optim.decay_epochs = {decay_epochs!r}: the cosine schedule needs a positive number '
                       'of epochs (usually train.num_epochs).')
    return optax.cosine_decay_schedule(float(optim_config.learning_rate), decay_epochs * steps_per_epoch)
  boundaries = {int(epoch) * steps_per_epoch: float(optim_config.lr_drop_factor)
                for epoch in optim_config.lr_drop_epochs}
  return optax.piecewise_constant_schedule(float(optim_config.learning_rate), boundaries)


def create_optimizer(optim_config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer of `optim_config.name` with its schedule (weight decay is part of the loss, not of it)."""
  schedule = create_schedule(optim_config, steps_per_epoch)
  if optim_config.name == 'sgd_nesterov':
    return optax.sgd(schedule, momentum=float(optim_config.momentum), nesterov=True), schedule
  if optim_config.name == 'sgd_momentum':  # Heavy-ball SGD, as Adilova et al. (2023) train their MNIST nets.
    return optax.sgd(schedule, momentum=float(optim_config.momentum)), schedule
  if optim_config.name == 'adam':
    return optax.adam(schedule), schedule
  raise ValueError(f'config.optim.name = {optim_config.name!r}: expected one of {OPTIMIZERS}.')


def _decayed(path: tuple[Any, ...]) -> bool:
  return not any(getattr(entry, 'key', None) in NO_DECAY_PARAMS for entry in path)


def l2_penalty(params: Any) -> jax.Array:
  """Σ ||v||² / 2 over all trainable variables except NO_DECAY_PARAMS (the original's weight decay term)."""
  leaves = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0] if _decayed(path)]
  return 0.5 * sum((jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in leaves), jnp.float32(0.0))
