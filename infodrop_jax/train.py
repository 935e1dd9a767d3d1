"""Training and evaluation: loss CE + beta·Lz + weight decay, data-parallel steps, evaluation D/N, resume.

    summary = train.train_and_evaluate(config, workdir)   # trains (resuming from workdir), evaluates, returns
    summary = train.evaluate_checkpoint(config, workdir)  # evaluates the latest checkpoint, no training
    with train.restore(workdir) as restored:              # opens a trained run: config, model, state, splits
      restored.run.evaluate(restored.state)

`restore` is the one public way to open a run from its workdir; evaluation, `--mode=analyze` and the VAE analysis
use it, and hooks receive the same `Run`.

`train_step(state, batch, key)` is the pure step; the loop runs it `lax.scan`ned over chunks of steps that gather
their batches from the device-resident split (`infodrop_jax.data.pipeline`), compiled once per chunk length with
`jax.jit` on a data-parallel mesh ('jit' mode) or `jax.pmap` ('pmap' mode), donating the state. Progress, NaN
checks, metrics and checkpoints happen at chunk boundaries.

CPU speed-ups (`infodrop_jax.cpu`) are switched by `config.train.cpu_speedups` ('auto': when JAX's default backend
is the CPU): the model is then built from the CPU parts (`cpu.model_parts()`) and compiled with the XLA:CPU options
(`cpu.xla.compiler_options()`); otherwise it is plain Flax with XLA's defaults. Under pmap the models' BatchNorm
averages its statistics across devices (`axis_name`), so every device count trains the same model.

Randomness: one root key `PRNGKey(config.seed)` → init key, data-order key and the noise key kept in the state. The
noise key of step s is fold_in(state.key, s); under pmap it is further folded with the device index. Under 'jit'
the noise of the whole global batch is one draw sharded over devices (`jax_threefry_partitionable`, on by default
in current JAX, makes it independent of the sharding), so every example gets its own noise on every device count.
"""
from __future__ import annotations

import functools
import json
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
from absl import logging
from flax.training import train_state

