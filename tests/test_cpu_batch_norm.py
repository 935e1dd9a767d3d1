"""batch_norm.BatchNorm against nn.BatchNorm: the same variables, outputs and statistics; gradients to rounding."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax.cpu import batch_norm


def _run(cls, x, *, use_scale, dtype, use_running_average=False, jit=True):
  """(loss, y, updated batch_stats, dloss/dx, dloss/dparams), and the variables' tree structure."""
  module = cls(use_running_average=use_running_average, momentum=0.9, use_scale=use_scale, epsilon=1e-3, dtype=dtype)
  variables = module.init(jax.random.key(1), x)
  # Non-trivial parameters and statistics, the same for both modules.
  params = jax.tree.map(lambda a: a + 0.1 * jnp.arange(a.size, dtype=a.dtype).reshape(a.shape), variables['params'])
  stats = jax.tree.map(lambda a: a + 0.5, variables['batch_stats'])
  weights = jnp.cos(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)

  def loss(x, params):
    y, updates = module.apply({'params': params, 'batch_stats': stats}, x, mutable=['batch_stats'])
    # The variance output enters the loss too, so its gradient path is checked.
    value = jnp.sum(jnp.sin(y.astype(jnp.float32)) * weights) + jnp.sum(updates['batch_stats']['var'])
    return value, (y, updates['batch_stats'])

  grad_fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  (value, (y, new_stats)), (grad_x, grad_params) = (jax.jit(grad_fn) if jit else grad_fn)(x, params)
  return (value, y, new_stats, grad_x, grad_params), jax.tree.structure(variables)


def _inputs(shape, dtype):
  x = jax.random.normal(jax.random.key(0), shape) * 3.0 + 1.0
  return x.at[..., 0].set(2.0).astype(dtype)  # Feature 0 is constant: its variance is 0 (the clipped case).


@pytest.mark.parametrize('shape', [(16, 8, 8, 6), (32, 5)], ids=['conv', 'dense'])
@pytest.mark.parametrize('use_scale', [False, True], ids=['no_scale', 'scale'])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['float32', 'bfloat16'])
def test_matches_flax_batch_norm_in_training(shape, use_scale, dtype):
  x = _inputs(shape, dtype)
  (ref, ref_tree), (ours, ours_tree) = (_run(cls, x, use_scale=use_scale, dtype=dtype)
                                        for cls in (nn.BatchNorm, batch_norm.BatchNorm))
  assert ours_tree == ref_tree  # Same parameter and statistics names and shapes: checkpoints swap.
  value, y, stats, grad_x, grad_params = ours
  # The forward pass is Flax's arithmetic in Flax's order.
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(ref[1], np.float32))
  assert y.dtype == ref[1].dtype
  jax.tree.map(np.testing.assert_array_equal, stats, ref[2])
  np.testing.assert_allclose(value, ref[0], rtol=1e-6)
  # The closed-form gradient agrees to rounding: float32 to a few ulps of the largest entry, bfloat16 to one ulp of
  # the largest (at most 2^-7 of it), since the two round before the cast differently. The constant feature's
  # gradient is the largest (1/σ = 1/sqrt(ε)), so the bound is set by it.
  atol = (3e-7 if dtype == jnp.float32 else 2 ** -7) * float(jnp.max(jnp.abs(ref[3].astype(jnp.float32))))
  np.testing.assert_allclose(np.asarray(grad_x, np.float32), np.asarray(ref[3], np.float32), rtol=0, atol=atol)
  assert grad_x.dtype == ref[3].dtype
  for ours_leaf, ref_leaf in zip(jax.tree.leaves(grad_params), jax.tree.leaves(ref[4])):
    np.testing.assert_allclose(ours_leaf, ref_leaf, rtol=1e-5, atol=1e-5)


def test_running_average_mode_and_init_match_flax():
  x = _inputs((8, 4, 4, 3), jnp.float32)
  (ref, _), (ours, _) = (_run(cls, x, use_scale=True, dtype=None, use_running_average=True, jit=False)
                         for cls in (nn.BatchNorm, batch_norm.BatchNorm))
  jax.tree.map(np.testing.assert_array_equal, ours[:3], ref[:3])  # Value, output, statistics left alone.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours[3:], ref[3:])
  # Initialising does not move the running statistics (as nn.BatchNorm).
  variables = batch_norm.BatchNorm(use_running_average=False).init(jax.random.key(0), x)
  np.testing.assert_array_equal(variables['batch_stats']['mean'], 0.0)
  np.testing.assert_array_equal(variables['batch_stats']['var'], 1.0)


