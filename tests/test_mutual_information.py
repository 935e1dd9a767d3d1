"""Tests of the information-plane estimators (infodrop_jax.mutual_information)."""

import math
import statistics

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


# ---------------------------------------------------------------------------------------------------------------
# Known answers by quadrature. The mixture estimators average, over noise draws, quantities whose expectation given
# the sample f is an integral over z that numpy computes on a grid: for X uniform over the N rows of f,
#   E[mean_i log p(z_i|x_i) − log (1/N) Σ_j p(z_i|x_j)] = (1/N) Σ_i KL(p(·|x_i) ‖ p̄) = I(X;Z) = h(Z) − h(Z|X),
# and likewise for I(Z;Y) = H(Y) + E log p(y|z). So the quadrature below is the exact expected value of the finite-N
# estimator (the log N ceiling and the lower-bound-in-expectation property concern the continuous X behind the
# sample, not this target), and the only error left is the noise average, which shrinks with num_noise_samples.


def _xlogx(p):
  return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def quadrature_information(f, scale, noise, labels=None, step=0.01):
  """(I(X;Z), I(Z;Y)) in nats for X uniform over the N rows of f [N, D ≤ 2] and multiplicative noise, by quadrature.

  Independent of the package: each coordinate of z is written as its state, either the atom z = 0 (where f = 0:
  multiplicative noise keeps it 0) or (sign z, v = log|z|) on a grid of step `step` for each sign. In these
  coordinates log-normal noise (z = f·e^{αε}) is N(log|f|, α²) on v with the sign of f, and Gaussian noise
  (z = f·ε, ε ~ N(1, σ²)) has density g(s·sign f, v − log|f|) with g(s, t) = N(s·e^t; 1, σ²)·e^t (ε may change
  the sign). The map z ↦ (sign, log|z|) is the same for every component, so its Jacobian cancels in I. Components
  are products over coordinates, so the mixture on the 2-D grid is one matrix product, and every entropy is a sum
  −Σ w q log q with weight 1 on the atom and `step` per grid point and coordinate (the mixed measure of the
  estimator's zero activations). h(Z|X) is summed on the same grid, per component.
  """
  f = np.asarray(f, np.float64)
  n, d = f.shape
  assert d in (1, 2)
  scale = np.broadcast_to(np.asarray(scale, np.float64), (n, d))
  labels = np.zeros(n, int) if labels is None else np.asarray(labels)
  zero = f == 0
  log_abs_f = np.log(np.where(zero, 1.0, np.abs(f)))
  states, weights, h_cond = [], [], np.zeros(n)
  for k in range(d):
    live = ~zero[:, k]
    if noise == 'lognormal':
      t_lo, t_hi = -10 * scale[:, k], 10 * scale[:, k]
    else:  # log|1 + σξ| has an exponential left tail (density ≈ N(0; 1, σ²)·e^t as t → −∞).
      t_lo, t_hi = np.full(n, -16.0), np.log1p(10 * scale[:, k])
    v = np.arange((log_abs_f[:, k] + t_lo)[live].min(), (log_abs_f[:, k] + t_hi)[live].max(), step)
    t = v[:, None] - log_abs_f[None, :, k]  # [G, N]
    s = scale[None, :, k]
    blocks = [zero[None, :, k].astype(np.float64)]  # The atom's row.
    for sign in (1.0, -1.0):
      if noise == 'lognormal':
        density = np.where(np.sign(f[None, :, k]) == sign, np.exp(-0.5 * (t / s)**2) / (s * math.sqrt(2 * math.pi)),
                           0.0)
      else:
        eps = sign * np.sign(f[None, :, k]) * np.exp(t)
        density = np.exp(-0.5 * ((eps - 1.0) / s)**2 - 0.5 * math.log(2 * math.pi) + t) / s
      blocks.append(np.where(live[None, :], density, 0.0))
    a = np.concatenate(blocks)  # [1 + 2G, N]: component j's density over the states of coordinate k.
    w = np.concatenate([[1.0], np.full(2 * v.size, step)])
    np.testing.assert_allclose(w @ a, 1.0, atol=1e-6)  # Every component is a normalised density on the grid.
    states.append(a)
    weights.append(w)
    h_cond -= w @ _xlogx(a)

  def entropy(members):
    if d == 1:
      return -weights[0] @ _xlogx(states[0][:, members].sum(1) / n)
    return -weights[0] @ _xlogx((states[0][:, members] / n) @ states[1][:, members].T) @ weights[1]

  h_z = entropy(np.ones(n, bool))
  h_y = -np.sum(_xlogx(np.bincount(labels) / n))
  h_zy = sum(entropy(labels == c) for c in np.unique(labels))
  return h_z - h_cond.mean(), h_z + h_y - h_zy


