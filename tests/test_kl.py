"""KL terms: closed forms against their definitions and Monte Carlo, and the loss normalisation helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax import kl
from infodrop_jax import layers


def _normal_logpdf(u, mean, std):
  return -0.5 * np.log(2 * np.pi) - np.log(std) - 0.5 * ((u - mean) / std) ** 2


def test_log_uniform_kl_formula_and_zero_at_cap():
  max_alpha = 0.7
  alpha = jnp.array([0.001, 0.01, 0.3, 0.7, max_alpha + kl.ALPHA_FLOOR])
  np.testing.assert_allclose(kl.log_uniform_kl(alpha, max_alpha), -np.log(np.asarray(alpha) / (max_alpha + 0.001)),
                             rtol=1e-6)
  assert kl.log_uniform_kl(max_alpha + kl.ALPHA_FLOOR, max_alpha) == pytest.approx(0.0, abs=1e-7)
  assert np.all(np.asarray(kl.log_uniform_kl(alpha[:-1], max_alpha)) > 0)


@pytest.mark.parametrize('alpha,log_f,mu,sigma', [
    (0.05, 0.3, 0.0, 1.0),
    (0.4, -1.2, 0.5, 0.7),
    (0.9, 2.0, -0.3, 2.5),
])
def test_log_normal_kl_matches_monte_carlo(alpha, log_f, mu, sigma):
  rng = np.random.default_rng(0)
  n = 400_000
  u = log_f + alpha * rng.standard_normal(n)  # log z under the posterior
  log_ratio = _normal_logpdf(u, log_f, alpha) - _normal_logpdf(u, mu, sigma)
  mc, se = log_ratio.mean(), log_ratio.std() / np.sqrt(n)
  analytic = float(kl.log_normal_kl(alpha, log_f, mu, sigma))
  assert abs(mc - analytic) < 5 * se + 1e-6, (mc, analytic, se)


def test_information_dropout_layer_kl_matches_monte_carlo_of_its_own_samples():
  """The layer's sown KL map and its sampled noise agree: MC over log z drawn by the layer itself."""
  n_units, n_draws = 4, 20_000
  f = jnp.array([[0.2, 1.0, 3.0, 0.7]])
  logits = jnp.array([[-2.0, 0.0, 1.0, 3.0]])
  mu, log_sigma = 0.3, np.log(0.8)
  layer = layers.InformationDropout(max_alpha=0.7, prior='log_normal')
  params = {'params': {'prior_mu': jnp.float32(mu), 'prior_log_sigma': jnp.float32(log_sigma)}}

  def draw(key):
    z, cols = layer.apply(params, f, logits, deterministic=False, rngs={'noise': key}, mutable=['kl'])
    return z[0], cols['kl']['kl_map'][0][0]

  z, kl_map = jax.jit(jax.vmap(draw))(jax.random.split(jax.random.key(0), n_draws))
  alpha = np.asarray(kl.ALPHA_FLOOR + 0.7 * jax.nn.sigmoid(logits[0]))
  log_z = np.log(np.asarray(z, np.float64))
  log_ratio = (_normal_logpdf(log_z, np.log(np.asarray(f[0])), alpha)
               - _normal_logpdf(log_z, mu, np.exp(log_sigma)))
  mc, se = log_ratio.mean(axis=0), log_ratio.std(axis=0) / np.sqrt(n_draws)
  np.testing.assert_array_less(np.abs(mc - np.asarray(kl_map[0])), 5 * se + 1e-4)
  assert kl_map.shape == (n_draws, n_units)


def test_variational_dropout_kl_zero_at_one_positive_and_decreasing_below():
  log_alpha = jnp.linspace(-6.0, 0.0, 50)
  values = np.asarray(kl.variational_dropout_kl(log_alpha))
  assert values[-1] == pytest.approx(0.0, abs=1e-6)
  assert np.all(np.diff(values) < 0) and np.all(values[:-1] > 0)
  # Kingma et al. (2015): -KL = C + 0.5 log a + 1.16145124 a - 1.50204118 a^2 + 0.58629921 a^3.
  a = 0.25
  neg = lambda a: 0.5 * np.log(a) + 1.16145124 * a - 1.50204118 * a**2 + 0.58629921 * a**3
  assert float(kl.variational_dropout_kl(np.log(a))) == pytest.approx(neg(1.0) - neg(a), rel=1e-5)


