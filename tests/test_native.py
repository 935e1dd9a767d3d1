"""infodrop_jax.native: the compiled kernel gradient equals XLA's (values, sharded, pmapped, in loops, vmapped,
differentiated), is what convolution.Conv uses where it applies, and falls back to XLA where it cannot build."""
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax import convolution
from infodrop_jax import native


def _machine_can_build() -> bool:
  try:
    flags = pathlib.Path('/proc/cpuinfo').read_text()
  except OSError:
    return False
  return ' avx512f' in flags and shutil.which(os.environ.get('CXX') or 'c++') is not None


# Where the machine has AVX-512F and a compiler (CI's does) the kernels must build: a broken build fails here
# instead of silently falling back to XLA.
def test_the_kernels_build_where_the_machine_can():
  if not _machine_can_build():
    pytest.skip('no AVX-512F CPU or no C++ compiler: the kernels are not expected to build here')
  assert native.available()
  assert native.library_path().is_file()


needs_kernels = pytest.mark.skipif(not _machine_can_build(), reason='the compiled kernels need AVX-512F and c++')

_CASES = [  # (batch, spatial, in, out, window, strides, padding)
    (3, (9, 8), 8, 24, (3, 3), (1, 1), 'SAME'),  # One register tile: 8 inputs x 24 outputs (16 + a masked 8).
    (2, (10, 11), 16, 40, (3, 3), (2, 2), 'SAME'),  # All-CNN's pooling convolutions; odd sizes.
    (4, (8, 8), 8, 5, (3, 3), (1, 1), 'VALID'),  # Fewer outputs than a vector.
    (2, (7, 7), 8, 16, (3, 3), (2, 2), 'VALID'),  # The last row and column reach no output.
    (2, (6, 9), 8, 8, (3, 3), (1, 1), ((2, 0), (0, 3))),  # Explicit, asymmetric padding.
    (2, (8, 8), 8, 100, (1, 1), (1, 1), 'SAME'),  # Output blocks of 48, 48 and a masked 4.
    (1, (9, 9), 24, 7, (5, 5), (2, 3), 'SAME'),  # 5x5 window, different strides per axis, one image.
    (2, (5, 4), 8, 8, (4, 2), (1, 1), 'SAME'),  # Even window: asymmetric 'SAME' padding.
    (2, (3, 3), 8, 8, (5, 5), (1, 1), 'SAME'),  # Window larger than the input: taps that reach nothing.
    (5, (4, 4), 8, 8, (3, 3), (3, 3), 'SAME'),  # Stride 3; batch split unevenly over the threads.
]


def _operands(batch, spatial, features, out, window, strides, padding, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, *spatial, features)), jnp.float32)
  pads = (jax.lax.padtype_to_pads(spatial, window, strides, padding) if isinstance(padding, str)
          else tuple(padding))
  y = jax.eval_shape(lambda x: jax.lax.conv_general_dilated(x, jnp.zeros((*window, features, out)), strides, pads,
                                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC')), x)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  return x, g, tuple(pads)


def _assert_close(got, expected):
  assert got.shape == expected.shape and got.dtype == expected.dtype
  scale = float(jnp.max(jnp.abs(expected)))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6 * scale)


@needs_kernels
@pytest.mark.parametrize('batch,spatial,features,out,window,strides,padding', _CASES)
def test_kernel_gradient_equals_xlas(batch, spatial, features, out, window, strides, padding):
  x, g, pads = _operands(batch, spatial, features, out, window, strides, padding)
  expected = convolution.canonical_kernel_gradient(x, g, window=window, strides=strides, pads=pads)
  got = jax.jit(lambda x, g: native.kernel_gradient(x, g, window=window, strides=strides, pads=pads))(x, g)
  _assert_close(got, expected)


def _lax_forward(x, w, strides, pads):
  return jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@needs_kernels
@pytest.mark.parametrize('batch,spatial,features,out,window,strides,padding',
                         _CASES + [(2, (9, 9), 3, 96, (3, 3), (1, 1), 'SAME')])  # An image's 3 channels.
def test_forward_equals_xlas(batch, spatial, features, out, window, strides, padding):
  x, _, pads = _operands(batch, spatial, features, out, window, strides, padding)
  w = jnp.asarray(np.random.default_rng(2).normal(size=(*window, features, out)), jnp.float32)
  got = jax.jit(lambda x, w: native.forward(x, w, strides=strides, pads=pads))(x, w)
  _assert_close(got, _lax_forward(x, w, strides, pads))


@needs_kernels
def test_forward_sharded_over_the_batch_stays_sharded_with_no_communication():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('batch',))
  x, _, pads = _operands(2 * len(jax.devices()), (8, 8), 8, 24, (3, 3), (2, 2), 'SAME')
  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 8, 24)), jnp.float32)
  expected = _lax_forward(x, w, (2, 2), pads)
  x = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch')))
  fn = jax.jit(lambda x, w: native.forward(x, w, strides=(2, 2), pads=pads))
  got = fn(x, w)
  _assert_close(got, expected)
  assert got.sharding.spec == jax.sharding.PartitionSpec('batch')
  compiled = fn.lower(x, w).compile().as_text()
  assert 'all-gather' not in compiled and 'all-reduce' not in compiled


