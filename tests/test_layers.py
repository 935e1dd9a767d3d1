"""Noise layers: sampled statistics, deterministic mode, gradients, transformations, dtypes and bad input."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax import kl
from infodrop_jax import layers

KEY = jax.random.key(0)


def _alpha_logits(alpha, max_alpha):
  """Logits g with 0.001 + max_alpha * sigmoid(g) = alpha."""
  p = (alpha - kl.ALPHA_FLOOR) / max_alpha
  return np.log(p / (1 - p))


@pytest.mark.parametrize('alpha', [0.02, 0.25, 0.69])
def test_information_dropout_log_noise_is_normal_with_std_alpha(alpha):
  n = 200_000
  f = jnp.full((n, 2), 1.7)
  logits = jnp.full((n, 2), _alpha_logits(alpha, 0.7))
  z = layers.InformationDropout(max_alpha=0.7).apply({}, f, logits, deterministic=False, rngs={'noise': KEY})
  log_eps = np.log(np.asarray(z, np.float64) / 1.7).ravel()
  m = log_eps.size
  assert abs(log_eps.mean()) < 5 * alpha / np.sqrt(m)
  assert abs(log_eps.std() - alpha) < 5 * alpha / np.sqrt(2 * m)
  # Standardised fourth moment of a normal is 3: the noise is log-normal, not just of the right width.
  assert abs(np.mean((log_eps / alpha) ** 4) - 3.0) < 0.1


def test_deterministic_is_exactly_f_and_call_argument_overrides_attribute():
  f = jax.random.uniform(KEY, (3, 4))
  logits = jnp.zeros((3, 4))
  layer = layers.InformationDropout()
  np.testing.assert_array_equal(layer.apply({}, f, logits, deterministic=True), f)
  noisy = layers.InformationDropout(deterministic=True).apply({}, f, logits, rngs={'noise': KEY})
  np.testing.assert_array_equal(noisy, f)
  with pytest.raises(ValueError):  # Linen's merge_param: attribute and argument both given.
    layers.InformationDropout(deterministic=True).apply({}, f, logits, deterministic=False, rngs={'noise': KEY})


@pytest.mark.parametrize('method', layers.METHODS)
def test_conv_form_deterministic_equals_noise_free_signal(method):
  x = jax.random.normal(KEY, (2, 8, 8, 3))
  layer = layers.InformationDropoutConv(5, method=method, use_bn=True)
  variables = layer.init({'params': KEY, 'noise': KEY}, x, deterministic=False, use_running_average=False)
  out = layer.apply(variables, x, deterministic=True, use_running_average=True)
  reference = layers.InformationDropoutConv(5, method='none', use_bn=True)
  signal_only = {'params': {k: variables['params'][k] for k in ('signal', 'bn')},
                 'batch_stats': variables['batch_stats']}
  np.testing.assert_array_equal(out, reference.apply(signal_only, x, deterministic=True, use_running_average=True))
  assert out.shape == (2, 4, 4, 5)


def test_dense_form_alpha_is_a_function_of_the_input_not_of_f():
  x = jax.random.normal(KEY, (4, 6))
  layer = layers.InformationDropoutDense(3, max_alpha=0.5)
  variables = layer.init(KEY, x, deterministic=True)
  _, state = layer.apply(variables, x, deterministic=True, mutable=['intermediates'])
  alpha = state['intermediates']['noise']['alpha'][0]
  dense = variables['params']['alpha']
  expected = kl.ALPHA_FLOOR + 0.5 * jax.nn.sigmoid(x @ dense['kernel'] + dense['bias'])
  np.testing.assert_allclose(alpha, expected, rtol=1e-6)


def test_noise_differs_per_call_key_and_is_reproducible():
  f = jnp.ones((8,))
  logits = jnp.zeros((8,))
  apply = lambda k: layers.InformationDropout().apply({}, f, logits, deterministic=False, rngs={'noise': k})
  np.testing.assert_array_equal(apply(KEY), apply(KEY))
  assert not np.allclose(apply(KEY), apply(jax.random.key(1)))


@pytest.mark.parametrize('prior', layers.PRIORS)
def test_gradients_reach_alpha_network_and_prior_parameters(prior):
  x = jax.random.normal(KEY, (16, 6))
  layer = layers.InformationDropoutDense(4, activation='softplus', prior=prior)
  params = layer.init(KEY, x, deterministic=True)['params']

  def loss(params):
    z, cols = layer.apply({'params': params}, x, deterministic=False, rngs={'noise': jax.random.key(3)},
                          mutable=['kl'])
    return jnp.mean(jnp.square(z - 1.0)) + kl.total_kl(cols['kl'], n_train=10)

  grads = jax.grad(loss)(params)
  assert np.abs(grads['alpha']['kernel']).max() > 0
  assert np.abs(grads['signal']['kernel']).max() > 0
  if prior == 'log_normal':
    assert abs(float(grads['noise']['prior_mu'])) > 0
    assert abs(float(grads['noise']['prior_log_sigma'])) > 0
  else:
    assert 'noise' not in grads


def test_reparametrized_gradient_through_the_noise_to_alpha():
  """d z / d logits is nonzero only through the noise: zero when deterministic."""
  f = jnp.full((5,), 2.0)
  g = lambda logits, det: jnp.sum(layers.InformationDropout().apply(
      {}, f, logits, deterministic=det, rngs={'noise': KEY}))
  assert np.abs(jax.grad(g)(jnp.zeros(5), False)).min() > 0
  np.testing.assert_array_equal(jax.grad(g)(jnp.zeros(5), True), 0.0)


def test_jit_vmap_and_scan():
  x = jax.random.normal(KEY, (4, 8))
  layer = layers.InformationDropoutDense(8)
  variables = layer.init(KEY, x, deterministic=True)
  apply = jax.jit(lambda v, x, k: layer.apply(v, x, deterministic=False, rngs={'noise': k}))
  # GPUs default to TF32 matmuls, whose algorithm (and rounding) can differ between op-by-op and compiled code;
  # compare at full float32 matmul precision, where only float32 rounding separates the two.
  with jax.default_matmul_precision('float32'):
    eager = layer.apply(variables, x, deterministic=False, rngs={'noise': KEY})
    np.testing.assert_allclose(apply(variables, x, KEY), eager, rtol=1e-6)
  per_key = jax.vmap(apply, in_axes=(None, None, 0))(variables, x, jax.random.split(KEY, 3))
  assert per_key.shape == (3, 4, 8) and not np.allclose(per_key[0], per_key[1])

  class Cell(nn.Module):
    @nn.compact
    def __call__(self, h, _):
      return layers.InformationDropoutDense(8, name='drop')(h, deterministic=False), None

  # The KL helpers read axis 0 as the batch, so the scanned collection stacks its layers on axis 1.
  scanned = nn.scan(Cell, variable_axes={'params': 0, 'kl': 1}, split_rngs={'params': True, 'noise': True},
                    length=3)()
  scan_vars = scanned.init({'params': KEY, 'noise': KEY}, x, None)
  (h, _), cols = scanned.apply(scan_vars, x, None, rngs={'noise': KEY}, mutable=['kl'])
  kl_map = cols['kl']['drop']['noise']['kl_map'][0]
  assert h.shape == (4, 8) and kl_map.shape == (4, 3, 8)
  assert scan_vars['params']['drop']['alpha']['kernel'].shape == (3, 8, 8)
  manual = np.asarray(kl_map).sum(axis=(1, 2)).mean()  # Σ layers and units, mean over the batch
  np.testing.assert_allclose(kl.total_kl(cols['kl'], n_train=1), manual, rtol=1e-6)


def test_bfloat16_activations_float32_kl():
  x = jax.random.normal(KEY, (2, 8, 8, 3)).astype(jnp.bfloat16)
  for prior in layers.PRIORS:
    layer = layers.InformationDropoutConv(4, activation='softplus', prior=prior, use_bn=True, dtype=jnp.bfloat16)
    variables = layer.init({'params': KEY, 'noise': KEY}, x, deterministic=False, use_running_average=False)
    z, cols = layer.apply(variables, x, deterministic=False, use_running_average=False, rngs={'noise': KEY},
                          mutable=['kl', 'batch_stats'])
    kl_map = cols['kl']['noise']['kl_map'][0]
    assert z.dtype == jnp.bfloat16 and kl_map.dtype == jnp.float32
    assert variables['params']['signal']['kernel'].dtype == jnp.float32
    assert np.isfinite(np.asarray(z, np.float32)).all() and np.isfinite(kl_map).all()


def test_init_variables_carry_no_kl_so_apply_counts_each_layer_once():
  x = jax.random.normal(KEY, (3, 5))
  layer = layers.InformationDropoutDense(4)
  variables = layer.init({'params': KEY, 'noise': KEY}, x, deterministic=False)
  assert 'kl' not in variables
  _, cols = layer.apply(variables, x, deterministic=True, mutable=['kl'])
  assert len(cols['kl']['noise']['kl_map']) == 1


def test_kl_is_sown_in_deterministic_mode_too():
  x = jax.random.normal(KEY, (3, 5))
  layer = layers.InformationDropoutDense(4)
  variables = layer.init(KEY, x, deterministic=True)
  _, cols = layer.apply(variables, x, deterministic=True, mutable=['kl'])
  assert cols['kl']['noise']['kl_map'][0].shape == (3, 4)


# --- the rest of the noise family -----------------------------------------------------------------------------


def _sample(layer, f, key=KEY, variables=None):
  variables = variables if variables is not None else layer.init({'params': KEY}, f, deterministic=True)
  return layer.apply(variables, f, deterministic=False, rngs={'noise': key}, mutable=['kl'])


@pytest.mark.parametrize('rate', [0.2, 0.5])
def test_binary_dropout_statistics(rate):
  f = jnp.full((400_000,), 3.0)
  z, cols = _sample(layers.BinaryDropout(rate=rate), f)
  z = np.asarray(z)
  n = z.size
  assert abs((z == 0).mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
  np.testing.assert_allclose(z[z != 0], 3.0 / (1 - rate), rtol=1e-6)
  assert abs(z.mean() - 3.0) < 5 * 3.0 * np.sqrt(rate / (1 - rate) / n)
  assert cols == {}


@pytest.mark.parametrize('rate', [0.2, 0.5])
def test_gaussian_dropout_statistics(rate):
  f = jnp.full((400_000,), 2.0)
  z, cols = _sample(layers.GaussianDropout(rate=rate), f)
  eps = np.asarray(z, np.float64) / 2.0
  var, n = rate / (1 - rate), eps.size
  assert abs(eps.mean() - 1.0) < 5 * np.sqrt(var / n)
  assert abs(eps.var() - var) < 5 * var * np.sqrt(2 / n)
  assert cols == {}


def test_lognormal_constant_statistics_and_constant_kl():
  f = jnp.full((200_000,), 0.5)
  z, cols = _sample(layers.LogNormalDropout(alpha=0.3, max_alpha=0.7), f)
  log_eps = np.log(np.asarray(z, np.float64) / 0.5)
  n = log_eps.size
  assert abs(log_eps.mean()) < 5 * 0.3 / np.sqrt(n) and abs(log_eps.std() - 0.3) < 5 * 0.3 / np.sqrt(2 * n)
  np.testing.assert_allclose(cols['kl']['kl_map'][0], -np.log(0.3 / 0.701), rtol=1e-6)


def test_variational_dropout_statistics_kl_and_alpha_cap():
  f = jnp.full((100_000, 2), 1.0)
  layer = layers.VariationalDropout(init_rate=0.5)
  variables = {'params': {'log_alpha': jnp.log(jnp.array([0.1, 4.0]))}}  # the second is capped at alpha = 1
  z, cols = _sample(layer, f, variables=variables)
  var = np.asarray(z, np.float64).var(axis=0)
  n = f.shape[0]
  np.testing.assert_array_less(np.abs(var - [0.1, 1.0]), 5 * np.array([0.1, 1.0]) * np.sqrt(2 / n))
  np.testing.assert_allclose(cols['kl']['kl_map'][0][0], kl.variational_dropout_kl(jnp.log(jnp.array([0.1, 1.0]))),
                             rtol=1e-6)
  grads = jax.grad(lambda p: kl.total_kl(_sample(layer, f[:8], variables={'params': p})[1]['kl'], 1))(
      {'log_alpha': jnp.log(jnp.array([0.1, 0.5]))})
  assert np.all(np.asarray(grads['log_alpha']) < 0)  # More noise lowers the KL.


def test_variational_log_alpha_above_the_cap_still_gets_gradients():
  """The cap holds α ≤ 1 in value only: a parameter above it (the default init sits on it) must not freeze."""
  f = jnp.ones((8, 3))
  layer = layers.VariationalDropout()

  def loss(log_alpha):
    z, cols = layer.apply({'params': {'log_alpha': log_alpha}}, f, deterministic=False, rngs={'noise': KEY},
                          mutable=['kl'])
    return jnp.sum(jnp.square(z - 2.0)) + kl.total_kl(cols['kl'], 1)

  grads = jax.grad(loss)(jnp.array([0.0, 0.5, 2.0]))
  assert np.all(np.abs(np.asarray(grads)) > 0)
  _, cols = layer.apply({'params': {'log_alpha': jnp.array([0.0, 0.5, 2.0])}}, f, deterministic=True, mutable=['kl'])
  np.testing.assert_allclose(cols['kl']['kl_map'][0], 0.0, atol=1e-6)  # all at the cap: α = 1


@pytest.mark.parametrize('method', ['binary', 'gaussian', 'none'])
def test_methods_without_kl_sow_nothing(method):
  x = jax.random.normal(KEY, (4, 6))
  layer = layers.InformationDropoutDense(3, method=method)
  variables = layer.init({'params': KEY, 'noise': KEY}, x, deterministic=False)
  _, cols = layer.apply(variables, x, deterministic=False, rngs={'noise': KEY}, mutable=['kl'])
  assert kl.total_kl(cols.get('kl'), 100) == 0.0


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('make,match', [
    (lambda: layers.InformationDropout(max_alpha=0.0), 'max_alpha must be > 0'),
    (lambda: layers.InformationDropout(max_alpha=-0.5), 'max_alpha must be > 0'),
    (lambda: layers.InformationDropoutConv(4, max_alpha=0.0), 'max_alpha must be > 0'),
    (lambda: layers.InformationDropout(prior='gaussian'), "unknown prior='gaussian'.*'log_uniform', 'log_normal'"),
    (lambda: layers.InformationDropoutDense(4, activation='tanh'), "unknown activation='tanh'.*'relu', 'softplus'"),
    (lambda: layers.InformationDropoutDense(4, method='dropconnect'), "unknown method='dropconnect'.*'information'"),
    (lambda: layers.InformationDropoutDense(4, prior='flat'), "unknown prior='flat'"),
    (lambda: layers.BinaryDropout(rate=1.0), r'rate \(the drop probability\) must be in \[0, 1\)'),
    (lambda: layers.GaussianDropout(rate=-0.1), 'rate'),
    (lambda: layers.LogNormalDropout(alpha=0.0), 'alpha must be > 0'),
    (lambda: layers.InformationDropoutDense(4, lognormal_alpha=-1.0), 'lognormal_alpha must be > 0'),
    (lambda: layers.LogNormalDropout(alpha=0.9, max_alpha=0.7), r'alpha=0.9 exceeds max_alpha \+ 0.001'),
    (lambda: layers.InformationDropoutDense(4, method='binary', prior='log_normal'),
     r"prior='log_normal' applies to method='information' only"),
    (lambda: layers.InformationDropoutConv(4, activation='relu', prior='log_normal'),
     r"prior='log_normal' needs positive units \(activation='softplus'\)"),
])
def test_bad_arguments_raise_clear_errors(make, match):
  with pytest.raises(ValueError, match=match):
    make()


@pytest.mark.parametrize('layer', [layers.InformationDropoutDense(3), layers.InformationDropoutDense(3, method='binary'),
                                   layers.InformationDropoutDense(3, method='variational')])
def test_missing_noise_rng_names_the_stream(layer):
  x = jnp.ones((2, 4))
  variables = layer.init({'params': KEY}, x, deterministic=True)
  with pytest.raises(ValueError, match=r"PRNG key in the 'noise' stream.*rngs=\{'noise': key\}"):
    layer.apply(variables, x, deterministic=False)


def test_alpha_logits_shape_mismatch():
  with pytest.raises(ValueError, match='alpha_logits shape'):
    layers.InformationDropout().apply({}, jnp.ones((2, 3)), jnp.ones((2, 4)), deterministic=True)


def test_default_prior_follows_activation():
  assert layers.default_prior('relu') == 'log_uniform'
  assert layers.default_prior('softplus') == 'log_normal'
  x = jnp.ones((2, 3))
  params = layers.InformationDropoutDense(2, activation='softplus').init(KEY, x, deterministic=True)['params']
  assert set(params['noise']) == {'prior_mu', 'prior_log_sigma'}


# --- accepted argument forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize('kernel_size,strides', [(3, 2), ((3, 3), 2), (3, (2, 2))])
def test_conv_accepts_int_kernel_size_and_strides(kernel_size, strides):
  x = jax.random.normal(KEY, (2, 8, 8, 3))
  as_tuples = layers.InformationDropoutConv(4, kernel_size=(3, 3), strides=(2, 2))
  layer = layers.InformationDropoutConv(4, kernel_size=kernel_size, strides=strides)
  variables = layer.init({'params': KEY, 'noise': KEY}, x, deterministic=True)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, as_tuples.init(KEY, x, deterministic=True))
  np.testing.assert_array_equal(layer.apply(variables, x, deterministic=True),
                                as_tuples.apply(variables, x, deterministic=True))
  assert layer.apply(variables, x, deterministic=True).shape == (2, 4, 4, 4)


def test_conv_int_kernel_follows_the_input_rank():
  x = jax.random.normal(KEY, (2, 8, 3))  # One spatial axis.
  variables = layers.InformationDropoutConv(4, kernel_size=3, strides=2).init(KEY, x, deterministic=True)
  assert variables['params']['signal']['kernel'].shape == (3, 3, 4)


@pytest.mark.parametrize('bad', ['3', 2.5, (3, '3'), (), True])
def test_conv_rejects_non_integer_sizes(bad):
  with pytest.raises(TypeError, match='kernel_size must be an int or a sequence of ints'):
    layers.InformationDropoutConv(4, kernel_size=bad)


@pytest.mark.parametrize('layer_cls,shape', [(layers.InformationDropoutDense, (2, 5)),
                                             (layers.InformationDropoutConv, (2, 8, 8, 3))])
def test_method_none_needs_no_deterministic_flag(layer_cls, shape):
  x = jax.random.normal(KEY, shape)
  layer = layer_cls(4, method='none')
  variables = layer.init(KEY, x)
  np.testing.assert_array_equal(layer.apply(variables, x), layer.apply(variables, x, deterministic=False))
  with pytest.raises(ValueError, match='deterministic'):  # The noisy methods still need it.
    layer_cls(4).init({'params': KEY, 'noise': KEY}, x)


@pytest.mark.parametrize('layer_cls,shape,kwargs', [
    (layers.InformationDropoutConv, (3, 9, 9, 4), dict(use_bn=True)),
    (layers.InformationDropoutConv, (3, 8, 8, 4), dict(strides=1, padding='VALID', prior='log_normal',
                                                       activation='softplus')),
    (layers.InformationDropoutConv, (3, 10, 5), dict(kernel_size=3, strides=2)),
    (layers.InformationDropoutConv, (2, 6, 6, 3), dict(padding='CIRCULAR')),
    (layers.InformationDropoutDense, (5, 7), dict()),
])
def test_fused_alpha_projection_matches_two_projections(layer_cls, shape, kwargs):
  """fuse_alpha: same parameters at init, same output, KL and gradients (float rounding only)."""
  x = jax.random.normal(jax.random.key(1), shape)
  separate, fused = layer_cls(6, **kwargs), layer_cls(6, fuse_alpha=True, **kwargs)
  init = jax.jit(lambda layer: layer.init({'params': KEY, 'noise': KEY}, x, deterministic=False,
                                          use_running_average=False), static_argnums=0)
  variables = init(separate)
  jax.tree.map(np.testing.assert_array_equal, variables, init(fused))

  def loss(params, layer):
    z, cols = layer.apply({**variables, 'params': params}, x, deterministic=False, use_running_average=False,
                          rngs={'noise': jax.random.key(2)}, mutable=['kl', 'batch_stats'])
    return jnp.sum(z ** 2) + kl.total_kl(cols['kl'], 1), (z, cols['kl'])

  # Compiled: op-by-op CPU convolutions and their gradients are slow.
  value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (l1, (z1, kl1)), g1 = value_and_grad(variables['params'], separate)
  (l2, (z2, kl2)), g2 = value_and_grad(variables['params'], fused)
  np.testing.assert_allclose(z2, z1, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), kl2, kl1)
  np.testing.assert_allclose(l2, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g2, g1)


def test_fused_alpha_leaves_other_methods_alone():
  x = jnp.ones((2, 8, 8, 3))
  variables = layers.InformationDropoutConv(4, method='binary', fuse_alpha=True).init(
      {'params': KEY, 'noise': KEY}, x, deterministic=False)
  assert set(variables['params']) == {'signal'}


@pytest.mark.parametrize('fuse_alpha', [False, True])
def test_the_projections_go_through_the_injected_conv(fuse_alpha):
  """A conv injected as `conv` computes every projection of the layer, the fused one included (as one conv of
  twice the features)."""
  calls = []

  def conv_general_dilated(lhs, rhs, *args, **kwargs):
    calls.append(rhs.shape)
    return jax.lax.conv_general_dilated(lhs, rhs, *args, **kwargs)

  conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
  x = jnp.ones((2, 8, 8, 3))
  layer = layers.InformationDropoutConv(4, conv=conv, fuse_alpha=fuse_alpha)
  variables = layer.init({'params': KEY, 'noise': KEY}, x, deterministic=True)
  calls.clear()
  layer.apply(variables, x, deterministic=True)
  assert calls == ([(3, 3, 3, 8)] if fuse_alpha else [(3, 3, 3, 4), (3, 3, 3, 4)])
