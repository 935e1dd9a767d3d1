"""VAEs (infodrop_jax/vae.py): rates, likelihoods, IW bound, Echo's batch rules, the task in the trainer, analysis."""
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers  # noqa: F401  (puts the repo root on sys.path for `configs`)
from configs import vae_fmnist, vae_mnist
from infodrop_jax import echo
from infodrop_jax import kl
from infodrop_jax import tasks
from infodrop_jax import train
from infodrop_jax import vae
from infodrop_jax.analysis import vae as vae_analysis
from infodrop_jax.cpu import convolution

KEY = jax.random.key(0)
X = (jax.random.uniform(jax.random.key(1), (16, 28, 28, 1)) > 0.6).astype(jnp.float32)


def _init(model, x=X):
  init = lambda x: model.init({'params': jax.random.key(2), 'noise': jax.random.key(3)}, x, deterministic=False)
  return jax.jit(init)(x[:1])


def _noisy(model, variables, x=X, key=KEY):
  # Compiled: op-by-op dispatch of a whole VAE is slower on a busy 2-core machine than one compile.
  return jax.jit(lambda v, x, k: model.apply(v, x, deterministic=False, rngs={'noise': k}, mutable=['kl']))(
      variables, x, key)


def _tiny(latent, **kwargs):
  return vae.VAE((28, 28, 1), latent=latent, latent_size=3, hidden_size=16, **{'d_max': 15, **kwargs})


def test_gaussian_rate_is_the_analytic_kl():
  model = _tiny('gaussian')
  out, state = _noisy(model, _init(model))
  mean, var = np.asarray(out['mean'], np.float64), np.exp(np.asarray(out['log_var'], np.float64))
  expected = 0.5 * np.sum(mean**2 + var - 1 - np.log(var), axis=1)
  np.testing.assert_allclose(kl.kl_per_example(state['kl']), expected, rtol=1e-5)
  # And the KL itself, against a Monte Carlo estimate of E_q[log q(z|x) − log p(z)] for one example.
  z = mean[0] + np.sqrt(var[0]) * np.random.default_rng(0).standard_normal((200_000, 3))
  log_ratio = np.sum(-0.5 * (z - mean[0])**2 / var[0] - 0.5 * np.log(var[0]) + 0.5 * z**2, axis=1)
  assert abs(log_ratio.mean() - expected[0]) < 5 * log_ratio.std() / np.sqrt(len(z)) + 1e-3


def test_echo_rate_is_minus_sum_log_s_exactly():
  model = _tiny('echo')
  out, state = _noisy(model, _init(model))
  r = echo.default_clip_factor(15)
  np.testing.assert_array_equal(kl.kl_per_example(state['kl']), -jnp.sum(jnp.log(r) + out['log_s'], axis=1))
  assert not np.allclose(out['z'], out['f'])  # the noise is on


@pytest.mark.parametrize('activation', ['softplus', 'relu'])
def test_information_latent_kl_is_the_layers_kl(activation):
  model = _tiny('information', info_activation=activation, max_alpha=0.8)
  variables = _init(model)
  out, state = _noisy(model, variables)
  if activation == 'softplus':
    mu, sigma = vae._prior_log_normal_params(variables)
    log_f = jnp.log(jnp.maximum(out['f'], 1e-4))
    expected = kl.log_normal_kl(out['alpha'], log_f, mu, sigma).sum(axis=1)
  else:
    expected = kl.log_uniform_kl(out['alpha'], 0.8).sum(axis=1)
  np.testing.assert_allclose(kl.kl_per_example(state['kl']), expected, rtol=1e-6)
  assert bool(jnp.all(out['f'] >= 0))


