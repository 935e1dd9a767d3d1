"""prng: jax.random's values bit for bit, with the Threefry hash unrolled (no while loop) on CPU."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from infodrop_jax import layers
from infodrop_jax import parallel
from infodrop_jax.cpu import prng

# Last axes both where normal draws through the unrolled hash and where it leaves narrow ones (3, 5-7, 9-15) to
# jax.random.
_SHAPES = [(), (2, 3, 16), (16, 8, 8, 24), (16, 8, 8, 3)]
_KEYS = {
    'raw PRNGKey': lambda: jax.random.PRNGKey(3),
    'typed key': lambda: jax.random.key(7),
    'folded raw key': lambda: jax.random.fold_in(jax.random.PRNGKey(1), 2 ** 31 + 5),
}
_SAMPLERS = {  # name: (ours, jax.random's)
    'normal': (lambda k, s: prng.normal(k, s), lambda k, s: jax.random.normal(k, s)),
    'uniform': (lambda k, s: prng.uniform(k, s), lambda k, s: jax.random.uniform(k, s)),
    'uniform(-2, 3)': (lambda k, s: prng.uniform(k, s, minval=-2.0, maxval=3.0),
                       lambda k, s: jax.random.uniform(k, s, minval=-2.0, maxval=3.0)),
    'bernoulli(0.8)': (lambda k, s: prng.bernoulli(k, 0.8, s), lambda k, s: jax.random.bernoulli(k, 0.8, s)),
    'bernoulli(0.1)': (lambda k, s: prng.bernoulli(k, 0.1, s), lambda k, s: jax.random.bernoulli(k, 0.1, s)),
}


def _same(a, b):
  """Equal bit patterns (so -0.0 and 0.0 differ, and NaNs must match too)."""
  a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
  assert a.dtype == b.dtype and a.shape == b.shape
  np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize('sampler', list(_SAMPLERS))
def test_bit_equal_to_jax_random_eager_and_jitted(sampler):
  ours, theirs = _SAMPLERS[sampler]
  for key_kind, make_key in _KEYS.items():
    key = make_key()
    for shape in _SHAPES if key_kind == 'raw PRNGKey' else [(3, 16), (16, 8, 8, 24)]:
      expected = theirs(key, shape)
      _same(ours(key, shape), expected)
      _same(jax.jit(lambda k, s=shape: ours(k, s))(key), expected)


def test_bit_equal_under_vmap_over_keys():
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  _same(jax.vmap(lambda k: prng.normal(k, (6, 3)))(keys), jax.vmap(lambda k: jax.random.normal(k, (6, 3)))(keys))
  _same(jax.vmap(lambda k: prng.bernoulli(k, 0.5, (9,)))(keys),
        jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, (9,)))(keys))


def test_bit_equal_and_still_sharded_over_devices():
  """The counters are elementwise, so a draw sharded over the batch axis stays sharded (the trainer's 'jit' mode)."""
  par = parallel.Parallel.create('jit')
  shape = (2 * par.num_devices, 5, 3)
  sharded = NamedSharding(par.mesh, PartitionSpec(parallel.AXIS))
  draw = jax.jit(lambda k: prng.normal(k, shape), out_shardings=sharded)
  out = draw(jax.random.PRNGKey(4))
  _same(out, jax.random.normal(jax.random.PRNGKey(4), shape))
  assert out.sharding.is_equivalent_to(sharded, len(shape))
  assert 'all-gather' not in draw.lower(jax.random.PRNGKey(4)).compile().as_text()


def test_random_bits_are_jax_random_bits():
  for shape in [(5,), (4, 33), (2, 3, 7)]:
    _same(prng.random_bits(jax.random.PRNGKey(11), shape), jax.random.bits(jax.random.PRNGKey(11), shape))


def test_cpu_lowering_has_no_loop_where_jax_randoms_has():
  """The reason for the module: JAX lowers Threefry on CPU as a while loop, one pass over the array per round group."""
  key = jax.random.PRNGKey(0)
  ours = jax.jit(lambda k: prng.normal(k, (64, 8))).lower(key).as_text()
  theirs = jax.jit(lambda k: jax.random.normal(k, (64, 8))).lower(key).as_text()
  assert 'stablehlo.while' in theirs
  assert 'stablehlo.while' not in ours


def test_typed_keys_take_the_unrolled_path_too():
  key = jax.random.key(0)
  assert 'stablehlo.while' not in jax.jit(lambda k: prng.normal(k, (64, 8))).lower(key).as_text()
  assert 'stablehlo.while' not in jax.jit(lambda k: prng.bernoulli(k, 0.5, (64, 8))).lower(key).as_text()


def test_x64_and_other_dtypes_of_p_follow_jax_random():
  """jax.random.bernoulli draws in p's dtype: float64 for a Python float under x64, bfloat16 for a bfloat16 p."""
  key = jax.random.PRNGKey(3)
  with jax.enable_x64(True):
    _same(prng.bernoulli(key, 0.8, (1000,)), jax.random.bernoulli(key, 0.8, (1000,)))
    _same(prng.normal(key, (40,)), jax.random.normal(key, (40,)))  # The default dtype is float64 there too.
    _same(prng.normal(key, (40,), jnp.float32), jax.random.normal(key, (40,), jnp.float32))
  p = jnp.bfloat16(0.8)
  _same(prng.bernoulli(key, p, (1000,)), jax.random.bernoulli(key, p, (1000,)))


def test_traced_p_and_bounds_are_accepted():
  key = jax.random.PRNGKey(4)
  _same(jax.jit(lambda k, p: prng.bernoulli(k, p, (50,)))(key, 0.3), jax.random.bernoulli(key, 0.3, (50,)))
  _same(jax.jit(lambda k, lo: prng.uniform(k, (50,), minval=lo, maxval=2.0))(key, -1.0),
        jax.random.uniform(key, (50,), minval=-1.0, maxval=2.0))


def test_empty_draws():
  key = jax.random.PRNGKey(0)
  assert prng.normal(key, (0, 2 ** 16, 2 ** 16)).shape == (0, 2 ** 16, 2 ** 16)
  assert prng.bernoulli(key, 0.5, (3, 0)).shape == (3, 0)


def test_a_change_of_default_prng_is_followed():
  """The choice of path is made outside the compiled sampler, so a later default PRNG gets its own values."""
  key = jax.random.PRNGKey(3)
  _same(prng.normal(key, (4, 16)), jax.random.normal(key, (4, 16)))
  default = jax.config.jax_default_prng_impl
  try:
    jax.config.update('jax_default_prng_impl', 'philox4x32')
    _same(prng.normal(key, (4, 16)), jax.random.normal(key, (4, 16)))
  finally:
    jax.config.update('jax_default_prng_impl', default)
  _same(prng.normal(key, (4, 16)), jax.random.normal(key, (4, 16)))


@pytest.mark.parametrize('case', ['rbg key', 'partitionable off', 'float16', 'batched key'])
def test_other_recipes_fall_back_to_jax_random(case):
  key, dtype = jax.random.PRNGKey(5), jnp.float32
  if case == 'rbg key':
    key = jax.random.key(5, impl='rbg')
  elif case == 'float16':
    dtype = jnp.float16
  if case == 'partitionable off':
    with jax.threefry_partitionable(False):
      _same(prng.normal(key, (4, 3)), jax.random.normal(key, (4, 3)))
      _same(jax.jit(lambda k: prng.bernoulli(k, 0.3, (7,)))(key), jax.random.bernoulli(key, 0.3, (7,)))
    return
  if case == 'batched key':
    keys = jax.random.split(key, 3)
    with pytest.raises(Exception):  # jax.random's own error for a batch of keys, not a silent draw.
      prng.normal(keys, (4,))
    return
  _same(prng.normal(key, (4, 3), dtype), jax.random.normal(key, (4, 3), dtype))
  _same(prng.uniform(key, (4, 3), dtype), jax.random.uniform(key, (4, 3), dtype))


@pytest.mark.parametrize('sampler', [layers.JAX_RANDOM, prng.SAMPLER], ids=['jax.random', 'cpu.prng.SAMPLER'])
def test_noise_layers_draw_what_jax_random_would(sampler):
  """The layers' noise does not depend on the sampler: z = f ⊙ exp(α ε) with ε = jax.random.normal(noise key)."""
  f = jnp.abs(jax.random.normal(jax.random.PRNGKey(1), (4, 6))) + 0.5
  logits = jax.random.normal(jax.random.PRNGKey(2), (4, 6))
  module = layers.InformationDropout(max_alpha=0.7, sampler=sampler)
  variables = module.init(jax.random.PRNGKey(0), f, logits, deterministic=True)
  noise_key = jax.random.PRNGKey(9)
  z, state = module.apply(variables, f, logits, deterministic=False, rngs={'noise': noise_key},
                          mutable=['kl', 'intermediates'])
  alpha = state['intermediates']['alpha'][0]
  # The key the layer draws with: Flax's make_rng of the 'noise' stream, recomputed through a probe module.
  class Probe(layers.NoiseModule):
    deterministic: bool | None = None
    rng_collection: str = 'noise'

    def __call__(self):
      return self._noise_key(False)

  layer_key = Probe().apply({}, rngs={'noise': noise_key})
  expected = f * jnp.exp(alpha * jax.random.normal(layer_key, f.shape))
  np.testing.assert_allclose(np.asarray(z), np.asarray(expected), rtol=1e-6)
