"""Compiled XLA:CPU kernels for 2-D convolutions: the kernel (weight) gradient, and the forward pass of narrow ones.

XLA:CPU in the jaxlib we test (0.10.2) computes a convolution's kernel gradient with Eigen, as a convolution with a
huge window after transposing both operands: up to 6x the time the contraction needs, and the largest single cost
of an All-CNN train step on a CPU. `conv2d.cc` computes it (`kernel_gradient`) from the operands as the step stores
them, in AVX-512 register tiles, as an XLA FFI custom call; and the forward pass (`forward`), which beats Eigen's
for layers of up to FORWARD_MAX_OUT output channels. `infodrop_jax.convolution` uses both on CPU where they apply
(`supports_kernel_gradient`, `supports_forward`); the results are XLA's to float rounding. Numbers:
benchmarks/RESULTS.md.

The source ships with the package and is compiled on first use with the machine's C++ compiler (`$CXX`, else `c++`)
for this CPU (`-march=native`), against the XLA FFI headers of the installed jaxlib, into
`$INFODROP_CACHE_DIR/native/` (default `~/.cache/infodrop_jax/native/`), keyed by the source, compiler, flags, jaxlib
version and CPU; later processes load it from there (a build takes about 3 s). Where that cannot happen (no compiler,
a CPU without AVX-512F, a failed build) `available()` is False, the reason is logged once, and XLA computes the
convolutions as before. `INFODROP_NATIVE=0` turns the kernels off for a process; `disabled()` for what is traced
inside it.

Under `jit` with a batch-sharded input (the trainer's data parallelism) each device runs its shard (the kernel
gradients are summed over devices) through `custom_partitioning`; under `pmap` and `vmap` the calls are mapped.
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

Array = jax.Array

DISABLE_ENV = 'INFODROP_NATIVE'
SOURCE = pathlib.Path(__file__).with_name('conv2d.cc')
KERNEL_GRADIENT_TARGET = 'infodrop_kernel_gradient'
FORWARD_TARGET = 'infodrop_conv_forward'
CHANNEL_MULTIPLE = 8  # conv2d.cc's kernel-gradient register tile: input channels a multiple of this.
# The forward kernel is used up to this many output channels: there it ran 1.2-2.4x faster than XLA's Eigen
# convolutions on All-CNN-32's shapes with rows of 8 outputs or more; at 96 to 384 outputs 0.9-1.1x
# (benchmarks/RESULTS.md, 2-core AVX-512 Xeon).
FORWARD_MAX_OUT = 48
# Its tiles are 8 output pixels of a row: narrower rows waste lanes (0.67x XLA's at All-CNN-32's 6x6 outputs).
FORWARD_MIN_WIDTH = 8
_FLAGS = ('-O3', '-march=native', '-std=c++17', '-shared', '-fPIC')
_DISABLED = contextvars.ContextVar('infodrop_native_disabled', default=False)


class NativeBuildError(RuntimeError):
  """The kernels could not be compiled or loaded on this machine (the message says why)."""


def _compiler() -> list[str]:
  """$CXX split as a shell would ('ccache g++' too), else c++."""
  return shlex.split(os.environ.get('CXX', '')) or ['c++']


def library_path() -> pathlib.Path:
  """Where this machine's build lives: keyed by the source, compiler, flags and jaxlib version."""
  from infodrop_jax.data.config import default_cache_dir  # pylint: disable=import-outside-toplevel
  compiler = _compiler()
  try:
    version = subprocess.run([*compiler, '--version'], capture_output=True, text=True, check=True,
                             timeout=60).stdout
  except (OSError, subprocess.SubprocessError) as error:
    raise NativeBuildError(f'no working C++ compiler ({" ".join(compiler)!r}: {error}); set $CXX to one') from error
  key = hashlib.sha256()
  for part in (SOURCE.read_bytes(), version.encode(), ' '.join(_FLAGS).encode(), jax.lib.__version__.encode(),
               _cpu_model().encode()):
    key.update(part)
  return default_cache_dir() / 'native' / key.hexdigest()[:16] / 'libinfodrop_native.so'


def _cpu_model() -> str:
  """The CPU's model and flags: a cache carried to another machine (a shared home) gets its own build."""
  try:
    lines = pathlib.Path('/proc/cpuinfo').read_text().splitlines()
  except OSError:
    return ''
  return '\n'.join(sorted({line for line in lines if line.startswith(('model name', 'flags'))}))


def build(path: pathlib.Path) -> None:
  """Compiles SOURCE into `path`, atomically (concurrent processes each build and rename; the last one wins)."""
  import jax.ffi  # pylint: disable=import-outside-toplevel
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
    partial = pathlib.Path(scratch) / path.name
    command = [*_compiler(), *_FLAGS, '-isystem', jax.ffi.include_dir(), str(SOURCE), '-o', str(partial)]
    try:
      done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
      raise NativeBuildError(f'{" ".join(command)}: {error}') from error
    if done.returncode:
      raise NativeBuildError(f'{" ".join(command)} failed:\n{done.stderr.strip()[-2000:]}')
    os.replace(partial, path)


