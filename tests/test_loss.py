"""One `train.train_step`'s loss and update against the objective written out by hand.

Classification: CE + β·Lz + ½·wd·Σ‖θ‖², Lz = Σ_layers mean_batch(Σ_units KL) / N_train; VAE: mean_batch(D + β·R)
+ the same decay. Weight decay covers the weights (every 'kernel' and 'bias') and nothing else: not the learned
log-normal prior's μ and log σ, not variational dropout's log α.

The reference is independent of the package's loss code: the forward pass is rebuilt from the parameter tree
(numpy, float64), the noise draws ε are recovered from the model's own noisy pass (same key as the step, captured
with `capture_intermediates`), the KLs come from their closed forms written here, the CE from a numpy log-softmax,
and the penalty from a walk over the parameter tree. The same function in jax.numpy gives the gradient, which with
plain SGD at learning rate 1 must be minus the step's update. β ≠ 1, N_train ≠ the batch size and non-zero prior
parameters make a β applied twice, Lz divided by the batch size, or a decayed prior parameter change the numbers.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from infodrop_jax import models
from infodrop_jax import tasks
from infodrop_jax import train
from infodrop_jax import vae

BETA = 0.37
WEIGHT_DECAY = 0.05
N_TRAIN = 40
BATCH = 8
MAX_ALPHA = 0.7
KEY = jax.random.key(11)
# Variational dropout's KL, Kingma, Salimans & Welling (2015), eq. (10): −KL ≈ ½ log α + c1 α + c2 α² + c3 α³ + C,
# with C chosen so the KL is 0 at α = 1.
_C1, _C2, _C3 = 1.16145124, -1.50204118, 0.58629921
# Weights are 'kernel' and 'bias'; the parameters of noise distributions are not decayed.
_DECAYED = ('kernel', 'bias')
_NOT_DECAYED = ('prior_mu', 'prior_log_sigma', 'log_alpha')


# --- the objective by hand, for xp = numpy (float64 values) or jax.numpy (gradients) ----------------------------------


def _softplus(xp, v):
  return xp.logaddexp(0.0, v)


def _sigmoid(xp, v):
  return 1.0 / (1.0 + xp.exp(-v))


def _dense(p, h):
  return h @ p['kernel'] + p['bias']


def _half_sq_norm_of_weights(xp, params):
  """½ Σ ‖θ‖² over the leaves named 'kernel' or 'bias', walking the nested dicts; any other leaf name must be a
  noise parameter (so a new kind of parameter makes this test think again)."""
  total = 0.0
  for name, value in params.items():
    if isinstance(value, dict):
      total = total + _half_sq_norm_of_weights(xp, value)
    elif name in _DECAYED:
      total = total + 0.5 * xp.sum(xp.square(value))
    else:
      assert name in _NOT_DECAYED, f'unexpected parameter {name!r}: is it decayed or not?'
  return total


def _log_normal_kl(xp, alpha, log_f, mu, sigma):
  """KL(N(log f, α²) ‖ N(μ, σ²)) on log z, per unit."""
  return 0.5 * (alpha**2 + (log_f - mu) ** 2) / sigma**2 - xp.log(alpha / sigma) - 0.5


def _classifier_noise(xp, method, activation, layer, h, eps):
  """One noisy hidden layer of models.MLP: (z, per-unit KL) for standard normal draws eps."""
  f = _softplus(xp, _dense(layer['signal'], h)) if activation == 'softplus' else xp.maximum(
      _dense(layer['signal'], h), 0.0)
  if method == 'variational':
    log_alpha = layer['noise']['log_alpha']  # below 0 here, so its cap at α = 1 is not active
    a = xp.exp(log_alpha)
    neg_kl = 0.5 * log_alpha + _C1 * a + _C2 * a**2 + _C3 * a**3
    kl = (_C1 + _C2 + _C3 - neg_kl) * xp.ones_like(f)
    return f * (1.0 + xp.sqrt(a) * eps), kl
  alpha = 0.001 + MAX_ALPHA * _sigmoid(xp, _dense(layer['alpha'], h))
  if activation == 'softplus':
    prior = layer['noise']
    kl = _log_normal_kl(xp, alpha, xp.log(xp.maximum(f, 1e-4)), prior['prior_mu'], xp.exp(prior['prior_log_sigma']))
  else:
    kl = -xp.log(alpha / (MAX_ALPHA + 0.001))  # log-uniform prior, zero at the largest α the layer can produce
  return f * xp.exp(alpha * eps), kl


def _classification_loss(xp, method, activation, params, images, labels, eps):
  """CE + β·Σ_layers mean_batch(Σ_units KL)/N_train + ½·wd·Σ‖θ‖²; also the logits and the per-layer KL."""
  h = images.reshape(images.shape[0], -1)
  kl_per_layer = []
  for i in (1, 2):
    h, kl = _classifier_noise(xp, method, activation, params[f'hidden{i}'], h, eps[i - 1])
    kl_per_layer.append(xp.mean(xp.sum(kl, axis=1)))
  logits = _dense(params['logits'], h)
  shifted = logits - xp.max(logits, axis=1, keepdims=True)
  log_softmax = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
  ce = -xp.mean(xp.sum(log_softmax * (labels[:, None] == xp.arange(logits.shape[1])), axis=1))
  loss = ce + BETA * sum(kl_per_layer) / N_TRAIN + WEIGHT_DECAY * _half_sq_norm_of_weights(xp, params)
  return loss, {'logits': logits, 'ce': ce, 'kl': kl_per_layer}


def _vae_loss(xp, latent, params, images, eps):
  """mean_batch(D + β·R) + ½·wd·Σ‖θ‖² for vae.VAE's MLP architecture, Bernoulli likelihood."""
  x = images.reshape(images.shape[0], -1)
  h = xp.maximum(_dense(params['encoder']['Dense_0'], x), 0.0)
  lat = params['latent_layer']
  if latent == 'gaussian':
    mean, log_var = _dense(lat['mean'], h), _dense(lat['log_var'], h)
    z = mean + xp.exp(0.5 * log_var) * eps
    rate = 0.5 * xp.sum(mean**2 + xp.exp(log_var) - 1.0 - log_var, axis=1)
  else:
    f = _softplus(xp, _dense(lat['signal'], h))
    alpha = 0.001 + MAX_ALPHA * _sigmoid(xp, _dense(lat['alpha'], h))
    z = f * xp.exp(alpha * eps)
    rate = xp.sum(_log_normal_kl(xp, alpha, xp.log(xp.maximum(f, 1e-4)), lat['noise']['prior_mu'],
                                 xp.exp(lat['noise']['prior_log_sigma'])), axis=1)
  dec = params['decoder']
  logits = _dense(dec['Dense_1'], xp.maximum(_dense(dec['Dense_0'], z), 0.0))
  distortion = xp.sum(_softplus(xp, logits) - x * logits, axis=1)  # Σ_pixels −log Bernoulli(x | sigmoid(logit))
  loss = xp.mean(distortion + BETA * rate) + WEIGHT_DECAY * _half_sq_norm_of_weights(xp, params)
  return loss, {'logits': logits, 'distortion': xp.mean(distortion), 'rate': xp.mean(rate)}