def test_shapes_of_reconstructions_samples_and_both_architectures():
  model = vae.VAE((28, 28, 1), latent='gaussian', latent_size=4, hidden_size=8)
  variables = _init(model)
  out, _ = _noisy(model, variables)
  assert out['logits'].shape == X.shape and out['z'].shape == (16, 4)
  samples = vae.likelihood_mean(vae.sample_prior(model, variables, KEY, 5))
  assert samples.shape == (5, 28, 28, 1) and 0 <= float(samples.min()) <= float(samples.max()) <= 1
  # The Echo paper's conv VAE, shapes only (compiling it costs more than the rest of this file).
  conv = vae.VAE((28, 28, 1), latent='echo', architecture='conv', latent_size=32, d_max=15)
  variables = jax.eval_shape(lambda: _init(conv))
  assert variables['params']['encoder']['Conv_4']['kernel'].shape == (7, 7, 64, 256)
  out, _ = jax.eval_shape(lambda v: _noisy(conv, v), variables)
  assert out['logits'].shape == X.shape and out['z'].shape == (16, 32)
  assert jax.eval_shape(lambda v, z: conv.apply(v, z, method=vae.VAE.decode), variables, out['z']).shape == X.shape
  info = _tiny('information')
  assert vae.sample_prior(info, _init(info), KEY, 3).shape == (3, 28, 28, 1)
  with pytest.raises(ValueError, match='no proper prior'):
    echo_model = _tiny('echo')
    vae.sample_prior(echo_model, _init(echo_model), KEY, 3)
  with pytest.raises(ValueError, match='needs 28×28 images'):
    vae.VAE((32, 32, 3), architecture='conv').init(KEY, jnp.zeros((1, 32, 32, 3)), deterministic=True)


def test_the_conv_vae_step_is_loop_safe_on_cpu():
  """With the CPU speed-ups' convolutions (cpu.convolution.Conv, ConvTranspose) its gradients are in XLA:CPU's fast
  form, so a one-device CPU run compiles its loops (train.Run.host_loops). Lowered only: no compile."""
  conv = vae.VAE((28, 28, 1), latent='gaussian', architecture='conv', latent_size=4, conv=convolution.Conv,
                 conv_transpose=convolution.ConvTranspose)
  variables = jax.eval_shape(lambda: _init(conv))

  def loss(params):
    out, _ = conv.apply({**variables, 'params': params}, X, deterministic=False, rngs={'noise': KEY}, mutable=['kl'])
    return jnp.sum(out['logits'])
  text = jax.jit(jax.grad(loss)).lower(variables['params']).as_text()
  assert 'stablehlo.convolution' in text
  assert convolution.loop_unsafe_convolutions(text) == []


def test_continuous_bernoulli_is_a_normalised_density():
  x = jnp.linspace(0.0, 1.0, 20001)
  for logit in (-8.0, -1.0, 0.0, 1e-4, 2.5):
    density = jnp.exp(-vae.neg_log_likelihood(jnp.full(x.shape + (1,), logit), x[:, None], 'continuous_bernoulli',
                                              event_ndim=1))
    np.testing.assert_allclose(jnp.trapezoid(density, x), 1.0, rtol=1e-3)
    mean = vae.likelihood_mean(jnp.float32(logit), 'continuous_bernoulli')
    np.testing.assert_allclose(jnp.trapezoid(density * x, x), mean, rtol=1e-3, atol=1e-4)


def test_no_importance_weighted_bound_without_densities():
  """Echo's q(z|x) has no density: the bound is refused with a clear error (the values are tested below)."""
  echo_model = _tiny('echo')
  with pytest.raises(ValueError, match='no IW bound'):
    vae.importance_weighted_nll(echo_model, _init(echo_model), X[:6], num_samples=2, key=KEY)


# --- the IW bound against answers known independently: a VAE whose log p(x) is a 1-d integral --------------------
#
# 2×2 binary images (all 16 of them) and a 2-d latent whose second dimension the decoder does not read (its row of
# the first decoder kernel is 0): then p(x) = ∫ p(x|z_0) p(z_0) dz_0, a quadrature over a fine grid with the
# model's own `decode`, while q and p(z) still have two dimensions for the bound to sum over. On that grid, per
# image and in float64, numpy gives what the bound must reproduce:
#   nll = −log p(x);  neg_elbo = E_q[−log w] (= E_q[D] + Σ_d KL_d, also checked);  var_log_w = Var_q[log w];
#   var_d = Var_q[D];  chi2 = E_q[(w/p(x))²] − 1,
# with w = p(x|z) p(z)/q(z|x) computed on u = log z for the information latent (z = exp u). For K samples the bound
# −log p̂_K has mean nll + chi2/(2K) + O(1/K²) and standard deviation √(chi2/K) (delta method), which sets the
# tolerances. The decoder is scaled up and the encoder's heads set so that q is wider than the posterior (chi2 is
# finite only when q's tails are heavier than p(z|x)'s) but far from it (the K = 1 gap is several nats).

