"""Training and evaluation: loss CE + beta·Lz + weight decay, data-parallel steps, evaluation D/N, resume.

    summary = train.train_and_evaluate(config, workdir)   # trains (resuming from workdir), evaluates, returns
    summary = train.evaluate_checkpoint(config, workdir)  # evaluates the latest checkpoint, no training

`train_step(state, batch, key)` is the pure step; the loop runs it `lax.scan`ned over chunks of steps that gather
their batches from the device-resident split (`infodrop_jax.data.pipeline`), compiled once per chunk length with
`jax.jit` on a data-parallel mesh ('jit' mode) or `jax.pmap` ('pmap' mode), donating the state. Progress, NaN
checks, metrics and checkpoints happen at chunk boundaries.

Randomness: one root key `PRNGKey(config.seed)` → init key, data-order key and the noise key kept in the state. The
noise key of step s is fold_in(state.key, s); under pmap it is further folded with the device index. Under 'jit'
the noise of the whole global batch is one draw sharded over devices (`jax_threefry_partitionable`, on by default
in current JAX, makes it independent of the sharding), so every example gets its own noise on every device count.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from infodrop_jax import checkpoint as checkpoint_lib
from infodrop_jax import kl as kl_lib
from infodrop_jax import layers
from infodrop_jax import metrics as metrics_lib
from infodrop_jax import models
from infodrop_jax import optim
from infodrop_jax import parallel as parallel_lib
from infodrop_jax.data import pipeline as pipeline_lib
from infodrop_jax.data import preprocess

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics and the base noise key (saved with the checkpoint)."""
  batch_stats: Any = None
  key: jax.Array | None = None