# --- helpers -------------------------------------------------------------------------------------------------------


def _to_numpy(tree):
  return jax.tree.map(lambda a: np.array(a, np.float64), jax.device_get(tree))


def _to_jax(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def _init(model, images, seed):
  # Compiled: op by op, the initialisers' random-number primitives each compile on their own (slow on a busy CPU).
  return jax.jit(lambda x: model.init({'params': jax.random.key(seed), 'noise': jax.random.key(seed + 1)}, x,
                                      deterministic=False))(images)


def _set_noise_parameters(params, rng):
  """Non-zero prior μ, log σ and log α (init puts them at 0 or on the cap, where decaying them changes nothing)."""
  for value in params.values():
    if isinstance(value, dict):
      _set_noise_parameters(value, rng)
  if 'prior_mu' in params:
    params['prior_mu'] = np.float64(np.float32(rng.uniform(0.3, 0.6) * rng.choice([-1, 1])))
    params['prior_log_sigma'] = np.float64(np.float32(rng.uniform(-0.4, 0.4)))
  if 'log_alpha' in params:
    params['log_alpha'] = rng.uniform(-2.5, -0.3, params['log_alpha'].shape).astype(np.float32).astype(np.float64)
  return params


def _captured(cols, *path):
  """The '__call__' output that capture_intermediates recorded for the module at `path`."""
  node = cols['intermediates']
  for name in path:
    node = node[name]
  return np.asarray(node['__call__'][0], np.float64)


def _one_sgd_step(model, params, batch, task):
  """train.train_step (compiled, as the trainer runs it) with plain SGD at learning rate 1: update = −gradient."""
  state = train.TrainState.create(apply_fn=model.apply, params=_to_jax(params), tx=optax.sgd(1.0))
  step = jax.jit(functools.partial(train.train_step, beta=BETA, n_train=N_TRAIN, weight_decay=WEIGHT_DECAY,
                                   learning_rate_fn=lambda _: 1.0, task=task))
  new_state, metrics = step(state, jax.tree.map(jnp.asarray, batch), KEY)
  update = jax.tree.map(lambda new, old: np.asarray(new, np.float64) - np.asarray(old, np.float64),
                        new_state.params, state.params)
  return update, {k: float(v) for k, v in metrics.items()}


def _assert_update_is_minus_the_gradient(update, grads, params):
  """update == −grad leaf by leaf, up to float32 rounding (of θ + update, and of the two gradient computations)."""
  flat_g = dict(jax.tree_util.tree_flatten_with_path(grads)[0])
  flat_p = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  for path, u in jax.tree_util.tree_flatten_with_path(update)[0]:
    g, p = np.asarray(flat_g[path], np.float64), np.asarray(flat_p[path], np.float64)
    np.testing.assert_array_less(np.abs(u + g), 2e-4 * np.abs(g) + 1e-6 * (np.abs(p) + np.abs(g)) + 1e-7,
                                 err_msg=jax.tree_util.keystr(path))


# --- classification --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('method,activation', [('information', 'softplus'), ('information', 'relu'),
                                               ('variational', 'relu')])