_BINARY_2X2 = np.array(list(itertools.product((0.0, 1.0), repeat=4)), np.float32).reshape(16, 2, 2, 1)


def _np_normal_log_pdf(u, mean, std):
  return -0.5 * ((u - mean) / std) ** 2 - 0.5 * np.log(2 * np.pi) - np.log(std)


def _quadrature_vae(latent):
  model = vae.VAE((2, 2, 1), latent=latent, latent_size=2, hidden_size=16, max_alpha=3.0)
  params = jax.tree.map(lambda a: np.array(a, np.float32), _init(model, jnp.asarray(_BINARY_2X2))['params'])
  for dense in params['decoder'].values():
    dense['kernel'] *= 3.0
  params['decoder']['Dense_0']['kernel'][1] = 0.0  # z_1 is not read
  head = params['latent_layer']
  if latent == 'gaussian':
    head['mean']['kernel'] *= np.array([2.0, 0.2], np.float32)
    head['log_var']['kernel'] *= 0.3
    head['log_var']['bias'][:] = np.log(1.2**2)
  else:  # q(u|x) = N(log f, α²) against the learned prior N(μ_p, σ_p²) on u, here away from its init (0, 1)
    head['signal']['kernel'] *= np.array([1.0, 0.2], np.float32)
    head['signal']['bias'][:] = 0.5
    head['alpha']['kernel'] *= 0.3
    head['alpha']['bias'][:] = -0.4
    head['noise']['prior_mu'] = np.float32(-0.3)
    head['noise']['prior_log_sigma'] = np.float32(0.25)
  return model, {'params': params}


def _exact_terms(model, variables, latent):
  """nll, neg_elbo, var_log_w, var_d, chi2 of the comment above, for each of the 16 images; by numpy quadrature."""
  if latent == 'gaussian':
    mu_p, sigma_p = 0.0, 1.0
  else:
    noise = variables['params']['latent_layer']['noise']
    mu_p, sigma_p = float(noise['prior_mu']), float(np.exp(noise['prior_log_sigma']))
  u = np.linspace(mu_p - 12 * sigma_p, mu_p + 12 * sigma_p, 24001)
  z = np.stack([u, np.zeros_like(u)], axis=1)
  z = z if latent == 'gaussian' else np.exp(z)
  logits = np.asarray(model.apply(variables, jnp.asarray(z, jnp.float32), method=vae.VAE.decode), np.float64)
  x = _BINARY_2X2[:, None].astype(np.float64)
  log_px_z = -np.sum(np.logaddexp(0.0, logits[None]) - x * logits[None], axis=(2, 3, 4))  # (16, grid)
  log_prior = _np_normal_log_pdf(u, mu_p, sigma_p)
  enc = model.apply(variables, jnp.asarray(_BINARY_2X2), method=vae.VAE.encode)
  if latent == 'gaussian':
    loc, scale = np.asarray(enc['mean'], np.float64), np.exp(0.5 * np.asarray(enc['log_var'], np.float64))
  else:
    assert np.all(np.asarray(enc['f']) > 1e-4)  # the bound's floor on f is not in play
    loc, scale = np.log(np.asarray(enc['f'], np.float64)), np.asarray(enc['alpha'], np.float64)
  log_q = _np_normal_log_pdf(u, loc[..., None], scale[..., None])  # (16, 2, grid)
  q = np.exp(log_q)

  def integral(log_f):  # ∫ exp(log_f) du, stably
    top = np.max(log_f, axis=-1)
    return np.log(np.trapezoid(np.exp(log_f - top[..., None]), u, axis=-1)) + top

  log_px = integral(log_px_z + log_prior)
  log_w0 = log_px_z + log_prior - log_q[:, 0]  # the read dimension
  log_w1 = log_prior - log_q[:, 1]  # the other one: p(z_1)/q(z_1|x)
  mean0, mean1 = np.trapezoid(q[:, 0] * log_w0, u), np.trapezoid(q[:, 1] * log_w1, u)
  var_log_w = (np.trapezoid(q[:, 0] * log_w0**2, u) - mean0**2) + (np.trapezoid(q[:, 1] * log_w1**2, u) - mean1**2)
  mean_d = np.trapezoid(q[:, 0] * -log_px_z, u)
  var_d = np.trapezoid(q[:, 0] * log_px_z**2, u) - mean_d**2
  chi2 = np.exp(integral(2 * (log_px_z + log_prior) - log_q[:, 0]) - 2 * log_px + integral(2 * log_prior - log_q[:, 1])
                ) - 1
  closed_form_kl = np.sum(0.5 * (scale**2 + (loc - mu_p) ** 2) / sigma_p**2 - np.log(scale / sigma_p) - 0.5, axis=1)
  np.testing.assert_allclose(-(mean0 + mean1), mean_d + closed_form_kl, rtol=1e-9)  # the quadrature itself
  np.testing.assert_allclose(np.sum(np.exp(log_px)), 1.0, rtol=1e-9)  # p(x) sums to 1 over the 16 images
  return {'nll': -log_px, 'neg_elbo': -(mean0 + mean1), 'var_log_w': var_log_w, 'var_d': var_d, 'chi2': chi2,
          'kl': closed_form_kl}