def _logsumexp(a, axis):
  top = np.max(a, axis=axis, keepdims=True)
  top = np.where(np.isfinite(top), top, 0.0)
  with np.errstate(divide='ignore'):
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def _finite_n_expectations_1d(f, scale, labels, noise, step=1e-3):
  """The exact expected values, given the sample f [N, 1], of all four estimates of `mixture_information`.

  Gaussian noise in z-space (components N(f_j, σ_j² f_j²)), log-normal in w = log z (N(log f_j, α_j²), f > 0). With
  φ_i the density of sample i's own component, S = Σ_j φ_j and S_y = Σ_{j: y_j = y} φ_j, each estimate is
  (1/N) Σ_i ∫ φ_i(w) g_i(w) dw for g_i = log(N φ_i / S) (mixture I(X;Z)), log((N − 1) φ_i / (S − φ_i))
  (leave-one-out), H(Y) + log(S_{y_i} / S) (mixture I(Z;Y)) and H(Y) + log((S_{y_i} − φ_i) / (S − φ_i))
  (leave-one-out I(Z;Y)).
  """
  f = np.asarray(f, np.float64)[:, 0]
  n = f.size
  scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (n,))
  if noise == 'gaussian':
    mean, width = f, scale * np.abs(f)
  else:
    assert (f > 0).all()
    mean, width = np.log(f), scale
  w = np.arange((mean - 12 * width).min(), (mean + 12 * width).max(), step)
  log_phi = -0.5 * ((w[:, None] - mean) / width)**2 - np.log(width * math.sqrt(2 * math.pi))  # [G, N]
  phi = np.exp(log_phi)
  np.testing.assert_allclose(phi.sum(0) * step, 1.0, atol=1e-9)
  others = ~np.eye(n, dtype=bool)
  same = labels[:, None] == labels[None, :]
  lse = lambda mask: np.stack([_logsumexp(np.where(mask[i], log_phi, -np.inf), 1) for i in range(n)], 1)
  lse_all, lse_loo, lse_lab, lse_lab_loo = lse(np.ones((n, n), bool)), lse(others), lse(same), lse(same & others)
  h_y = -np.sum(_xlogx(np.bincount(labels) / n))
  average = lambda g: float(np.sum(phi * g) * step / n)
  return {'i_xz': average(log_phi - lse_all + math.log(n)),
          'i_xz_leave_one_out': average(log_phi - lse_loo + math.log(n - 1)),
          'i_zy': h_y + average(lse_lab - lse_all),
          'i_zy_leave_one_out': h_y + average(lse_lab_loo - lse_loo)}


def _normal_quantiles(n, mean, std):
  return np.array([statistics.NormalDist(mean, std).inv_cdf((i + 0.5) / n) for i in range(n)])[:, None]


def test_quadrature_reproduces_continuous_known_answers():
  # The helper itself, on N quantiles of a continuous X (its mixture tends to the continuous p(z) as N grows):
  # Gaussian noise against the convolution integral above (also nested scipy quadrature), log-normal noise on
  # log-normal f against the closed form: log z = log f + αε is N(0, 1 + α²), so I = ½ log(1 + 1/α²).
  i_gauss, _ = quadrature_information(_normal_quantiles(1000, 0.5, 2.0), 0.4, 'gaussian', step=0.02)
  assert i_gauss == pytest.approx(1.567778, abs=2e-3)
  i_logn, _ = quadrature_information(np.exp(_normal_quantiles(1000, 0.0, 1.0)), 0.5, 'lognormal')
  assert i_logn == pytest.approx(0.5 * math.log(5.0), abs=1e-3)
  # Labels that are a function of the atom (f = 0 or not) are fully read from Z: I(Z;Y) = H(Y).
  f = np.where(np.arange(40)[:, None] < 10, 0.0, np.linspace(1.0, 2.0, 40)[:, None])
  for noise in info.NOISE_FAMILIES:
    i_xz, i_zy = quadrature_information(f, 0.3, noise, labels=(f[:, 0] > 0).astype(int))
    assert i_zy == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-9)
    assert i_xz > i_zy