def test_classification_train_step_loss_and_update_by_hand(method, activation):
  model = models.MLP(num_classes=3, hidden_sizes=(6, 5), dropout=method, activation=activation, max_alpha=MAX_ALPHA,
                     dropout_rate=0.3)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(BATCH, 3, 3, 1)).astype(np.float32)
  labels = rng.integers(0, 3, BATCH).astype(np.int32)
  variables = _init(model, images, seed=1)
  params = _set_noise_parameters(_to_numpy(variables['params']), rng)
  names = {jax.tree_util.keystr(p[-1:]) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  expected_noise_params = {'information': {"['prior_mu']", "['prior_log_sigma']"} if activation == 'softplus'
                           else set(), 'variational': {"['log_alpha']"}}[method]
  assert names == {"['kernel']", "['bias']"} | expected_noise_params

  # The model's own noisy pass with the step's key: ε of each layer from its f, α and z.
  logits, cols = jax.jit(lambda p, x: model.apply(
      {'params': p}, x, deterministic=False, use_running_average=False, rngs={'noise': KEY},
      mutable=['kl', 'intermediates'], capture_intermediates=True))(_to_jax(params), images)
  eps = []
  h = images.reshape(BATCH, -1).astype(np.float64)
  for i in (1, 2):
    layer = params[f'hidden{i}']
    pre = _captured(cols, f'hidden{i}', 'signal')
    np.testing.assert_allclose(pre, _dense(layer['signal'], h), rtol=1e-5, atol=1e-6)  # the forward we rebuild
    f = _softplus(np, pre) if activation == 'softplus' else np.maximum(pre, 0.0)
    z = _captured(cols, f'hidden{i}', 'noise')
    safe_f = np.where(f > 0, f, 1.0)
    if method == 'variational':
      a = np.exp(layer['noise']['log_alpha'])
      eps.append(np.where(f > 0, (z / safe_f - 1.0) / np.sqrt(a), 0.0))
    else:
      alpha = 0.001 + MAX_ALPHA * _sigmoid(np, _captured(cols, f'hidden{i}', 'alpha'))
      eps.append(np.where(f > 0, np.log(np.where(f > 0, z, 1.0) / safe_f) / alpha, 0.0))
    h = z
  for e in eps:
    assert np.std(e[e != 0]) > 0.5  # the noise is on

  loss, parts = _classification_loss(np, method, activation, params, images.astype(np.float64), labels, eps)
  np.testing.assert_allclose(parts['logits'], np.asarray(logits, np.float64), rtol=1e-5, atol=1e-5)
  assert sum(parts['kl']) > 0.5 and WEIGHT_DECAY * _half_sq_norm_of_weights(np, params) > 0.05

  update, metrics = _one_sgd_step(model, params, {'images': images, 'labels': labels}, tasks.Classification())
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['ce'], parts['ce'], rtol=1e-5)
  np.testing.assert_allclose(metrics['beta_lz'], BETA * sum(parts['kl']) / N_TRAIN, rtol=1e-5)
  for i in (1, 2):
    np.testing.assert_allclose(metrics[f'kl/hidden{i}/noise'], parts['kl'][i - 1], rtol=1e-5)

  eps32 = [jnp.asarray(e, jnp.float32) for e in eps]
  grads = jax.jit(jax.grad(lambda p: _classification_loss(jnp, method, activation, p, jnp.asarray(images),
                                                          jnp.asarray(labels), eps32)[0]))(_to_jax(params))
  np.testing.assert_allclose(metrics['grad_norm'], float(optax.tree.norm(grads)), rtol=1e-4)
  _assert_update_is_minus_the_gradient(update, grads, params)
  if method == 'information' and activation == 'softplus':
    # The prior's μ and log σ move by the KL's gradient alone; a decay term wd·θ would be far outside the slack.
    for i in (1, 2):
      for name in ('prior_mu', 'prior_log_sigma'):
        moved, kl_grad = update[f'hidden{i}']['noise'][name], float(grads[f'hidden{i}']['noise'][name])
        assert abs(WEIGHT_DECAY * params[f'hidden{i}']['noise'][name]) > 100 * (2e-4 * abs(kl_grad) + 1e-6)
        assert abs(moved + kl_grad) <= 2e-4 * abs(kl_grad) + 1e-6, (i, name, moved, kl_grad)