from infodrop_jax import checkpoint as checkpoint_lib
from infodrop_jax import config_checks
from infodrop_jax import config_diff
from infodrop_jax import cpu
from infodrop_jax import information_plane
from infodrop_jax import kl as kl_lib
from infodrop_jax import metrics as metrics_lib
from infodrop_jax import optim
from infodrop_jax import ownership
from infodrop_jax import parallel as parallel_lib
from infodrop_jax import stopping
from infodrop_jax import tasks
from infodrop_jax.cpu import convolution as cpu_convolution
from infodrop_jax.cpu import xla as cpu_xla
from infodrop_jax.data import config as data_config
from infodrop_jax.data import pipeline as pipeline_lib
from infodrop_jax.data import preprocess

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics and the base noise key (saved with the checkpoint)."""
  batch_stats: Any = None
  key: jax.Array | None = None


# --- configuration checks ----------------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None = None,
                    task: tasks.Task | None = None) -> None:
  """Raises ValueError naming the first invalid field and the allowed values. Call before compiling anything.

  The trainer's own fields are checked here, the model's and loss's by the task (`tasks.Task.validate_config`).
  """
  check = config_checks.checker(config)
  if task is None:
    check(tasks.task_name(config) in tasks.TASKS, 'task', f'one of {tuple(tasks.TASKS)}')
    task = tasks.create_task(config)
  task.validate_config(config, check)
  real, integer = config_checks.is_finite_real, config_checks.is_int
  check(real(config.loss.beta) and config.loss.beta >= 0, 'loss.beta', 'a finite float >= 0')
  check(real(config.loss.weight_decay) and config.loss.weight_decay >= 0, 'loss.weight_decay', 'a finite float >= 0')
  check(config.optim.name in optim.OPTIMIZERS, 'optim.name', f'one of {optim.OPTIMIZERS}')
  check(real(config.optim.learning_rate) and config.optim.learning_rate > 0, 'optim.learning_rate',
        'a finite positive float')
  check(real(config.optim.momentum) and 0 <= config.optim.momentum < 1, 'optim.momentum', 'a float in [0, 1)')
  schedule = config.optim.get('schedule', 'piecewise')
  check(schedule in optim.SCHEDULES, 'optim.schedule', f'one of {optim.SCHEDULES}')
  if schedule == 'piecewise':
    drops = config.optim.lr_drop_epochs
    # 1.5 would silently become epoch 1: drops happen at whole epochs only.
    check(isinstance(drops, (tuple, list)) and all(
        (integer(e) or real(e) and float(e).is_integer()) and e > 0 for e in drops), 'optim.lr_drop_epochs',
          'a tuple of whole positive epochs, e.g. (80, 120)')
    check(real(config.optim.lr_drop_factor) and config.optim.lr_drop_factor > 0, 'optim.lr_drop_factor',
          'a finite positive float (0.1 divides the learning rate by 10)')
  else:
    check(integer(config.optim.get('decay_epochs')) and config.optim.decay_epochs > 0, 'optim.decay_epochs',
          'a positive int (the cosine schedule decays to 0 over that many epochs; usually train.num_epochs)')
  check(integer(config.seed) and 0 <= config.seed < 2**32, 'seed', 'an int in [0, 2**32)')
  check(integer(config.train.num_epochs) and config.train.num_epochs > 0, 'train.num_epochs', 'a positive int')
  check(integer(config.train.batch_size) and config.train.batch_size > 0, 'train.batch_size', 'a positive int')
  check(integer(config.eval.batch_size) and config.eval.batch_size > 0, 'eval.batch_size', 'a positive int')
  check(config.train.parallel in parallel_lib.MODES, 'train.parallel', f'one of {parallel_lib.MODES}')
  check(config.train.get('cpu_speedups', 'auto') in cpu.SETTINGS, 'train.cpu_speedups',
        f"one of {cpu.SETTINGS} ('auto': on when JAX's default backend is the CPU)")
  placements = ('auto',) + pipeline_lib.PLACEMENTS
  check(config.train.data_placement in placements, 'train.data_placement', f'one of {placements}')
  for field in ('steps_per_call', 'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    check(integer(config.train[field]) and config.train[field] > 0, f'train.{field}', 'a positive int')
  check(integer(config.eval.every_epochs) and config.eval.every_epochs >= 0, 'eval.every_epochs',
        'an int >= 0 (0 = only at the end)')
  check(integer(config.eval.bn_reestimate_steps) and config.eval.bn_reestimate_steps >= -1,
        'eval.bn_reestimate_steps', 'an int >= -1 (-1 = one pass over the training set, 0 = off)')
  if config.get('distributed') is not None:
    parallel_lib.validate_distributed(config.distributed)
  if config.get('data') is not None and 'name' in config.data:
    data_config.validate(config.data)
  if num_devices is not None:
    for field in ('train.batch_size', 'eval.batch_size'):
      size = config.train.batch_size if field == 'train.batch_size' else config.eval.batch_size
      check(size > 0 and size % num_devices == 0, field,
            f'a positive multiple of the device count ({num_devices})')


# --- the step ----------------------------------------------------------------------------------------------------


def _variables(params: Any, batch_stats: Any) -> dict[str, Any]:
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def train_step(state: TrainState, batch: Batch, key: jax.Array, *, beta: float, n_train: int, weight_decay: float,
               learning_rate_fn: optax.Schedule, task: tasks.Task = tasks.Classification(),
               axis_name: str | None = None) -> tuple[TrainState, Metrics]:
  """One optimisation step on `batch` with noise key `key`: loss = task loss + weight_decay·Σ||v||²/2.

  Args:
    state: the train state (this device's replica under pmap).
    batch: {'images': float32 NHWC, 'labels': int32, ...} (this device's slice under pmap).
    key: the noise key of this step (fold_in(base, step)); folded with the device index under pmap.
    task: the objective (`tasks.Task`); for classification CE + beta·Lz with Lz = kl.total_kl(kl collection, n_train).
    beta, n_train, weight_decay: loss hyperparameters.
    learning_rate_fn: the optimizer's schedule, for the `learning_rate` metric.
    axis_name: the pmap axis; gradients, BatchNorm statistics and metrics are averaged over it. None under jit.

  Returns:
    The new state and metrics: loss, the task's metrics (classification: ce, beta_lz, kl/<layer> in nats per
    example summed over units, accuracy), grad_norm, learning_rate, param_norm (after the update).
  """
  if axis_name is not None:
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  mutable = ['batch_stats', kl_lib.KL_COLLECTION] if state.batch_stats else [kl_lib.KL_COLLECTION]

  def loss_fn(params):
    outputs, updates = state.apply_fn(_variables(params, state.batch_stats), batch['images'], deterministic=False,
                                      use_running_average=False, rngs={'noise': key}, mutable=mutable)
    task_loss, metrics = task.loss(outputs, batch, updates.get(kl_lib.KL_COLLECTION), beta=beta, n_train=n_train)
    loss = task_loss + weight_decay * optim.l2_penalty(params)
    return loss, ({'loss': loss, **metrics}, updates.get('batch_stats'))

  grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    # Equal shards: the mean of per-device means is the global mean. Our models' BatchNorm already averaged its
    # statistics across devices (`axis_name`), so every replica holds the same ones; a model of your own without
    # that gets the average of its per-device statistics, so the replicas at least stay equal.
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


def _state_initializer(model: nn.Module, tx: optax.GradientTransformation, sample_images: np.ndarray,
                       keys: Mapping[str, jax.Array]) -> Callable[[], TrainState]:
  def init():
    variables = model.init({'params': keys['init'], 'noise': keys['init']}, jnp.asarray(sample_images),
                           deterministic=False, use_running_average=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                             batch_stats=variables.get('batch_stats'), key=keys['noise'])
  return init


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, sample_images: np.ndarray,
                       keys: Mapping[str, jax.Array], parallel: parallel_lib.Parallel) -> TrainState:
  """Initialises the state directly in the global replicated layout (every process computes the same values)."""
  init = _state_initializer(model, tx, sample_images, keys)
  abstract = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: parallel.replicated, abstract)
  return jax.jit(init, out_shardings=shardings)()


class Run:
  """Everything a training or evaluation run needs, built (and validated) before any compile.

  Public, for hooks and analyses: `config`, `workdir`, `model`, `splits`, `task`, `parallel`, `steps_per_epoch`,
  `total_steps`, `checkpointer`, `writer` (during training), `evaluate(state)`, `evaluation_variables(state)`,
  `model_inputs(batch, key)`. Open a trained run with `restore`.

  Args:
    config: the experiment config (validated here).
    workdir: the run's directory.
    model: a model of your own (used as it is); default the task's, built from Flax's parts or, with CPU speed-ups
      on, from `cpu.model_parts()`, with BatchNorm synchronised across devices under pmap.
    splits: the data; default `data.load(config.data)`.
    read_only: open an existing workdir without writing to it (evaluation, analysis).
    task: the objective; default the one `config.task` names.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, model: nn.Module | None = None,
               splits: Any | None = None, read_only: bool = False, task: tasks.Task | None = None):
    backend = jax.default_backend()
    self.cpu_speedups = cpu.enabled(config.train.get('cpu_speedups', 'auto'), backend)
    parallel = parallel_lib.Parallel.create(
        config.train.parallel, compiler_options=cpu_xla.compiler_options() if self.cpu_speedups and
        backend == 'cpu' else None)
    task = task if task is not None else tasks.create_task(config) if tasks.task_name(config) in tasks.TASKS else None
    validate_config(config, parallel.num_devices, task)
    if read_only:
      if not os.path.isdir(workdir):
        raise ValueError(f'--workdir {workdir!r} does not exist; nothing to evaluate.')
    else:
      checkpoint_lib.check_workdir(workdir)
    if splits is None:
      from infodrop_jax import data  # pylint: disable=g-import-not-at-top  (loads TFDS: only when needed)
      splits = data.load(config.data)
    n_test = int(splits.test.labels.shape[0])
    most = -(-n_test // parallel.num_devices) * parallel.num_devices
    if int(config.eval.batch_size) > most:
      raise ValueError(f'config.eval.batch_size = {config.eval.batch_size}: expected at most {most} (the test split '
                       f'has {n_test} examples; a larger batch would only evaluate padding).')
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
    self.task = task
    self.model = model if model is not None else task.create_model(config, splits, **self._model_parts())
    self.tx, self.schedule = optim.create_optimizer(config.optim, self.steps_per_epoch)
    self.checkpointer = checkpoint_lib.Checkpointer(workdir, max_to_keep=int(config.train.keep_checkpoints),
                                                    read_only=read_only)
    self.step_kwargs = dict(task=task, beta=float(config.loss.beta), n_train=self.n_train,
                            weight_decay=float(config.loss.weight_decay), learning_rate_fn=self.schedule)
    self.binarize = config.data.get('preprocess') == 'binarize_stochastic'
    self._chunk_fns: dict[int, Callable[..., Any]] = {}
    self.writer: metrics_lib.MetricWriter | None = None  # Set by train_and_evaluate (hooks read what it logged).
    self._eval_fn = None
    self._bn_order = None
    # One compiled re-estimation step and one test batch, for the host-driven loops (compiled on first use).
    self._host_bn_fn = parallel.jit(self._bn_body)
    self._host_test_fn = parallel.jit(self._test_body, static_argnums=3)

  def _model_parts(self) -> dict[str, Any]:
    """What the task builds its model from beyond Flax's defaults: the CPU parts when the speed-ups are on, and
    under pmap the axis BatchNorm averages its statistics over (so pmap trains the model one device does)."""
    parts = cpu.model_parts() if self.cpu_speedups else {}
    if self.parallel.mode == 'pmap':
      parts['axis_name'] = parallel_lib.AXIS
    return parts

  @functools.cached_property
  def host_loops(self) -> bool:
    """Whether the loops over training, re-estimation and test batches are driven from the host, one compiled
    step per call with no loop inside, instead of compiled (`lax.scan`).

    XLA:CPU rewrites convolutions into the NHWC/HWIO form its fast (Eigen) kernels take only in the entry
    computation (its ConvCanonicalization pass visits nothing else). The gradient convolutions JAX emits for a
    plain nn.Conv are not in that form, so inside any compiled loop, or a scan of length 1, they fall back to a
    naive loop nest: a train step of All-CNN-96 at 48x48, batch 128, took 64 s there and 1.8 s outside
    (benchmarks/RESULTS.md). The CPU speed-ups' convolutions (`cpu.convolution.Conv`, `ConvTranspose`) emit that
    form themselves, and compiled loops are then 2-13 % faster than host-driven steps (benchmarks/RESULTS.md). So
    on a single CPU device, whatever `cpu_speedups` says, the loops are host-driven only when the step has a
    convolution in another form (`cpu.convolution.loop_unsafe_convolutions`, checked on the step lowered for
    abstract inputs, no compile); it is named once in the log. Several (forced) CPU devices always keep the
    compiled loops: driving 8 of them step by step has aborted XLA:CPU.
    """
    if not (self.parallel.mode == 'jit' and self.parallel.num_devices == 1
            and self.parallel.mesh.devices.flat[0].platform == 'cpu'):
      return False
    unsafe = self.loop_unsafe_convolutions()
    if unsafe:
      logging.warning('Training loops driven from the host, one step per call: inside a compiled loop XLA:CPU would '
                      'run %d convolution(s) of the step as a naive loop nest (the CPU speed-ups, '
                      "config.train.cpu_speedups, avoid that for our models), e.g. %s", len(unsafe),
                      unsafe[0][:300])
    return bool(unsafe)

  def loop_unsafe_convolutions(self) -> list[str]:
    """`cpu.convolution.loop_unsafe_convolutions` of one training step, lowered for this run's shapes (no compile)."""
    sample = self.splits.train.images[:1].astype(np.float32)
    state = jax.eval_shape(_state_initializer(self.model, self.tx, sample, self.keys))
    lowered = self._chunk_fn(1).lower(state, self.train_data.arrays, self.train_data.order(0))
    return cpu_convolution.loop_unsafe_convolutions(lowered.as_text())

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

  def device_record(self) -> dict[str, Any]:
    """What the run ran on, for summary.json: device count and kind, the parallel mode, and whether the CPU
    speed-ups (`infodrop_jax.cpu`) were on."""
    first = self.parallel.mesh.devices.flat[0]
    return dict(devices=self.parallel.num_devices, device_kind=first.device_kind, parallel=self.parallel.mode,
                cpu_speedups=self.cpu_speedups)

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
        if length == 1:  # No scan at all, not even an unrolled one: see `host_loops`.
          state, metrics = one_step(state, None)
          return state, jax.tree.map(lambda x: jnp.asarray(x)[None], metrics)
        return jax.lax.scan(one_step, state, length=length)
      self._chunk_fns[length] = self.parallel.compile(chunk, donate_argnums=(0,))
    return self._chunk_fns[length]

  def run_chunk(self, state: TrainState, length: int, order: jax.Array) -> tuple[TrainState, dict[str, np.ndarray]]:
    """`length` training steps from `state`; returns the new state and the steps' metrics (numpy, one replica).

    With `host_loops` the steps are one compiled call each (dispatch is cheap next to a CPU step); otherwise they
    are one `lax.scan`ned call.
    """
    if not self.host_loops:
      state, metrics = self._chunk_fn(length)(state, self.train_data.arrays, order)
      return state, self.parallel.first_step_replica(metrics)
    step_fn, parts = self._chunk_fn(1), []
    for _ in range(length):
      state, metrics = step_fn(state, self.train_data.arrays, order)
      parts.append(metrics)
    parts = self.parallel.first_step_replica(parts)
    return state, jax.tree.map(lambda *xs: np.concatenate(xs), *parts)

  def chunk_compiled(self, length: int) -> bool:
    return (1 if self.host_loops else length) in self._chunk_fns

  # --- evaluation: BatchNorm re-estimation, then the test passes ---

  def _bn_steps(self) -> int:
    bn_steps = int(self.config.eval.bn_reestimate_steps)
    return self.train_data.steps_per_epoch if bn_steps == -1 else min(bn_steps, self.train_data.steps_per_epoch)

  def _exact_bn(self) -> bool:
    return 'bn_momentum' in getattr(self.model, '__dataclass_fields__', {})

  def _bn_body(self, i, stats, params, train_arrays, bn_order, axis_name=None):
    """Re-estimation step i: the statistics after training batch i of `bn_order`, noise off.

    The original's re-estimation: one pass over the training set with the noise off and BatchNorm in training
    mode. Its moving average (decay 0.9 over 500 CIFAR batches) forgets the noisy training statistics, but at decay
    0.999 (Cluttered MNIST) one pass would keep about 70 % of them. So for models with a `bn_momentum` field (all
    of `infodrop_jax.models`) a copy at momentum 0 yields each batch's own statistics, which are averaged exactly;
    other models get the original's moving-average pass. The original walks its unsorted CIFAR batches in stored
    order; a class-sorted set (the JPEG proxy, image folders) would bias both, so the pass visits the examples in a
    fixed random order (`bn_order`, from the key 'bn_reestimate'; per process when the training data is
    process-sharded).
    """
    exact_bn = self._exact_bn()
    bn_apply = self.model.clone(bn_momentum=0.0).apply if exact_bn else self.model.apply
    batch = self.train_data.gather_train_batch(train_arrays, bn_order, i, axis_name)
    batch = self.model_inputs(batch, jax.random.fold_in(self.keys['eval_binarize'], i), axis_name)
    _, updates = bn_apply(_variables(params, stats), batch['images'], deterministic=True,
                          use_running_average=False, mutable=['batch_stats'])
    new = updates['batch_stats']
    new = jax.lax.pmean(new, axis_name) if axis_name else new
    return jax.tree.map(lambda m, b: m + (b - m) / (i + 1), stats, new) if exact_bn else new

  def _test_body(self, i, variables, test_arrays, deterministic, axis_name=None):
    """The task's sums over test batch i (noise off when `deterministic`)."""
    batch = self.test_data.gather_eval_batch(test_arrays, i, axis_name)
    batch = self.model_inputs(batch, jax.random.fold_in(self.keys['eval_binarize'], i), axis_name)
    key = jax.random.fold_in(self.keys['eval'], i)
    if axis_name:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    outputs, updates = self.model.apply(variables, batch['images'], deterministic=deterministic,
                                        use_running_average=True, rngs={'noise': key},
                                        mutable=[kl_lib.KL_COLLECTION])
    sums = self.task.eval_sums(outputs, batch, updates.get(kl_lib.KL_COLLECTION), batch['mask'])
    return jax.lax.psum(sums, axis_name) if axis_name else sums

  def _reestimated_batch_stats(self, state, train_arrays, bn_order, axis_name=None):
    """The BatchNorm statistics evaluation uses: `state.batch_stats` re-estimated on the training set (traceable)."""
    if not (state.batch_stats and self._bn_steps()):
      return state.batch_stats
    return jax.lax.fori_loop(0, self._bn_steps(), lambda i, stats: self._bn_body(
        i, stats, state.params, train_arrays, bn_order, axis_name), state.batch_stats)

  def _evaluate_fn(self) -> Callable[..., Any]:
    """(state, train arrays, BN pass order, test arrays) → sums over the test set: BN re-estimation, D, N."""
    if self._eval_fn is None:
      def evaluate(state, train_arrays, bn_order, test_arrays, axis_name=None):
        variables = _variables(state.params, self._reestimated_batch_stats(state, train_arrays, bn_order, axis_name))

        def test_pass(deterministic):
          def add_batch(i, sums):
            return jax.tree.map(jnp.add, sums, self._test_body(i, variables, test_arrays, deterministic, axis_name))
          return jax.lax.fori_loop(1, self.test_data.steps_per_epoch, add_batch,
                                   self._test_body(0, variables, test_arrays, deterministic, axis_name))

        return test_pass(True), test_pass(False)
      self._eval_fn = self.parallel.compile(evaluate)
    return self._eval_fn

  def _host_batch_stats(self, state):
    """`_reestimated_batch_stats` driven from the host, one compiled re-estimation step per call (`host_loops`)."""
    if not (state.batch_stats and self._bn_steps()):
      return state.batch_stats
    stats = state.batch_stats
    for i in range(self._bn_steps()):
      stats = self._host_bn_fn(i, stats, state.params, self.train_data.arrays, self._bn_order)
    return stats

  # --- host-side driving ---

  def _ensure_bn_order(self) -> None:
    if self._bn_order is None:
      self._bn_order = self.train_data.fixed_order(self.keys['bn_reestimate'])

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """The task's test results from passes with the noise off (D) and on (N); classification: error, CE, KL.

    `state` is in the step's layout; the BatchNorm re-estimation only affects this evaluation, not training.
    """
    self._ensure_bn_order()
    if not self.host_loops:
      sums_d, sums_n = self._evaluate_fn()(state, self.train_data.arrays, self._bn_order, self.test_data.arrays)
    else:
      variables = _variables(state.params, self._host_batch_stats(state))
      test_fn = self._host_test_fn

      def test_pass(deterministic):
        sums = test_fn(0, variables, self.test_data.arrays, deterministic)
        for i in range(1, self.test_data.steps_per_epoch):
          sums = jax.tree.map(jnp.add, sums, test_fn(i, variables, self.test_data.arrays, deterministic))
        return sums
      sums_d, sums_n = test_pass(True), test_pass(False)
    sums_d, sums_n = (self.parallel.first_step_replica(s) for s in (sums_d, sums_n))
    return self.task.eval_results(sums_d, sums_n)

  def evaluation_variables(self, state: TrainState) -> dict[str, Any]:
    """{'params', ['batch_stats']} as numpy, exactly as `evaluate` uses them (BatchNorm re-estimated): analyses."""
    self._ensure_bn_order()
    if self.host_loops:
      batch_stats = self._host_batch_stats(state)
    else:
      batch_stats = self.parallel.compile(self._reestimated_batch_stats)(state, self.train_data.arrays,
                                                                          self._bn_order)
    return _variables(self.parallel.first_step_replica(state.params),
                      self.parallel.first_step_replica(batch_stats) if batch_stats else None)

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
    # Every task's loss terms (classification: ce, beta_lz; VAE: distortion, rate) beside the step's norms.
    values = ', '.join(f'{k}={v[i]}' for k, v in metrics.items() if not k.startswith(('kl/', 'learning_rate')))
    latest = checkpointer.latest_step()
    saved = (f'The last good checkpoint is step {latest} in {checkpointer.directory}.' if latest is not None else
             'No checkpoint was saved before it, so there is nothing to resume: change the config (e.g. a smaller '
             'learning rate) and run the same command again; the run starts afresh.')
    raise FloatingPointError(f'non-finite training at step {first_step + i + 1} ({values}); training stopped. {saved}')


# --- hooks: periodic extras the loop calls ---------------------------------------------------------------------

# hook(run, state, step) -> scalars to log at `step`, or None. Called before the first step of a fresh run (step 0)
# and after every epoch's checkpoint; the hook decides from `step` whether it has work. `state` is in the step's
# device layout. A hook must not touch the training randomness or the state: turning one on never changes training.
#
# A run killed during the hooks of an epoch resumes from that epoch's checkpoint. Hooks with an optional
# `recorded(run, step) -> bool` (True when their output for `step` is already in the workdir, or when they have
# nothing to do at `step`) are then called again at the resumed step where it returns False; hooks without it are
# not called again there. `run.writer` is the run's `metrics.MetricWriter` (see `MetricWriter.logged`).
Hook = Callable[['Run', TrainState, int], 'Mapping[str, float] | None']


class _EvaluationHook:
  """Test-set evaluation (`Run.evaluate`) every `every_epochs` epochs; the final one belongs to the summary."""
  name = 'test-set evaluation'

  def __init__(self, every_epochs: int):
    self.every_epochs = every_epochs

  def due(self, run: Run, step: int) -> bool:
    epoch, within = divmod(step, run.steps_per_epoch)
    return not (within or not self.every_epochs or epoch % self.every_epochs or step in (0, run.total_steps))

  def recorded(self, run: Run, step: int) -> bool:
    writer = getattr(run, 'writer', None)
    return not self.due(run, step) or (
        writer is not None and any(k.startswith('test/') for k in writer.logged(step)))

  def __call__(self, run: Run, state: TrainState, step: int) -> dict[str, float] | None:
    return run.evaluate(state) if self.due(run, step) else None


def evaluation_hook(every_epochs: int) -> Hook:
  """Test-set evaluation (`Run.evaluate`) every `every_epochs` epochs; the final one belongs to the summary."""
  return _EvaluationHook(every_epochs)


def default_hooks(config: ml_collections.ConfigDict) -> list[Hook]:
  """The hooks a config asks for: periodic evaluation, and information-plane capture when enabled."""
  hooks = [evaluation_hook(int(config.eval.every_epochs))]
  if config.get('information_plane') is not None and config.information_plane.get('enabled', False):
    hooks.append(information_plane.capture_hook(config))
  return hooks


CONFIG_FILE = 'config.json'


def _saved_config(workdir: str) -> dict[str, Any] | None:
  """`workdir/config.json` as a dict, or None when there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path} cannot be read ({e}); it should hold the config this run was started with. Restore '
                     'it, or delete it to accept the current config as the run\'s.') from e
  if not isinstance(saved, dict):
    raise ValueError(f'{path} is not a config (a JSON object); restore it, or delete it to accept the current config.')
  return saved


def check_config_change(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False
                        ) -> list[tuple[str, Any, Any]]:
  """The fields in which `config` differs from the run's `workdir/config.json` (free fields aside).

  Raises ValueError naming them, unless `allow_config_change`. Fields that cannot change the result (logging,
  checkpointing, device layout, evaluation batch size and frequency, ...; `config_diff.RESUME_FREE_FIELDS`) may
  differ freely, and `train.num_epochs` may be raised to train longer. A workdir without a checkpoint has nothing to
  continue: any config starts it afresh.
  """
  saved = _saved_config(workdir)
  if saved is None or not checkpoint_lib.has_checkpoint(workdir):
    return []  # Nothing was saved: a new start with this config, not a continuation.
  differ = config_diff.differences(config, saved, free=config_diff.RESUME_FREE_FIELDS)
  if differ and not allow_config_change:
    raise ValueError(
        f'{os.path.join(workdir, CONFIG_FILE)}: this config differs from the one the run in {workdir} was started '
        f'with in {len(differ)} field(s): {config_diff.describe(differ)}. Resuming would continue that run with '
        'other settings. Use another --workdir for a new run, or pass --allow_config_change '
        '(train_and_evaluate(..., allow_config_change=True)) to continue it with the changed config anyway.')
  return differ


def _finished_summary(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """The summary of a run in `workdir` that already trained `config.train.num_epochs` epochs, else None."""
  path = os.path.join(workdir, metrics_lib.SUMMARY_FILE)
  if not os.path.isfile(path) or not os.path.isdir(os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR)):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  if not (isinstance(summary, dict) and summary.get('epochs') == config.train.num_epochs
          and isinstance(summary.get('steps'), int)):
    return None
  checkpointer = checkpoint_lib.Checkpointer(workdir, max_to_keep=int(config.train.keep_checkpoints), read_only=True)
  try:
    latest = checkpointer.latest_step()
  finally:
    checkpointer.close()
  return summary if latest == summary['steps'] else None


def _remove_empty_dirs(created: list[str]) -> None:
  """Removes the directories in `created` (deepest first) that are still empty: what a failed start created."""
  for directory in sorted(created, key=len, reverse=True):
    try:
      os.rmdir(directory)
    except OSError:
      pass


def _call_hooks(run: Run, hooks: list[Hook], state: TrainState, step: int, writer: metrics_lib.MetricWriter, *,
                resumed: bool = False) -> None:
  """Calls the hooks at `step`; on a resumed step, only those whose output for it is missing (see `Hook`)."""
  if resumed:
    missing = np.array([hasattr(hook, 'recorded') and not hook.recorded(run, step) for hook in hooks], bool)
    if jax.process_count() > 1:  # Only process 0 writes records: every process follows its decision.
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      missing = np.asarray(multihost_utils.broadcast_one_to_all(missing))
    hooks = [hook for hook, run_it in zip(hooks, missing) if run_it]
    if hooks and jax.process_index() == 0:
      names = ', '.join(getattr(h, 'name', None) or getattr(h, '__name__', None) or type(h).__name__ for h in hooks)
      print(f'Redoing the step-{step} work the interrupted run did not finish: {names}.', flush=True)
  for hook in hooks:
    scalars = hook(run, state, step)
    if scalars:
      writer.write(step, scalars)


def _duration(seconds: float) -> str:
  if seconds < 9.95:
    return f'{seconds:.2g} s'
  if seconds < 90:
    return f'{seconds:.0f} s'
  if seconds < 90 * 60:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.1f} h'


def is_smoke(config: ml_collections.ConfigDict) -> bool:
  """A run of an experiment's :smoke variant (`configs/base.smoke`): it checks that the code runs, not the paper."""
  return bool(config.logging.get('smoke', False))


_SMOKE_NOTE = ('a smoke run (tiny data, model and epochs): its numbers check that the code runs; they are no result '
               'of the paper\'s. The config without :smoke trains the recipe.')


def _start_line(config: ml_collections.ConfigDict, run: Run, workdir: str) -> str:
  """Once at the start: which data was read (how many examples) and where this run writes."""
  splits = run.splits
  origin = f' ({splits.origin})' if splits.origin else ''
  line = (f'data: {splits.name}, {len(splits.train)} train / {len(splits.test)} test examples{origin}. '
          f'This run writes {os.path.abspath(workdir)} (config.json, checkpoints/, metrics.jsonl, summary.json).')
  return f'{line}\nThis is {_SMOKE_NOTE}' if is_smoke(config) else line


def _end_lines(config: ml_collections.ConfigDict, workdir: str) -> str:
  """After the summary: what the numbers are (smoke) and the next command."""
  lines = [f'(This was {_SMOKE_NOTE})'] if is_smoke(config) else []
  lines.append(f'Next: python launch.py --workdir={workdir} --mode=analyze   (figures and numbers into '
               f'{os.path.join(workdir, "analysis")}/)')
  return '\n'.join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, model: nn.Module | None = None,
                       splits: Any | None = None, task: tasks.Task | None = None,
                       hooks: list[Hook] | None = None, allow_config_change: bool = False) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, and returns the summary.

  A run that already finished `config.train.num_epochs` epochs in `workdir` is left as it is: its summary is
  returned. Resuming with a config that differs from `workdir/config.json` in a field that changes the result is
  refused (ValueError naming the fields) unless `allow_config_change`; see `check_config_change`.

  One process owns `workdir` while it trains: another raises `ownership.WorkdirBusyError` naming it. In a
  single-process run SIGTERM and SIGINT stop at the next chunk of steps with a checkpoint saved, raising
  `stopping.StopRequested` (a second signal stops at once).

  Args:
    config: the experiment config (see configs/base.py).
    workdir: checkpoints, metrics.jsonl, TensorBoard events, config.json and summary.json go here.
    model: a Linen module following the models contract; default task.create_model(config, splits).
    splits: a `data.DatasetSplits`; default data.load(config.data).
    task: what is optimised and reported (`tasks.Task`); default the one `config.task` names.
    hooks: periodic extras (see `Hook`); default `default_hooks(config)`.
    allow_config_change: continue the run in `workdir` even where the config differs from its config.json.

  Returns:
    The final summary: test/error_d, test/error_n, test/ce_*, test/kl/<layer>, steps, epochs, wall_time_s.
  """
  start_time = time.perf_counter()
  validate_config(config, task=task)
  # A start that fails before training (bad data, bad hook settings, a busy workdir) leaves no empty workdir behind.
  created = [d for d in (workdir, os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR)) if not os.path.exists(d)]
  try:
    checkpoint_lib.check_workdir(workdir)
    lock = ownership.acquire(workdir) if jax.process_index() == 0 else None
  except BaseException:
    _remove_empty_dirs(created)
    raise
  try:
    return _train_and_evaluate_owned(config, workdir, start_time, created, lock, model=model, splits=splits,
                                     task=task, hooks=hooks, allow_config_change=allow_config_change)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate_owned(config: ml_collections.ConfigDict, workdir: str, start_time: float,
                              created: list[str], lock: ownership.WorkdirLock | None, *, model: nn.Module | None,
                              splits: Any | None, task: tasks.Task | None, hooks: list[Hook] | None,
                              allow_config_change: bool) -> dict[str, Any]:
  """train_and_evaluate once `workdir` is this process's (`lock`; None on processes other than 0)."""
  run = None
  try:
    changed = check_config_change(config, workdir, allow_config_change)
    finished = _finished_summary(config, workdir)
    if finished is not None:
      if jax.process_index() == 0:
        print(f'The run in {workdir} already finished ({finished["steps"]} steps, {finished["epochs"]:g} epochs); '
              f'nothing to do. Its summary is {os.path.join(workdir, metrics_lib.SUMMARY_FILE)} (raise '
              '--config.train.num_epochs to train longer, or use another --workdir).', flush=True)
        if 'test/error_d' in finished:  # format_summary reads the classification results.
          print(metrics_lib.format_summary(finished), flush=True)
      return finished
    if lock is not None and lock.previous_owner:
      print(f'The workdir\'s previous owner ({ownership.describe_owner(lock.previous_owner)}) ended without '
            'releasing it (killed?); this run takes it over.', flush=True)
    run = Run(config, workdir, model=model, splits=splits, task=task)
    hooks = default_hooks(config) if hooks is None else hooks
    for hook in hooks:  # Hooks that depend on the data or the workdir check them before anything compiles.
      if hasattr(hook, 'prepare'):
        hook.prepare(run)
    latest = run.checkpointer.latest_step()
    if latest is not None and latest > run.total_steps:
      raise ValueError(f'config.train.num_epochs = {config.train.num_epochs}: the run in {workdir} already has a '
                       f'checkpoint at step {latest} (epoch {latest / run.steps_per_epoch:g}), past the '
                       f'{run.total_steps} steps of {config.train.num_epochs} epochs. Use another --workdir, or '
                       'at least that many epochs.')
  except BaseException:
    if run is not None:
      run.checkpointer.close()
    if lock is not None:
      lock.release()
    _remove_empty_dirs(created)
    raise
  if jax.process_index() == 0:
    path = os.path.join(workdir, CONFIG_FILE)
    if changed:
      previous = os.path.join(workdir, f'config.before_step_{latest or 0}.json')
      os.replace(path, previous)
      print(f'Continuing with a changed config (--allow_config_change): {config_diff.describe(changed, limit=20)}. '
            f'The previous config is kept as {previous}.', flush=True)
    with open(path, 'w', encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2))
  writer = None
  # Every process must take part in a save, so only a single-process run turns its signals into a save and a stop.
  stops = stopping.StopSignals(enabled=jax.process_count() == 1, announce=jax.process_index() == 0)
  try:
    stops.install()
    state = run.initial_state()
    step = int(jax.device_get(state.step))
    writer = metrics_lib.MetricWriter(workdir, tensorboard=bool(config.logging.tensorboard), resume_step=step)
    run.writer = writer
    if jax.process_index() == 0:
      print(_start_line(config, run, workdir), flush=True)
    if step and jax.process_index() == 0:
      print(f'Resuming from the checkpoint at step {step} in {run.checkpointer.directory}.', flush=True)
    elif writer.discarded_up_to is not None:
      print(f'Starting again from step 0: {workdir} has no checkpoint. The earlier attempt\'s records (to step '
            f'{writer.discarded_up_to}) are dropped from {metrics_lib.METRICS_FILE}.', flush=True)
    state = run.parallel.to_device_layout(state)
    progress = metrics_lib.ProgressBar(run.total_steps, run.train_data.batch_size,
                                       enabled=bool(config.logging.progress_bar))
    order_epoch, order = None, None
    pending: list[dict[str, np.ndarray]] = []

    if step == 0:
      _call_hooks(run, hooks, state, 0, writer)
    elif step % run.steps_per_epoch == 0:  # Killed during this epoch's hooks? Redo what is missing.
      _call_hooks(run, hooks, state, step, writer, resumed=True)
    # Timing notes: the first call compiles the step (reported), the first call of an already compiled chunk
    # length measures the speed (on CPU, where an epoch can take minutes, extrapolated to an epoch).
    announce = jax.process_index() == 0
    compiling, estimating = announce, announce and jax.default_backend() == 'cpu'
    progress.start(step)
    logged_step, logged_time = step, time.perf_counter()
    while step < run.total_steps:
      if stops.requested is not None:
        if run.checkpointer.latest_step() != step:
          run.save(state)
        run.checkpointer.wait()
        progress.finish()
        raise stopping.StopRequested(stops.requested, step, run.checkpointer.directory)
      epoch = step // run.steps_per_epoch
      if epoch != order_epoch:
        order_epoch, order = epoch, run.train_data.order(epoch)
      boundary = run.next_boundary(step)
      compiled = run.chunk_compiled(boundary - step)
      if compiling:
        print('compiling the train step…', flush=True)
      chunk_start = time.perf_counter()
      state, chunk_metrics = run.run_chunk(state, boundary - step, order)
      chunk_seconds = time.perf_counter() - chunk_start
      if compiling:
        compiling = False
        print(f'compiled the train step and ran its first {boundary - step} steps in {chunk_seconds:.1f} s.',
              flush=True)
        progress.start(boundary)  # The speed and ETA count from here: compilation is no part of a step's time.
      elif estimating and compiled:
        estimating = False
        per_epoch = chunk_seconds / (boundary - step) * run.steps_per_epoch
        print(f'about {_duration(per_epoch)} per epoch on this CPU ({run.steps_per_epoch} steps; measured on '
              f'{boundary - step} steps).', flush=True)
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
      if epoch_end:
        _call_hooks(run, hooks, state, step, writer)
    progress.finish()
    if run.checkpointer.latest_step() != step:
      run.save(state)
    summary = run.evaluate(state)
    # Resumed after the final evaluation was logged but before summary.json was written: log it once.
    if not any(k.startswith('test/') for k in writer.logged(step)):
      writer.write(step, summary)
    summary.update(steps=step, epochs=step / run.steps_per_epoch, wall_time_s=time.perf_counter() - start_time,
                   **run.device_record())
    metrics_lib.write_summary(workdir, summary)
    if jax.process_index() == 0:
      print(metrics_lib.format_summary(summary), flush=True)
      print(_end_lines(config, workdir), flush=True)
    return summary
  finally:
    stops.restore()
    if writer is not None:
      writer.close()
    run.checkpointer.close()


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *, model: nn.Module | None = None,
                        splits: Any | None = None, step: int | None = None,
                        task: tasks.Task | None = None) -> dict[str, Any]:
  """Evaluates the checkpoint at `step` (default: latest) in `workdir` without training; returns the summary."""
  start_time = time.perf_counter()
  with restore(workdir, config, step=step, model=model, splits=splits, task=task) as restored:
    summary = restored.run.evaluate(restored.state)
    summary.update(steps=restored.step, wall_time_s=time.perf_counter() - start_time,
                   **restored.run.device_record())
  if jax.process_index() == 0:
    print(metrics_lib.format_summary(summary, evaluated_only=True), flush=True)
  return summary


