"""convolution.conv_general_dilated: lax's values and gradients, in the canonical (fast) form on CPU only."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax.cpu import convolution
from infodrop_jax import layers

_CASES = [  # (spatial shape, window, strides, padding)
    ((8, 8), (3, 3), (1, 1), 'SAME'),  # All-CNN's other convolutions.
    ((8, 8), (3, 3), (1, 1), 'VALID'),
    ((8, 8), (1, 1), (1, 1), 'SAME'),
    ((9, 8), (4, 2), (1, 1), 'SAME'),  # Even windows: asymmetric 'SAME' padding.
    ((8, 8), (3, 3), (2, 2), 'SAME'),  # All-CNN's pooling convolutions.
    ((9, 7), (3, 3), (2, 2), 'SAME'),  # Odd sizes: the phases have different lengths.
    ((8, 8), (3, 3), (2, 2), 'VALID'),  # The last row and column reach no output.
    ((10, 11), (5, 5), (2, 3), 'SAME'),  # The VAE encoder's 5x5; different strides per axis.
    ((8, 8), (3, 3), (2, 1), 'SAME'),
    ((8, 8), (1, 1), (2, 2), 'SAME'),  # Phases no tap reaches: zero gradient there.
    ((8, 8), (2, 2), (2, 2), 'VALID'),
    ((9, 9), (4, 4), (3, 3), 'SAME'),
    ((8, 8), (3, 3), (2, 2), ((2, 0), (1, 3))),  # Explicit, asymmetric padding.
    ((12,), (3,), (3,), 'SAME'),  # 1-D.
    ((6, 6, 6), (3, 3, 3), (2, 2, 2), 'SAME'),  # 3-D.
]


def _operands(spatial, window, seed=0, batch=2, features=(3, 5)):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, *spatial, features[0])), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*window, *features)), jnp.float32)
  return x, w


def _both(strides, padding, ndim, **kwargs):
  numbers = convolution.features_last(ndim)
  ours = lambda x, w: convolution.conv_general_dilated(x, w, strides, padding, dimension_numbers=numbers, **kwargs)
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=numbers, **kwargs)
  return ours, ref


@pytest.mark.parametrize('spatial,window,strides,padding', _CASES)
def test_values_and_both_gradients_equal_lax(spatial, window, strides, padding):
  x, w = _operands(spatial, window)
  ours, ref = _both(strides, padding, x.ndim)
  y = ref(x, w)
  np.testing.assert_allclose(ours(x, w), y, rtol=1e-6, atol=1e-6)
  cotangent = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32)
  expected = jax.vjp(ref, x, w)[1](cotangent)
  got = jax.jit(lambda x, w, c: jax.vjp(ours, x, w)[1](c))(x, w, cotangent)
  for g, e in zip(got, expected):
    assert g.shape == e.shape and g.dtype == e.dtype
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_second_order_and_vmap_match_lax():
  x, w = _operands((8, 8), (3, 3))
  ours, ref = _both((2, 2), 'SAME', x.ndim)
  loss = lambda conv: (lambda x, w: jnp.sum(jnp.tanh(conv(x, w))))
  np.testing.assert_allclose(jax.grad(lambda w: jnp.sum(jax.grad(loss(ours))(x, w) ** 2))(w),
                             jax.grad(lambda w: jnp.sum(jax.grad(loss(ref))(x, w) ** 2))(w), rtol=1e-4, atol=1e-4)
  xs = jnp.stack([x, 2 * x])
  np.testing.assert_allclose(jax.vmap(jax.grad(loss(ours)), (0, None))(xs, w),
                             jax.vmap(jax.grad(loss(ref)), (0, None))(xs, w), rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_their_dtype():
  x, w = (a.astype(jnp.bfloat16) for a in _operands((8, 8), (3, 3)))
  ours, ref = _both((2, 2), 'SAME', x.ndim)
  got = jax.grad(lambda x, w: jnp.sum(ours(x, w).astype(jnp.float32)), (0, 1))(x, w)
  expected = jax.grad(lambda x, w: jnp.sum(ref(x, w).astype(jnp.float32)), (0, 1))(x, w)
  for g, e in zip(got, expected):
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(g.astype(jnp.float32), e.astype(jnp.float32), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('kwargs', [
    dict(dimension_numbers=('NCHW', 'OIHW', 'NCHW')),  # Not features-last.
    dict(rhs_dilation=(2, 2)),
    dict(lhs_dilation=(2, 2), padding=((1, 1), (1, 1))),
    dict(feature_group_count=3),
    dict(padding=((-1, 0), (0, 0))),  # Cropping.
])
def test_everything_else_is_lax_itself(kwargs):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 6)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 6 // kwargs.get('feature_group_count', 1), 6)),
                  jnp.float32)
  if kwargs.get('dimension_numbers'):
    x, w = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1))
  call = dict(window_strides=(2, 2), padding='SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  call.update(kwargs)
  ours = lambda x, w: convolution.conv_general_dilated(x, w, **call)
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, **call)
  assert 'custom_vjp' not in str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(ours(x, w))))(x))
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(ours(x, w) ** 2))(x),
                             jax.grad(lambda x: jnp.sum(ref(x, w) ** 2))(x), rtol=1e-6, atol=1e-6)


def _lowered_gradient(platform):
  x, w = _operands((8, 8), (3, 3))
  ours, _ = _both((2, 2), 'SAME', x.ndim)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(ours(x, w) ** 2)))
  return grad.trace(x).lower(lowering_platforms=(platform,)).as_text()


def test_the_canonical_forms_are_lowered_for_cpu_and_xla_own_elsewhere():
  cpu, cuda = _lowered_gradient('cpu'), _lowered_gradient('cuda')
  assert 'lhs_dilate = [2, 2]' not in cpu and 'lhs_dilate = [2, 2]' in cuda
  assert _dimension_forms(cpu) == {'[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]'}
  assert len(_dimension_forms(cuda)) > 1


def _dimension_forms(stablehlo_text):
  return set(re.findall(r'dim_numbers = (\[[^\]]*\]x\[[^\]]*\]->\[[^\]]*\])', stablehlo_text))


def test_a_conv_net_step_inside_a_scan_has_only_canonical_convolutions():
  """XLA:CPU's rewrite to its fast form skips loop bodies; a net of convolution.Conv needs none."""
  model = nn.Sequential([convolution.Conv(8, (3, 3)), nn.relu, convolution.Conv(8, (3, 3), strides=2), nn.relu,
                         convolution.Conv(4, (3, 3), padding='VALID')])
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), x)

  def step(params, _):
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(params)
    return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), None
  text = jax.jit(lambda p: jax.lax.scan(step, p, length=3)[0]).lower(params).compile().as_text()
  forms = {line.split('dim_labels=')[1].split(',')[0] for line in text.splitlines() if ' convolution(' in line}
  assert forms == {'b01f_01io->b01f'}