def _collection():
  a = jnp.arange(2 * 3, dtype=jnp.float32).reshape(2, 3)          # per-example sums 3, 12
  b1 = jnp.ones((2, 2, 2, 1), jnp.float32)                         # per-example sums 4, 4
  b2 = 2 * jnp.ones((2, 5), jnp.float32)                           # per-example sums 10, 10 (second call)
  return {'block_a': {'noise': {'kl_map': (a,)}}, 'block_b': {'kl_map': (b1, b2)}}


def test_kl_per_layer_total_and_per_example():
  per_layer = kl.kl_per_layer(_collection())
  assert set(per_layer) == {'block_a/noise', 'block_b'}
  assert float(per_layer['block_a/noise']) == pytest.approx(7.5)
  assert float(per_layer['block_b']) == pytest.approx(14.0)
  assert float(kl.total_kl(_collection(), n_train=50)) == pytest.approx((7.5 + 14.0) / 50)
  np.testing.assert_allclose(kl.kl_per_example(_collection()), [3 + 4 + 10, 12 + 4 + 10])


def test_empty_collection_and_bad_n_train():
  assert kl.kl_per_layer(None) == {} and kl.kl_per_layer({}) == {}
  assert kl.total_kl({}, 10) == 0.0
  assert kl.kl_per_example(None) == 0.0
  with pytest.raises(ValueError, match='n_train'):
    kl.total_kl(_collection(), 0)


def test_helpers_are_jittable():
  out = jax.jit(lambda c: kl.total_kl(c, 10))(_collection())
  assert float(out) == pytest.approx(2.15)


# --- batch axis and collection guards -------------------------------------------------------------------------


def test_batch_axis_is_explicit():
  moved = jax.tree.map(lambda m: jnp.moveaxis(m, 0, -1), _collection())  # The batch last in every map.
  np.testing.assert_allclose(kl.kl_per_example(moved, batch_axis=-1), kl.kl_per_example(_collection()))
  assert float(kl.total_kl(moved, 50, batch_axis=-1)) == pytest.approx((7.5 + 14.0) / 50)
  assert kl.kl_per_layer(moved, batch_axis=-1).keys() == {'block_a/noise', 'block_b'}


def test_scan_stacked_on_axis_0_is_an_error_not_a_wrong_total():
  """A scanned layer stacked with variable_axes={'kl': 0} puts its length where the batch should be."""
  scanned = jnp.ones((3, 2, 4))  # (scan length, batch, units) next to ordinary (batch, units) maps.
  collection = {'scanned': {'kl_map': (scanned,)}, 'head': {'kl_map': (jnp.ones((2, 5)),)}}
  for helper in (lambda c: kl.total_kl(c, 10), kl.kl_per_layer, kl.kl_per_example):
    with pytest.raises(ValueError, match=r"disagree on the batch size.*variable_axes=\{'kl': 1\}"):
      helper(collection)


def test_vmap_over_examples_outside_the_model_is_an_error():
  layer = layers.InformationDropoutDense(4)
  x = jnp.ones((3, 5))
  variables = layer.init(jax.random.key(0), x, deterministic=True)

  def per_example(xi):
    _, cols = layer.apply(variables, xi, deterministic=True, mutable=['kl'])
    return kl.total_kl(cols['kl'], 10)

  with pytest.raises(ValueError, match='vmap outside the model'):
    jax.vmap(per_example)(x)


def test_empty_collection_can_be_refused():
  for empty in (None, {}):
    with pytest.raises(ValueError, match=r"collection is empty.*mutable=\['kl'\]"):
      kl.total_kl(empty, 10, allow_empty=False)
    with pytest.raises(ValueError, match='kl_per_layer'):
      kl.kl_per_layer(empty, allow_empty=False)
  assert float(kl.total_kl(_collection(), 50, allow_empty=False)) == pytest.approx(0.43)


def test_forgetting_mutable_kl_warns_when_the_noise_is_on():
  layer = layers.InformationDropoutDense(4)
  x = jnp.ones((2, 5))
  variables = layer.init(jax.random.key(0), x, deterministic=True)
  with pytest.warns(layers.KLNotCollectedWarning, match=r"noise on.*mutable=\['kl'\]"):
    layer.apply(variables, x, deterministic=False, rngs={'noise': jax.random.key(1)})
  import warnings  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    layer.apply(variables, x, deterministic=True)  # Inference: no KL needed.
    layer.apply(variables, x, deterministic=False, rngs={'noise': jax.random.key(1)}, mutable=['kl'])