@needs_kernels
def test_forward_pmapped_and_vmapped_equals_xlas():
  devices = len(jax.devices())
  x, _, pads = _operands(2 * devices, (6, 6), 8, 16, (3, 3), (1, 1), 'SAME')
  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 8, 16)), jnp.float32)
  split = x.reshape(devices, 2, *x.shape[1:])
  ours = lambda x: native.forward(x, w, strides=(1, 1), pads=pads)
  expected = jax.vmap(lambda x: _lax_forward(x, w, (1, 1), pads))(split)
  _assert_close(jax.pmap(ours)(split), expected)
  _assert_close(jax.jit(jax.vmap(ours))(split), expected)  # One kernel: the mapped axis joins the batch.
  kernels = jnp.stack([w + k for k in range(devices)])  # A kernel per element: one call each.
  _assert_close(jax.jit(jax.vmap(lambda x, w: native.forward(x, w, strides=(1, 1), pads=pads)))(split, kernels),
                jax.vmap(lambda x, w: _lax_forward(x, w, (1, 1), pads))(split, kernels))


@needs_kernels
def test_sharded_over_the_batch_each_device_sums_its_shard_and_nothing_is_gathered():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('batch',))
  batch_sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch'))
  x, g, pads = _operands(2 * len(jax.devices()), (8, 8), 8, 24, (3, 3), (2, 2), 'SAME')
  expected = convolution.canonical_kernel_gradient(x, g, window=(3, 3), strides=(2, 2), pads=pads)
  fn = jax.jit(lambda x, g: native.kernel_gradient(x, g, window=(3, 3), strides=(2, 2), pads=pads))
  x, g = jax.device_put((x, g), batch_sharded)
  _assert_close(fn(x, g), expected)
  compiled = fn.lower(x, g).compile().as_text()
  assert 'all-gather' not in compiled and 'all-reduce' in compiled


@needs_kernels
def test_pmapped_scanned_and_vmapped_calls_equal_xlas():
  devices = len(jax.devices())
  x, g, pads = _operands(2 * devices, (6, 6), 8, 16, (3, 3), (1, 1), 'SAME')
  ours = lambda x, g: native.kernel_gradient(x, g, window=(3, 3), strides=(1, 1), pads=pads)
  ref = lambda x, g: convolution.canonical_kernel_gradient(x, g, window=(3, 3), strides=(1, 1), pads=pads)
  split = lambda a: a.reshape(devices, 2, *a.shape[1:])
  _assert_close(jax.pmap(ours)(split(x), split(g)), jax.vmap(ref)(split(x), split(g)))
  _assert_close(jax.jit(jax.vmap(ours))(split(x), split(g)), jax.vmap(ref)(split(x), split(g)))
  scan = lambda f: jax.jit(lambda x, g: jax.lax.scan(lambda c, xg: (c + f(*xg), None), jnp.zeros((3, 3, 8, 16)),
                                                     (split(x), split(g)))[0])
  _assert_close(scan(ours)(x, g), scan(ref)(x, g))


def _value_jaxpr(features, out):
  conv = lambda x, w: convolution.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return str(jax.make_jaxpr(conv)(jnp.zeros((2, 8, 8, features)), jnp.zeros((3, 3, features, out))))