def _scanned_gradients(conv):
  """(lowered StableHLO, XLA:CPU's compiled conv forms) of 3 gradient steps of `conv` in a `lax.scan`."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
  params = conv.init(jax.random.PRNGKey(0), x)

  def step(params, _):
    grads = jax.grad(lambda p: jnp.sum(conv.apply(p, x) ** 2))(params)
    return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), None
  lowered = jax.jit(lambda p: jax.lax.scan(step, p, length=3)[0]).lower(params)
  text = lowered.compile().as_text()
  return lowered.as_text(), {line.split('dim_labels=')[1].split(',')[0] for line in text.splitlines()
                             if ' convolution(' in line}


@pytest.mark.parametrize('name, conv', [
    ('ours', convolution.Conv(8, (3, 3), strides=2)),
    ('nn.Conv', nn.Conv(8, (3, 3), strides=2)),
    ('nn.ConvTranspose', nn.ConvTranspose(8, (3, 3), strides=(2, 2))),
    ('ours, transposed', convolution.ConvTranspose(8, (3, 3), strides=(2, 2))),
    ('ours, 1-d', convolution.Conv(8, (3,), strides=2)),
])
def test_loop_unsafe_convolutions_are_those_xla_cpu_leaves_out_of_its_fast_form_in_loops(name, conv):
  """The check the trainer runs on the lowered step (no compile) agrees with what XLA:CPU compiles inside a loop:
  a convolution it flags ends up in a non-features-last form (a naive loop nest there); none flagged, none does."""
  if name.endswith('1-d'):
    conv = nn.Sequential([lambda x: x[:, 0], conv])  # (4, 16, 3) inputs.
  lowered, compiled_forms = _scanned_gradients(conv)
  unsafe = convolution.loop_unsafe_convolutions(lowered)
  fast = {'b01f_01io->b01f', 'b01f_01oi->b01f', 'b0f_0io->b0f', 'b0f_0oi->b0f'}
  assert bool(unsafe) == (not compiled_forms <= fast), (name, unsafe, compiled_forms)
  assert bool(unsafe) == name.startswith('nn.'), name


def test_loop_unsafe_convolutions_counts_what_it_cannot_read_as_unsafe():
  canonical = ('%1 = stablehlo.convolution(%a, %b) dim_numbers = [b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f], window = '
               '{stride = [1, 1], reverse = [false, false]} {batch_group_count = 1 : i64, feature_group_count = 1 : '
               'i64}')
  assert convolution.loop_unsafe_convolutions(canonical) == []
  assert len(convolution.loop_unsafe_convolutions(canonical.replace('reverse = [false, false]',
                                                                    'reverse = [true, false]'))) == 1
  assert len(convolution.loop_unsafe_convolutions(canonical.replace('feature_group_count = 1',
                                                                    'feature_group_count = 2'))) == 1
  generic = '%1 = "stablehlo.convolution"(%a, %b) <{dimension_numbers = #stablehlo.conv<[b, 0, 1, f]>}>'
  assert len(convolution.loop_unsafe_convolutions(generic)) == 1


def test_a_strided_information_dropout_step_has_no_dilated_convolution_on_cpu():
  layer = layers.InformationDropoutConv(8, kernel_size=3, strides=2, fuse_alpha=True, conv=convolution.Conv)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 6)), jnp.float32)
  variables = layer.init({'params': jax.random.PRNGKey(0), 'noise': jax.random.PRNGKey(1)}, x, deterministic=False)

  def loss(params, x):
    y, _ = layer.apply({**variables, 'params': params}, x, deterministic=False, rngs={'noise': jax.random.PRNGKey(2)},
                       mutable=['kl'])
    return jnp.sum(y ** 2)
  text = jax.jit(jax.grad(loss, (0, 1))).lower(variables['params'], x).compile().as_text()
  assert ' convolution(' in text and 'lhs_dilate' not in text


def test_conv_declares_the_parameters_of_nn_conv():
  x = jnp.ones((2, 8, 8, 3))
  ours = convolution.Conv(4, (3, 3), strides=2).init(jax.random.PRNGKey(0), x)
  theirs = nn.Conv(4, (3, 3), strides=2).init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)


_TRANSPOSED_CASES = [  # (input spatial shape, window, strides, padding)
    ((1, 1), (7, 7), (1, 1), 'VALID'),  # The conv VAE decoder's first layer: a 1x1 map to 7x7.
    ((7, 7), (5, 5), (2, 2), 'SAME'),  # Its upsampling layers.
    ((8, 8), (4, 4), (1, 1), 'SAME'),  # Its last one: an even window.
    ((6, 5), (3, 3), (2, 2), 'VALID'),
    ((5, 5), (1, 1), (2, 2), 'SAME'),  # Phases no tap reaches.
    ((6, 6), (3, 3), (3, 2), 'SAME'),
    ((6, 6), (3, 3), (2, 2), ((1, 2), (0, 1))),  # Explicit padding.
    ((9,), (3,), (2,), 'SAME'),  # 1-D.
]


@pytest.mark.parametrize('spatial, window, strides, padding', _TRANSPOSED_CASES)
def test_conv_transpose_is_nn_conv_transpose_in_parameters_values_and_gradients(spatial, window, strides, padding):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, *spatial, 3)), jnp.float32)
  ours = convolution.ConvTranspose(4, window, strides=strides, padding=padding)
  theirs = nn.ConvTranspose(4, window, strides=strides, padding=padding)
  variables = ours.init(jax.random.PRNGKey(0), x)
  reference = theirs.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(reference)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(a, b)
  y, expected = jax.jit(ours.apply)(variables, x), jax.jit(theirs.apply)(variables, x)
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(np.random.default_rng(2).normal(size=y.shape), jnp.float32)
  grads = jax.jit(jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) * cotangent), (0, 1)))(variables, x)
  expected_grads = jax.jit(jax.grad(lambda v, x: jnp.sum(theirs.apply(v, x) * cotangent), (0, 1)))(variables, x)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_transpose_takes_nn_conv_transposes_other_field_forms():
  """An int kernel size (one spatial axis), strides None (flax's default), an int padding, one (low, high) for every
  axis."""
  rng = np.random.default_rng(3)
  for shape, fields in (((2, 5, 3), dict(kernel_size=3, strides=2, padding='SAME')),
                        ((2, 5, 5, 3), dict(kernel_size=(3, 3), strides=None, padding=1)),
                        ((2, 5, 5, 3), dict(kernel_size=(3, 3), strides=2, padding=(1, 2)))):
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    ours, theirs = convolution.ConvTranspose(4, **fields), nn.ConvTranspose(4, **fields)
    variables = theirs.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), rtol=1e-5, atol=1e-5)


def test_conv_transpose_of_an_empty_axis_has_laxs_shape():
  lhs, rhs = jnp.ones((2, 0, 3, 3)), jnp.ones((5, 5, 3, 4))
  expected = jax.lax.conv_transpose(lhs, rhs, (2, 2), 'VALID', dimension_numbers=convolution.features_last(4))
  assert convolution.conv_transpose(lhs, rhs, (2, 2), 'VALID').shape == expected.shape == (2, 4, 9, 4)


def test_conv_transpose_rejects_bad_arguments_by_name():
  lhs, rhs = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
  with pytest.raises(ValueError, match="padding 'CIRCULAR'"):
    convolution.conv_transpose(lhs, rhs, (2, 2), 'CIRCULAR')
  with pytest.raises(ValueError, match='one \\(low, high\\) pair per spatial axis'):
    convolution.conv_transpose(lhs, rhs, (2, 2), ((1, 1),))
  with pytest.raises(ValueError, match='as many window axes and strides'):
    convolution.conv_transpose(lhs, rhs, (2,), 'SAME')
  with pytest.raises(ValueError, match='one dtype'):
    convolution.conv_transpose(lhs.astype(jnp.bfloat16), rhs, (2, 2), 'SAME')
