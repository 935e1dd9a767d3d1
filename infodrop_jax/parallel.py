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

from infodrop_jax import config_checks
from infodrop_jax.cpu import xla as cpu_xla

AXIS = 'batch'
MODES = ('jit', 'pmap')

PyTree = Any

@dataclasses.dataclass(frozen=True)
class Parallel:
  """How a run spreads over devices. Build it with `Parallel.create(mode)` after `jax.distributed` is up."""
  mode: str
  mesh: Mesh  # All global devices, axis AXIS; used by 'jit' mode and by evaluation in both modes.
  local_mesh: Mesh  # This process's devices, axis AXIS; the pmap layout lives on it.
  # XLA options every jitted function gets (e.g. `infodrop_jax.cpu.xla.compiler_options()`); None: XLA's defaults.
  compiler_options: dict[str, str] | None = None

  @classmethod
  def create(cls, mode: str = 'jit', devices: list[jax.Device] | None = None,
             compiler_options: dict[str, str] | None = None) -> Parallel:
    """All devices (default), or `devices` (single-process only: a subset for tests and comparisons)."""
    if mode not in MODES:
      raise ValueError(f'config.train.parallel = {mode!r}: expected one of {MODES}.')
    devices = jax.devices() if devices is None else list(devices)
    local = [d for d in devices if d.process_index == jax.process_index()]
    mesh = Mesh(np.array(devices), (AXIS,), axis_types=(AxisType.Auto,))
    local_mesh = Mesh(np.array(local), (AXIS,), axis_types=(AxisType.Auto,))
    return cls(mode=mode, mesh=mesh, local_mesh=local_mesh, compiler_options=compiler_options or None)

  @property
  def platform(self) -> str:
    """The devices' platform ('cpu', 'gpu', 'tpu')."""
    return self.mesh.devices.flat[0].platform

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

  def jit(self, fn: Callable[..., Any], **jit_kwargs) -> Callable[..., Any]:
    """`jax.jit(fn, **jit_kwargs)`, with this run's `compiler_options` where it has some (see `cpu.xla.OptionsJit`)."""
    if not self.compiler_options:
      return jax.jit(fn, **jit_kwargs)
    return cpu_xla.OptionsJit(fn, self.compiler_options, **jit_kwargs)

  def compile(self, fn: Callable[..., Any], donate_argnums: tuple[int, ...] = ()) -> Callable[..., Any]:
    """`fn(*args, axis_name=None|AXIS)` compiled for this mode: `jax.jit`, or `jax.pmap` over axis AXIS.

    pmap takes no compiler options, so a pmap-mode run on CPU devices keeps XLA's default CPU kernels.
    """
    if self.mode == 'jit':
      return self.jit(functools.partial(fn, axis_name=None), donate_argnums=donate_argnums)
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


def _address_problem(address: str) -> str | None:
  """Why `address` is not a coordinator 'host:port' ('[v6]:port' for IPv6), or None when it is one."""
  host, sep, port = address.rpartition(':')
  if not sep or not host:
    return 'it has no host:port form'
  if not (port.isdigit() and 1 <= int(port) <= 65535):
    return f'port {port!r} is not a number in 1..65535'
  if host.startswith('['):
    if not host.endswith(']') or len(host) < 3 or not all(c in '0123456789abcdefABCDEF:.' for c in host[1:-1]):
      return f'host {host!r} is not a bracketed IPv6 address'
  elif ':' in host:
    return f'host {host!r} contains ":" (write an IPv6 host in brackets: [::1]:1234)'
  elif any(c.isspace() or c in '/[]@' for c in host):
    return f'host {host!r} is not a host name or IP address'
  return None


def validate_distributed(distributed_config: Any) -> None:
  """Raises ValueError naming the first bad `config.distributed` field; nothing is contacted.

  Checked before `jax.distributed.initialize`, which would otherwise hang on a malformed address or fail with a
  traceback on an out-of-range process id.
  """
  d = distributed_config
  expected = {
      'enabled': (isinstance(d.enabled, (bool, np.bool_)), 'True or False'),
      'coordinator_address': (isinstance(d.coordinator_address, str),
                              "'host:port' of process 0's coordinator, or '' to detect it from the cluster"),
      'num_processes': (config_checks.is_int(d.num_processes) and (d.num_processes == -1 or d.num_processes >= 1),
                        'an int >= 1, or -1 to detect it from the cluster'),
      'process_id': (config_checks.is_int(d.process_id) and d.process_id >= -1,
                     'an int in [0, num_processes), or -1 to detect it from the cluster'),
  }
  for field, (ok, what) in expected.items():
    if not ok:
      raise ValueError(f'config.distributed.{field} = {d[field]!r}: expected {what}.')
  if d.coordinator_address:
    problem = _address_problem(d.coordinator_address)
    if problem:
      raise ValueError(f'config.distributed.coordinator_address = {d.coordinator_address!r}: expected '
                       f"'host:port' (e.g. '10.0.0.1:1234' or '[::1]:1234'); {problem}.")
  if d.process_id >= 0 and d.num_processes == -1:
    raise ValueError(f'config.distributed.process_id = {d.process_id} needs config.distributed.num_processes too '
                     '(or leave both at -1 to detect them from the cluster).')
  if d.num_processes >= 1 and d.process_id >= d.num_processes:
    raise ValueError(f'config.distributed.process_id = {d.process_id}: expected an int in '
                     f'[0, {d.num_processes}) (num_processes = {d.num_processes}).')


def initialize_distributed(distributed_config: Any) -> None:
  """`jax.distributed.initialize` when `distributed_config.enabled`; must run before anything touches devices.

  Empty/-1 fields are left to JAX's cluster auto-detection (SLURM, Open MPI, Cloud TPU, ...). The fields are
  checked first (`validate_distributed`), whether or not distributed is enabled.
  """
  validate_distributed(distributed_config)
  if not distributed_config.enabled:
    return
  kwargs = {}
  if distributed_config.coordinator_address:
    kwargs['coordinator_address'] = distributed_config.coordinator_address
  if distributed_config.num_processes >= 1:
    kwargs['num_processes'] = int(distributed_config.num_processes)
  if distributed_config.process_id >= 0:
    kwargs['process_id'] = int(distributed_config.process_id)
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:  # jaxlib's XlaRuntimeError is a RuntimeError.
    raise ConnectionError(
        f'jax.distributed.initialize({", ".join(f"{k}={v!r}" for k, v in kwargs.items())}) failed: {e}. Check that '
        'every process runs with the same coordinator_address and num_processes and its own process_id, that '
        'process 0 (the coordinator) started, and that its port is reachable; leave the fields empty/-1 to take '
        'them from the cluster environment (SLURM, Open MPI, Cloud TPU).') from e