def _gradient_jaxpr(features, dtype=jnp.float32):
  x = jnp.zeros((2, 8, 8, features), dtype)
  w = jnp.zeros((3, 3, features, 8), dtype)
  loss = lambda x, w: jnp.sum(convolution.conv_general_dilated(x, w, (2, 2), 'SAME',
                                                               dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  return str(jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, w))


@needs_kernels
def test_convolution_uses_the_kernels_where_they_apply():
  assert native.KERNEL_GRADIENT_TARGET in _gradient_jaxpr(8)
  assert native.KERNEL_GRADIENT_TARGET not in _gradient_jaxpr(3)  # Input channels not a multiple of 8.
  assert native.FORWARD_TARGET in _value_jaxpr(3, native.FORWARD_MAX_OUT)
  assert native.FORWARD_TARGET not in _value_jaxpr(3, native.FORWARD_MAX_OUT + 1)  # Where XLA's measured faster.
  narrow_rows = jnp.zeros((2, native.FORWARD_MIN_WIDTH - 1, native.FORWARD_MIN_WIDTH - 1, 8))
  assert not native.supports_forward(narrow_rows, jnp.zeros((3, 3, 8, 8)), (1, 1), ((1, 1), (1, 1)))
  for target in (native.KERNEL_GRADIENT_TARGET, native.FORWARD_TARGET):
    assert target not in _gradient_jaxpr(8, jnp.bfloat16)
    with native.disabled():
      assert target not in _gradient_jaxpr(8)


@needs_kernels
def test_a_supported_convolution_and_its_gradients_lower_to_custom_calls_on_cpu_only():
  x, w = jnp.zeros((2, 16, 16, 8)), jnp.zeros((3, 3, 8, 16))  # Output rows of 8: the forward kernel's too.
  loss = lambda x, w: jnp.sum(convolution.conv_general_dilated(x, w, (2, 2), 'SAME',
                                                               dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2)
  lowered = lambda platform: jax.jit(jax.grad(loss, (0, 1))).trace(x, w).lower(
      lowering_platforms=(platform,)).as_text()
  cpu, cuda = lowered('cpu'), lowered('cuda')
  assert 'stablehlo.convolution' not in cpu
  assert native.FORWARD_TARGET in cpu and native.KERNEL_GRADIENT_TARGET in cpu
  assert 'stablehlo.convolution' in cuda
  assert native.FORWARD_TARGET not in cuda and native.KERNEL_GRADIENT_TARGET not in cuda


@needs_kernels
@pytest.mark.parametrize('strides,padding', [((1, 1), 'SAME'), ((2, 2), 'SAME'), ((2, 2), ((2, 0), (1, 3))),
                                             ((1, 1), 'VALID')])
def test_conv_gradients_first_and_second_order_equal_lax(strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 8, 5)), jnp.float32)
  numbers = ('NHWC', 'HWIO', 'NHWC')
  ours = lambda x, w: convolution.conv_general_dilated(x, w, strides, padding, dimension_numbers=numbers)
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=numbers)
  loss = lambda conv: (lambda x, w: jnp.sum(jnp.tanh(conv(x, w))))
  for got, expected in zip(jax.jit(jax.grad(loss(ours), (0, 1)))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
    _assert_close(got, expected)
  second = lambda conv: jax.grad(lambda x, w: jnp.sum(jax.grad(loss(conv), 1)(x, w) ** 2), (0, 1))
  for got, expected in zip(jax.jit(second(ours))(x, w), second(ref)(x, w)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(expected))))


@needs_kernels
def test_a_conv_module_trains_alike_with_and_without_the_kernel():
  model = nn.Sequential([convolution.Conv(8, (3, 3)), nn.relu, convolution.Conv(16, (3, 3), strides=2), nn.relu,
                         convolution.Conv(4, (3, 3), padding='VALID')])
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 12, 12, 3)), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), x)
  grad = lambda: jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2)))
  got = grad()(params)
  with native.disabled():
    expected = grad()(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    _assert_close(a, b)


def _python(code: str, **env) -> subprocess.CompletedProcess:
  environment = {**os.environ, **env}
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                        env=environment, timeout=300)


_FALLBACK = """
import jax, jax.numpy as jnp, numpy as np
from infodrop_jax import convolution, native
assert not native.available()
x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 8)), jnp.float32)
w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 8, 4)), jnp.float32)
numbers = ('NHWC', 'HWIO', 'NHWC')
conv = lambda f: (lambda w: jnp.sum(f(x, w, (2, 2), 'SAME', dimension_numbers=numbers) ** 2))
ours, ref = jax.grad(conv(convolution.conv_general_dilated)), jax.grad(conv(jax.lax.conv_general_dilated))
np.testing.assert_allclose(ours(w), ref(w), rtol=1e-5, atol=1e-4)
try:
  native.kernel_gradient(x, x, window=(3, 3), strides=(1, 1), pads=((1, 1), (1, 1)))
except native.NativeBuildError as error:
  print('raised:', error)
"""


