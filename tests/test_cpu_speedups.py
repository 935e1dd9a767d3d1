"""The CPU speed-ups (`infodrop_jax.cpu`) change speed, not results: one train step of every model family, built by the
trainer with `config.train.cpu_speedups` on and off, agrees to float rounding from the same state, batch and key."""
import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

import train_helpers
from configs import vae_mnist
from infodrop_jax import cpu
from infodrop_jax import layers
from infodrop_jax import train


def _classifier(name, **model):
  config = train_helpers.tiny_config()
  config.model.update(name=name, **model)
  return config, train_helpers.tiny_splits(shape=(16, 16, 3) if name != 'mlp' else (8, 8, 1))


def _vae(architecture, latent):
  config = vae_mnist.get_config('smoke')
  config.vae.update(architecture=architecture, latent=latent, latent_size=4, hidden_size=16)
  config.train.batch_size, config.eval.batch_size = 16, 16
  # Plain SGD, as the classifiers' tiny config: Adam's first step, ±lr wherever |g| exceeds its ε, would turn a
  # rounding difference in a gradient component near ε into a difference of up to lr.
  config.optim.update(name='sgd_nesterov', learning_rate=0.05)
  return config, train_helpers.tiny_splits(shape=(28, 28, 1), num_classes=10)


CASES = {
    'all_cnn_32 information': lambda: _classifier('all_cnn_32', filter_percentage=0.05, dropout='information'),
    'all_cnn_32 softplus': lambda: _classifier('all_cnn_32', filter_percentage=0.05, activation='softplus'),
    'mlp gaussian': lambda: _classifier('mlp', dropout='gaussian', hidden_sizes=(32, 16)),
    'mlp binary': lambda: _classifier('mlp', dropout='binary', hidden_sizes=(32, 16)),  # The Bernoulli draws.
    'vae conv gaussian': lambda: _vae('conv', 'gaussian'),
    'vae mlp information': lambda: _vae('mlp', 'information'),
}


def _one_step(config, splits, workdir):
  run = train.Run(config, workdir, splits=splits)
  state = train.create_train_state(run.model, run.tx, splits.train.images[:1].astype(np.float32), run.keys,
                                   run.parallel)
  images = splits.train.images[:16].astype(np.float32) / 255
  batch = {'images': images, 'labels': splits.train.labels[:16]}
  step = run.parallel.jit(functools.partial(train.train_step, **run.step_kwargs))
  new_state, metrics = step(state, batch, jax.random.PRNGKey(7))
  return run, jax.device_get((new_state.params, new_state.batch_stats, metrics))


@pytest.mark.parametrize('name', CASES)
def test_a_train_step_is_the_same_with_the_speedups_on_and_off(name, tmp_path):
  config, splits = CASES[name]()
  results = {}
  for setting in ('on', 'off'):
    config.train.cpu_speedups = setting
    run, results[setting] = _one_step(config, splits, str(tmp_path / setting))
    fields = run.model.__dataclass_fields__
    parts = {k: getattr(run.model, k) for k in ('conv', 'norm', 'sampler', 'conv_transpose') if k in fields}
    if setting == 'off':  # Plain Flax: what a library user gets.
      assert all(v in (nn.Conv, nn.BatchNorm, nn.ConvTranspose, layers.JAX_RANDOM) for v in parts.values()), parts
    else:
      fast = cpu.model_parts()
      assert all(v is fast[k] for k, v in parts.items()), parts
  (params_on, stats_on, metrics_on), (params_off, stats_off, metrics_off) = results['on'], results['off']
  for key in metrics_off:
    np.testing.assert_allclose(metrics_on[key], metrics_off[key], rtol=2e-5, atol=1e-5, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params_on, params_off)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), stats_on, stats_off)


def test_the_setting_is_checked_and_auto_follows_the_backend():
  assert cpu.enabled('auto', 'cpu') and not cpu.enabled('auto', 'gpu') and not cpu.enabled('auto', 'tpu')
  assert cpu.enabled('on', 'gpu') and not cpu.enabled('off', 'cpu')
  config = train_helpers.tiny_config(cpu_speedups='fast')
  with pytest.raises(ValueError, match=r"config.train.cpu_speedups = 'fast': expected one of \('auto', 'on', 'off'\)"):
    train.validate_config(config)
