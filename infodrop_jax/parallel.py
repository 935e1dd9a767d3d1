"""Device placement for data-parallel training: one `Parallel` object per run, two modes.

* 'jit' (default): a 1-D `Mesh` over all (global) devices with axis 'batch'. State is replicated, batches are
  sharded along 'batch', and XLA's SPMD partitioner inserts the gradient all-reduce. BatchNorm statistics are those
  of the global batch because the model sees one global (sharded) array.
* 'pmap': `jax.pmap` over the local devices with axis name 'batch'. State carries a leading device axis; the step
  body averages gradients and BatchNorm statistics with `lax.pmean` itself.

Both modes share one canonical *global* layout for everything that leaves the step (checkpoints, evaluation):
arrays replicated over the mesh. `to_device_layout` / `to_global` convert between it and the pmap layout.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXIS = 'batch'
MODES = ('jit', 'pmap')

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Parallel:
  """How a run spreads over devices. Build it with `Parallel.create(mode)` after `jax.distributed` is up."""
  mode: str
  mesh: Mesh  # All global devices, axis AXIS; used by 'jit' mode and by evaluation in both modes.
  local_mesh: Mesh  # This process's devices, axis AXIS; the pmap layout lives on it.

  @classmethod
  def create(cls, mode: str = 'jit', devices: list[jax.Device] | None = None) -> Parallel:
    """All devices (default), or `devices` (single-process only: a subset for tests and comparisons)."""
    if mode not in MODES:
      raise ValueError(f'config.train.parallel = {mode!r}: expected one of {MODES}.')
    devices = jax.devices() if devices is None else list(devices)
    local = [d for d in devices if d.process_index == jax.process_index()]
    mesh = Mesh(np.array(devices), (AXIS,), axis_types=(AxisType.Auto,))
    local_mesh = Mesh(np.array(local), (AXIS,), axis_types=(AxisType.Auto,))
    return cls(mode=mode, mesh=mesh, local_mesh=local_mesh)

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  @property
  def num_local_devices(self) -> int:
    return self.local_mesh.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  @property
  def batch_sharded(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec(AXIS))

  def check_batch_size(self, batch_size: int, field: str) -> None:
    """Raises ValueError unless `batch_size` splits evenly over the devices (called before compiling)."""
    if batch_size <= 0 or batch_size % self.num_devices:
      raise ValueError(f'{field} = {batch_size}: the global batch must be a positive multiple of the device count '
                       f'({self.num_devices} devices: {jax.devices()[0].platform}).')

  def replicate_host(self, tree: PyTree) -> PyTree:
    """Host (numpy) arrays, identical on every process → the global replicated layout (no cross-host traffic)."""
    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, self.replicated, lambda index: x[index])
    return jax.tree.map(put, tree)

  def step_sharding(self) -> NamedSharding:
    """Sharding of replicated values in the compiled step's layout."""
    if self.mode == 'jit':
      return self.replicated
    return NamedSharding(self.local_mesh, PartitionSpec(AXIS))

  def to_device_layout_host(self, tree: PyTree) -> PyTree:
    """Host arrays, identical on every process → replicated in the layout the compiled step takes."""
    if self.mode == 'jit':
      return self.replicate_host(tree)
    sharding = self.step_sharding()
    def stack(x):
      x = np.asarray(x)
      return jax.device_put(np.broadcast_to(x, (self.num_local_devices,) + x.shape), sharding)
    return jax.tree.map(stack, tree)

  def local_copies_host(self, tree: PyTree) -> PyTree:
    """Host arrays, possibly different on each process → one copy on each of this process's devices.

    'pmap': stacked along a leading local-device axis. 'jit': a global array of shape (num_devices · n, ...)
    sharded along AXIS whose block on every device is the array of that device's process; nothing crosses hosts.
    """
    if self.mode == 'pmap':
      return self.to_device_layout_host(tree)
    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback((self.num_devices * x.shape[0],) + x.shape[1:], self.batch_sharded,
                                          lambda index: x)
    return jax.tree.map(put, tree)

  def local_blocks_to_step_layout(self, x: jax.Array) -> jax.Array:
    """An array sharded along AXIS over the local devices (one block each) → the step's layout of those blocks.

    'pmap': unchanged. 'jit': the global array over the mesh made of every process's local blocks (no data moves).
    """
    if self.mode == 'pmap':
      return x
    block = x.shape[0] // self.num_local_devices
    return jax.make_array_from_single_device_arrays((self.num_devices * block,) + x.shape[1:], self.batch_sharded,
                                                    [shard.data for shard in x.addressable_shards])

  def to_device_layout(self, tree: PyTree) -> PyTree:
    """Global replicated layout → the layout the compiled step takes (unchanged in 'jit'; stacked in 'pmap')."""
    if self.mode == 'jit':
      return tree
    return self.to_device_layout_host(first_replica_to_host(tree))

  def compile(self, fn: Callable[..., Any], donate_argnums: tuple[int, ...] = ()) -> Callable[..., Any]:
    """`fn(*args, axis_name=None|AXIS)` compiled for this mode: `jax.jit`, or `jax.pmap` over axis AXIS."""
    if self.mode == 'jit':
      return jax.jit(functools.partial(fn, axis_name=None), donate_argnums=donate_argnums)
    return jax.pmap(functools.partial(fn, axis_name=AXIS), axis_name=AXIS, donate_argnums=donate_argnums)

  def to_global(self, tree: PyTree) -> PyTree:
    """The compiled step's layout → global replicated layout (checkpointing, evaluation)."""
    if self.mode == 'jit':
      return tree
    return self.replicate_host(jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree))

  def first_step_replica(self, tree: PyTree) -> PyTree:
    """One replica of every array in the compiled step's layout, as numpy on this process."""
    host = first_replica_to_host(tree)
    return jax.tree.map(lambda x: x[0], host) if self.mode == 'pmap' else host


def first_replica_to_host(tree: PyTree) -> PyTree:
  """One replica of every (replicated) array of the global layout, as numpy, on this process."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x),
                      tree)


def initialize_distributed(distributed_config: Any) -> None:
  """`jax.distributed.initialize` when `distributed_config.enabled`; must run before anything touches devices.

  Empty/-1 fields are left to JAX's cluster auto-detection (SLURM, Open MPI, Cloud TPU, ...).
  """
  if not distributed_config.enabled:
    return
  kwargs = {}
  if distributed_config.coordinator_address:
    kwargs['coordinator_address'] = distributed_config.coordinator_address
  if distributed_config.num_processes >= 1:
    kwargs['num_processes'] = int(distributed_config.num_processes)
  if distributed_config.process_id >= 0:
    kwargs['process_id'] = int(distributed_config.process_id)
  jax.distributed.initialize(**kwargs)