def test_without_a_compiler_convolutions_fall_back_to_xla_and_say_why(tmp_path):
  done = _python(_FALLBACK, CXX=str(tmp_path / 'no-such-compiler'), INFODROP_CACHE_DIR=str(tmp_path / 'cache'))
  assert done.returncode == 0, done.stderr
  assert 'compiled CPU kernels unavailable' in done.stderr and 'no-such-compiler' in done.stderr
  assert 'raised:' in done.stdout and 'no-such-compiler' in done.stdout


def test_a_failing_build_falls_back_with_the_compilers_message(tmp_path):
  compiler = tmp_path / 'broken-c++'
  compiler.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo broken 1.0; exit 0; fi\n'
                      'echo "error: this compiler is broken" >&2\nexit 1\n')
  compiler.chmod(0o755)
  done = _python(_FALLBACK, CXX=str(compiler), INFODROP_CACHE_DIR=str(tmp_path / 'cache'))
  assert done.returncode == 0, done.stderr
  assert 'this compiler is broken' in done.stderr
  assert not list((tmp_path / 'cache').rglob('*.so'))  # Nothing half-built left where a later process would load it.


def test_infodrop_native_0_turns_the_kernels_off(tmp_path):
  done = _python(_FALLBACK, INFODROP_NATIVE='0', INFODROP_CACHE_DIR=str(tmp_path / 'cache'))
  assert done.returncode == 0, done.stderr
  assert 'INFODROP_NATIVE=0' in done.stderr


@needs_kernels
def test_per_example_gradients_under_vmap_equal_lax():
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(size=(3, 1, 6, 6, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 8, 4)), jnp.float32)
  numbers = ('NHWC', 'HWIO', 'NHWC')
  ours = lambda w, x: jnp.sum(jnp.tanh(convolution.conv_general_dilated(x, w, (2, 2), 'SAME',
                                                                        dimension_numbers=numbers)))
  ref = lambda w, x: jnp.sum(jnp.tanh(jax.lax.conv_general_dilated(x, w, (2, 2), 'SAME', dimension_numbers=numbers)))
  _assert_close(jax.jit(jax.vmap(jax.grad(ours), (None, 0)))(w, xs), jax.vmap(jax.grad(ref), (None, 0))(w, xs))


@needs_kernels
def test_a_window_larger_than_the_padded_input_is_xlas_empty_output():
  x = jnp.ones((2, 1, 1, 8))
  w = jnp.ones((3, 3, 8, 4))
  numbers = ('NHWC', 'HWIO', 'NHWC')
  assert not native.supports_forward(x, w, (1, 1), ((0, 0), (0, 0)))
  assert not native.supports_forward(jnp.ones((2, 1, 16, 8)), w, (1, 1), ((0, 0), (0, 0)))  # No output rows.
  ours = jax.jit(lambda x, w: convolution.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=numbers))
  assert ours(x, w).shape == jax.lax.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=numbers).shape


@needs_kernels
def test_a_batch_sharded_training_loop_matches_xlas_convolutions():
  """As the trainer runs: a jitted lax.scan of gradient steps through convolution.Conv, batch sharded over the
  (8 forced) devices; the same with the kernels disabled."""
  model = nn.Sequential([convolution.Conv(8, (3, 3)), nn.relu, convolution.Conv(16, (3, 3), strides=2), nn.relu,
                         convolution.Conv(8, (3, 3), padding='VALID')])
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('batch',))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2 * len(jax.devices()), 12, 12, 3)), jnp.float32)
  x = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch')))
  params = model.init(jax.random.PRNGKey(0), x[:1])

  def train():
    def step(params, _):
      grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(params)
      return jax.tree.map(lambda p, g: p - 1e-4 * g, params, grads), None
    return jax.jit(lambda p: jax.lax.scan(step, p, length=3)[0])

  text = train().lower(params).compile().as_text()
  assert 'all-gather' not in text and native.KERNEL_GRADIENT_TARGET in text
  got = train()(params)
  with native.disabled():
    expected = train()(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_cxx_may_carry_arguments(tmp_path):
  if not _machine_can_build():
    pytest.skip('no AVX-512F CPU or no C++ compiler')
  done = _python('from infodrop_jax import native; assert native.available(), "not available"',
                 CXX=f'env {shutil.which("c++")}', INFODROP_CACHE_DIR=str(tmp_path / 'cache'))
  assert done.returncode == 0, done.stderr