def _assert_matches_truth(out, truth_xz, truth_zy):
  """I(X;Z) and I(Z;Y) within 3 standard errors and 2 % of the quadrature truth (a 5 % bias fails either way)."""
  for est, truth in ((out.i_xz, truth_xz), (out.i_zy, truth_zy)):
    error = float(est.value) - truth
    assert abs(error) < 3 * float(est.stderr), (float(est.value), truth)
    assert abs(error) < 0.02 * truth, (float(est.value), truth)


def _lognormal_1d_case(case, n=1000):
  x = np.random.default_rng(20).standard_normal((n, 1))
  if case == 'positive':
    return np.exp(x), np.digitize(x[:, 0], [-0.5, 0.5])  # Three classes by the value of f.
  f = 2.0 * x + 0.5
  f[x < -1.0] = 0.0  # 16 % exact zeros (dead ReLU), the others of both signs.
  return f, (x[:, 0] > 0).astype(int)


@pytest.mark.parametrize('case, draws', [('positive', 128), ('signed_with_zeros', 64)])
def test_lognormal_estimate_matches_quadrature_1d(case, draws, x64):
  """Log-normal noise (z = f·e^{0.5ε}), D = 1: I(X;Z) and I(Z;Y) against the quadrature of the same mixture.

  The target is the estimator's exact expectation given the sample (see the section comment), so there is no
  finite-N bias to allow for; the noise average over `draws` × 1000 draws has a standard deviation of 0.2-0.4 % of
  the value (measured over keys). Two tolerances: 3 reported standard errors (which also cover the sampling of X),
  and 2 % relative, so that a 5 % bias (the audit's 1.5× wide log-normal components gave −12 %) fails. The signed
  case exercises the support patterns: sign(z) = sign(f) and the atom at f = 0 (I = H(zero pattern) + ...).
  """
  del x64
  f, labels = _lognormal_1d_case(case)
  truth_xz, truth_zy = quadrature_information(f, 0.5, 'lognormal', labels, step=0.005)
  out = info.mixture_information(f, labels, noise='lognormal', scale=0.5, key=jax.random.key(20),
                                 num_noise_samples=draws)
  assert truth_xz < math.log(len(f)) - 4  # Far below the ceiling.
  _assert_matches_truth(out, truth_xz, truth_zy)
  # The leave-one-out form is an upper bound in expectation: E[loo | f] ≥ I (convexity of KL in the mixture).
  assert float(out.i_xz_leave_one_out.value) > truth_xz * 0.98
  if case == 'positive':
    # The sample's truth against the continuous X's closed form ½ log(1 + 1/α²) (log z ~ N(0, 1 + α²)): they differ
    # by the sampling error of X, which the estimator's stderr measures.
    closed = 0.5 * math.log(1.0 + 1.0 / 0.25)
    assert abs(truth_xz - closed) < 3 * float(out.i_xz.stderr)
    assert abs(float(out.i_xz.value) - closed) < 3 * float(out.i_xz.stderr)


def _lognormal_2d_case(n=1000):
  """Correlated log-normal f [N, 2], an α(x) per example (as information dropout's) and 3 classes."""
  x = np.random.default_rng(21).standard_normal((n, 2)) @ np.array([[1.0, 0.0], [0.6, 0.8]]).T
  alpha = 0.3 + 0.5 / (1.0 + np.exp(-x[:, ::-1]))  # α_d(x) ∈ (0.3, 0.8), driven by the other coordinate.
  return np.exp(x), alpha, (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)


def test_lognormal_estimate_matches_quadrature_2d(x64):
  """As the 1-D test, D = 2 with α(x) per example: p(z) is a mixture of products of log-normals with their own α_j.

  Quadrature on a 2-D grid of (log z_1, log z_2). Tolerances: 3 standard errors and 2 % relative (noise sd ≈ 0.3 %
  for I(X;Z), 0.4 % for I(Z;Y) over 64 × 1000 draws). The Gaussian bound, a max-entropy bound on h(Z), must lie
  above the true value (here far above: z = e^{x + αε} is heavy-tailed).
  """
  del x64
  f, alpha, labels = _lognormal_2d_case()
  truth_xz, truth_zy = quadrature_information(f, alpha, 'lognormal', labels, step=0.02)
  out = info.mixture_information(f, labels, noise='lognormal', scale=alpha, key=jax.random.key(21),
                                 num_noise_samples=64)
  _assert_matches_truth(out, truth_xz, truth_zy)
  assert float(out.i_xz_leave_one_out.value) > truth_xz * 0.98
  bound = info.gaussian_upper_bound(f, noise='lognormal', scale=alpha, key=jax.random.key(22), num_noise_samples=8)
  assert float(bound.value) > truth_xz + 0.5


