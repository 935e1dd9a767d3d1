"""Echo noise: clip factor, neighbour sampling, the noise's variance and the exact MI on a known case."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax import echo
from infodrop_jax import kl

KEY = jax.random.key(0)


def test_default_clip_factor_is_the_largest_r_meeting_the_float32_bound():
  r = echo.default_clip_factor(100)
  bound = lambda r: r**100 / (1 - r)
  assert bound(r) <= 2**-23 < bound(r + 1e-6)
  assert r == pytest.approx(0.8373, abs=1e-4)
  assert bound(echo.PAPER_CLIP_FACTOR) <= 2**-23  # the original's constant is admissible, just not the largest
  assert echo.default_clip_factor(10) < echo.default_clip_factor(100)
  assert echo.default_clip_factor(100, f_bound=4.0) < r


@pytest.mark.parametrize('replace', [False, True])
def test_other_indices_exclude_self(replace):
  idx = np.asarray(echo._other_indices(KEY, 12, 11 if not replace else 30, replace))
  assert np.all(idx != np.arange(12)[:, None]) and idx.min() >= 0 and idx.max() < 12
  if not replace:
    assert all(len(set(row)) == 11 for row in idx)  # every other example exactly once


def test_rows_choose_independently():
  idx = np.asarray(echo._other_indices(KEY, 64, 8, False))
  assert len({tuple(row) for row in idx}) > 60


def test_known_answer_gaussian_codes_constant_scale():
  """f(x) i.i.d. N(0, v), constant S: z = Σ_l S^l f(x_l) is N(0, v/(1−S²)) and I(X;Z) = −log S exactly.

  The empirical I from Gaussian entropies, ½ log(Var z / Var(z − f)), and the empirical noise variance must match.
  """
  batch, units, v = 512, 128, 0.09
  s_pre = 0.4  # S = r * sigmoid(0.4)
  r = echo.default_clip_factor(64)
  scale = r * jax.nn.sigmoid(s_pre)
  sample = jax.jit(lambda k, f, ls: echo.echo_sample(k, f, ls, d_max=64, clip_factor=r))
  zs, fs = [], []
  for i in range(4):
    f = jnp.sqrt(v) * jax.random.normal(jax.random.key(100 + i), (batch, units))
    log_s = jnp.full((batch, units), jax.nn.log_sigmoid(s_pre))
    zs.append(sample(jax.random.key(i), f, log_s))
    fs.append(f)
  z, f = np.concatenate(zs).ravel(), np.concatenate(fs).ravel()
  noise_var = np.var((z - f) / float(scale))
  expected_noise_var = v / (1 - scale**2)
  n = z.size
  assert abs(noise_var - expected_noise_var) < 5 * expected_noise_var * np.sqrt(2 / n)
  empirical_mi = 0.5 * np.log(np.var(z) / np.var(z - f))
  exact = echo.echo_mutual_information(log_s, d_max=64, clip_factor=r) / units
  np.testing.assert_allclose(exact, -np.log(scale), rtol=1e-6)
  assert abs(empirical_mi - float(exact[0])) < 0.01


def test_sample_matches_a_brute_force_loop_with_per_example_scales():
  """ε_i = Σ_l f(x_{j_l}) Π_{k<l} S(x_{j_k}) with the neighbours' own S, checked term by term."""
  batch, units, d_max, r = 7, 3, 4, 0.8
  f = jnp.tanh(jax.random.normal(jax.random.key(1), (batch, units)))
  log_s = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(2), (batch, units)))
  z = np.asarray(echo.echo_sample(KEY, f, log_s, d_max=d_max, clip_factor=r), np.float64)
  idx = np.asarray(echo._other_indices(KEY, batch, d_max, False))
  f64, scale = np.asarray(f, np.float64), r * np.exp(np.asarray(log_s, np.float64))
  for i in range(batch):
    eps, prod = np.zeros(units), np.ones(units)
    for j in idx[i]:
      eps += f64[j] * prod
      prod *= scale[j]
    np.testing.assert_allclose(z[i], f64[i] + scale[i] * eps, rtol=1e-5, atol=1e-6)


