"""The paper's models: architecture facts from the original code, noise switching, dtypes and config errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from infodrop_jax import kl
from infodrop_jax import layers
from infodrop_jax import models

KEY = jax.random.key(0)
RNGS = {'params': KEY, 'noise': jax.random.key(1)}


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      name='all_cnn_32', dropout='information', activation='relu', max_alpha=0.7, filter_percentage=0.1,
      hidden_sizes=(16, 16, 16), dropout_rate=0.5, input_dropout_rate=0.2, lognormal_alpha=0.5, bn_momentum=0.9,
      dtype='float32'))
  config.update(overrides)
  return config


def _init_apply(model, x):
  """Compiled init and one noisy training-mode apply (eager CPU convolutions are slow)."""
  variables = jax.jit(lambda x: model.init(RNGS, x, deterministic=False, use_running_average=False))(x)
  out, cols = jax.jit(lambda v, x: model.apply(v, x, deterministic=False, use_running_average=False,
                                               rngs={'noise': jax.random.key(2)}, mutable=['batch_stats', 'kl']))(
                                                   variables, x)
  return variables, out, cols


def _shapes(model, x):
  """Variable and KL-map shapes without compiling (abstract evaluation)."""
  variables = jax.eval_shape(lambda: model.init(RNGS, x, deterministic=False, use_running_average=False))
  _, cols = jax.eval_shape(lambda v: model.apply(v, x, deterministic=True, mutable=['kl']), variables)
  return variables, cols


def test_all_cnn_32_structure():
  model = models.create_model(_config(filter_percentage=0.25), num_classes=10)
  variables, cols = _shapes(model, jnp.zeros((2, 32, 32, 3)))
  params = variables['params']
  assert params['block1_conv1']['kernel'].shape == (3, 3, 3, 24)      # int(96 * 0.25)
  assert params['block2_pool']['signal']['kernel'].shape == (3, 3, 48, 48)  # int(192 * 0.25)
  assert params['block2_pool']['alpha']['kernel'].shape == (3, 3, 48, 48)
  assert params['top_conv1x1']['kernel'].shape == (1, 1, 48, 48)
  assert params['logits']['kernel'].shape == (10, 10)
  kl_maps = {k: v['noise']['kl_map'][0].shape for k, v in cols['kl'].items()}
  assert kl_maps == {'block1_pool': (2, 16, 16, 24), 'block2_pool': (2, 8, 8, 48)}


def test_all_cnn_96_has_four_noisy_layers_at_the_papers_resolutions():
  model = models.create_model(_config(name='all_cnn_96', max_alpha=1.0), num_classes=10)
  variables, cols = _shapes(model, jnp.zeros((1, 96, 96, 1)))
  widths = [variables['params'][f'block{i}_pool']['signal']['kernel'].shape[-1] for i in range(1, 5)]
  assert widths == [32, 64, 96, 192]
  sizes = [cols['kl'][f'block{i}_pool']['noise']['kl_map'][0].shape[1] for i in range(1, 5)]
  assert sizes == [48, 24, 12, 6]


def test_mlp_and_all_methods():
  x = jax.random.uniform(KEY, (4, 28, 28, 1))
  for method in layers.METHODS:
    model = models.create_model(_config(name='mlp', dropout=method), num_classes=10)
    variables = model.init(RNGS, x, deterministic=False)  # eager: tiny dense nets run faster than they compile
    logits, cols = model.apply(variables, x, deterministic=False, rngs={'noise': KEY}, mutable=['kl'])
    assert logits.shape == (4, 10)
    has_kl = method in ('information', 'lognormal_constant', 'variational')
    assert (len(kl.kl_per_layer(cols.get('kl'))) == 3) == has_kl
    det = [model.apply(variables, x, deterministic=True, rngs={'noise': jax.random.key(i)}) for i in range(2)]
    np.testing.assert_array_equal(det[0], det[1])  # noise off: the key does not matter


def test_input_dropout_is_on_even_without_layer_noise():
  model = models.create_model(_config(dropout='none', filter_percentage=0.05), num_classes=10)
  x = jax.random.normal(KEY, (2, 16, 16, 3))
  variables = jax.jit(lambda x: model.init(RNGS, x, deterministic=False, use_running_average=False))(x)
  assert 'kl' not in variables and 'input_dropout' not in variables['params']  # 'none': no KL, no noise params

  @jax.jit
  def run(variables):
    noisy = lambda key: model.apply(variables, x, deterministic=False, use_running_average=True, rngs={'noise': key})
    clean = model.apply(variables, x, deterministic=True, use_running_average=True)
    return noisy(jax.random.key(5)), noisy(jax.random.key(5)), noisy(jax.random.key(6)), clean

  same_a, same_b, other, clean = run(variables)
  np.testing.assert_array_equal(same_a, same_b)
  assert not np.allclose(same_a, other) and not np.allclose(same_a, clean)


def test_softplus_models_learn_log_normal_priors_per_layer():
  model = models.create_model(_config(activation='softplus'), num_classes=10)
  variables, _ = _shapes(model, jnp.zeros((1, 32, 32, 3)))
  for block in ('block1_pool', 'block2_pool'):
    assert set(variables['params'][block]['noise']) == {'prior_mu', 'prior_log_sigma'}


def test_bfloat16_model():
  model = models.create_model(_config(name='mlp', dtype='bfloat16'), num_classes=10)
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(RNGS, x, deterministic=False)
  logits, cols = model.apply(variables, x, deterministic=False, rngs={'noise': KEY}, mutable=['kl'])
  assert logits.dtype == jnp.float32
  assert jax.tree.leaves(variables['params'])[0].dtype == jnp.float32
  assert all(m.dtype == jnp.float32 for m in jax.tree.leaves(cols['kl']))


@pytest.mark.parametrize('overrides,match', [
    (dict(name='resnet'), r"config.model.name = 'resnet': expected one of \('all_cnn_32', 'all_cnn_96', 'mlp'\)"),
    (dict(dropout='spatial'), r"config.model.dropout = 'spatial': expected one of \('information'"),
    (dict(activation='gelu'), r"config.model.activation = 'gelu': expected one of \('relu', 'softplus'\)"),
    (dict(dtype='float16'), r"config.model.dtype = 'float16': expected one of \('float32', 'bfloat16'\)"),
    (dict(filter_percentage=0.0), r'config.model.filter_percentage = 0.0: expected a float in \(0, 1\]'),
])
def test_bad_model_config(overrides, match):
  with pytest.raises(ValueError, match=match):
    models.create_model(_config(**overrides), num_classes=10)


def test_missing_model_field_is_named():
  config = _config()
  del config['max_alpha']
  with pytest.raises(ValueError, match='config.model.max_alpha is missing'):
    models.create_model(config, num_classes=10)


def test_batchnorm_is_the_originals_tf_default_shift_only():
  """tf.contrib batch_norm defaults: a learned shift β and no scale γ, in every conv and in the noisy layers."""
  model = models.create_model(_config(), num_classes=10)
  variables, _ = _shapes(model, jnp.zeros((1, 32, 32, 3)))
  assert set(variables['params']['block1_conv1_bn']) == {'bias'}
  assert set(variables['params']['block1_pool']['bn']) == {'bias'}


def test_fuse_alpha_config_gives_the_same_parameters_and_outputs():
  """The config switch reaches the layers (whose fused form is checked in detail in test_layers.py)."""
  x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))  # Two stride-2 pools: 8 → 4 → 2.
  separate, fused = (models.create_model(_config(fuse_alpha=value), num_classes=10) for value in (False, True))
  assert fused.fuse_alpha and not separate.fuse_alpha
  variables, out, cols = _init_apply(separate, x)
  assert jax.tree.structure(_shapes(fused, x)[0]) == jax.tree.structure(variables)
  fused_out, fused_cols = jax.jit(lambda v, x: fused.apply(v, x, deterministic=False, use_running_average=False,
                                                           rngs={'noise': jax.random.key(2)},
                                                           mutable=['batch_stats', 'kl']))(variables, x)
  np.testing.assert_allclose(fused_out, out, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), fused_cols['kl'], cols['kl'])


def test_fuse_alpha_must_be_a_bool():
  with pytest.raises(ValueError, match='config.model.fuse_alpha'):
    models.create_model(_config(fuse_alpha='yes'), num_classes=10)
