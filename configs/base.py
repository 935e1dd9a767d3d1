"""Shared structure of every experiment config; experiment files derive from `get_base_config()`.

Not an experiment itself. Fields (all overridable as --config.<section>.<field>=value):
  seed: root PRNG seed (init, data order, noise, evaluation noise all derive from it).
  task: what the trainer optimises and reports (`infodrop_jax.tasks.TASKS`): 'classification'.
  data: `infodrop_jax.data.config.get_config(name)`, the dataset and its preprocessing.
  model: the models contract (name, dropout, activation, max_alpha, filter_percentage, hidden_sizes, ...);
    noisy_layers: 1-based hidden layers of the MLP that carry the noise, () = every hidden layer.
  loss: beta (weight of Lz = Σ_layers KL / N_train) and weight_decay (Σ ||v||² / 2, prior μ/σ excluded).
  optim: name ('sgd_nesterov' | 'sgd_momentum' | 'adam'), learning_rate, momentum, schedule ('piecewise':
    ×lr_drop_factor at each of lr_drop_epochs | 'cosine': cosine decay to 0 over decay_epochs).
  train: num_epochs, batch_size (global), parallel ('jit' | 'pmap'), steps_per_call (steps per compiled call),
    log_every_steps, checkpoint_every_steps, keep_checkpoints, data_placement ('auto' | 'replicated' |
    'process_sharded': every device holds the whole train split, or each process only its 1/P share; 'auto' =
    replicated for one process, process_sharded for several), cpu_speedups ('auto' | 'on' | 'off': the model built
    from `infodrop_jax.cpu`'s parts and compiled with its XLA:CPU options; 'auto' = when JAX's default backend is
    the CPU; the same results to float rounding).
  eval: batch_size, every_epochs (0 = only at the end), bn_reestimate_steps (-1 = one pass over the train set as
    in the original, 0 = off, k = the first k train batches).
  distributed: enabled, coordinator_address, num_processes, process_id (-1: from the environment / cluster).
  logging: tensorboard, progress_bar, smoke (True in the :smoke variants: the run says that its numbers check the
    code, not the paper).
  information_plane: capture of I(X;Z) and I(Z;Y) per noisy layer during training (`infodrop_jax.information_plane`):
    enabled (off by default), every_epochs (k: at step 0 and every k epochs), num_examples (M train and M test
    examples, a fixed subset drawn from `seed`, independent of the training keys), num_noise_samples (noisy draws
    per example for the estimators and the noisy CE), chunk_size (samples per block of the mixture estimator),
    save_representations (noise-free representations and noise scales per capture, as npz) up to max_saved_mb.
"""
from __future__ import annotations

import ml_collections

from infodrop_jax.data import config as data_config


def get_base_config(dataset: str, **data_overrides) -> ml_collections.ConfigDict:
  """Every field with a neutral default; experiments override what their recipe sets."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = 'classification'
  config.data = data_config.get_config(dataset, **data_overrides)
  config.model = ml_collections.ConfigDict(dict(
      name='all_cnn_32', dropout='information', activation='relu', max_alpha=0.7, filter_percentage=1.0,
      hidden_sizes=(512, 128, 32), dropout_rate=0.5, input_dropout_rate=0.2, lognormal_alpha=0.5,
      bn_momentum=0.9, dtype='float32', noisy_layers=(), fuse_alpha=True))
  config.loss = ml_collections.ConfigDict(dict(beta=3.0, weight_decay=1e-3))
  config.optim = ml_collections.ConfigDict(dict(
      name='sgd_nesterov', learning_rate=0.05, momentum=0.9, lr_drop_epochs=(80, 120, 160), lr_drop_factor=0.1,
      schedule='piecewise', decay_epochs=0))
  config.train = ml_collections.ConfigDict(dict(
      num_epochs=200, batch_size=100, parallel='jit', steps_per_call=50, log_every_steps=100,
      checkpoint_every_steps=5000, keep_checkpoints=3, data_placement='auto', cpu_speedups='auto'))
  config.eval = ml_collections.ConfigDict(dict(batch_size=400, every_epochs=10, bn_reestimate_steps=-1))
  config.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator_address='', num_processes=-1, process_id=-1))
  config.logging = ml_collections.ConfigDict(dict(tensorboard=True, progress_bar=True, smoke=False))
  config.information_plane = ml_collections.ConfigDict(dict(
      enabled=False, every_epochs=2, num_examples=1000, num_noise_samples=1, chunk_size=256, seed=0,
      save_representations=False, max_saved_mb=64.0))
  return config


def smoke(config: ml_collections.ConfigDict, *, data_limit: int = 512, batch_size: int = 32,
          num_epochs: int = 2) -> ml_collections.ConfigDict:
  """The CPU smoke variant of an experiment: a few hundred real examples, a couple of short epochs, tiny model."""
  config.data.limit = data_limit
  if config.model.name == 'all_cnn_32':  # The only model with a filter_percentage; the others would warn.
    config.model.filter_percentage = min(config.model.filter_percentage, 0.1)
  config.model.hidden_sizes = tuple(min(h, 32) for h in config.model.hidden_sizes)
  config.train.batch_size = batch_size
  config.train.num_epochs = num_epochs
  config.train.steps_per_call = 4
  config.train.log_every_steps = 4
  config.train.checkpoint_every_steps = 8
  config.eval.batch_size = 64
  config.eval.every_epochs = 1
  config.eval.bn_reestimate_steps = 4
  config.optim.lr_drop_epochs = tuple(min(e, num_epochs) for e in config.optim.lr_drop_epochs[:1])
  config.logging.progress_bar = False
  config.logging.smoke = True
  return config


def parse_variant(config_string: str | None, allowed: tuple[str, ...] = ('', 'smoke')) -> str:
  """The `:variant` part of `--config=configs/x.py:variant`, checked against `allowed`."""
  variant = config_string or ''
  if variant not in allowed:
    raise ValueError(f'unknown config variant {variant!r}; expected one of {allowed} (e.g. configs/x.py:smoke).')
  return variant