@functools.cache
def _load() -> str | None:
  """Builds (once per machine) and registers the FFI target; None when ready, else why not."""
  if os.environ.get(DISABLE_ENV, '1') == '0':
    return f'${DISABLE_ENV}=0'
  try:
    path = library_path()
    if not path.exists():
      if shutil.which(_compiler()[0]) is None:
        raise NativeBuildError(f'no C++ compiler {_compiler()[0]!r} on PATH; set $CXX to one')
      build(path)
    library = ctypes.cdll.LoadLibrary(str(path))
    for target in (KERNEL_GRADIENT_TARGET, FORWARD_TARGET):
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)), platform='cpu')
  except Exception as error:  # pylint: disable=broad-except  # Whatever fails here, XLA's convolutions remain.
    return f'{type(error).__name__}: {error}' if not isinstance(error, NativeBuildError) else str(error)
  return None


def available() -> bool:
  """Whether the compiled kernels are in use on this machine (builds them on first call; logs why not, once)."""
  reason = _load()
  if reason is not None:
    _log_unavailable(reason)
  return reason is None


@functools.cache
def _log_unavailable(reason: str) -> None:
  logging.warning('infodrop_jax.native: compiled CPU kernels unavailable, XLA computes the convolutions instead '
                  '(same results, slower): %s', reason)


@contextlib.contextmanager
def disabled():
  """Convolutions traced inside use XLA's kernels, not these (XLA's cost analysis counts no FLOPs in a custom
  call, so benchmarks count a step's FLOPs on one traced in here; also for comparisons). JAX's trace caches do not
  see this switch: a function already traced outside is not traced again inside, so pass a fresh function (a new
  `jax.jit` or `functools.partial`)."""
  token = _DISABLED.set(True)
  try:
    yield
  finally:
    _DISABLED.reset(token)


def _usable(*arrays) -> bool:
  # Empty arrays are XLA's (nothing to gain). A process whose default backend is a GPU or TPU neither builds nor
  # uses the kernels (its convolutions run there).
  return (all(a.ndim == 4 and a.dtype == jnp.float32 and 0 not in a.shape for a in arrays)
          and not _DISABLED.get() and jax.default_backend() == 'cpu' and available())


def supports_kernel_gradient(lhs: Array, grad: Array, window: Sequence[int], pads) -> bool:
  """Whether `kernel_gradient` handles this convolution: 2-D, float32, non-empty, input channels a multiple of 8,
  no negative padding (the kernels being `available` and not `disabled`)."""
  return (len(window) == 2 and lhs.shape[-1] % CHANNEL_MULTIPLE == 0
          and all(lo >= 0 and hi >= 0 for lo, hi in pads) and _usable(lhs, grad))


def supports_forward(lhs: Array, rhs: Array, strides: Sequence[int], pads) -> bool:
  """Whether `forward` handles this convolution, and is used for it: 2-D, float32, non-empty, no negative padding,
  at most FORWARD_MAX_OUT output channels and rows of at least FORWARD_MIN_WIDTH outputs (the kernels being
  `available` and not `disabled`)."""
  return (lhs.ndim == 4 and rhs.ndim == 4 and rhs.shape[-1] <= FORWARD_MAX_OUT
          and all(lo >= 0 and hi >= 0 for lo, hi in pads) and _rows_fit(_output_spatial(lhs, rhs, strides, pads))
          and _usable(lhs, rhs))


def _rows_fit(spatial: Sequence[int]) -> bool:
  return spatial[0] >= 1 and spatial[1] >= FORWARD_MIN_WIDTH