@pytest.fixture(scope='module', params=['gaussian', 'information'])
def quadrature_vae(request):
  model, variables = _quadrature_vae(request.param)
  return model, variables, _exact_terms(model, variables, request.param)


def _iw_draws(model, variables, num_samples, reps, seed=0):
  """(reps, 16) independent values of the bound −log p̂_K for each image (each row a fresh draw)."""
  images = np.tile(_BINARY_2X2, (reps, 1, 1, 1))
  nll = vae.importance_weighted_nll(model, variables, images, num_samples=num_samples, key=jax.random.key(seed),
                                    batch_size=len(images), chunk_size=250)
  return nll.reshape(reps, len(_BINARY_2X2))


def test_iw_bound_with_one_sample_is_the_neg_elbo(quadrature_vae):
  """K = 1: E[−log w] is the −ELBO, which the trainer's D + R (model outputs, 'kl' collection) also estimates."""
  model, variables, exact = quadrature_vae
  reps = 2000
  gap = exact['neg_elbo'] - exact['nll']
  assert gap.max() > 5.0 and gap.min() > 0  # q is far from the posterior: at K = 1 the bound is nats loose

  iw1 = _iw_draws(model, variables, 1, reps)
  se = np.sqrt(exact['var_log_w'] / reps)
  np.testing.assert_array_less(np.abs(iw1.mean(axis=0) - exact['neg_elbo']), 4 * se)

  images = np.tile(_BINARY_2X2, (reps, 1, 1, 1))
  out, state = _noisy(model, variables, jnp.asarray(images), jax.random.key(7))
  logits = np.asarray(out['logits'], np.float64)
  distortion = np.sum(np.logaddexp(0.0, logits) - images * logits, axis=(1, 2, 3)).reshape(reps, 16)
  rate = np.asarray(kl.kl_per_example(state['kl']), np.float64).reshape(reps, 16)
  np.testing.assert_allclose(rate, np.broadcast_to(exact['kl'], rate.shape), rtol=1e-5)
  np.testing.assert_array_less(np.abs((distortion + rate).mean(axis=0) - exact['neg_elbo']),
                               4 * np.sqrt(exact['var_d'] / reps))


