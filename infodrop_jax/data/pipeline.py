"""Device-resident input pipeline for datasets that fit in accelerator memory.

By default (`placement='replicated'`) the whole split is placed on every device once. Epoch `e` visits the examples in the order
`jax.random.permutation(fold_in(key, e), N)` (the last partial batch is dropped, as in the original), and global
batch `s` of the epoch is `order[s * B:(s + 1) * B]`. The batch is gathered on device inside the compiled step
(`gather_train_batch`), so a training step copies nothing from the host.

Why replicate instead of sharding the examples over devices: the batch order is then a function of
(key, epoch, step) alone, independent of the device count, so a run on 1, 8 or 2×4 devices sees the same global
batches, resume is exact across topologies, and gathering needs no cross-device traffic. Each device gathers only
its slice of the global batch: in 'jit' mode the indices are sharding-constrained along the mesh axis before the
gather; in 'pmap' mode device `d` slices `order[s * B + d * B/D:...]`. Multi-host, replicated: every process places
the whole split on its own devices only and feeds them; the cost is one copy of the split per device (CIFAR-10
GCN+ZCA: 0.7 GB) and every process loading all of it.

`uint8` images are scaled to float32 in [0, 1] inside the gather; float32 images are used as they are.

Multi-host, `placement='process_sharded'` (config.train.data_placement; 'auto' picks it when there is more than
one process): process p of P keeps only the examples i with i % P == p, truncated to n_local = floor(N / P) each
(the N - P·n_local < P leftover examples are dropped, the same ones on every run, and logged), and places that shard
on each of its own devices. Epoch e visits the shard in the order `permutation(fold_in(fold_in(key, e), p),
n_local)`; step s takes its `B/P` examples from there, and local device l of the process gathers the l-th `B/(P·L)`
of them, on device (a `shard_map` over the mesh in 'jit' mode, so no device reads another's data). The global batch
is the concatenation over processes (in mesh order, which `jax.devices()` groups by process). The order depends on
the process count, so resume is exact for the same number of processes. The test split stays replicated: it is
small and every process evaluates all of it.

`iterate()` is the iterator interface (global batches in the step's layout, one device call per batch, still no
host→device copies); a streaming source for data that does not fit would implement the same interface.
"""
from __future__ import annotations

from collections.abc import Iterator

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from infodrop_jax import parallel as parallel_lib
from infodrop_jax.data import preprocess
from infodrop_jax.data.splits import Split

Batch = dict[str, jax.Array]
PLACEMENTS = ('replicated', 'process_sharded')


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
  """The visiting order of epoch `epoch`: a permutation of range(num_examples) from fold_in(key, epoch)."""
  return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples).astype(jnp.int32)


def resolve_placement(placement: str, process_count: int | None = None) -> str:
  """config.train.data_placement → a member of PLACEMENTS ('auto': replicated for one process, else sharded)."""
  if placement == 'auto':
    process_count = jax.process_count() if process_count is None else process_count
    return 'replicated' if process_count == 1 else 'process_sharded'
  if placement not in PLACEMENTS:
    raise ValueError(f'config.train.data_placement = {placement!r}: expected one of {("auto",) + PLACEMENTS}.')
  return placement