def test_gaussian_estimate_matches_quadrature_2d(x64):
  """Gaussian noise, D = 2, f of both signs with exact zeros in one unit and σ per unit: quadrature in (sign, log|z|)
  coordinates, where ε = 1 + σξ may flip the sign. Same tolerances as the log-normal tests."""
  del x64
  x = np.random.default_rng(23).standard_normal((1000, 2))
  f = 2.0 * x + 0.5
  f[x[:, 1] < -1.0, 1] = 0.0
  labels = (x[:, 0] + x[:, 1] > 0).astype(int)
  scale = np.array([0.3, 0.5])
  truth_xz, truth_zy = quadrature_information(f, scale, 'gaussian', labels, step=0.02)
  out = info.mixture_information(f, labels, noise='gaussian', scale=scale, key=jax.random.key(23),
                                 num_noise_samples=64)
  _assert_matches_truth(out, truth_xz, truth_zy)


@pytest.mark.parametrize('noise', info.NOISE_FAMILIES)
def test_small_sample_estimates_equal_their_exact_expectations(noise, x64):
  """N = 6 inputs, a scale per example: all four estimates against their exact expected values given f (1-D
  quadrature of the integrals in `_finite_n_expectations_1d`). At this N the log N and log(N − 1) terms, the
  leave-one-out masks and the per-component scales matter at the 5-20 % level (log(6/5) = 0.18 nats), and 10^5 draws
  per input bring the noise error under 0.5 %; tolerance 2 % of the value (the stderr, which counts 6 inputs, is no
  constraint here). Gaussian noise with f of both signs; log-normal noise on positive f.
  """
  del x64
  labels = np.array([0, 0, 1, 0, 1, 1])
  f = {'gaussian': [-2.0, -0.7, 0.6, 1.0, 1.7, 3.0], 'lognormal': [0.6, 0.9, 1.3, 2.0, 3.1, 4.5]}[noise]
  f = np.array(f)[:, None]
  scale = np.array([0.25, 0.3, 0.35, 0.4, 0.3, 0.45])[:, None]
  expected = _finite_n_expectations_1d(f, scale, labels, noise)
  out = info.mixture_information(f, labels, noise=noise, scale=scale, key=jax.random.key(24),
                                 num_noise_samples=100_000)
  got = {'i_xz': out.i_xz, 'i_xz_leave_one_out': out.i_xz_leave_one_out, 'i_zy': out.i_zy,
         'i_zy_leave_one_out': out.i_zy_leave_one_out}
  for name, value in expected.items():
    assert float(got[name].value) == pytest.approx(value, rel=0.02), name
  # The bracket: the mixture form is ≤ log N for every draw, the leave-one-out form above it.
  assert float(out.i_xz.value) <= math.log(6) + 1e-12
  assert expected['i_xz_leave_one_out'] > expected['i_xz'] + 0.3


@pytest.mark.parametrize('noise', info.NOISE_FAMILIES)
def test_identical_rows_carry_no_information(noise, x64):
  """Every input has the same f: Z says nothing about X or Y, and every estimate is known exactly for every draw.

  p(z|x_j) is the same for all j, so the mixture terms are log p − (log N + log p) + log N = 0 and the leave-one-out
  ones log p − (log(N − 1) + log p) + log(N − 1) = 0; I(Z;Y) by the mixture is H(Y) + log(n_y / N) averaged = 0,
  and left out it is H(Y) + Σ_y p_y log((n_y − 1)/(N − 1)) < 0: the held-out classifier predicts the class
  frequencies of the other N − 1 inputs.
  """
  del x64
  labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
  n = labels.size
  f = np.tile([[0.7, -1.3]] if noise == 'gaussian' else [[0.7, 1.3]], (n, 1))
  counts = np.bincount(labels)
  h_y = -np.sum(counts / n * np.log(counts / n))
  kwargs = dict(noise=noise, scale=0.4, key=jax.random.key(25), num_noise_samples=3)
  # The public wrappers, each estimator.
  for estimator in info.ESTIMATORS:
    np.testing.assert_allclose(info.dropout_mutual_information(f, estimator=estimator, **kwargs).value, 0.0,
                               atol=1e-12)
  np.testing.assert_allclose(info.label_mutual_information(f, labels, **kwargs).value, 0.0, atol=1e-12)
  np.testing.assert_allclose(info.label_mutual_information(f, labels, estimator='leave_one_out', **kwargs).value,
                             h_y + np.sum(counts / n * np.log((counts - 1) / (n - 1))), atol=1e-12)