# --- configuration checks ----------------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ValueError naming the first invalid field and the allowed values. Call before compiling anything."""
  def check(ok: bool, field: str, expected: str) -> None:
    if not ok:
      value = config
      for part in field.split('.'):
        value = value[part]
      raise ValueError(f'config.{field} = {value!r}: expected {expected}.')

  check(config.model.name in models.MODEL_NAMES, 'model.name', f'one of {models.MODEL_NAMES}')
  check(config.model.dropout in layers.METHODS, 'model.dropout', f'one of {layers.METHODS}')
  check(config.model.activation in layers.ACTIVATIONS, 'model.activation', f'one of {tuple(layers.ACTIVATIONS)}')
  check(config.model.dtype in models.DTYPES, 'model.dtype', f'one of {tuple(models.DTYPES)}')
  check(0 < config.model.max_alpha, 'model.max_alpha', 'a positive float')
  check(0 < config.model.filter_percentage <= 1, 'model.filter_percentage', 'a float in (0, 1]')
  check(0 <= config.model.dropout_rate < 1, 'model.dropout_rate', 'a drop probability in [0, 1)')
  check(0 <= config.model.input_dropout_rate < 1, 'model.input_dropout_rate', 'a drop probability in [0, 1)')
  check(all(int(h) > 0 for h in config.model.hidden_sizes), 'model.hidden_sizes', 'positive ints')
  check(config.loss.beta >= 0 and math.isfinite(config.loss.beta), 'loss.beta', 'a finite float >= 0')
  check(config.loss.weight_decay >= 0, 'loss.weight_decay', 'a float >= 0')
  check(config.optim.name in optim.OPTIMIZERS, 'optim.name', f'one of {optim.OPTIMIZERS}')
  check(config.optim.learning_rate > 0, 'optim.learning_rate', 'a positive float')
  check(0 <= config.optim.momentum < 1, 'optim.momentum', 'a float in [0, 1)')
  check(all(int(e) > 0 for e in config.optim.lr_drop_epochs), 'optim.lr_drop_epochs', 'positive epochs')
  check(config.train.num_epochs > 0, 'train.num_epochs', 'a positive int')
  check(config.train.parallel in parallel_lib.MODES, 'train.parallel', f'one of {parallel_lib.MODES}')
  placements = ('auto',) + pipeline_lib.PLACEMENTS
  check(config.train.data_placement in placements, 'train.data_placement', f'one of {placements}')
  for field in ('steps_per_call', 'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    check(config.train[field] > 0, f'train.{field}', 'a positive int')
  check(config.eval.every_epochs >= 0, 'eval.every_epochs', 'an int >= 0 (0 = only at the end)')
  check(config.eval.bn_reestimate_steps >= -1, 'eval.bn_reestimate_steps',
        'an int >= -1 (-1 = one pass over the training set, 0 = off)')
  if num_devices is not None:
    for field in ('train.batch_size', 'eval.batch_size'):
      size = config.train.batch_size if field == 'train.batch_size' else config.eval.batch_size
      check(size > 0 and size % num_devices == 0, field,
            f'a positive multiple of the device count ({num_devices})')


# --- the step ----------------------------------------------------------------------------------------------------


def _variables(params: Any, batch_stats: Any) -> dict[str, Any]:
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def train_step(state: TrainState, batch: Batch, key: jax.Array, *, beta: float, n_train: int,
               weight_decay: float, learning_rate_fn: optax.Schedule,
               axis_name: str | None = None) -> tuple[TrainState, Metrics]:
  """One optimisation step on `batch` with noise key `key`: loss = CE + beta·Lz + weight_decay·Σ||v||²/2.

  Args:
    state: the train state (this device's replica under pmap).
    batch: {'images': float32 NHWC, 'labels': int32} (this device's slice under pmap).
    key: the noise key of this step (fold_in(base, step)); folded with the device index under pmap.
    beta, n_train, weight_decay: loss hyperparameters; Lz = kl.total_kl(kl collection, n_train).
    learning_rate_fn: the optimizer's schedule, for the `learning_rate` metric.
    axis_name: the pmap axis; gradients, BatchNorm statistics and metrics are averaged over it. None under jit.

  Returns:
    The new state and metrics: loss, ce, beta_lz, kl/<layer> (nats per example, summed over units), accuracy,
    grad_norm, learning_rate, param_norm (after the update).
  """
  if axis_name is not None:
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  mutable = ['batch_stats', kl_lib.KL_COLLECTION] if state.batch_stats else [kl_lib.KL_COLLECTION]

  def loss_fn(params):
    logits, updates = state.apply_fn(_variables(params, state.batch_stats), batch['images'], deterministic=False,
                                     use_running_average=False, rngs={'noise': key}, mutable=mutable)
    logits = logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels']).mean()
    kl_collection = updates.get(kl_lib.KL_COLLECTION)
    beta_lz = beta * kl_lib.total_kl(kl_collection, n_train)
    loss = ce + beta_lz + weight_decay * optim.l2_penalty(params)
    metrics = {'loss': loss, 'ce': ce, 'beta_lz': beta_lz,
               'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['labels'])}
    metrics.update({f'kl/{name}': value for name, value in kl_lib.kl_per_layer(kl_collection).items()})
    return loss, (metrics, updates.get('batch_stats'))

  grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    # Equal shards: the mean of per-device means is the global mean. BatchNorm: the per-device variances are
    # averaged, not pooled (pooling would add the spread of the per-device means).
    grads, metrics, batch_stats = jax.lax.pmean((grads, metrics, batch_stats), axis_name)
  metrics['grad_norm'] = optax.tree.norm(grads)
  metrics['learning_rate'] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  # The loss is computed before the update: an update that blows the weights up shows only here.
  metrics['param_norm'] = optax.tree.norm(new_state.params)
  return new_state, metrics


# --- setup ---------------------------------------------------------------------------------------------------------


def _root_keys(seed: int) -> dict[str, jax.Array]:
  root = jax.random.PRNGKey(seed)
  return {name: jax.random.fold_in(root, i) for i, name in enumerate(
      ('init', 'data', 'noise', 'eval', 'bn_reestimate', 'binarize', 'eval_binarize'))}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, sample_images: np.ndarray,
                       keys: Mapping[str, jax.Array], parallel: parallel_lib.Parallel) -> TrainState:
  """Initialises the state directly in the global replicated layout (every process computes the same values)."""
  def init():
    variables = model.init({'params': keys['init'], 'noise': keys['init']}, jnp.asarray(sample_images),
                           deterministic=False, use_running_average=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                             batch_stats=variables.get('batch_stats'), key=keys['noise'])
  abstract = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: parallel.replicated, abstract)
  return jax.jit(init, out_shardings=shardings)()