def test_iw_bound_does_not_increase_with_k_and_stays_above_log_p(quadrature_vae):
  """Means over the 16 images of the bound at K = 1, 10, 100: non-increasing (Burda et al., Thm 1), strictly
  tightening here, and never below the exact mean −log p(x); each comparison at 4 standard errors."""
  model, variables, exact = quadrature_vae
  reps = 200
  means, ses = {}, {}
  for k in (1, 10, 100):
    draws = _iw_draws(model, variables, k, reps, seed=k)
    var = exact['var_log_w'] if k == 1 else draws.var(axis=0, ddof=1)  # exact at K = 1, estimated above
    means[k], ses[k] = draws.mean(), np.sqrt(np.sum(var / reps)) / draws.shape[1]
  diff_se = lambda a, b: np.hypot(ses[a], ses[b])
  assert means[10] <= means[1] + 4 * diff_se(1, 10), means
  assert means[100] <= means[10] + 4 * diff_se(10, 100), means
  assert means[1] - means[100] > 4 * diff_se(1, 100) + 1.0, means  # it does tighten, by nats here
  assert means[100] >= exact['nll'].mean() - 4 * ses[100], (means, exact['nll'].mean())
  assert abs(means[1] - exact['neg_elbo'].mean()) <= 4 * ses[1], (means, exact['neg_elbo'].mean())


def test_iw_bound_converges_to_the_exact_log_likelihood(quadrature_vae):
  """K = 2000: per image, the mean of 24 independent bounds is −log p(x) + chi2/(2K) within 4 standard errors
  √(chi2/K/24) (+ 1e-3 for float32), is not below −log p(x) beyond them, and their spread is √(chi2/K). A bound
  without its −log K would sit log 2000 = 7.6 nats too low."""
  model, variables, exact = quadrature_vae
  k, reps = 2000, 24
  chi2 = exact['chi2']
  assert np.all(chi2 / k < 0.05), chi2  # the delta method's regime
  draws = _iw_draws(model, variables, k, reps)
  sd = np.sqrt(chi2 / k)
  se = sd / np.sqrt(reps)
  mean = draws.mean(axis=0)
  np.testing.assert_array_less(np.abs(mean - (exact['nll'] + chi2 / (2 * k))), 4 * se + 1e-3)
  np.testing.assert_array_less(exact['nll'] - 4 * se - 1e-3, mean)
  ratio = draws.std(axis=0, ddof=1) / sd
  assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio  # k samples per bound, each its own: not reused across chunks


# --- Echo: d_max and the batch, −inf log-scales ---------------------------------------------------------------------


def test_default_d_max_works_at_the_papers_batch_of_100():
  f = jnp.tanh(jax.random.normal(KEY, (100, 4)))
  log_s = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (100, 4)))
  layer = echo.EchoNoise()
  assert layer.d_max == echo.DEFAULT_D_MAX == 99
  z, _ = jax.jit(lambda f, s: layer.apply({}, f, s, deterministic=False, rngs={'noise': KEY}, mutable=['kl']))(
      f, log_s)
  assert z.shape == f.shape and np.all(np.isfinite(z))
  with pytest.raises(ValueError, match=r'd_max=100 must be smaller than the batch size \(100\).*batch − 1 = 99'):
    echo.EchoNoise(d_max=100).apply({}, f, log_s, deterministic=False, rngs={'noise': KEY}, mutable=['kl'])


def test_d_max_beyond_the_batch_is_a_config_error_before_compile(tmp_path):
  config = vae_mnist.get_config('smoke')  # batch 32, d_max 31
  train.validate_config(config, num_devices=1)
  config.vae.d_max = 32
  with pytest.raises(ValueError, match=r'config.vae.d_max = 32: expected at most train.batch_size per model call'):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')
  config.vae.d_max, config.eval.batch_size = 31, 16
  with pytest.raises(ValueError, match=r'config.vae.d_max = 31: expected at most eval.batch_size'):
    train.validate_config(config, num_devices=1)
  config.vae.echo_replace = True  # with replacement any d_max works
  train.validate_config(config, num_devices=1)
  config.vae.latent, config.vae.echo_replace = 'gaussian', False  # d_max is Echo's only
  train.validate_config(config, num_devices=1)