def process_shard_indices(num_examples: int, process_index: int, process_count: int) -> np.ndarray:
  """The examples process `process_index` keeps under 'process_sharded': i % P == p, floor(N / P) of them."""
  return np.arange(num_examples // process_count) * process_count + process_index


class InMemoryPipeline:
  """A split placed on device once, batched by per-epoch permutations (train) or in order (eval).

  Attributes:
    arrays: {'images', 'labels'} on device, in the layout of `parallel`: 'replicated' copies the split to every
      device (replicated over the mesh in 'jit' mode, stacked along a leading local-device axis in 'pmap' mode);
      'process_sharded' copies this process's shard to each of its devices (in 'jit' mode a global array of shape
      (num_devices · num_local_examples, ...) sharded along the mesh axis, whose block on each device is the shard
      of that device's process).
    placement: 'replicated' or 'process_sharded' (see the module docstring).
    num_examples: the examples an epoch draws from: N replicated, P · floor(N / P) process-sharded.
    num_local_examples: the examples this process holds (N replicated, floor(N / P) process-sharded).
    batch_size: B, the global batch size.
    steps_per_epoch: floor(num_examples / B) when shuffling (drop last partial batch), ceil(N / B) in order
      (padded, masked).
  """

  def __init__(self, split: Split, batch_size: int, parallel: parallel_lib.Parallel, *, key: jax.Array,
               shuffle: bool = True, name: str = 'split', placement: str = 'replicated',
               process_index: int | None = None, process_count: int | None = None):
    """`process_index`/`process_count` default to JAX's; tests pass them to emulate several processes in one."""
    parallel.check_batch_size(batch_size, f'{name} batch size')
    num_examples = int(split.labels.shape[0])
    if split.images.shape[0] != num_examples:
      raise ValueError(f'{name}: {split.images.shape[0]} images but {num_examples} labels.')
    self.process_count = jax.process_count() if process_count is None else int(process_count)
    self.process_index = jax.process_index() if process_index is None else int(process_index)
    self.placement = resolve_placement(placement, self.process_count)
    host = {'images': np.asarray(split.images), 'labels': np.asarray(split.labels, np.int32)}
    if self.placement == 'process_sharded':
      host = self._process_shard(host, batch_size, parallel.num_local_devices, shuffle, name)
    self.parallel = parallel
    self.num_local_examples = int(host['labels'].shape[0])
    self.num_examples = num_examples if self.placement == 'replicated' else (
        self.num_local_examples * self.process_count)
    if shuffle and self.num_examples < batch_size:
      raise ValueError(f'{name}: {self.num_examples} examples is fewer than one batch of {batch_size}.')
    self.batch_size = batch_size
    self.shuffle = shuffle
    self.key = key
    self.steps_per_epoch = self.num_examples // batch_size if shuffle else -(-num_examples // batch_size)
    if self.placement == 'replicated':
      self.arrays = parallel.to_device_layout_host(host)
      order_sharding = parallel.step_sharding()
    else:
      self.arrays = parallel.local_copies_host(host)
      order_sharding = NamedSharding(parallel.local_mesh, PartitionSpec(parallel_lib.AXIS))
    self._order_sharding = order_sharding
    self._permutation = jax.jit(
        lambda epoch: self._visiting_order(jax.random.fold_in(self.key, epoch)), out_shardings=order_sharding)
    self._iterate_fn = None

  def _process_shard(self, host: dict[str, np.ndarray], batch_size: int, local_devices: int, shuffle: bool,
                     name: str) -> dict[str, np.ndarray]:
    """This process's examples, after checking that 'process_sharded' applies."""
    count, index = self.process_count, self.process_index
    if not shuffle:
      raise ValueError(f"{name}: data_placement='process_sharded' is for training data; evaluation splits stay "
                       'replicated.')
    if not 0 <= index < count:
      raise ValueError(f'{name}: process_index {index} is not in [0, process_count={count}).')
    shards = count * local_devices
    if batch_size % shards:
      raise ValueError(f"{name} = {batch_size}: data_placement='process_sharded' needs a global batch that is a "
                       f'multiple of processes × local devices ({count} × {local_devices} = {shards}).')
    num_examples = int(host['labels'].shape[0])
    kept = process_shard_indices(num_examples, index, count)
    dropped = num_examples - count * len(kept)
    if dropped:
      logging.info('%s: process-sharded placement drops the last %d of %d examples (indices %d..%d) so that each '
                   'of the %d processes holds %d.', name, dropped, num_examples, num_examples - dropped,
                   num_examples - 1, count, len(kept))
    return {k: v[kept] for k, v in host.items()}

  # --- traceable pieces, used inside compiled steps --------------------------------------------------------------

  def _replicate_in_layout(self, x: jax.Array) -> jax.Array:
    if self.parallel.mode == 'pmap':
      return jnp.broadcast_to(x, (self.parallel.num_local_devices,) + x.shape)
    return x

  @property
  def _per_device(self) -> int:
    """Examples per device per step."""
    return self.batch_size // self.parallel.num_devices if self.placement == 'replicated' else (
        self.batch_size // (self.process_count * self.parallel.num_local_devices))

  def _visiting_order(self, key: jax.Array) -> jax.Array:
    """The order that visits the examples for `key`, in the layout `gather_train_batch` takes.

    Replicated: permutation(key, N). Process-sharded: this process's permutation(fold_in(key, p), n_local), cut
    into one row per local device listing the examples that device gathers, step after step (shape
    (local devices, steps · B/(P·L)); flattened to the local blocks of a mesh-sharded array in 'jit' mode).
    """
    if self.placement == 'replicated':
      return self._replicate_in_layout(jax.random.permutation(key, self.num_examples).astype(jnp.int32))
    order = jax.random.permutation(jax.random.fold_in(key, self.process_index),
                                   self.num_local_examples).astype(jnp.int32)
    local_devices, per_device = self.parallel.num_local_devices, self._per_device
    rows = order[:self.steps_per_epoch * local_devices * per_device].reshape(
        self.steps_per_epoch, local_devices, per_device).transpose(1, 0, 2).reshape(local_devices, -1)
    return rows if self.parallel.mode == 'pmap' else rows.reshape(-1)

  def _slice_indices(self, order: jax.Array, start: jax.Array, axis_name: str | None) -> jax.Array:
    if axis_name is None:
      indices = jax.lax.dynamic_slice_in_dim(order, start, self.batch_size)
      # Each device then gathers only its own slice of the global batch.
      return jax.lax.with_sharding_constraint(indices, self.parallel.batch_sharded)
    per_device = self.batch_size // self.parallel.num_devices
    start = start + jax.lax.axis_index(axis_name) * per_device
    return jax.lax.dynamic_slice_in_dim(order, start, per_device)

  def gather(self, arrays: Batch, indices: jax.Array) -> Batch:
    """Examples `indices` of `arrays` as model inputs: {'images': float32 NHWC, 'labels': int32}."""
    return {'images': preprocess.to_unit_interval(jnp.take(arrays['images'], indices, axis=0)),
            'labels': jnp.take(arrays['labels'], indices, axis=0)}

  def gather_train_batch(self, arrays: Batch, order: jax.Array, position: jax.Array,
                         axis_name: str | None = None) -> Batch:
    """Batch `position` of the epoch visited in `order` (this device's slice of it under pmap `axis_name`).

    `order` comes from `order(epoch)` or `fixed_order(key)`. Process-sharded: each device reads its own row of
    `order` and gathers from its own copy of its process's shard (under 'jit' inside a `shard_map`), so the gather
    never leaves the device.
    """
    if self.placement == 'replicated':
      return self.gather(arrays, self._slice_indices(order, position * self.batch_size, axis_name))
    per_device = self._per_device

    def on_device(arrays, order, position):
      return self.gather(arrays, jax.lax.dynamic_slice_in_dim(order, position * per_device, per_device))
    if axis_name is not None:  # pmap: the arguments are already this device's blocks.
      return on_device(arrays, order, position)
    sharded = PartitionSpec(parallel_lib.AXIS)
    return jax.shard_map(on_device, mesh=self.parallel.mesh, in_specs=(sharded, sharded, PartitionSpec()),
                         out_specs=sharded)(arrays, order, position)

  def gather_eval_batch(self, arrays: Batch, position: jax.Array, axis_name: str | None = None) -> Batch:
    """Batch `position` in order; the last one is padded by repeating the last example, with `mask` False there."""
    order = jnp.arange(self.steps_per_epoch * self.batch_size, dtype=jnp.int32)
    indices = self._slice_indices(order, position * self.batch_size, axis_name)
    batch = self.gather(arrays, jnp.minimum(indices, self.num_examples - 1))
    batch['mask'] = indices < self.num_examples
    return batch

  # --- host-side driver ------------------------------------------------------------------------------------------

  def order(self, epoch: int) -> jax.Array:
    """The device-resident visiting order of `epoch` (in the step's layout). One small device call per epoch."""
    if not self.shuffle:
      raise ValueError('order() is for shuffled (training) pipelines.')
    return self._in_step_layout(self._permutation(epoch))

  def fixed_order(self, key: jax.Array) -> jax.Array:
    """An order like `order(epoch)` but from `key` itself (e.g. the BatchNorm re-estimation pass)."""
    order = jax.jit(lambda: self._visiting_order(key), out_shardings=self._order_sharding)()
    return self._in_step_layout(order)

  def _in_step_layout(self, order: jax.Array) -> jax.Array:
    # Process-sharded orders are computed on the local devices only; 'jit' steps take them as the local blocks of
    # one mesh-sharded array.
    return order if self.placement == 'replicated' else self.parallel.local_blocks_to_step_layout(order)

  def position(self, step: int) -> tuple[int, int]:
    """(epoch, position within the epoch) of global step `step`: exact resume needs nothing else."""
    return divmod(step, self.steps_per_epoch)

  def iterate(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[Batch]:
    """Global batches from `start_step` on, in the step's layout (sharded over the mesh, or stacked for pmap).

    Reproduces exactly the batches the training loop gathers for the same steps. The position counter lives on
    device, so no host→device copy happens per batch.
    """
    if self._iterate_fn is None:
      def next_batch(arrays, order, position, axis_name=None):
        if self.shuffle:
          batch = self.gather_train_batch(arrays, order, position, axis_name)
        else:
          batch = self.gather_eval_batch(arrays, position, axis_name)
        return batch, position + 1
      self._iterate_fn = self.parallel.compile(next_batch)
    step = start_step
    epoch, position = self.position(step)
    order = self.order(epoch) if self.shuffle else self.arrays['labels']
    position_on_device = self.parallel.to_device_layout_host(np.int32(position))
    while num_steps is None or step < start_step + num_steps:
      batch, position_on_device = self._iterate_fn(self.arrays, order, position_on_device)
      yield batch
      step += 1
      if step % self.steps_per_epoch == 0:
        if not self.shuffle:
          return
        order = self.order(step // self.steps_per_epoch)
        position_on_device = self.parallel.to_device_layout_host(np.int32(0))
