"""Every public layer and model is plain Flax: jvp, hessian (inputs and parameters), vmap over examples, jax.export of
the gradient (CPU and CUDA) and bfloat16 all work, and agree with reverse mode / per-example calls where they should.

The models are built as a library user gets them (no `parts`): nn.Conv, nn.BatchNorm and jax.random. Sizes are tiny
so that second-order transforms compile quickly on the CPU.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from infodrop_jax import echo
from infodrop_jax import kl
from infodrop_jax import layers
from infodrop_jax import models
from infodrop_jax import vae

KEY = jax.random.key(0)


@dataclasses.dataclass
class Case:
  """A module, an input batch and how to call it; `loss` is a scalar of everything it returns, KL included."""
  module: nn.Module
  x: Callable[[], jax.Array]  # The input, made lazily (the cases are built at collection time).
  extra: tuple[Any, ...] = ()  # Further positional inputs (the bare information dropout's alpha logits).
  bn: bool = False  # Takes use_running_average.
  echo: bool = False  # Builds its noise from the other batch members: needs the whole batch.
  hessian_leaf: tuple[str, ...] | None = None  # The parameter the parameter Hessian is taken of (None: all).

  def call_kwargs(self, deterministic: bool) -> dict[str, Any]:
    kwargs = {'deterministic': deterministic}
    if self.bn:
      kwargs['use_running_average'] = deterministic
    return kwargs


def _out_sum(out: Any) -> jax.Array:
  out = out['logits'] if isinstance(out, dict) else out
  return jnp.sum(jnp.sin(out.astype(jnp.float32)))


def _vae(latent: str, architecture: str = 'mlp') -> vae.VAE:
  shape = (28, 28, 1) if architecture == 'conv' else (4, 4, 1)
  return vae.VAE(image_shape=shape, latent=latent, architecture=architecture, latent_size=2, hidden_size=6,
                 d_max=3)


def _images(shape: tuple[int, ...]) -> Callable[[], jax.Array]:
  return lambda: jax.random.uniform(jax.random.key(1), shape)


CASES = {
    'InformationDropout': Case(layers.InformationDropout(max_alpha=0.7),
                               lambda: jax.random.uniform(jax.random.key(1), (3, 4)) + 0.5,
                               extra=(jnp.linspace(-1.0, 1.0, 12).reshape(3, 4),)),
    'InformationDropout log_normal': Case(layers.InformationDropout(prior='log_normal'),
                                          lambda: jax.random.uniform(jax.random.key(1), (3, 4)) + 0.5,
                                          extra=(jnp.linspace(-1.0, 1.0, 12).reshape(3, 4),)),
    'InformationDropoutConv': Case(layers.InformationDropoutConv(3, use_bn=True), _images((2, 6, 6, 2)), bn=True),
    'InformationDropoutConv fused softplus': Case(
        layers.InformationDropoutConv(3, activation='softplus', fuse_alpha=True), _images((2, 6, 6, 2))),
    'InformationDropoutDense': Case(layers.InformationDropoutDense(3), _images((3, 4))),
    'BinaryDropout': Case(layers.BinaryDropout(rate=0.3), _images((3, 4))),
    'GaussianDropout': Case(layers.GaussianDropout(rate=0.3), _images((3, 4))),
    'LogNormalDropout': Case(layers.LogNormalDropout(alpha=0.4), _images((3, 4))),
    'VariationalDropout': Case(layers.VariationalDropout(init_rate=0.3), _images((3, 4))),
    'conv control noise': Case(layers.InformationDropoutConv(3, method='gaussian', use_bn=True),
                               _images((2, 6, 6, 2)), bn=True),
    'EchoNoise': Case(echo.EchoNoise(d_max=3), lambda: jnp.tanh(jax.random.normal(jax.random.key(1), (5, 3))),
                      extra=(jax.nn.log_sigmoid(jnp.linspace(-2.0, 2.0, 15).reshape(5, 3)),), echo=True),
    'All-CNN-32': Case(models.all_cnn_32(filter_percentage=0.03, num_classes=3), _images((2, 8, 8, 3)), bn=True,
                       hessian_leaf=('block1_conv1', 'kernel')),
    'All-CNN-96 layout': Case(models.AllCNN(block_features=(2, 2, 2, 2), top_features=2, num_classes=3,
                                            activation='softplus'), _images((2, 8, 8, 1)), bn=True,
                              hessian_leaf=('block1_conv1', 'kernel')),
    'MLP': Case(models.MLP(hidden_sizes=(5, 4), num_classes=3, noisy_layers=(2,)), _images((3, 2, 2, 1)),
                bn=True, hessian_leaf=('hidden1', 'signal', 'kernel')),
    'VAE gaussian': Case(_vae('gaussian'), _images((3, 4, 4, 1)), hessian_leaf=('latent_layer', 'mean', 'bias')),
    'VAE information': Case(_vae('information'), _images((3, 4, 4, 1)),
                            hessian_leaf=('latent_layer', 'alpha', 'bias')),
    'VAE echo': Case(_vae('echo'), _images((5, 4, 4, 1)), echo=True,
                     hessian_leaf=('latent_layer', 'log_scale', 'bias')),
    'VAE conv': Case(_vae('gaussian', 'conv'), _images((2, 28, 28, 1)),
                     hessian_leaf=('latent_layer', 'mean', 'bias')),
}


@functools.cache
def _setup(name: str):
  """(case, x, variables, loss(params, x, key, deterministic)) for a case; compiled functions are built per test."""
  case = CASES[name]
  x = case.x()
  init = jax.jit(functools.partial(case.module.init, **case.call_kwargs(False)))  # Eager CPU convs are slow.
  variables = init({'params': jax.random.key(2), 'noise': jax.random.key(3)}, x, *case.extra)
  variables = jax.tree.map(lambda a: a + 0.05 * jnp.cos(jnp.arange(a.size).reshape(a.shape)).astype(a.dtype),
                           {'params': {}, **variables})  # Off the initialisers' special values (zero biases, ...).

  def loss(params, x, key, deterministic=False):
    out, state = case.module.apply({**variables, 'params': params}, x, *case.extra, **case.call_kwargs(deterministic),
                                   rngs={'noise': key}, mutable=['kl', 'batch_stats'])
    return _out_sum(out) + kl.total_kl(state.get('kl', {}), 7)

  return case, x, variables, loss


def _flat(tree):
  return jax.flatten_util.ravel_pytree(tree)[0]


@pytest.mark.parametrize('name', CASES)
def test_forward_mode_agrees_with_reverse_mode(name):
  case, x, variables, loss = _setup(name)
  tangent_x = jnp.cos(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)
  tangent_p = jax.tree.map(lambda a: jnp.sin(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape),
                           variables['params'])
  fn = lambda p, x: loss(p, x, KEY)
  _, forward = jax.jit(lambda p, x: jax.jvp(fn, (p, x), (tangent_p, tangent_x)))(variables['params'], x)
  grad_p, grad_x = jax.jit(jax.grad(fn, argnums=(0, 1)))(variables['params'], x)
  reverse = jnp.vdot(grad_x, tangent_x) + jnp.vdot(_flat(grad_p), _flat(tangent_p))
  assert np.isfinite(forward)
  np.testing.assert_allclose(forward, reverse, rtol=2e-4, atol=1e-4)


@pytest.mark.parametrize('name', CASES)
def test_hessians_of_inputs_and_parameters(name):
  """jax.hessian (forward over reverse) is symmetric, and its product with a vector is the reverse-over-reverse one."""
  case, x, variables, loss = _setup(name)

  def of_x(part):  # The loss as a function of the first six input entries.
    return loss(variables['params'], x.reshape(-1).at[:6].set(part).reshape(x.shape), KEY)

  hessian_x = jax.jit(jax.hessian(of_x))(x.reshape(-1)[:6])
  assert hessian_x.shape == (6, 6) and np.isfinite(hessian_x).all()
  np.testing.assert_allclose(hessian_x, hessian_x.T, rtol=1e-3, atol=1e-4)

  params = variables['params']
  if case.hessian_leaf is None:
    leaf, rebuild = params, lambda p: p
  else:
    leaf = functools.reduce(lambda tree, key: tree[key], case.hessian_leaf, params)

    def rebuild(p):
      tree = jax.tree.map(lambda a: a, params)  # A copy, so the original stays as it is.
      node = tree
      for key in case.hessian_leaf[:-1]:
        node[key] = dict(node[key])
        node = node[key]
      node[case.hessian_leaf[-1]] = p
      return tree
  flat, unravel = jax.flatten_util.ravel_pytree(leaf)
  if not flat.size:
    return  # A bare noise without parameters.
  of_p = lambda v: loss(rebuild(unravel(v)), x, KEY)
  hessian_p = jax.jit(jax.hessian(of_p))(flat)
  assert hessian_p.shape == (flat.size, flat.size) and np.isfinite(hessian_p).all()
  np.testing.assert_allclose(hessian_p, hessian_p.T, rtol=1e-3, atol=1e-4)
  v = jnp.cos(jnp.arange(flat.size, dtype=flat.dtype))
  reverse_hvp = jax.jit(jax.grad(lambda w: jnp.vdot(jax.grad(of_p)(w), v)))(flat)
  np.testing.assert_allclose(hessian_p @ v, reverse_hvp, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('name', CASES)
def test_vmap_over_examples_is_the_per_example_call(name):
  """vmap of a one-example call equals the loop over examples (BatchNorm on its running statistics); Echo, which
  needs the batch, is vmapped over whole batches instead."""
  case, x, variables, _ = _setup(name)
  keys = jax.random.split(jax.random.key(4), x.shape[0])

  def one(x_i, key, *extra):
    batch = x_i if case.echo else x_i[None]
    extra = extra if case.echo else tuple(e[None] for e in extra)
    out, _ = case.module.apply(variables, batch, *extra, deterministic=False,
                               **({'use_running_average': True} if case.bn else {}), rngs={'noise': key},
                               mutable=['kl'])
    out = out['logits'] if isinstance(out, dict) else out
    return out if case.echo else out[0]

  if case.echo:  # Two batches stacked: vmap over the batches.
    xs, extras, keys = jnp.stack([x, x[::-1]]), tuple(jnp.stack([e, e[::-1]]) for e in case.extra), keys[:2]
  else:
    xs, extras = x, case.extra
  mapped = jax.jit(jax.vmap(one))(xs, keys, *extras)
  one_jit = jax.jit(one)  # One compile for the loop below (eager op-by-op calls of a conv net are slow).
  looped = jnp.stack([one_jit(xs[i], keys[i], *(e[i] for e in extras)) for i in range(len(keys))])
  np.testing.assert_allclose(mapped, looped, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', CASES)
def test_the_gradient_exports_for_cpu_and_cuda(name):
  """jax.export of the gradient (parameters and input): the CPU artifact (its StableHLO, compiled afresh) computes the same
  gradient; the CUDA one lowers (nothing platform-specific is needed). Serialising an artifact to bytes needs JAX's
  optional `flatbuffers` package, which is not a dependency here; the module text is what it would carry."""
  _, x, variables, loss = _setup(name)
  key_data = jax.random.key_data(KEY)
  grad = jax.jit(lambda p, x, k: jax.grad(loss, argnums=(0, 1))(p, x, jax.random.wrap_key_data(k)))
  exported = jax.export.export(grad)(variables['params'], x, key_data)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               exported.call(variables['params'], x, key_data), grad(variables['params'], x, key_data))
  for_cuda = jax.export.export(grad, platforms=('cuda',))(variables['params'], x, key_data)
  assert for_cuda.platforms == ('cuda',) and 'stablehlo.' in for_cuda.mlir_module()
  assert 'custom_call' not in exported.mlir_module()


BF16_CASES = ['InformationDropoutConv', 'InformationDropoutDense', 'All-CNN-32', 'All-CNN-96 layout', 'MLP']


@pytest.mark.parametrize('name', BF16_CASES)
def test_bfloat16_computes_in_bfloat16_with_float32_noise_kl_and_parameters(name):
  case = CASES[name]
  module = case.module.clone(dtype=jnp.bfloat16)
  x = case.x()
  variables = jax.jit(functools.partial(module.init, **case.call_kwargs(False)))({'params': KEY, 'noise': KEY}, x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables['params']))

  def loss(params):
    out, state = module.apply({**variables, 'params': params}, x, **case.call_kwargs(False),
                              rngs={'noise': KEY}, mutable=['kl', 'batch_stats', 'intermediates'])
    maps = jax.tree.leaves(state['kl'])
    assert maps and all(m.dtype == jnp.float32 for m in maps)
    return _out_sum(out) + kl.total_kl(state['kl'], 7), out

  grads, out = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
  assert out.dtype == (jnp.float32 if isinstance(case.module, (models.AllCNN, models.MLP)) else jnp.bfloat16)
  assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_models_from_a_config_are_plain_flax_unless_given_parts():
  config = ml_collections.ConfigDict(dict(
      name='all_cnn_32', dropout='information', activation='relu', max_alpha=0.7, filter_percentage=0.1,
      hidden_sizes=(8,), dropout_rate=0.5, input_dropout_rate=0.2, lognormal_alpha=0.5, bn_momentum=0.9,
      dtype='float32', noisy_layers=(), fuse_alpha=True))
  model = models.create_model(config, 10)
  assert (model.conv, model.norm, model.sampler, model.axis_name) == (nn.Conv, nn.BatchNorm, layers.JAX_RANDOM, None)
  from infodrop_jax import cpu  # pylint: disable=g-import-not-at-top
  fast = models.create_model(config, 10, **cpu.model_parts())
  assert fast.conv is not nn.Conv and fast.norm is not nn.BatchNorm and fast.sampler is not layers.JAX_RANDOM


@pytest.mark.parametrize('name', ['InformationDropout', 'InformationDropout log_normal', 'BinaryDropout',
                                  'GaussianDropout', 'LogNormalDropout', 'VariationalDropout', 'EchoNoise'])
def test_bare_noises_keep_bfloat16_inputs_in_bfloat16(name):
  """A bfloat16 signal stays bfloat16 through the noise (drawn and applied in float32) and its KL is float32."""
  case = CASES[name]
  x = case.x().astype(jnp.bfloat16)
  extra = tuple(e.astype(jnp.bfloat16) for e in case.extra)
  variables = case.module.init({'params': KEY, 'noise': KEY}, x, *extra, deterministic=False)

  def loss(x):
    out, state = case.module.apply(variables, x, *extra, deterministic=False, rngs={'noise': KEY}, mutable=['kl'])
    maps = jax.tree.leaves(state.get('kl', {}))
    assert all(m.dtype == jnp.float32 for m in maps)
    return jnp.sum(out.astype(jnp.float32)), out

  grad, out = jax.jit(jax.grad(loss, has_aux=True))(x)
  assert out.dtype == grad.dtype == jnp.bfloat16 and np.isfinite(np.asarray(grad, np.float32)).all()
