"""cpu.xla's XLA options: which kernels the compiled steps get with the CPU speed-ups on, the user's override, the
fallback, and that a run without the speed-ups compiles with XLA's defaults."""
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers
from infodrop_jax import parallel as parallel_lib
from infodrop_jax import train
from infodrop_jax.cpu import xla as cpu_xla


@pytest.fixture
def fresh_options():
  """`compiler_options` is cached per process: clear it around a test that changes what it sees."""
  cpu_xla.compiler_options.cache_clear()
  yield
  cpu_xla.compiler_options.cache_clear()


def _ynn_convolutions(compiled_text):
  """Convolutions inside computations that XLA hands to YNNPACK ('__ynn_fusion' fusions)."""
  called = set(re.findall(r'calls=%?([\w.\-]+)[^\n]*"kind":"__ynn_fusion"', compiled_text))
  bodies = re.split(r'\n(?=\S)', compiled_text)  # One block per computation: its header is not indented.
  return [body.split(' ', 1)[0] for body in bodies
          if body.split(' ', 1)[0].lstrip('%') in called and ' convolution(' in body]


def _tuned_or_skip():
  options = cpu_xla.compiler_options()
  if not options:
    pytest.skip('this jaxlib does not take the YNNPACK fusion option (nothing to tune)')
  return options


class _WideConvNet(nn.Module):
  """Convolutions wide enough (batch 16, 16x16x32) that XLA's defaults hand them to YNNPACK."""

  @nn.compact
  def __call__(self, x, deterministic=False, use_running_average=False):
    del deterministic, use_running_average
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def _wide_run(tmp_path):
  return train.Run(train_helpers.tiny_config(), str(tmp_path), model=_WideConvNet(),
                    splits=train_helpers.tiny_splits(shape=(16, 16, 1)))


def test_the_train_step_keeps_its_convolutions_off_ynnpack_on_cpu(tmp_path):
  _tuned_or_skip()
  run = _wide_run(tmp_path)
  state = run.parallel.to_device_layout(run.initial_state())
  text = run._chunk_fn(1).lower(state, run.train_data.arrays, run.train_data.order(0)).compile().as_text()
  assert ' convolution(' in text
  assert _ynn_convolutions(text) == []
  # The same step with XLA's defaults: where this jaxlib uses YNNPACK at all, its convolutions are there (so the
  # check above can fail).
  batch = {'images': jnp.zeros((16, 16, 16, 1)), 'labels': jnp.zeros((16,), jnp.int32)}
  step = functools.partial(train.train_step, **run.step_kwargs)
  default_text = jax.jit(step).lower(run.initial_state(), batch, jax.random.PRNGKey(0)).compile().as_text()
  if '__ynn_fusion' in default_text:
    assert _ynn_convolutions(default_text)


def test_the_tuned_cpu_kernels_compute_the_same_train_step(tmp_path):
  _tuned_or_skip()
  run = _wide_run(tmp_path)
  state = run.initial_state()
  images = run.splits.train.images[:16].astype(np.float32) / 255
  batch = {'images': jnp.asarray(images), 'labels': jnp.asarray(run.splits.train.labels[:16])}
  step = functools.partial(train.train_step, **run.step_kwargs)
  key = jax.random.PRNGKey(3)
  tuned_state, tuned = run.parallel.jit(step)(state, batch, key)
  default_state, default = jax.jit(step)(state, batch, key)
  assert float(tuned['loss']) == pytest.approx(float(default['loss']), rel=1e-5)
  for a, b in zip(jax.tree.leaves(tuned_state.params), jax.tree.leaves(default_state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('speedups', ['auto', 'on', 'off'])
def test_a_run_gets_the_options_with_the_cpu_speedups_only(tmp_path, speedups):
  options = cpu_xla.compiler_options()
  config = train_helpers.tiny_config(cpu_speedups=speedups)
  run = train.Run(config, str(tmp_path), splits=train_helpers.tiny_splits())
  assert run.cpu_speedups is (speedups != 'off')  # 'auto': the tests' backend is the CPU.
  assert run.parallel.compiler_options == ((options or None) if speedups != 'off' else None)
  assert run.device_record()['cpu_speedups'] is run.cpu_speedups
  assert parallel_lib.Parallel.create('jit').compiler_options is None  # Nothing unless asked for.


def test_a_users_own_ynn_setting_in_xla_flags_wins(fresh_options, monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type=')
  assert cpu_xla.compiler_options() == {}


def test_an_option_this_jaxlib_refuses_falls_back_to_xla_defaults(fresh_options, monkeypatch):
  monkeypatch.setattr(cpu_xla, '_CPU_COMPILER_OPTIONS', {'xla_cpu_no_such_option_for_test': 'x'})
  with pytest.warns(UserWarning, match='xla_cpu_no_such_option_for_test'):
    assert cpu_xla.compiler_options() == {}


def test_a_jit_with_options_may_be_called_inside_other_traces():
  options = _tuned_or_skip()
  double = parallel_lib.Parallel.create('jit', devices=jax.devices()[:1], compiler_options=options).jit(
      lambda x: 2 * x)
  x = jnp.arange(3.0)
  np.testing.assert_array_equal(double(x), 2 * x)
  assert jax.eval_shape(double, x).shape == (3,)
  np.testing.assert_array_equal(jax.jit(lambda x: double(x) + 1)(x), 2 * x + 1)
  np.testing.assert_array_equal(jax.jit(lambda: double(np.arange(3.0)))(), 2 * x)  # Constant arguments only.
  np.testing.assert_array_equal(jax.vmap(double)(x), 2 * x)
  assert 'convolution' not in double.lower(x).compile().as_text()