def _output_spatial(lhs, rhs, strides, pads) -> list[int]:
  return [(size + lo + hi - k) // s + 1 for size, k, s, (lo, hi) in zip(lhs.shape[1:3], rhs.shape[:2], strides, pads)]


def kernel_gradient(lhs: Array, grad: Array, *, window: Sequence[int], strides: Sequence[int],
                    pads: Sequence[tuple[int, int]]) -> Array:
  """The kernel gradient (KH, KW, C, O) of the features-last convolution of `lhs` (N, H, W, C) with these strides
  and explicit pads, given its output gradient `grad` (N, P, Q, O). Check `supports_kernel_gradient` first; raises
  NativeBuildError where the kernels are not `available`."""
  return _ops()[KERNEL_GRADIENT_TARGET](lhs, grad, (*window, lhs.shape[-1], grad.shape[-1]), strides, pads)


def forward(lhs: Array, rhs: Array, *, strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> Array:
  """The features-last convolution (N, P, Q, O) of `lhs` (N, H, W, C) with the kernel `rhs` (KH, KW, C, O), these
  strides and explicit pads (`jax.lax.conv_general_dilated`'s value, to float rounding; no gradient of its own:
  `convolution` gives it one). Check `supports_forward` first; raises NativeBuildError where the kernels are not
  `available`."""
  spatial = _output_spatial(lhs, rhs, strides, pads)
  return _ops()[FORWARD_TARGET](lhs, rhs, (lhs.shape[0], *spatial, rhs.shape[-1]), strides, pads)


class _Op:
  """One FFI target as a JAX function of (lhs, second operand): partitioned over a batch-sharded `lhs` under jit
  (`custom_partitioning`); under vmap and pmap (custom_partitioning has no batching rule) the forward pass of
  mapped images with one kernel is one call over the joined batch, anything else a `lax.map`, one element at a
  time."""

  def __init__(self, target: str, sharding_rule: str, second_batched: bool, sums_over_batch: bool, **rule):
    self.target = target
    self.second_batched = second_batched  # The second operand shares lhs's batch axis (and its sharding).
    self.sums_over_batch = sums_over_batch  # The result sums over the batch: shards add up (psum).
    from jax.experimental.custom_partitioning import custom_partitioning  # pylint: disable=import-outside-toplevel
    self._partitioned = custom_partitioning(self._call, static_argnums=(2, 3, 4))
    self._partitioned.def_partition(partition=self._partition, infer_sharding_from_operands=self._infer,
                                    sharding_rule=sharding_rule, **rule)

  def __call__(self, lhs, other, out_shape, strides, pads):
    reason = _load()
    if reason is not None:
      raise NativeBuildError(reason)
    statics = tuple(int(d) for d in out_shape), tuple(int(s) for s in strides), tuple(int(lo) for lo, _ in pads)

    @jax.custom_batching.custom_vmap
    def call(lhs, other):
      return self._partitioned(lhs, other, *statics)

    @call.def_vmap
    def _(axis_size, in_batched, lhs, other):
      if not self.second_batched and tuple(in_batched) == (True, False):
        # Images mapped over one kernel: the mapped axis joins the batch, one call for all (exact).
        folded = self(lhs.reshape(-1, *lhs.shape[2:]), other, (axis_size * out_shape[0], *out_shape[1:]),
                      strides, pads)
        return folded.reshape(axis_size, *out_shape), True
      lhs, other = (a if batched else jnp.broadcast_to(a, (axis_size, *a.shape))
                    for a, batched in zip((lhs, other), in_batched))
      return jax.lax.map(lambda operands: call(*operands), (lhs, other)), True

    return call(lhs, other)

  def _call(self, lhs, other, out_shape, strides, pad_low):
    out = jax.ShapeDtypeStruct(out_shape, jnp.float32)
    return jax.ffi.ffi_call(self.target, out)(lhs, other, stride_h=strides[0], stride_w=strides[1],
                                              pad_h=pad_low[0], pad_w=pad_low[1])

  def _result_spec(self, axes) -> PartitionSpec:
    return PartitionSpec() if self.sums_over_batch else PartitionSpec(axes)

  def _infer(self, out_shape, strides, pad_low, mesh, arg_shapes, result_shape):
    del out_shape, strides, pad_low, result_shape
    return NamedSharding(mesh, self._result_spec(_batch_axes(arg_shapes)))

  def _partition(self, out_shape, strides, pad_low, mesh, arg_shapes, result_shape):
    del result_shape
    axes = _batch_axes(arg_shapes)  # Everything but lhs's batch axis is gathered.
    local_shape = out_shape
    if axes is not None and not self.sums_over_batch:
      local_shape = (arg_shapes[0].sharding.shard_shape(arg_shapes[0].shape)[0], *out_shape[1:])

    def per_shard(lhs, other):
      out = self._call(lhs, other, local_shape, strides, pad_low)
      return jax.lax.psum(out, axes) if axes is not None and self.sums_over_batch else out

    second = PartitionSpec(axes) if self.second_batched else PartitionSpec()
    return (mesh, per_shard, NamedSharding(mesh, self._result_spec(axes)),
            (NamedSharding(mesh, PartitionSpec(axes)), NamedSharding(mesh, second)))


def _batch_axes(arg_shapes):
  """The mesh axes lhs's batch is sharded over (None if replicated, or given a sharding without a mesh)."""
  sharding = arg_shapes[0].sharding
  spec = sharding.spec if isinstance(sharding, NamedSharding) else ()
  return spec[0] if len(spec) else None


@functools.cache
def _ops() -> dict[str, _Op]:
  """The two ops, made on first use: importing this module (every model does, through `convolution`) then needs
  none of the sharding APIs on machines that never use the kernels."""
  return {
      KERNEL_GRADIENT_TARGET: _Op(KERNEL_GRADIENT_TARGET, 'n h w c, n p q o -> i j c o', second_batched=True,
                                  sums_over_batch=True, reduction_factors=('n',),
                                  need_replication_factors=('h', 'w', 'c', 'p', 'q', 'o', 'i', 'j')),
      # need_replication_factors in order of appearance, as Shardy requires.
      FORWARD_TARGET: _Op(FORWARD_TARGET, 'n h w c, i j c o -> n p q o', second_batched=False,
                          sums_over_batch=False, need_replication_factors=('h', 'w', 'c', 'i', 'j', 'o', 'p', 'q')),
  }