def _gaussian_bound_closed_form(f, scale, noise):
  """½ log det(2πe Σ_Z) − mean_i h(Z|x_i) with Σ_Z the exact covariance of Z for X uniform over the rows of f.

  Gaussian noise: E[z|x] = f, Cov(z|x) = σ² diag(f²), h(Z|x) = Σ_d ½ log(2πe σ_d² f_d²). Log-normal noise:
  E[z|x] = f e^{α²/2}, Var(z_d|x) = f_d² (e^{2α²} − e^{α²}), h(Z|x) = Σ_d log|f_d| + ½ log(2πe α_d²). The law of
  total covariance gives Σ_Z = Cov_x(E[z|x]) + E_x Cov(z|x).
  """
  if noise == 'gaussian':
    mean_z, var_z = f, scale**2 * f**2
    h_cond = np.sum(0.5 * np.log(2 * math.pi * math.e * scale**2 * f**2), axis=1)
  else:
    mean_z, var_z = f * np.exp(scale**2 / 2), f**2 * (np.exp(2 * scale**2) - np.exp(scale**2))
    h_cond = np.sum(np.log(np.abs(f)) + 0.5 * np.log(2 * math.pi * math.e * scale**2), axis=1)
  cov_z = np.cov(mean_z, rowvar=False, ddof=0) + np.diag(var_z.mean(axis=0))
  return 0.5 * np.linalg.slogdet(2 * math.pi * math.e * cov_z)[1] - h_cond.mean()


@pytest.mark.parametrize('noise', info.NOISE_FAMILIES)
def test_gaussian_upper_bound_matches_its_closed_form(noise, x64):
  """The bound's value with the covariance of Z computed exactly (law of total covariance) instead of estimated.

  D = 3, correlated f, σ or α per unit. Ledoit–Wolf on 500 × 64 noisy draws moves log det by about 0.01 (its
  shrinkage and the noise part of the sample covariance; the f part is exact since every input appears 64 times),
  so the tolerance is 0.05 nats: a wrong constant in h(Z|X) (log σ² for log σ, a missing log|f|, 2π for 2πe) or in
  the Gaussian entropy is 0.4 nats or more here.
  """
  del x64
  x = np.random.default_rng(26).standard_normal((500, 3)) @ np.array([[1.0, 0, 0], [0.5, 0.8, 0], [0.2, -0.3, 0.9]]).T
  if noise == 'gaussian':
    f, scale = 2.0 * x + 0.5, np.array([0.3, 0.5, 0.8])
  else:
    f, scale = np.abs(x) + 0.5, np.array([0.3, 0.5, 0.4])
  expected = _gaussian_bound_closed_form(f, np.broadcast_to(scale, f.shape), noise)
  bound = info.gaussian_upper_bound(f, noise=noise, scale=scale, key=jax.random.key(26), num_noise_samples=64)
  assert float(bound.value) == pytest.approx(expected, abs=0.05)


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


def _table_information(counts):
  """(H(T), I(T;Y)) of the empirical joint distribution given by a [values, labels] count table."""
  p = counts / counts.sum()
  p_t, p_y = p.sum(1), p.sum(0)
  h_t = -np.sum(_xlogx(p_t))
  outer = p_t[:, None] * p_y[None, :]
  i_ty = np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / outer), 0.0))
  return h_t, i_ty