def test_deterministic_layer_is_identity_and_sows_exact_rate():
  f = jnp.tanh(jax.random.normal(KEY, (16, 5)))
  log_s = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (16, 5)))
  layer = echo.EchoNoise(d_max=8)
  out, cols = layer.apply({}, f, log_s, deterministic=True, mutable=['kl'])
  np.testing.assert_array_equal(out, f)
  r = echo.default_clip_factor(8)
  np.testing.assert_allclose(kl.kl_per_example(cols['kl']), echo.echo_mutual_information(log_s, 8), rtol=1e-6)
  np.testing.assert_allclose(kl.kl_per_example(cols['kl']), -jnp.sum(jnp.log(r) + log_s, axis=1), rtol=1e-6)


def test_layer_under_jit_with_noise_and_grad():
  f = jnp.tanh(jax.random.normal(KEY, (32, 4)))
  log_s = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (32, 4)))
  layer = echo.EchoNoise(d_max=16)

  def loss(f, log_s, key):
    z, cols = layer.apply({}, f, log_s, deterministic=False, rngs={'noise': key}, mutable=['kl'])
    return jnp.sum(z**2) + kl.total_kl(cols['kl'], 1)

  z = jax.jit(lambda f, ls, k: layer.apply({}, f, ls, deterministic=False, rngs={'noise': k}))(f, log_s, KEY)
  assert z.shape == f.shape and not np.allclose(z, f)
  g_f, g_s = jax.jit(jax.grad(loss, argnums=(0, 1)))(f, log_s, KEY)
  assert np.abs(g_f).max() > 0 and np.abs(g_s).max() > 0


def test_multidimensional_codes_keep_their_shape():
  f = jnp.tanh(jax.random.normal(KEY, (10, 3, 3, 2))).astype(jnp.bfloat16)
  log_s = jax.nn.log_sigmoid(jnp.zeros((10, 3, 3, 2)))
  z = echo.echo_sample(KEY, f, log_s, d_max=5)
  assert z.shape == f.shape and z.dtype == jnp.bfloat16


def test_bad_input():
  f = jnp.zeros((8, 3))
  with pytest.raises(ValueError, match=r'd_max=8 must be smaller than the batch size \(8\)'):
    echo.echo_sample(KEY, f, f, d_max=8)
  with pytest.raises(ValueError, match='d_max=20 must be smaller'):
    echo.EchoNoise(d_max=20).apply({}, f, f, deterministic=False, rngs={'noise': KEY})
  # Nothing is sampled in deterministic mode, so small (e.g. last partial) batches are fine there.
  np.testing.assert_array_equal(echo.EchoNoise(d_max=20).apply({}, f[:1], f[:1], deterministic=True), f[:1])
  with pytest.raises(ValueError, match='at least 2 examples'):
    echo.echo_sample(KEY, f[:1], f[:1], d_max=3, replace=True)
  with pytest.raises(ValueError, match='EchoNoise: log_s shape'):
    echo.EchoNoise(d_max=4).apply({}, f, jnp.zeros((8, 4)), deterministic=True)
  echo.echo_sample(KEY, f, f, d_max=20, replace=True)  # allowed with replacement
  with pytest.raises(ValueError, match='log_s shape'):
    echo.echo_sample(KEY, f, jnp.zeros((8, 4)), d_max=4)
  with pytest.raises(ValueError, match='d_max must be a positive'):
    echo.EchoNoise(d_max=0)
  with pytest.raises(ValueError, match=r'clip_factor must be in \(0, 1\)'):
    echo.EchoNoise(clip_factor=1.5)
  with pytest.raises(ValueError, match="PRNG key in the 'noise' stream"):
    echo.EchoNoise(d_max=4).apply({}, f, f, deterministic=False)