def test_the_closed_form_and_jax_differentiation_agree():
  """The other platforms' backward pass (JAX's own) against the CPU closed form, both called directly."""
  x = _inputs((24, 6, 6, 4), jnp.float32)
  scale, bias = jnp.linspace(0.5, 2.0, 4), jnp.linspace(-1.0, 1.0, 4)
  args = (1e-3, jnp.dtype(jnp.float32), jnp.dtype(jnp.float32))
  (y, mean, var), residuals = batch_norm._batch_norm_fwd(x, scale, bias, *args)  # pylint: disable=protected-access
  weights = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
  cotangents = (jnp.sin(y) * weights, jnp.linspace(-1.0, 1.0, 4), jnp.linspace(2.0, 3.0, 4))
  closed = batch_norm.closed_form_vjp(*residuals, cotangents, epsilon=1e-3)
  _, vjp = jax.vjp(lambda *a: batch_norm._train_forward(*a, *args), x, scale, bias)  # pylint: disable=protected-access
  for ours, ref in zip(closed, vjp(cotangents)):  # To a few float32 ulps of the largest entry.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(ref))))


def test_forward_mode_raises_and_complex_inputs_are_refused():
  x = _inputs((8, 3), jnp.float32)
  module = batch_norm.BatchNorm(use_running_average=False)
  variables = module.init(jax.random.key(0), x)
  apply = lambda x: module.apply(variables, x, mutable=['batch_stats'])[0].sum()
  with pytest.raises(TypeError, match='forward-mode'):
    jax.jvp(apply, (x,), (x,))
  # Second order by reverse mode works, and agrees with nn.BatchNorm's.
  flax_apply = lambda x: nn.BatchNorm(use_running_average=False).apply(variables, x, mutable=['batch_stats'])[0]
  second = lambda f: jax.grad(lambda x: jnp.sum(jnp.sin(jax.grad(lambda x: jnp.sum(jnp.sin(f(x))))(x))))(x)
  np.testing.assert_allclose(second(lambda x: module.apply(variables, x, mutable=['batch_stats'])[0]),
                             second(flax_apply), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='complex'):
    module.apply(variables, x.astype(jnp.complex64), mutable=['batch_stats'])


def test_vmapped_and_sharded_gradients_match_one_device():
  x = _inputs((32, 4, 4, 3), jnp.float32)
  module = batch_norm.BatchNorm(use_running_average=False, use_scale=True)
  variables = module.init(jax.random.key(0), x)

  def loss(x, params):
    y, _ = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, mutable=['batch_stats'])
    return jnp.sum(jnp.sin(y))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  reference = grad(x, variables['params'])
  # Batch statistics of the whole (global) batch when it is sharded over devices, as the trainer's 'jit' mode.
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('batch',))
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch')))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grad(sharded, variables['params']), reference)
  # vmap over two independent batches: each is normalised over its own batch.
  pair = jnp.stack([x, x[::-1] * 2.0])
  grad_x = jax.vmap(lambda x: grad(x, variables['params'])[0])(pair)
  np.testing.assert_allclose(grad_x[0], reference[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad_x[1], grad(pair[1], variables['params'])[0], rtol=1e-5, atol=1e-6)


def test_under_pmap_with_axis_name_it_is_flaxs_batch_norm_over_all_devices():
  """With `axis_name` the statistics are those of every device's batch together, as nn.BatchNorm's: the same
  outputs, running statistics and gradients as one device normalising the whole batch."""
  devices = jax.local_device_count()
  x = _inputs((4 * devices, 3, 3, 5), jnp.float32)
  per_device = x.reshape(devices, 4, *x.shape[1:])
  variables = nn.BatchNorm(use_running_average=False).init(jax.random.key(0), x)

  def run(cls, xs, axis_name):
    module = cls(use_running_average=False, momentum=0.9, axis_name=axis_name)

    def loss(params, x):
      y, updates = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                                mutable=['batch_stats'])
      return jnp.sum(jnp.sin(y)), (y, updates['batch_stats'])
    return jax.grad(loss, has_aux=True)(variables['params'], xs)

  whole_grads, (whole_y, whole_stats) = jax.jit(lambda x: run(nn.BatchNorm, x, None))(x)
  for cls in (nn.BatchNorm, batch_norm.BatchNorm):
    grads, (y, stats) = jax.pmap(lambda x: run(cls, x, 'batch'), axis_name='batch')(per_device)
    np.testing.assert_allclose(y.reshape(x.shape), whole_y, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-6), stats, whole_stats)
    # Each device's parameter gradient is its share; their sum is the whole batch's.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a.sum(0), b, rtol=1e-4, atol=1e-5), grads, whole_grads)
