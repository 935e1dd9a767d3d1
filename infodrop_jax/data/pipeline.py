"""Device-resident input pipeline for datasets that fit in accelerator memory.

The whole split is placed on every device once. Epoch `e` visits the examples in the order
`jax.random.permutation(fold_in(key, e), N)` (the last partial batch is dropped, as in the original), and global
batch `s` of the epoch is `order[s * B:(s + 1) * B]`. The batch is gathered on device inside the compiled step
(`gather_train_batch`), so a training step copies nothing from the host.

Why replicate instead of sharding the examples over devices: the batch order is then a function of
(key, epoch, step) alone, independent of the device count, so a run on 1, 8 or 2×4 devices sees the same global
batches, resume is exact across topologies, and gathering needs no cross-device traffic. Each device gathers only
its slice of the global batch: in 'jit' mode the indices are sharding-constrained along the mesh axis before the
gather; in 'pmap' mode device `d` slices `order[s * B + d * B/D:...]`. Multi-host: every process places the split on
its own devices only and feeds them; the cost is one copy of the split per device (CIFAR-10 GCN+ZCA: 0.7 GB).

`uint8` images are scaled to float32 in [0, 1] inside the gather; float32 images are used as they are.

`iterate()` is the iterator interface (global batches in the step's layout, one device call per batch, still no
host→device copies); a streaming source for data that does not fit would implement the same interface.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infodrop_jax import parallel as parallel_lib
from infodrop_jax.data import preprocess
from infodrop_jax.data.splits import Split

Batch = dict[str, jax.Array]


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
  """The visiting order of epoch `epoch`: a permutation of range(num_examples) from fold_in(key, epoch)."""
  return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples).astype(jnp.int32)


class InMemoryPipeline:
  """A split placed on device once, batched by per-epoch permutations (train) or in order (eval).

  Attributes:
    arrays: {'images', 'labels'} on device, in the layout of `parallel` (replicated over the mesh in 'jit' mode,
      one copy per local device stacked along a leading axis in 'pmap' mode).
    num_examples: N, the size of the split.
    batch_size: B, the global batch size.
    steps_per_epoch: floor(N / B) when shuffling (drop last partial batch), ceil(N / B) in order (padded, masked).
  """

  def __init__(self, split: Split, batch_size: int, parallel: parallel_lib.Parallel, *, key: jax.Array,
               shuffle: bool = True, name: str = 'split'):
    parallel.check_batch_size(batch_size, f'{name} batch size')
    num_examples = int(split.labels.shape[0])
    if split.images.shape[0] != num_examples:
      raise ValueError(f'{name}: {split.images.shape[0]} images but {num_examples} labels.')
    if shuffle and num_examples < batch_size:
      raise ValueError(f'{name}: {num_examples} examples is fewer than one batch of {batch_size}.')
    self.parallel = parallel
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.shuffle = shuffle
    self.key = key
    self.steps_per_epoch = num_examples // batch_size if shuffle else -(-num_examples // batch_size)
    host = {'images': np.asarray(split.images), 'labels': np.asarray(split.labels, np.int32)}
    self.arrays = parallel.to_device_layout_host(host)
    self._permutation = jax.jit(
        lambda epoch: self._replicate_in_layout(epoch_permutation(self.key, epoch, self.num_examples)),
        out_shardings=parallel.step_sharding(), static_argnums=())
    self._iterate_fn = None

  # --- traceable pieces, used inside compiled steps --------------------------------------------------------------

  def _replicate_in_layout(self, x: jax.Array) -> jax.Array:
    if self.parallel.mode == 'pmap':
      return jnp.broadcast_to(x, (self.parallel.num_local_devices,) + x.shape)
    return x

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
    """Batch `position` of the epoch visited in `order` (this device's slice of it under pmap `axis_name`)."""
    return self.gather(arrays, self._slice_indices(order, position * self.batch_size, axis_name))

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
    return self._permutation(epoch)

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