def test_binning_on_a_known_joint_distribution():
  """Binned I(X;T) = H(T) and I(T;Y) against sums over an explicit (value, label) count table.

  Five values, unequally frequent, with labels that depend on the value only partly, so 0 < I(T;Y) < H(Y) and the
  classes have different sizes (a per-class average of H(T|Y = y) that forgot the weights p(y) would differ).
  30 bins over [−2, 7] (width 0.3) put every value in its own bin, none on an edge.
  """
  values = np.array([-2.0, 0.6, 1.1, 3.05, 7.0])
  counts = np.array([[5, 0, 1], [2, 6, 0], [0, 3, 9], [4, 4, 4], [1, 0, 0]])  # [value, label]
  t = np.repeat(values, counts.sum(1))
  labels = np.concatenate([np.repeat(np.arange(3), row) for row in counts])
  order = np.random.default_rng(27).permutation(t.size)  # The row order must not matter.
  t, labels = t[order], labels[order]
  h_t, i_ty = _table_information(counts)
  out = info.binning_mutual_information(t, labels, num_bins=30)
  assert out.i_xt == pytest.approx(h_t, abs=1e-12)
  assert out.i_ty == pytest.approx(i_ty, abs=1e-12)
  assert 0.1 < i_ty < -np.sum(_xlogx(counts.sum(0) / counts.sum())) - 0.1
  # A second unit that splits the value 3.05 into two symbols (its first 6 rows vs the rest): rows are symbols.
  second = np.zeros(t.size)
  second[np.flatnonzero(t == 3.05)[:6]] = 2.3
  refined = np.array([[5, 0, 1], [2, 6, 0], [0, 3, 9], [0, 0, 0], [0, 0, 0], [1, 0, 0]])
  refined[3:5] = [np.bincount(labels[np.flatnonzero(t == 3.05)[:6]], minlength=3),
                  np.bincount(labels[np.flatnonzero(t == 3.05)[6:]], minlength=3)]
  h_t, i_ty = _table_information(refined)
  out = info.binning_mutual_information(np.stack([t, second], 1), labels, num_bins=30)
  assert out.i_xt == pytest.approx(h_t, abs=1e-12) and out.i_ty == pytest.approx(i_ty, abs=1e-12)
  # A bin range that ends inside the data: values past the ends fall in the end bins. Over (0, 1) with 2 bins,
  # −2 goes to bin 0 and every other value to bin 1.
  merged = np.stack([counts[0], counts[1:].sum(0)])
  h_t, i_ty = _table_information(merged)
  out = info.binning_mutual_information(t, labels, num_bins=2, bin_range=(0.0, 1.0))
  assert out.i_xt == pytest.approx(h_t, abs=1e-12) and out.i_ty == pytest.approx(i_ty, abs=1e-12)
  # Labels independent of T by construction (every value has the same label mix): I(T;Y) = 0 exactly.
  t = np.repeat(values, 6)
  labels = np.tile([0, 0, 0, 1, 1, 2], values.size)
  out = info.binning_mutual_information(t, labels, num_bins=30)
  assert out.i_xt == pytest.approx(math.log(5), abs=1e-12) and out.i_ty == pytest.approx(0.0, abs=1e-12)


def test_echo_wrapper_equals_mean_of_minus_sum_log_s():
  log_s = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(14), (6, 3, 4)))
  clip = echo.default_clip_factor(100)
  value, stderr = info.echo_mutual_information_nats(log_s, d_max=100)
  expected = np.mean(-np.sum(np.log(clip) + np.asarray(log_s).reshape(6, -1), axis=1))
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  assert float(stderr) == 0.0
  default, _ = info.echo_mutual_information_nats(log_s, d_max=echo.DEFAULT_D_MAX)  # the layer's default
  np.testing.assert_allclose(default, np.mean(echo.EchoNoise().mutual_information(log_s)), rtol=1e-6)
  with pytest.raises(ValueError, match='pass the d_max the echo noise was sampled with'):
    info.echo_mutual_information_nats(log_s)
  value, _ = info.echo_mutual_information_nats(log_s, clip_factor=echo.PAPER_CLIP_FACTOR)
  np.testing.assert_allclose(value, np.mean(-np.sum(math.log(echo.PAPER_CLIP_FACTOR) + np.asarray(log_s).reshape(6, -1),
                                                    axis=1)), rtol=1e-6)


def test_large_layer_memory_is_bounded(x64):
  del x64
  # N = 2000, D = 128 in float64 would need 4 GB for the full [N, N, D] block; the default chunks keep it small.
  f = np.abs(_f(2000, 128, seed=15)) + 0.1
  est = info.dropout_mutual_information(f, noise='lognormal', scale=0.5, key=jax.random.key(15))
  assert float(est.value) == pytest.approx(math.log(2000), abs=0.01)  # Far above log N: saturated.