def test_one_minus_inf_log_scale_does_not_poison_the_batch():
  """The bug: cumsum − own term gave −inf − (−inf) = NaN for every example that drew the −inf one."""
  f = jnp.tanh(jax.random.normal(KEY, (12, 5)))
  log_s = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (12, 5))).at[3].set(-jnp.inf)
  z = jax.jit(lambda f, s: echo.echo_sample(KEY, f, s, d_max=11))(f, log_s)
  assert np.all(np.isfinite(z))
  np.testing.assert_array_equal(z[3], f[3])  # S = 0: no noise
  # Neighbours that drew example 3 get its f as the last nonzero term, nothing after it.
  grad_f, grad_s = jax.jit(jax.grad(lambda f, s: jnp.sum(echo.echo_sample(KEY, f, s, d_max=11)), argnums=(0, 1)))(
      f, log_s)
  assert np.all(np.isfinite(grad_f)) and np.all(np.isfinite(grad_s))
  assert np.isinf(echo.echo_mutual_information(log_s, d_max=11)[3])  # an exact code carries infinite information


def test_unknown_latent_kind_is_a_clear_error_before_compile(tmp_path):
  config = vae_mnist.get_config('smoke')
  config.vae.latent = 'laplace'
  with pytest.raises(ValueError, match=r"config.vae.latent = 'laplace': expected one of \('gaussian', 'information', "
                                       r"'echo'\)"):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints')
  assert isinstance(tasks.create_task(vae_mnist.get_config()), tasks.VAETask)


@pytest.mark.parametrize('module', [vae_mnist, vae_fmnist])
@pytest.mark.parametrize('variant', [None, 'smoke', 'cpu', 'mlp50'])
def test_configs_validate(module, variant):
  config = module.get_config(variant)
  train.validate_config(config, num_devices=1)
  assert config.task == 'vae' and config.loss.beta == 1.0


# --- a tiny run through the trainer, then the analysis ---------------------------------------------------------------


@pytest.fixture(scope='module')
def trained_echo_workdir(tmp_path_factory, shared_data):
  del shared_data  # the configs find ../shared/data themselves
  config = vae_mnist.get_config('smoke')
  config.data.limit = 384
  config.train.num_epochs = 4
  config.eval.every_epochs = 0
  config.logging.tensorboard = False
  workdir = str(tmp_path_factory.mktemp('vae_echo'))
  summary = train.train_and_evaluate(config, workdir)
  return config, workdir, summary


def test_a_tiny_run_lowers_the_neg_elbo_and_writes_the_summary(trained_echo_workdir):
  _, workdir, summary = trained_echo_workdir
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  curve = [r['train/neg_elbo'] for r in records if 'train/neg_elbo' in r]
  assert len(curve) >= 4 and curve[-1] < curve[0] - 20, curve
  with open(os.path.join(workdir, 'summary.json'), encoding='utf-8') as f:
    saved = json.load(f)
  for key in ('test/rate', 'test/distortion', 'test/neg_elbo'):
    assert np.isfinite(saved[key]) and saved[key] == pytest.approx(summary[key])
  assert saved['test/neg_elbo'] == pytest.approx(saved['test/rate'] + saved['test/distortion'], rel=1e-5)
  assert saved['test/rate'] > 0


def test_analyze_vae_writes_its_files(trained_echo_workdir, tmp_path):
  config, workdir, summary = trained_echo_workdir
  out_dir = str(tmp_path / 'analysis')
  with train.restore(workdir) as restored:
    results = vae_analysis.analyze_vae(restored, out_dir)
  for name in ('reconstructions', 'samples', 'latent_2d'):
    assert os.path.getsize(os.path.join(out_dir, f'{name}.png')) > 1000
    assert os.path.exists(os.path.join(out_dir, f'{name}.npz'))
  with open(os.path.join(out_dir, 'analysis.json'), encoding='utf-8') as f:
    assert json.load(f) == json.loads(json.dumps(results))
  assert results['test/neg_elbo'] == pytest.approx(summary['test/neg_elbo'])
  assert results['samples_from'] == 'aggregate posterior' and 'Echo' in results['iw_nll_unavailable']
  latent = np.load(os.path.join(out_dir, 'latent_2d.npz'))
  assert latent['z_noisy'].shape == (len(latent['labels']), 2)
  point = {'beta': results['beta'], 'rate': results['test/rate'], 'distortion': results['test/distortion'],
           'latent': results['latent']}
  vae_analysis.plot_rate_distortion([point, {'beta': 0.5, 'rate': 3.0, 'distortion': 180.0, 'latent': 'gaussian'}],
                                    str(tmp_path / 'rd.png'))
  assert os.path.getsize(tmp_path / 'rd.png') > 1000 and os.path.exists(tmp_path / 'rd.npz')


