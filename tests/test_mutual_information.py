"""Tests of the information-plane estimators (infodrop_jax.mutual_information)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax import echo
from infodrop_jax import mutual_information as info


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _f(n, d, seed=0):
  """The validation setup: f = 2x + 0.5 with x ~ N(0, I_d), float64."""
  return 2.0 * np.random.default_rng(seed).standard_normal((n, d)) + 0.5


def _true_gaussian_mi_1d(sigma, step=0.01):
  """I(X;Z) for f = 2x + 0.5, z = f·ε, ε ~ N(1, σ²), by numerical integration in (sign, log|·|) coordinates.

  log|z| = log|f| + log|ε| with signs multiplying, so the density of (sign z, log|z|) is a discrete convolution of
  the two factors' densities; I = H(sign z, log|z|) − [½ log(2πe σ²) − E log|ε|].
  """
  normal = lambda x, mu, s: np.exp(-0.5 * ((x - mu) / s)**2) / (s * math.sqrt(2 * math.pi))
  v = np.arange(-30.0, math.log(0.5 + 14 * 2.0), step)
  t = np.arange(-30.0, math.log(1.0 + 14 * sigma), step)
  p_v = {s: normal(s * np.exp(v), 0.5, 2.0) * np.exp(v) for s in (1, -1)}
  p_t = {s: normal(s * np.exp(t), 1.0, sigma) * np.exp(t) for s in (1, -1)}
  mean_log_eps = sum(np.sum(p * t) * step for p in p_t.values())
  h_joint = 0.0
  for s_z in (1, -1):
    q = sum(np.convolve(p_v[s_f], p_t[s_z * s_f]) * step for s_f in (1, -1))
    q = q[q > 1e-300]
    h_joint -= np.sum(q * np.log(q)) * step
  return h_joint - (0.5 * math.log(2 * math.pi * math.e * sigma**2) - mean_log_eps)


def test_gaussian_estimate_matches_numerical_truth(x64):
  del x64
  truth = _true_gaussian_mi_1d(0.4)
  assert truth == pytest.approx(1.567778, abs=1e-4)  # Also computed by nested scipy quadrature in z-space.
  info_est = info.mixture_information(_f(2000, 1), noise='gaussian', scale=0.4, key=jax.random.key(0),
                                      num_noise_samples=2)
  mix, loo = info_est.i_xz, info_est.i_xz_leave_one_out
  assert mix.value.dtype == jnp.float64
  # stderr ≈ 0.02 here; at N = 2000 and I ≈ 1.6 nats the finite-N bias is far below it.
  assert abs(float(mix.value) - truth) < 3 * float(mix.stderr)
  assert abs(float(loo.value) - truth) < 3 * float(loo.stderr)
  assert 0.005 < float(mix.stderr) < 0.05


def test_estimate_is_capped_at_log_n(x64):
  del x64
  n = 64
  est = info.dropout_mutual_information(_f(n, 8), noise='gaussian', scale=0.1, key=jax.random.key(1))
  # I(X;Z) here is ~30 nats; with N = 64 the estimate can only reach log N.
  assert float(est.value) <= math.log(n) + 1e-9
  assert float(est.value) > math.log(n) - 0.05
  loo = info.dropout_mutual_information(_f(n, 8), noise='gaussian', scale=0.1, key=jax.random.key(1),
                                        estimator='leave_one_out')
  assert float(loo.value) > math.log(n) + 1.0  # The upper bound is not capped.


@pytest.mark.parametrize('noise', info.NOISE_FAMILIES)
def test_conditional_entropy_matches_monte_carlo(noise, x64):
  del x64
  f = _f(40, 3, seed=2)
  scale = np.random.default_rng(3).uniform(0.1, 0.8, size=f.shape)  # Per example, as information dropout's α(x).
  z = info.sample_representation(f, noise=noise, scale=scale, key=jax.random.key(2), num_samples=4000)
  neg_log_p = -info.log_conditional_density(z, f, noise=noise, scale=scale)  # [4000, 40]
  mc = np.asarray(jnp.mean(neg_log_p, axis=0))
  se = np.asarray(jnp.std(neg_log_p, axis=0)) / math.sqrt(z.shape[0])
  closed = np.asarray(info.conditional_entropy(f, noise=noise, scale=scale))
  assert np.all(np.abs(mc - closed) < 5 * se + 1e-9)
  # The mean over inputs is tighter still.
  assert abs(mc.mean() - closed.mean()) < 5 * math.sqrt(np.mean(se**2) / 40)


@pytest.mark.parametrize('noise', info.NOISE_FAMILIES)
def test_chunked_equals_unchunked(noise, x64):
  del x64
  f = _f(37, 3, seed=4)
  f[::5, 1] = 0.0  # Zero activations exercise the support patterns.
  labels = np.arange(37) % 3
  kwargs = dict(noise=noise, scale=0.3, key=jax.random.key(3), num_noise_samples=2)
  small = info.mixture_information(f, labels, chunk_size=7, component_chunk_size=5, **kwargs)
  whole = info.mixture_information(f, labels, chunk_size=74, component_chunk_size=37, **kwargs)
  for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(whole)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_nonnegative_and_decreasing_in_noise_scale(x64):
  del x64
  f = _f(200, 2, seed=5)
  values = [float(info.dropout_mutual_information(f, noise='lognormal', scale=s, key=jax.random.key(4)).value)
            for s in (0.1, 0.3, 1.0, 3.0)]
  assert all(a > b for a, b in zip(values, values[1:])), values
  assert values[-1] >= 0.0


def test_per_example_scale_equals_scalar_when_constant(x64):
  del x64
  f = _f(50, 4, seed=6)
  kwargs = dict(noise='gaussian', key=jax.random.key(5))
  scalar = info.dropout_mutual_information(f, scale=0.4, **kwargs)
  per_unit = info.dropout_mutual_information(f, scale=np.full(4, 0.4), **kwargs)
  per_example = info.dropout_mutual_information(f, scale=np.full((50, 4), 0.4), **kwargs)
  np.testing.assert_allclose(per_unit, scalar, rtol=1e-12)
  np.testing.assert_allclose(per_example, scalar, rtol=1e-12)
  # A varying α(x) works and more noise on half the inputs lowers the estimate.
  varying = np.full((50, 4), 0.4)
  varying[:25] = 1.5
  lower = info.dropout_mutual_information(f, scale=varying, **kwargs)
  assert 0.0 < float(lower.value) < float(scalar.value)


def test_dtype_follows_input_and_core_is_compiled_once(x64):
  del x64
  f64 = _f(64, 2, seed=7)
  key = jax.random.key(6)
  est64 = info.dropout_mutual_information(f64, noise='gaussian', scale=0.4, key=key)
  est32 = info.dropout_mutual_information(f64.astype(np.float32), noise='gaussian', scale=0.4, key=key)
  assert est64.value.dtype == jnp.float64 and est64.stderr.dtype == jnp.float64
  assert est32.value.dtype == jnp.float32
  assert abs(float(est32.value) - float(est64.value)) < 3 * float(est64.stderr)
  before = info._mixture_log_terms._cache_size()
  info.dropout_mutual_information(f64 + 0.1, noise='gaussian', scale=0.5, key=jax.random.key(7))
  assert info._mixture_log_terms._cache_size() == before  # New values, same shapes: no retrace.


def test_float32_by_default():
  est = info.dropout_mutual_information(_f(32, 2).astype(np.float32), noise='lognormal', scale=0.5,
                                        key=jax.random.key(0))
  assert est.value.dtype == jnp.float32 and np.isfinite(float(est.value))


def test_zero_activations(x64):
  del x64
  n = 200
  # Half the inputs have f = 0 (dead ReLU), the others one constant: Z tells only which half, I = log 2 exactly.
  f = np.where(np.arange(n)[:, None] < n // 2, 0.0, 1.5)
  for noise in info.NOISE_FAMILIES:
    est = info.dropout_mutual_information(f, noise=noise, scale=0.5, key=jax.random.key(8))
    np.testing.assert_allclose(est.value, math.log(2.0), rtol=1e-10)
  # A unit that is 0 for every input carries nothing: appending one leaves I(X;Z) unchanged (up to noise draws).
  f = _f(200, 2, seed=9)
  kwargs = dict(noise='gaussian', scale=0.4, key=jax.random.key(9))
  base = info.dropout_mutual_information(f, **kwargs)
  dead = info.dropout_mutual_information(np.concatenate([f, np.zeros((200, 1))], axis=1), **kwargs)
  assert abs(float(dead.value) - float(base.value)) < 2 * float(base.stderr)
  # Zeros are excluded from the closed-form h(Z|X) (they are point masses, h = −∞).
  h = info.conditional_entropy(np.array([[0.0, 1.0]]), noise='gaussian', scale=0.4)
  np.testing.assert_allclose(h, [0.5 * math.log(2 * math.pi * math.e * 0.16)])


def test_bad_inputs_raise_clear_errors():
  f = _f(10, 3)
  key = jax.random.key(0)
  call = lambda f=f, **kw: info.dropout_mutual_information(f, key=key, **{'noise': 'gaussian', 'scale': 0.4, **kw})
  with pytest.raises(ValueError, match=r'scale must be a scalar, a per-unit \[D\] = \[3\]'):
    call(scale=np.ones(4))
  with pytest.raises(ValueError, match=r'per-example \[N, D\] = \[10, 3\].*got shape \(3, 10\)'):
    call(scale=np.ones((3, 10)))
  with pytest.raises(ValueError, match='scale must be > 0'):
    call(scale=-0.1)
  with pytest.raises(ValueError, match='scale must be > 0'):
    call(scale=np.array([0.2, 0.0, 0.3]))
  with pytest.raises(ValueError, match="noise='bernoulli' is not a known noise family"):
    call(noise='bernoulli')
  with pytest.raises(ValueError, match=r'f must be a 2-D \[N, D\] array'):
    call(f=np.ones(5))
  with pytest.raises(ValueError, match='f contains NaN'):
    call(f=np.where(np.eye(10, 3) > 0, np.nan, 1.0))
  with pytest.raises(ValueError, match='scale contains NaN'):
    call(scale=np.nan)
  with pytest.raises(ValueError, match='estimator='):
    call(estimator='knn')
  with pytest.raises(ValueError, match='num_noise_samples must be a positive integer'):
    call(num_noise_samples=0)
  with pytest.raises(ValueError, match=r'labels must be a 1-D \[N\] = \[10\]'):
    info.label_mutual_information(f, np.zeros(9, int), noise='gaussian', scale=0.4, key=key)


def test_gaussian_bound_is_above_the_estimate(x64):
  del x64
  for noise in info.NOISE_FAMILIES:
    f = _f(200, 2, seed=10)
    if noise == 'lognormal':
      f = np.abs(f)  # Information dropout's activations are non-negative.
    est = info.dropout_mutual_information(f, noise=noise, scale=0.4, key=jax.random.key(10))
    bound = info.gaussian_upper_bound(f, noise=noise, scale=0.4, key=jax.random.key(11), num_noise_samples=4)
    assert float(bound.value) > float(est.value)
  # Dead units are dropped; partially zero units have no differential-entropy bound.
  f = _f(200, 2, seed=11)
  with_dead = np.concatenate([f, np.zeros((200, 1))], axis=1)
  np.testing.assert_allclose(info.gaussian_upper_bound(with_dead, noise='gaussian', scale=0.4, key=key0()),
                             info.gaussian_upper_bound(f, noise='gaussian', scale=0.4, key=key0()), rtol=1e-6)
  f[:10, 0] = 0.0
  with pytest.raises(ValueError, match='zero for some inputs and not others'):
    info.gaussian_upper_bound(f, noise='gaussian', scale=0.4, key=key0())


def key0():
  return jax.random.key(0)


def test_label_information(x64):
  del x64
  rng = np.random.default_rng(12)
  n = 200
  labels = rng.integers(0, 3, n)
  h_y = -sum(p * math.log(p) for p in np.bincount(labels) / n)
  # Well separated: class means 1, 10, 100 with 10 % noise; Z identifies the class.
  f = np.array([1.0, 10.0, 100.0])[labels][:, None] * (1.0 + 0.05 * rng.standard_normal((n, 2)))
  sep = info.label_mutual_information(f, labels, noise='lognormal', scale=0.1, key=jax.random.key(12))
  assert float(sep.value) <= h_y + 1e-12
  assert float(sep.value) == pytest.approx(h_y, abs=1e-6)
  loo = info.label_mutual_information(f, labels, noise='lognormal', scale=0.1, key=jax.random.key(12),
                                     estimator='leave_one_out')
  assert float(loo.value) == pytest.approx(h_y, abs=1e-6)
  # Labels independent of f: I(Z;Y) = 0. The mixture form still credits Z with the labels of the sample points it
  # nearly identifies (I(X;Z) ≈ 3 nats of log 200 here); leaving the own component out removes that bias.
  kwargs = dict(noise='gaussian', scale=0.4, key=jax.random.key(13))
  memorised = info.label_mutual_information(_f(n, 2, seed=13), labels, **kwargs)
  held_out = info.label_mutual_information(_f(n, 2, seed=13), labels, estimator='leave_one_out', **kwargs)
  assert h_y >= float(memorised.value) > float(held_out.value) + 0.05
  # Held out, the kernel classifier's cross-entropy bounds H(Y|Z) from above: a lower bound, here ≤ 0 within noise.
  assert float(held_out.value) < 2 * float(held_out.stderr)
  # Cross-entropy bound: H(Y) − CE.
  assert info.label_information_from_ce(0.5, labels) == pytest.approx(h_y - 0.5)
  assert info.label_information_from_ce(0.25, class_priors=[0.25] * 4) == pytest.approx(math.log(4) - 0.25)
  with pytest.raises(ValueError, match='exactly one of labels'):
    info.label_information_from_ce(0.5)
  with pytest.raises(ValueError, match='class_priors must be'):
    info.label_information_from_ce(0.5, class_priors=[0.5, 0.6])


def test_binning_on_a_known_discrete_case():
  # Four equally frequent values, resolved by 30 bins: I(X;T) = H(T) = log 4; the label (value // 2) is a function
  # of T, so I(T;Y) = H(Y) = log 2.
  t = np.repeat(np.array([0.0, 1.0, 2.0, 3.0]), 25)[:, None]
  labels = (t[:, 0] // 2).astype(int)
  out = info.binning_mutual_information(t, labels, num_bins=30)
  assert out.i_xt == pytest.approx(math.log(4))
  assert out.i_ty == pytest.approx(math.log(2))
  # Two bins merge the values pairwise: T becomes the label itself.
  out = info.binning_mutual_information(t, labels, num_bins=2)
  assert out.i_xt == pytest.approx(math.log(2)) and out.i_ty == pytest.approx(math.log(2))
  assert info.binning_mutual_information(t, num_bins=1).i_xt == 0.0
  # Two units: symbols are rows. Unit 2 repeats unit 1, so nothing changes.
  assert info.binning_mutual_information(np.concatenate([t, t], 1)).i_xt == pytest.approx(math.log(4))


def test_echo_wrapper_equals_mean_of_minus_sum_log_s():
  log_s = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(14), (6, 3, 4)))
  clip = echo.default_clip_factor(100)
  value, stderr = info.echo_mutual_information_nats(log_s, d_max=100)
  expected = np.mean(-np.sum(np.log(clip) + np.asarray(log_s).reshape(6, -1), axis=1))
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  assert float(stderr) == 0.0
  default, _ = info.echo_mutual_information_nats(log_s)  # Echo's own defaults, as the layer uses them.
  np.testing.assert_allclose(default, np.mean(echo.echo_mutual_information(log_s)), rtol=1e-6)
  value, _ = info.echo_mutual_information_nats(log_s, clip_factor=echo.PAPER_CLIP_FACTOR)
  np.testing.assert_allclose(value, np.mean(-np.sum(math.log(echo.PAPER_CLIP_FACTOR) + np.asarray(log_s).reshape(6, -1),
                                                    axis=1)), rtol=1e-6)


def test_large_layer_memory_is_bounded(x64):
  del x64
  # N = 2000, D = 128 in float64 would need 4 GB for the full [N, N, D] block; the default chunks keep it small.
  f = np.abs(_f(2000, 128, seed=15)) + 0.1
  est = info.dropout_mutual_information(f, noise='lognormal', scale=0.5, key=jax.random.key(15))
  assert float(est.value) == pytest.approx(math.log(2000), abs=0.01)  # Far above log N: saturated.