# --- VAE -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('latent', ['information', 'gaussian'])
def test_vae_train_step_loss_and_update_by_hand(latent):
  model = vae.VAE((4, 4, 1), latent=latent, latent_size=3, hidden_size=8, info_activation='softplus',
                  max_alpha=MAX_ALPHA)
  rng = np.random.default_rng(1)
  images = (rng.uniform(size=(BATCH, 4, 4, 1)) > 0.5).astype(np.float32)
  variables = _init(model, images, seed=3)
  params = _set_noise_parameters(_to_numpy(variables['params']), rng)
  if latent == 'information':
    assert params['latent_layer']['noise']['prior_mu'] != 0

  out, _ = jax.jit(lambda p, x: model.apply({'params': p}, x, deterministic=False, rngs={'noise': KEY},
                                             mutable=['kl']))(_to_jax(params), images)
  z = np.asarray(out['z'], np.float64)
  if latent == 'gaussian':
    eps = (z - np.asarray(out['mean'], np.float64)) / np.exp(0.5 * np.asarray(out['log_var'], np.float64))
  else:
    eps = np.log(z / np.asarray(out['f'], np.float64)) / np.asarray(out['alpha'], np.float64)
  assert np.std(eps) > 0.5  # the noise is on

  loss, parts = _vae_loss(np, latent, params, images.astype(np.float64), eps)
  np.testing.assert_allclose(parts['logits'], np.asarray(out['logits'], np.float64).reshape(BATCH, -1), rtol=1e-5,
                             atol=1e-5)
  assert parts['rate'] > 0.5

  update, metrics = _one_sgd_step(model, params, {'images': images}, tasks.VAETask('bernoulli'))
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['distortion'], parts['distortion'], rtol=1e-5)
  np.testing.assert_allclose(metrics['rate'], parts['rate'], rtol=1e-5)
  np.testing.assert_allclose(metrics['neg_elbo'], parts['distortion'] + parts['rate'], rtol=1e-5)

  grads = jax.jit(jax.grad(lambda p: _vae_loss(jnp, latent, p, jnp.asarray(images), jnp.asarray(eps, jnp.float32))[0]
                           ))(_to_jax(params))
  np.testing.assert_allclose(metrics['grad_norm'], float(optax.tree.norm(grads)), rtol=1e-4)
  _assert_update_is_minus_the_gradient(update, grads, params)
