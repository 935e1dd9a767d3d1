"""The native NNX layers and classifiers (`infodrop_jax.nnx_layers`, `nnx_models`) against the Linen ones on the same
parameters and the same noise (outputs, KL, gradients, BatchNorm statistics), as an NNX user trains them (`nnx.jit`
compiles once, `.eval()` switches the noise off, the KL of a call does not pile up), through JAX's transformations,
and the misuses that must fail loudly rather than give a wrong number.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from infodrop_jax import kl, layers, models, nnx_layers, nnx_models, noise


def _fixed_normal(key, shape, dtype=jnp.float32):
  del key
  return jnp.sin(jnp.arange(math.prod(shape), dtype=jnp.float32) * 0.7).reshape(shape).astype(dtype)


def _fixed_bernoulli(key, p, shape):
  del key
  return jnp.cos(jnp.arange(math.prod(shape), dtype=jnp.float32) * 1.3).reshape(shape) < 2 * p - 1 + 0.3


# The same draws whatever the key: Linen (keys folded by module path) and NNX (its stream) then see the same noise.
FIXED = noise.NoiseSampler(normal=_fixed_normal, bernoulli=_fixed_bernoulli)


def _flat(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    name = f'{prefix}/{key}' if prefix else str(key)
    out.update(_flat(value, name) if isinstance(value, dict) else {name: np.asarray(value)})
  return out


def _model_config(name, **overrides):
  base = dict(name=name, dropout='information', activation='relu', max_alpha=0.7, dropout_rate=0.3,
              lognormal_alpha=0.5, bn_momentum=0.9, dtype='float32', filter_percentage=1.0, input_dropout_rate=0.2,
              hidden_sizes=(16, 8), noisy_layers=())
  return ml_collections.ConfigDict({**base, **overrides})


def _pair(config, x, in_features):
  """(Linen model, its variables, NNX model with the same variables), both drawing the FIXED noise."""
  linen = models.create_model(config, 10, sampler=FIXED)
  variables = linen.init({'params': jax.random.key(1), 'noise': jax.random.key(2)}, x, deterministic=True)
  variables = jax.tree.map(lambda v: v + 0.01 * jnp.sin(jnp.arange(v.size).reshape(v.shape)), variables)
  model = nnx_models.create_model(config, 10, in_features, rngs=nnx.Rngs(params=3, noise=4), sampler=FIXED)
  return linen, variables, nnx_models.load_linen_variables(model, variables)


def _loss_linen(linen, x):
  def loss(params, batch_stats):
    logits, state = linen.apply({'params': params, 'batch_stats': batch_stats}, x, deterministic=False,
                                use_running_average=False, rngs={'noise': jax.random.key(0)},
                                mutable=['kl', 'batch_stats'])
    return jnp.sum(jnp.sin(logits)) + kl.total_kl(state.get('kl'), 100), (logits, state)
  return loss


def _loss_nnx(x):
  def loss(model):
    logits = model(x)
    return jnp.sum(jnp.sin(logits)) + kl.total_kl(model, 100), logits
  return loss


CASES = [
    ('mlp information', _model_config('mlp'), (4, 6, 6, 1), 36),
    ('mlp softplus, noise on the 2nd layer', _model_config('mlp', activation='softplus', noisy_layers=(2,)),
     (4, 6, 6, 1), 36),
    ('mlp variational', _model_config('mlp', dropout='variational'), (4, 36), 36),
    ('mlp lognormal_constant', _model_config('mlp', dropout='lognormal_constant'), (4, 36), 36),
    ('mlp gaussian', _model_config('mlp', dropout='gaussian'), (4, 36), 36),
    ('mlp binary', _model_config('mlp', dropout='binary'), (4, 36), 36),
]


def test_all_cnn_32_matches_linen():
  # The conv classifier's forward pass with the noise on and BatchNorm on the batch (the gradients of its parts
  # are compared in the MLP cases and for a conv layer with BatchNorm below).
  config = _model_config('all_cnn_32', activation='softplus', filter_percentage=0.05)
  x = jnp.cos(jnp.arange(4 * 8 * 8 * 3, dtype=jnp.float32)).reshape(4, 8, 8, 3)
  linen, variables, model = _pair(config, x, 3)
  logits_l, state_l = jax.jit(lambda v: linen.apply(v, x, deterministic=False, use_running_average=False,
                                                    rngs={'noise': jax.random.key(0)}, mutable=['kl', 'batch_stats']))(
                                                        variables)
  logits_n = nnx.jit(lambda m: m(x))(model)
  np.testing.assert_allclose(logits_n, logits_l, rtol=1e-5, atol=1e-5)
  for layer, value in kl.kl_per_layer(state_l['kl']).items():
    np.testing.assert_allclose(kl.kl_per_layer(model)[layer], value, rtol=1e-5)
  stats = _flat(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
  for path, value in _flat(state_l['batch_stats']).items():
    np.testing.assert_allclose(stats[path], value, rtol=1e-5, atol=1e-6, err_msg=path)


def test_a_conv_layer_with_batch_norm_has_linen_s_gradients():
  x = jnp.cos(jnp.arange(2 * 6 * 6 * 3, dtype=jnp.float32)).reshape(2, 6, 6, 3)
  linen = layers.InformationDropoutConv(4, use_bn=True, activation='softplus', sampler=FIXED)
  variables = linen.init({'params': jax.random.key(0)}, x, deterministic=True, use_running_average=True)
  native = nnx_layers.InformationDropoutConv(3, 4, use_bn=True, activation='softplus', sampler=FIXED,
                                             rngs=nnx.Rngs(params=1, noise=2))
  nnx_models.load_linen_variables(native, variables)

  def loss_l(params):
    z, state = linen.apply({**variables, 'params': params}, x, deterministic=False, use_running_average=False,
                           rngs={'noise': jax.random.key(0)}, mutable=['kl', 'batch_stats'])
    return jnp.sum(jnp.sin(z)) + kl.total_kl(state['kl'], 10)

  grads_l = jax.grad(loss_l)(variables['params'])
  grads_n = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))) + kl.total_kl(m, 10))(native)
  flat_n = _flat(nnx.to_pure_dict(grads_n))
  for path, g in _flat(grads_l).items():
    np.testing.assert_allclose(flat_n[path], g, rtol=1e-4, atol=1e-6, err_msg=path)


def test_all_cnn_96_has_linen_s_parameters():
  # The same AllCNN class as All-CNN-32 (whose outputs are compared above), with four noisy blocks: every parameter
  # and statistic of the Linen All-CNN-96 loads, with its shape.
  x = jnp.zeros((1, 16, 16, 1))
  linen = models.create_model(_model_config('all_cnn_96'), 10)
  variables = jax.eval_shape(lambda: linen.init({'params': jax.random.key(1)}, x, deterministic=True))
  variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
  model = nnx_models.create_model(_model_config('all_cnn_96'), 10, 1, rngs=nnx.Rngs(0))
  nnx_models.load_linen_variables(model, variables)
  assert _flat(nnx.to_pure_dict(nnx.state(model, nnx.Param))).keys() == _flat(variables['params']).keys()
  assert [name for kind, name in model.order if kind == 'noisy'] == [f'block{i}_pool' for i in range(1, 5)]


@pytest.mark.parametrize('name,config,shape,in_features', CASES, ids=[c[0] for c in CASES])
def test_nnx_matches_linen_on_the_same_parameters_and_noise(name, config, shape, in_features):
  del name
  x = jnp.cos(jnp.arange(math.prod(shape), dtype=jnp.float32)).reshape(shape)
  linen, variables, model = _pair(config, x, in_features)
  (loss_l, (logits_l, state_l)), grads_l = jax.jit(jax.value_and_grad(_loss_linen(linen, x), has_aux=True))(
      variables['params'], variables.get('batch_stats', {}))
  # Compiled, as a user's step is (eager NNX runs op by op: seconds per call for an All-CNN).
  (loss_n, logits_n), grads_n = nnx.jit(nnx.value_and_grad(_loss_nnx(x), has_aux=True))(model)
  np.testing.assert_allclose(logits_n, logits_l, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss_n, loss_l, rtol=1e-5, atol=1e-5)
  assert kl.kl_per_layer(model).keys() == kl.kl_per_layer(state_l.get('kl')).keys()
  for layer, value in kl.kl_per_layer(state_l.get('kl')).items():
    np.testing.assert_allclose(kl.kl_per_layer(model)[layer], value, rtol=1e-5)
  linen_grads, nnx_grads = _flat(grads_l), _flat(nnx.to_pure_dict(grads_n))
  assert linen_grads.keys() == nnx_grads.keys()
  for path, g in linen_grads.items():
    np.testing.assert_allclose(nnx_grads[path], g, rtol=1e-4, atol=1e-6, err_msg=path)
  if 'batch_stats' in state_l:  # the training step's BatchNorm statistics
    stats = _flat(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
    for path, value in _flat(state_l['batch_stats']).items():
      np.testing.assert_allclose(stats[path], value, rtol=1e-5, atol=1e-6, err_msg=path)


def test_bare_noises_match_linen():
  f = jnp.abs(jnp.sin(jnp.arange(24, dtype=jnp.float32))).reshape(4, 6) + 0.1
  logits = jnp.cos(jnp.arange(24, dtype=jnp.float32)).reshape(4, 6)
  rngs = nnx.Rngs(noise=0)
  pairs = [
      (layers.InformationDropout(prior='log_normal', sampler=FIXED),
       nnx_layers.InformationDropout(prior='log_normal', sampler=FIXED, rngs=rngs), (f, logits)),
      (layers.InformationDropout(max_alpha=1.0, sampler=FIXED),
       nnx_layers.InformationDropout(max_alpha=1.0, sampler=FIXED, rngs=rngs), (f, logits)),
      (layers.LogNormalDropout(alpha=0.3, sampler=FIXED), nnx_layers.LogNormalDropout(0.3, sampler=FIXED, rngs=rngs),
       (f,)),
      (layers.GaussianDropout(rate=0.2, sampler=FIXED), nnx_layers.GaussianDropout(0.2, sampler=FIXED, rngs=rngs),
       (f,)),
      (layers.BinaryDropout(rate=0.4, sampler=FIXED), nnx_layers.BinaryDropout(0.4, sampler=FIXED, rngs=rngs), (f,)),
      (layers.VariationalDropout(init_rate=0.3, sampler=FIXED),
       nnx_layers.VariationalDropout(6, 0.3, sampler=FIXED, rngs=rngs), (f,)),
  ]
  for linen, native, args in pairs:
    variables = linen.init({'params': jax.random.key(0)}, *args, deterministic=True)
    z, state = linen.apply(variables, *args, deterministic=False, rngs={'noise': jax.random.key(1)}, mutable=['kl'])
    np.testing.assert_allclose(native(*args), z, rtol=1e-6, err_msg=type(native).__name__)
    if 'kl' in state:
      np.testing.assert_allclose(kl.total_kl(native, 1), kl.total_kl(state['kl'], 1), rtol=1e-6)


def test_nnx_jit_compiles_once_and_the_kl_does_not_pile_up():
  model = nnx_layers.InformationDropoutDense(6, 5, activation='softplus', rngs=nnx.Rngs(params=0, noise=1))
  optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)
  x = jnp.ones((4, 6))
  traces = []

  @nnx.jit
  def step(model, optimizer):
    traces.append(1)
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x)) + kl.total_kl(m, 100))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer)) for _ in range(4)]
  assert len(traces) == 1 and all(np.isfinite(losses))
  # Four identical deterministic calls: the same KL each time (a sown tuple would grow 1×, 2×, 3×, 4×).
  model.eval()
  readings = []
  for _ in range(4):
    model(x)
    readings.append(float(kl.total_kl(model, 100)))
  assert readings == [readings[0]] * 4


def test_eval_and_train_switch_the_noise_and_batch_norm():
  model = nnx_layers.InformationDropoutConv(3, 4, use_bn=True, rngs=nnx.Rngs(params=0, noise=1))
  x = jnp.cos(jnp.arange(4 * 8 * 8 * 3, dtype=jnp.float32)).reshape(4, 8, 8, 3)
  model.eval()
  np.testing.assert_array_equal(model(x), model(x))
  assert model.noise.deterministic and model.bn.use_running_average
  model.train()
  assert not np.array_equal(model(x), model(x)) and not model.bn.use_running_average
  # Before any call the KL reads NaN, not a silent 0.
  fresh = nnx_layers.InformationDropout(rngs=nnx.Rngs(noise=0))
  assert math.isnan(float(kl.total_kl(fresh, 10)))


def test_nnx_models_go_through_jvp_grad_vmap_and_export():
  model = nnx_models.create_model(_model_config('mlp'), 10, 36, rngs=nnx.Rngs(params=0, noise=1))
  model.eval()
  graphdef, state = nnx.split(model)
  # A pure function of x: a fresh copy of the module inside each trace (its KL variables are written by the call).
  f = lambda x: nnx.merge(graphdef, state, copy=True)(x)
  x = jnp.linspace(-1, 1, 2 * 36).reshape(2, 36)
  _, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
  assert tangent.shape == (2, 10) and np.isfinite(tangent).all()
  assert np.isfinite(jax.grad(lambda x: f(x).sum())(x)).all()
  np.testing.assert_allclose(jax.vmap(lambda e: f(e[None])[0])(x), f(x), rtol=1e-5, atol=1e-6)
  exported = jax.export.export(jax.jit(f))(x)
  np.testing.assert_allclose(exported.call(x), f(x), rtol=1e-6)


def test_the_per_unit_maps_are_kept_on_request_and_match_linen():
  config = _model_config('mlp')
  x = jnp.cos(jnp.arange(4 * 36, dtype=jnp.float32)).reshape(4, 36)
  linen, variables, model = _pair(config, x, 36)
  model(x)
  with pytest.raises(ValueError, match='keep_kl_map=True'):
    kl.kl_per_example(model)
  keeping = nnx_models.create_model(config, 10, 36, rngs=nnx.Rngs(params=3, noise=4), sampler=FIXED,
                                    keep_kl_map=True)
  nnx_models.load_linen_variables(keeping, variables)
  keeping(x)
  _, state = linen.apply(variables, x, deterministic=False, rngs={'noise': jax.random.key(0)}, mutable=['kl'])
  np.testing.assert_allclose(kl.kl_per_example(keeping), kl.kl_per_example(state['kl']), rtol=1e-5)


def test_loading_another_architecture_names_the_parameter():
  config = _model_config('mlp')
  x = jnp.ones((2, 36))
  linen = models.create_model(config, 10)
  variables = linen.init({'params': jax.random.key(1)}, x, deterministic=True)
  other = nnx_models.create_model(_model_config('mlp', hidden_sizes=(16, 9)), 10, 36, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'params/hidden2/\w+/\w+ has shape \(\d+,?\d*\) in the Linen variables'):
    nnx_models.load_linen_variables(other, variables)


# --- misuses that must not give a silently wrong number ------------------------------------------------------------


def test_a_missing_key_names_the_fix_for_each_api():
  with pytest.raises(ValueError, match=r"nnx.Rngs\(noise=key\)"):
    nnx_layers.GaussianDropout(0.5)(jnp.ones((2, 3)))
  layer = layers.GaussianDropout(rate=0.5)
  with pytest.raises(ValueError, match=r"rngs=\{'noise': key\}.*nnx_layers.*nnx.Rngs\(params=\.\.\., noise=\.\.\.\)"):
    layer.apply({}, jnp.ones((2, 3)), deterministic=False)


def test_integer_inputs_are_noised_in_floating_point():
  f = jnp.array([[3, 6, 9, 12]], jnp.int32)
  z = layers.GaussianDropout(rate=0.5).apply({}, f, deterministic=False, rngs={'noise': jax.random.key(0)})
  assert z.dtype == jnp.float32 and not np.array_equal(np.round(z), z)  # not truncated to integers
  native = nnx_layers.GaussianDropout(0.5, rngs=nnx.Rngs(noise=0))(f)
  assert native.dtype == jnp.float32
  assert layers.BinaryDropout(rate=0.5).apply({}, f, deterministic=True).dtype == jnp.float32


def test_inputs_of_the_wrong_rank_are_refused_at_the_layer():
  conv = layers.InformationDropoutConv(8)
  with pytest.raises(ValueError, match=r'expected an input of rank 4, \(batch, 2 spatial axes, channels\).*\(8, 784\)'):
    conv.init({'params': jax.random.key(0)}, jnp.ones((8, 784)), deterministic=True)
  unbatched = r'got shape \(28, 28, 1\) \(one example without its batch axis\? pass x\[None\]\)'
  with pytest.raises(ValueError, match=unbatched):
    conv.init({'params': jax.random.key(0)}, jnp.ones((28, 28, 1)), deterministic=True)
  native = nnx_layers.InformationDropoutConv(1, 8, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='one example without its batch axis'):
    native(jnp.ones((28, 28, 1)))
  with pytest.raises(ValueError, match=r'rank 2, \(batch, features\)'):
    layers.InformationDropoutDense(4).init({'params': jax.random.key(0)}, jnp.ones((7,)), deterministic=True)


def test_total_kl_of_the_whole_variables_dict_says_which_entry_to_pass():
  layer = layers.InformationDropoutDense(4)
  x = jnp.ones((2, 3))
  variables = layer.init({'params': jax.random.key(0)}, x, deterministic=True)
  _, state = layer.apply(variables, x, deterministic=False, rngs={'noise': jax.random.key(1)}, mutable=True)
  with pytest.raises(ValueError, match=r"got the whole variables dict.*pass its 'kl' entry"):
    kl.total_kl(state, 10)
  assert float(kl.total_kl(state['kl'], 10)) > 0


# --- Echo ---------------------------------------------------------------------------------------------------------

def _echo_inputs(batch=16, units=5):
  f = jnp.tanh(jax.random.normal(jax.random.key(0), (batch, units)))
  return f, jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (batch, units)))


def test_echo_rate_uses_the_sampler_s_own_clip_factor():
  from infodrop_jax import echo  # pylint: disable=g-import-not-at-top
  f, log_s = _echo_inputs()
  layer = echo.EchoNoise(d_max=11)
  _, cols = layer.apply({}, f, log_s, deterministic=True, mutable=['kl'])
  np.testing.assert_allclose(layer.mutual_information(log_s), kl.kl_per_example(cols['kl']), rtol=1e-6)
  # A rate with another d_max than the sampler's gave 2.717 nats instead of 11.171: now it must be named.
  with pytest.raises(ValueError, match='pass the d_max the echo noise was sampled with'):
    echo.echo_mutual_information(log_s)
  native = nnx_layers.EchoNoise(d_max=11, rngs=nnx.Rngs(noise=0))
  z = native(f, log_s)
  assert z.shape == f.shape and not np.array_equal(z, f)
  np.testing.assert_allclose(kl.total_kl(native, 1), jnp.mean(layer.mutual_information(log_s)), rtol=1e-6)


def test_a_negligible_echo_noise_is_warned_about():
  from infodrop_jax import echo  # pylint: disable=g-import-not-at-top
  with pytest.warns(echo.EchoNoiseNegligibleWarning, match=r'r = 1.19e-07.*at least −log r = 15.9 nats'):
    echo.EchoNoise(d_max=1)
  with pytest.warns(echo.EchoNoiseNegligibleWarning):
    nnx_layers.EchoNoise(d_max=3)
  import warnings  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter('error', echo.EchoNoiseNegligibleWarning)
    echo.EchoNoise(d_max=99)  # the paper's: no warning


def test_echo_init_samples_nothing_and_needs_no_key():
  from infodrop_jax import echo  # pylint: disable=g-import-not-at-top
  f, log_s = _echo_inputs(batch=1)
  variables = echo.EchoNoise(d_max=11).init({}, f, log_s, deterministic=False)  # a batch of one, no noise key
  assert variables == {}