class _Run:
  """Everything a training or evaluation run needs, built (and validated) before any compile."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, model: nn.Module | None,
               splits: Any | None, read_only: bool = False):
    parallel = parallel_lib.Parallel.create(config.train.parallel)
    validate_config(config, parallel.num_devices)
    if read_only:
      if not os.path.isdir(workdir):
        raise ValueError(f'--workdir {workdir!r} does not exist; nothing to evaluate.')
    else:
      checkpoint_lib.check_workdir(workdir)
    if splits is None:
      from infodrop_jax import data  # pylint: disable=g-import-not-at-top
      splits = data.load(config.data)
    self.config, self.workdir, self.parallel, self.splits = config, workdir, parallel, splits
    self.keys = _root_keys(int(config.seed))
    self.n_train = int(splits.train.labels.shape[0])
    self.train_data = pipeline_lib.InMemoryPipeline(splits.train, int(config.train.batch_size), parallel,
                                                    key=self.keys['data'], name='config.train.batch_size',
                                                    placement=config.train.data_placement)
    self.test_data = pipeline_lib.InMemoryPipeline(splits.test, int(config.eval.batch_size), parallel,
                                                   key=self.keys['data'], shuffle=False,
                                                   name='config.eval.batch_size')
    self.steps_per_epoch = self.train_data.steps_per_epoch
    self.total_steps = int(config.train.num_epochs) * self.steps_per_epoch
    self.model = model if model is not None else models.create_model(config.model, splits.num_classes)
    self.tx, self.schedule = optim.create_optimizer(config.optim, self.steps_per_epoch)
    self.checkpointer = checkpoint_lib.Checkpointer(workdir, max_to_keep=int(config.train.keep_checkpoints),
                                                    read_only=read_only)
    self.step_kwargs = dict(beta=float(config.loss.beta), n_train=self.n_train,
                            weight_decay=float(config.loss.weight_decay), learning_rate_fn=self.schedule)
    self.binarize = config.data.get('preprocess') == 'binarize_stochastic'
    self._chunk_fns: dict[int, Callable[..., Any]] = {}
    self._eval_fn = None
    self._bn_order = None

  def model_inputs(self, batch: Batch, key: jax.Array, axis_name: str | None = None) -> Batch:
    """The batch as the model sees it: with preprocess='binarize_stochastic', a fresh binarisation per use.

    The data stays in [0, 1] on device for that preprocessing; every step (and every evaluation batch) draws its
    own Bernoulli pixels from `key`, folded with the device index under pmap so devices draw independently.
    """
    if not self.binarize:
      return batch
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    return {**batch, 'images': preprocess.binarize_stochastic(batch['images'], key)}

  def initial_state(self) -> TrainState:
    """A fresh state, or the latest checkpoint's (global layout)."""
    state = create_train_state(self.model, self.tx, self.splits.train.images[:1].astype(np.float32),
                               self.keys, self.parallel)
    if self.checkpointer.latest_step() is not None:
      state = self.checkpointer.restore(state)
    return state

  # --- compiled pieces ---

  def _chunk_fn(self, length: int) -> Callable[..., Any]:
    """`length` steps in one call: (state, arrays, order) → (state, metrics stacked over steps)."""
    if length not in self._chunk_fns:
      def chunk(state, arrays, order, axis_name=None):
        def one_step(state, _):
          position = state.step % self.steps_per_epoch
          batch = self.train_data.gather_train_batch(arrays, order, position, axis_name)
          batch = self.model_inputs(batch, jax.random.fold_in(self.keys['binarize'], state.step), axis_name)
          key = jax.random.fold_in(state.key, state.step)
          return train_step(state, batch, key, axis_name=axis_name, **self.step_kwargs)
        return jax.lax.scan(one_step, state, length=length)
      self._chunk_fns[length] = self.parallel.compile(chunk, donate_argnums=(0,))
    return self._chunk_fns[length]

  def _evaluate_fn(self) -> Callable[..., Any]:
    """(state, train arrays, BN pass order, test arrays) → sums over the test set: BN re-estimation, D, N."""
    if self._eval_fn is None:
      test, train = self.test_data, self.train_data
      bn_steps = int(self.config.eval.bn_reestimate_steps)
      bn_steps = train.steps_per_epoch if bn_steps == -1 else min(bn_steps, train.steps_per_epoch)
      eval_key = self.keys['eval']
      exact_bn = 'bn_momentum' in getattr(self.model, '__dataclass_fields__', {})
      bn_apply = self.model.clone(bn_momentum=0.0).apply if exact_bn else self.model.apply

      def evaluate(state, train_arrays, bn_order, test_arrays, axis_name=None):
        batch_stats = state.batch_stats
        if batch_stats and bn_steps:
          # The original's re-estimation: one pass over the training set with the noise off and BatchNorm in
          # training mode. Its moving average (decay 0.9 over 500 CIFAR batches) forgets the noisy training
          # statistics, but at decay 0.999 (Cluttered MNIST) one pass would keep about 70 % of them. So for models
          # with a `bn_momentum` field (all of `infodrop_jax.models`) a copy at momentum 0 yields each batch's own
          # statistics, which are averaged exactly; other models get the original's moving-average pass. The
          # original walks its unsorted CIFAR batches in stored order; a class-sorted set (the JPEG proxy, image
          # folders) would bias both, so the pass visits the examples in a fixed random order (`bn_order`, from the
          # key 'bn_reestimate'; per process when the training data is process-sharded).
          def bn_update(i, stats):
            batch = train.gather_train_batch(train_arrays, bn_order, i, axis_name)
            batch = self.model_inputs(batch, jax.random.fold_in(self.keys['eval_binarize'], i), axis_name)
            _, updates = bn_apply(_variables(state.params, stats), batch['images'], deterministic=True,
                                  use_running_average=False, mutable=['batch_stats'])
            stats = updates['batch_stats']
            return jax.lax.pmean(stats, axis_name) if axis_name else stats

          if exact_bn:
            batch_stats = jax.lax.fori_loop(
                0, bn_steps, lambda i, mean: jax.tree.map(lambda m, b: m + (b - m) / (i + 1), mean, bn_update(i, mean)),
                batch_stats)
          else:
            batch_stats = jax.lax.fori_loop(0, bn_steps, bn_update, batch_stats)
        variables = _variables(state.params, batch_stats)

        def test_pass(deterministic):
          def batch_sums(i):
            batch = test.gather_eval_batch(test_arrays, i, axis_name)
            batch = self.model_inputs(batch, jax.random.fold_in(self.keys['eval_binarize'], i), axis_name)
            key = jax.random.fold_in(eval_key, i)
            if axis_name:
              key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
            logits, updates = state.apply_fn(variables, batch['images'], deterministic=deterministic,
                                             use_running_average=True, rngs={'noise': key},
                                             mutable=[kl_lib.KL_COLLECTION])
            logits = logits.astype(jnp.float32)
            mask = batch['mask'].astype(jnp.float32)
            # kl_per_layer averages over the batch; masking the maps and scaling by the batch size gives the sum
            # over the real (unpadded) examples.
            masked_kl = jax.tree.map(lambda m: m * mask.reshape((-1,) + (1,) * (m.ndim - 1)),
                                     updates.get(kl_lib.KL_COLLECTION))
            sums = {'correct': jnp.sum(mask * (jnp.argmax(logits, -1) == batch['labels'])),
                    'ce': jnp.sum(mask * optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels'])),
                    'count': jnp.sum(mask)}
            sums.update({f'kl/{k}': v * mask.shape[0] for k, v in kl_lib.kl_per_layer(masked_kl).items()})
            return jax.lax.psum(sums, axis_name) if axis_name else sums

          return jax.lax.fori_loop(1, test.steps_per_epoch, lambda i, sums: jax.tree.map(jnp.add, sums, batch_sums(i)),
                                   batch_sums(0))

        return test_pass(True), test_pass(False)
      self._eval_fn = self.parallel.compile(evaluate)
    return self._eval_fn

  # --- host-side driving ---

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """Test error with the noise off (D) and on (N), CE and per-layer KL (nats/example) on the test set.

    `state` is in the step's layout; the BatchNorm re-estimation only affects this evaluation, not training.
    """
    if self._bn_order is None:
      self._bn_order = self.train_data.fixed_order(self.keys['bn_reestimate'])
    sums_d, sums_n = self._evaluate_fn()(state, self.train_data.arrays, self._bn_order, self.test_data.arrays)
    sums_d, sums_n = (self.parallel.first_step_replica(s) for s in (sums_d, sums_n))
    count = float(sums_d['count'])
    result = {'test/error_d': 1.0 - float(sums_d['correct']) / count,
              'test/error_n': 1.0 - float(sums_n['correct']) / count,
              'test/ce_d': float(sums_d['ce']) / count, 'test/ce_n': float(sums_n['ce']) / count}
    # The KL depends on the noise only through its parameters, so the noisy pass reports it for every method.
    result.update({f'test/{k}': float(v) / count for k, v in sums_n.items() if k.startswith('kl/')})
    return result

  def save(self, state: TrainState) -> None:
    self.checkpointer.save(self.parallel.to_global(state), self.config)

  def next_boundary(self, step: int) -> int:
    """The next step at which the loop must surface: chunk end, log, checkpoint, epoch end or the last step."""
    train = self.config.train
    candidates = [self.total_steps, (step // self.steps_per_epoch + 1) * self.steps_per_epoch]
    for every in (train.steps_per_call, train.log_every_steps, train.checkpoint_every_steps):
      candidates.append((step // every + 1) * every)
    return min(candidates)


def _raise_non_finite(metrics: Mapping[str, np.ndarray], first_step: int, checkpointer: checkpoint_lib.Checkpointer):
  """Stops at the first step whose loss, gradient or updated parameters are not finite (steps count from 1)."""
  bad = ~(np.isfinite(metrics['loss']) & np.isfinite(metrics['grad_norm']) & np.isfinite(metrics['param_norm']))
  if bad.any():
    i = int(np.argmax(bad))
    checkpointer.wait()
    raise FloatingPointError(
        f'non-finite training at step {first_step + i + 1} (loss={metrics["loss"][i]}, ce={metrics["ce"][i]}, '
        f'beta_lz={metrics["beta_lz"][i]}, grad_norm={metrics["grad_norm"][i]}, '
        f'param_norm={metrics["param_norm"][i]}); training stopped. The last good checkpoint is step '
        f'{checkpointer.latest_step()} in {checkpointer.directory}.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, model: nn.Module | None = None,
                       splits: Any | None = None) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, and returns the summary.

  Args:
    config: the experiment config (see configs/base.py).
    workdir: checkpoints, metrics.jsonl, TensorBoard events, config.json and summary.json go here.
    model: a Linen module following the models contract; default models.create_model(config.model, ...).
    splits: a `data.DatasetSplits`; default data.load(config.data).

  Returns:
    The final summary: test/error_d, test/error_n, test/ce_*, test/kl/<layer>, steps, epochs, wall_time_s.
  """
  start_time = time.perf_counter()
  run = _Run(config, workdir, model=model, splits=splits)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2))
  writer = None
  try:
    state = run.initial_state()
    step = int(jax.device_get(state.step))
    writer = metrics_lib.MetricWriter(workdir, tensorboard=bool(config.logging.tensorboard), resume_step=step)
    if step and jax.process_index() == 0:
      print(f'Resuming from the checkpoint at step {step} in {run.checkpointer.directory}.', flush=True)
    state = run.parallel.to_device_layout(state)
    progress = metrics_lib.ProgressBar(run.total_steps, run.train_data.batch_size,
                                       enabled=bool(config.logging.progress_bar))
    progress.start(step)
    logged_step, logged_time = step, time.perf_counter()
    order_epoch, order = None, None
    pending: list[dict[str, np.ndarray]] = []
    eval_every = int(config.eval.every_epochs)
    while step < run.total_steps:
      epoch = step // run.steps_per_epoch
      if epoch != order_epoch:
        order_epoch, order = epoch, run.train_data.order(epoch)
      boundary = run.next_boundary(step)
      state, chunk_metrics = run._chunk_fn(boundary - step)(state, run.train_data.arrays, order)
      chunk_metrics = run.parallel.first_step_replica(chunk_metrics)
      _raise_non_finite(chunk_metrics, step, run.checkpointer)
      pending.append(chunk_metrics)
      step = boundary
      epoch_end = step % run.steps_per_epoch == 0
      progress.update(step, step // run.steps_per_epoch, float(chunk_metrics['loss'][-1]))
      if step % config.train.log_every_steps == 0 or epoch_end or step == run.total_steps:
        means = {k: float(np.mean(np.concatenate([m[k] for m in pending]))) for k in pending[0]}
        now = time.perf_counter()
        images_per_sec = (step - logged_step) * run.train_data.batch_size / (now - logged_time)
        logged_step, logged_time = step, now
        writer.write(step, {**means, 'epoch': step / run.steps_per_epoch, 'images_per_sec': images_per_sec},
                     prefix='train/')
        pending = []
      if step % config.train.checkpoint_every_steps == 0 or step == run.total_steps:
        run.save(state)
      if epoch_end and eval_every and (step // run.steps_per_epoch) % eval_every == 0 and step < run.total_steps:
        writer.write(step, run.evaluate(state))
    progress.finish()
    if run.checkpointer.latest_step() != step:
      run.save(state)
    summary = run.evaluate(state)
    writer.write(step, summary)
    summary.update(steps=step, epochs=step / run.steps_per_epoch, wall_time_s=time.perf_counter() - start_time)
    metrics_lib.write_summary(workdir, summary)
    if jax.process_index() == 0:
      print(metrics_lib.format_summary(summary), flush=True)
    return summary
  finally:
    if writer is not None:
      writer.close()
    run.checkpointer.close()


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *, model: nn.Module | None = None,
                        splits: Any | None = None, step: int | None = None) -> dict[str, Any]:
  """Evaluates the checkpoint at `step` (default: latest) in `workdir` without training; returns the summary."""
  start_time = time.perf_counter()
  run = _Run(config, workdir, model=model, splits=splits, read_only=True)
  try:
    if run.checkpointer.latest_step() is None:
      raise FileNotFoundError(f'--mode=eval: no checkpoint in {run.checkpointer.directory}; train first.')
    template = create_train_state(run.model, run.tx, run.splits.train.images[:1].astype(np.float32), run.keys,
                                  run.parallel)
    state = run.checkpointer.restore(template, step)
    summary = run.evaluate(run.parallel.to_device_layout(state))
    summary.update(steps=int(jax.device_get(state.step)), wall_time_s=time.perf_counter() - start_time)
    if jax.process_index() == 0:
      print(metrics_lib.format_summary(summary), flush=True)
    return summary
  finally:
    run.checkpointer.close()
