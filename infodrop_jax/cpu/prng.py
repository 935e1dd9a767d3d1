"""CPU speed-up: `normal`, `uniform` and `bernoulli`, `jax.random`'s values, bit for bit, drawn 3-14x faster on CPU.

Part of the opt-in CPU speed-ups (`infodrop_jax.cpu`): `SAMPLER` is what the trainer injects into the noise layers'
`sampler` field on CPU (`config.train.cpu_speedups`); by default they call `jax.random` itself.

JAX lowers its Threefry-2x32 hash, on CPU only, as a `while` loop of five iterations (a smaller program to compile).
XLA:CPU runs each iteration as its own pass over the whole array, so drawing a layer's noise reads and writes the
counters five times over. The hash unrolled, as JAX lowers it on every other platform, is one fused pass. For
All-CNN-32's noise layers (`benchmarks/bench_prng.py`, `benchmarks/RESULTS.md`) random bits come 5-9x faster,
normals 2.9x and Bernoulli masks 7-14x, and the random numbers of a CPU train step take 6.5 instead of 19.2
device-milliseconds.

The functions here draw exactly `jax.random.normal(key, shape, dtype)` (and `uniform`, `bernoulli`): the same
counters (the 'partitionable' form, JAX's default, which also shards), the same hash and the same conversion of bits
to floats, with the hash written out in `jax.numpy` on CPU (`jax.lax.platform_dependent`; other platforms call
`jax.random` itself). `tests/test_prng.py` holds them to bit equality with `jax.random` on CPU. Where that recipe
does not apply (a non-Threefry key, `jax_threefry_partitionable` off, a float other than float32 — a Python float
`p` is float64 for `jax.random.bernoulli` when x64 is on —, traced bounds or `p`, an empty draw or 2³² values and
more) they call `jax.random` on every platform, as `normal` does for a last axis XLA:CPU would not vectorise; the
values never depend on which path ran.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infodrop_jax import layers

Array = jax.Array

_THREEFRY = 'threefry2x32'
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key-schedule constant.
_FLOAT32_ONE_BITS = np.uint32(0x3F800000)
_FLOAT32_MANTISSA_BITS = 23


def normal(key: Array, shape: Sequence[int], dtype: Any = None) -> Array:
  """`jax.random.normal(key, shape, dtype)`, the same values (`dtype` None: JAX's default float, as there)."""
  shape, dtype = _canonical_shape(shape), _float_dtype(dtype)
  if not (_unrollable(key, shape, dtype) and _erf_inv_vectorises(shape)):
    return jax.random.normal(key, shape, dtype)
  return _normal(key, shape)


def uniform(key: Array, shape: Sequence[int], dtype: Any = None, minval: Any = 0.0, maxval: Any = 1.0) -> Array:
  """`jax.random.uniform(key, shape, dtype, minval, maxval)`, the same values."""
  shape, dtype = _canonical_shape(shape), _float_dtype(dtype)
  if not (_unrollable(key, shape, dtype) and _concrete_scalar(minval) and _concrete_scalar(maxval)):
    return jax.random.uniform(key, shape, dtype, minval, maxval)
  return _uniform(key, shape, float(minval), float(maxval))


def bernoulli(key: Array, p: Any, shape: Sequence[int]) -> Array:
  """`jax.random.bernoulli(key, p, shape)`, the same values (True with probability p)."""
  shape = _canonical_shape(shape)
  # jax.random draws the uniforms in p's dtype (float64 for a Python float with x64 on); only float32 is reproduced.
  if not (_unrollable(key, shape, jnp.float32) and _concrete_scalar(p) and jnp.result_type(p) == jnp.float32):
    return jax.random.bernoulli(key, p, shape)
  return _bernoulli(key, float(p), shape)


# Compiled as jax.random's own samplers are, so that eager calls round (fuse multiply-adds) as jitted ones do. Only
# reached for float32 draws with a Threefry key (`_unrollable`, checked outside, so a later change of JAX's
# default PRNG cannot reuse a stale trace).
@functools.partial(jax.jit, static_argnums=(1,))
def _normal(key, shape):
  return _by_platform(key, _normal_from_bits, lambda k: jax.random.normal(k, shape, jnp.float32), shape)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _uniform(key, shape, minval, maxval):
  return _by_platform(key, lambda bits: _uniform_from_bits(bits, minval, maxval),
                      lambda k: jax.random.uniform(k, shape, jnp.float32, minval, maxval), shape)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _bernoulli(key, p, shape):
  return _by_platform(key, lambda bits: _uniform_from_bits(bits, 0.0, 1.0) < jnp.float32(p),
                      lambda k: jax.random.bernoulli(k, jnp.float32(p), shape), shape)


def _canonical_shape(shape: Sequence[int]) -> tuple[int, ...]:
  return tuple(int(d) for d in shape)


def _float_dtype(dtype: Any) -> np.dtype:
  return jnp.result_type(float) if dtype is None else jnp.dtype(dtype)


def _concrete_scalar(value: Any) -> bool:
  return not isinstance(value, jax.core.Tracer) and np.ndim(value) == 0


def _unrollable(key: Array, shape: tuple[int, ...], dtype) -> bool:
  """Whether `jax.random` would draw these values with the recipe reproduced here."""
  if jnp.dtype(dtype) != jnp.float32 or not jax.config.jax_threefry_partitionable:
    return False
  if not 0 < _size(shape) < 2 ** 32:  # 2³² values or more need the counters' high word; not reproduced.
    return False
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.shape == () and str(jax.random.key_impl(key)) == _THREEFRY
  return key.shape == (2,) and key.dtype == jnp.uint32 and jax.config.jax_default_prng_impl == _THREEFRY


def _erf_inv_vectorises(shape: tuple[int, ...]) -> bool:
  """Whether XLA:CPU's erf⁻¹ pass runs at full speed: not for a last axis of 3, 5-7 or 9-15 values.

  There its loop over that axis is not vectorised, and a normal draw took 16 ns per value against jax.random's 6-28
  (`benchmarks/RESULTS.md`); elsewhere 2-4 ns against 5-8. Such draws are left to jax.random (the same values).
  """
  return not shape or shape[-1] in (1, 2, 4, 8) or shape[-1] >= 16


def _size(shape: tuple[int, ...]) -> int:
  return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _by_platform(key, from_bits, with_jax_random, shape):
  """`from_bits(random_bits(...))` when lowered for CPU, `with_jax_random(key)` elsewhere."""
  key_data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return jax.lax.platform_dependent(
      key_data, cpu=lambda data: from_bits(random_bits(data, shape)),
      default=lambda data: with_jax_random(_as_key_like(data, key)))


def _as_key_like(data: Array, like: Array) -> Array:
  """A key with this data of `like`'s kind (a typed key stays typed, a raw one raw)."""
  if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(data, impl=_THREEFRY)
  return data


def random_bits(key_data: Array, shape: tuple[int, ...]) -> Array:
  """uint32 bits of `shape`: `jax.random.bits` of the Threefry key with this data (partitionable counters)."""
  # The counter of an element is its row-major index as a 64-bit number split into (high, low) words; below 2³²
  # elements the high word is 0. Built from per-axis iotas, it stays elementwise, so a sharded draw stays sharded.
  low = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    low = low + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  high = jnp.zeros(shape, jnp.uint32)
  bits_high, bits_low = threefry2x32(key_data[0], key_data[1], high, low)
  return bits_high ^ bits_low


def threefry2x32(key0: Array, key1: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
  """The Threefry-2x32 hash (20 rounds; Salmon et al. 2011), unrolled: XLA fuses it into one pass."""
  schedule = (key0, key1, key0 ^ key1 ^ _KEY_PARITY)
  x0, x1 = x0 + schedule[0], x1 + schedule[1]
  for group in range(5):
    for rotation in _ROTATIONS[group % 2]:
      x0 = x0 + x1
      x1 = x0 ^ ((x1 << np.uint32(rotation)) | (x1 >> np.uint32(32 - rotation)))
    x0 = x0 + schedule[(group + 1) % 3]
    x1 = x1 + schedule[(group + 2) % 3] + np.uint32(group + 1)
  return x0, x1


def _uniform_from_bits(bits: Array, minval: float, maxval: float) -> Array:
  """jax.random.uniform's conversion: the top 23 bits as the mantissa of a float in [1, 2), shifted and scaled."""
  mantissa = (bits >> np.uint32(32 - _FLOAT32_MANTISSA_BITS)) | _FLOAT32_ONE_BITS
  floats = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - jnp.float32(1.0)
  low, high = jnp.float32(minval), jnp.float32(maxval)
  return jnp.maximum(low, floats * (high - low) + low)


def _normal_from_bits(bits: Array) -> Array:
  """jax.random.normal's conversion: √2 · erf⁻¹(u), u uniform in (−1, 1)."""
  low = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
  u = _uniform_from_bits(bits, low, 1.0)
  return jnp.float32(np.sqrt(2)) * jax.lax.erf_inv(u)


# The noise layers' `sampler` (`layers.NoiseSampler`) with these draws.
SAMPLER = layers.NoiseSampler(normal=normal, bernoulli=bernoulli)