def test_the_iw_bound_of_an_analysis_uses_a_random_subset_of_the_ordered_test_set(tmp_path, shared_data):
  # MNIST's test set is ordered (its first 5000 images are the easier half): a prefix of it biases the bound low.
  del shared_data
  config = vae_mnist.get_config('smoke')
  config.vae.latent = 'gaussian'
  config.data.limit = 256
  config.train.num_epochs = 1
  config.eval.every_epochs = 0
  config.logging.tensorboard = False
  config.vae.iw_examples = 64
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(config, workdir)
  with train.restore(workdir) as restored:
    n = len(restored.run.splits.test.images)
    results = vae_analysis.analyze_vae(restored, str(tmp_path / 'analysis'))
  saved = np.load(tmp_path / 'analysis' / 'iw_nll.npz')
  index = saved['index']
  assert n > 64 and len(index) == len(set(index.tolist())) == 64 == results['iw_examples']
  assert list(index) == sorted(index) and index.max() < n and index.max() >= n // 2 and index.min() < n // 2
  assert not np.array_equal(index, np.arange(64))
  assert results['test/iw_nll'] == pytest.approx(float(saved['nll'].mean()))
  assert np.isfinite(saved['nll']).all() and int(saved['num_samples']) == config.vae.iw_samples
  # The bound at k = 1 and 10 on its own 16-image subset, and the paired change between them.
  sweep = results['iw_k_sweep']
  per_k = np.load(tmp_path / 'analysis' / 'iw_k_sweep.npz')
  assert sweep['k'] == [1, 10] and sweep['examples'] == 16 and per_k['nll'].shape == (2, 16)
  (step,) = sweep['steps']
  assert (step['from_k'], step['to_k']) == (1, 10)
  assert step['change'] == pytest.approx(float((per_k['nll'][1] - per_k['nll'][0]).mean()))
  assert step['stderr'] == pytest.approx(float((per_k['nll'][1] - per_k['nll'][0]).std(ddof=1) / 4))
  assert step['change'] < 0  # ten samples tighten the bound on an untrained-ish VAE by far more than its error


def test_mlp50_is_the_usual_784_500_500_50_vae_with_an_iw_bound_of_at_least_100_samples():
  config = vae_mnist.get_config('mlp50')
  config.vae.latent = 'gaussian'
  model = vae.create_model(config, (28, 28, 1))
  variables = jax.eval_shape(lambda: model.init({'params': KEY, 'noise': KEY}, jnp.zeros((2, 28, 28, 1)), deterministic=True))
  shapes = jax.tree_util.tree_map(lambda a: a.shape, variables['params'])
  assert shapes['encoder'] == {'Dense_0': {'kernel': (784, 500), 'bias': (500,)},
                               'Dense_1': {'kernel': (500, 500), 'bias': (500,)}}
  assert shapes['latent_layer']['mean']['kernel'] == (500, 50)
  assert shapes['decoder'] == {'Dense_0': {'kernel': (50, 500), 'bias': (500,)},
                               'Dense_1': {'kernel': (500, 500), 'bias': (500,)},
                               'Dense_2': {'kernel': (500, 784), 'bias': (784,)}}
  assert config.vae.iw_samples >= 100 and config.data.preprocess == 'binarize_stochastic'
  # One hidden layer stays the default (the Keras port's 784-256-2 of :cpu).
  cpu = vae_mnist.get_config('cpu')
  cpu_model = vae.create_model(cpu, (28, 28, 1))
  cpu_vars = jax.eval_shape(lambda: cpu_model.init({'params': KEY, 'noise': KEY}, jnp.zeros((2, 28, 28, 1)), deterministic=True))
  assert set(cpu_vars['params']['encoder']) == {'Dense_0'}