# --- opening a trained run -----------------------------------------------------------------------------------------

# A --config given to open a run may differ from its config.json where a resumed run may (nothing that changes the
# trained weights), and in how the data is laid out over devices.
_OPEN_FREE_FIELDS = config_diff.RESUME_FREE_FIELDS + ('train.data_placement',)
_REQUIRED_SECTIONS = ('seed', 'data', 'model', 'loss', 'optim', 'train', 'eval')


class WorkdirError(ValueError):
  """A workdir that holds no run this version can open; the message says what was expected."""


def load_config(workdir: str, given: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """The run's config from `W/config.json`; a `given` config (e.g. from --config) must agree with it where there is
  one.

  Raises:
    WorkdirError: no workdir or config.json, a config.json that is not an infodrop-jax experiment, or a given
      config that differs from it in a field that matters (the message lists them).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir {workdir!r} does not exist; give the directory of a training run.')
  if given is not None and not os.path.exists(path):  # Nothing to compare with (a run that never started).
    return given
  if not os.path.isfile(path):
    raise WorkdirError(f'{path} not found: --workdir must be a training run\'s directory (training writes '
                       f'{CONFIG_FILE} when it starts).')
  try:
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f'{path} is not readable JSON ({e}); it should be the config the run was trained with.') from e
  missing = [s for s in _REQUIRED_SECTIONS if not isinstance(saved, dict) or s not in saved]
  if missing:
    raise WorkdirError(f'{path} is not an infodrop-jax experiment config: it lacks {", ".join(missing)}.')
  if given is not None:
    differ = config_diff.differences(given, saved, free=_OPEN_FREE_FIELDS)
    if differ:
      raise WorkdirError(f'--config does not match the run in {workdir} ({len(differ)} field(s) differ: '
                         f'{config_diff.describe(differ, ours="--config", theirs="run")}). Omit --config to use '
                         'the config the run was trained with.')
    return given
  return ml_collections.ConfigDict(saved)


class RestoredRun:
  """A trained run opened from its workdir (`restore`): its `Run` and the checkpoint's state.

  `config`, `model`, `splits` and `step` are the run's; `state` is the TrainState in the compiled step's layout (what
  `run.evaluate(state)` takes); `variables()` are the parameters and BatchNorm statistics as evaluation uses them
  (statistics re-estimated), as numpy. Close it (or use it as a context manager) to release the checkpointer.
  """

  def __init__(self, run: Run, state: TrainState):
    self.run, self.state = run, state

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.run.config

  @property
  def model(self) -> nn.Module:
    return self.run.model

  @property
  def splits(self) -> Any:
    return self.run.splits

  @property
  def step(self) -> int:
    return int(np.asarray(jax.device_get(self.run.parallel.first_step_replica(self.state.step))))

  def variables(self) -> dict[str, Any]:
    return self.run.evaluation_variables(self.state)

  def close(self) -> None:
    self.run.checkpointer.close()

  def __enter__(self) -> RestoredRun:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


def restore(workdir: str, config: ml_collections.ConfigDict | None = None, *, step: int | None = None,
            model: nn.Module | None = None, splits: Any | None = None,
            task: tasks.Task | None = None) -> RestoredRun:
  """Opens the run in `workdir` at checkpoint `step` (default: the latest), without writing to the workdir.

  Args:
    workdir: a training run's directory.
    config: default the run's `config.json`; a given config must agree with it (`load_config`).
    step, model, splits, task: as `Run` takes them (default: the run's own model, data and task).
  Raises:
    WorkdirError: the workdir holds no run (see `load_config`) or its config is one this version cannot run.
    FileNotFoundError: it has no checkpoint yet.
  """
  config = load_config(workdir, config)
  try:
    run = Run(config, workdir, model=model, splits=splits, read_only=True, task=task)
  except KeyError as e:
    raise WorkdirError(f'{os.path.join(workdir, CONFIG_FILE)} is missing field {e}; it is not a config this '
                       'version of infodrop-jax can run.') from e
  try:
    if run.checkpointer.latest_step() is None:
      raise FileNotFoundError(f'no checkpoint in {run.checkpointer.directory}: train the run first (or wait for '
                              'its first checkpoint).')
    template = create_train_state(run.model, run.tx, run.splits.train.images[:1].astype(np.float32), run.keys,
                                  run.parallel)
    state = run.checkpointer.restore(template, step)
  except BaseException:
    run.checkpointer.close()
    raise
  return RestoredRun(run, run.parallel.to_device_layout(state))
