"""Variational autoencoders with Gaussian, information-dropout and Echo latents: rate–distortion on (binary) MNIST.

Objective, per example and in nats (`VAETask`): loss = D + β·R, reported with neg_elbo = D + R, where

  D = −log p(x|z), z ~ q(z|x) one noisy draw per example (the distortion), and the rate R is, by `config.vae.latent`:
  'gaussian':    z = μ + σ ε; R = KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_d (μ_d² + σ_d² − 1 − log σ_d²), analytic.
  'information': z = f ⊙ exp(α ε) (multiplicative log-normal noise, `layers.InformationDropout`), R = its KL:
                 softplus f (default) with the learned log-normal prior N(μ_p, σ_p²) on log z:
                 R = Σ_d KL(N(log f_d, α_d²) ‖ N(μ_p, σ_p²)) (`kl.log_normal_kl`), a proper KL, so D + R is the
                 −ELBO; ReLU f with the log-uniform prior (the Keras port's VAE): R = −Σ_d log(α_d/(max_alpha +
                 0.001)), the KL to an improper prior up to a constant, so D + R is *not* a bound on −log p(x).
  'echo':        z = f + S ε with Echo noise (`echo.EchoNoise`, Brekelmans et al. 2019), R = I(X;Z) = −Σ_d log S_d(x)
                 exactly; Echo's marginal q(z) is the prior, so D + R bounds −log p(x) for that prior.

Unlike the classifiers' Lz, R is not divided by N_train: rate and distortion are both per example, as VAE papers
report them. Every rate is sown into the 'kl' collection (the Gaussian one by `GaussianLatent`), so
R = `kl.kl_per_example` of what the model sows, the same way for the three latents.

Likelihood (`config.vae.likelihood`):
  'bernoulli': D = Σ_pixels BCE(logits, x). On binarised MNIST it is −log p(x|z) exactly. On grey levels (Fashion-
    MNIST, the default there) it is the cross-entropy of Bernoulli(x) against Bernoulli(p): not a normalised density
    on [0, 1], so D is offset by the images' own pixel entropy Σ H(x_pixel) and D + R does not bound −log p(x). We
    keep it as the Fashion-MNIST default because it is what the Echo paper (its `recon: bce` on grey-level fMNIST)
    and most VAE papers report, so our numbers compare with theirs.
  'continuous_bernoulli' (Loaiza-Ganem & Cunningham 2019): p(x|λ) = C(λ) λ^x (1 − λ)^(1−x), a proper density on
    [0, 1]; D = BCE − log C with log C = log(l / tanh(l/2)) for the logit l (log 2 at l = 0). Then D + R bounds
    −log p(x) for grey levels (it can be negative: a density, not a probability).

Architectures (`config.vae.architecture`):
  'mlp':  the Keras port's VAE: 784 → 256 ReLU → latent (2); decoder latent → 256 ReLU → 784 logits.
  'conv': the Echo paper's (brekelma/echo `experiments/configs/echo.json`): conv 32·5×5/1, 32·5×5/2, 64·5×5/1,
          64·5×5/2, 256·7×7 valid (all ReLU) → latent (32); decoder: transposed conv 64·7×7 valid, 64·5×5/1,
          64·5×5/2, 32·5×5/1, 32·5×5/2, 32·4×4/1 (ReLU), conv C·5×5 → logits. Needs 28×28 images.

Beyond the trainer's metrics, `importance_weighted_nll` gives the IWAE bound on −log p(x) (Burda et al. 2016) that
VAE papers report, for Gaussian and log-normal-prior information latents; `analyze_vae` computes it on the test
set after training (not in every evaluation: k = 1000 samples per example costs k decoder passes) together with
reconstructions, samples and the 2-d latent, and `plot_rate_distortion` draws a rate–distortion plane.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from infodrop_jax import convolution
from infodrop_jax import echo
from infodrop_jax import kl as kl_lib
from infodrop_jax import layers
from infodrop_jax import prng
from infodrop_jax import tasks

Array = jax.Array

LATENTS = ('gaussian', 'information', 'echo')
ARCHITECTURES = ('mlp', 'conv')
LIKELIHOODS = ('bernoulli', 'continuous_bernoulli')
INFO_ACTIVATIONS = ('softplus', 'relu')
# Values in [0, 1], as both likelihoods need; GCN/ZCA data is not.
_UNIT_PREPROCESSINGS = ('none', 'scale', 'binarize_threshold', 'binarize_sample', 'binarize_stochastic')
_CONV_IMAGE_SIZE = (28, 28)
# The floor of log f in the information latent's log-normal posterior, as in `layers.InformationDropout`'s KL.
_LOG_F_FLOOR = 1e-4
_LOG_2PI = math.log(2.0 * math.pi)


# --- likelihoods ---------------------------------------------------------------------------------------------------


def _continuous_bernoulli_log_norm(logits: Array) -> Array:
  """log C(λ) with λ = sigmoid(l): C = 2 artanh(1 − 2λ)/(1 − 2λ) = l / tanh(l/2), even in l, log 2 at l = 0."""
  logits = jnp.abs(logits)
  small = logits < 1e-3
  safe = jnp.where(small, 1.0, logits)
  # Near 0 the ratio is 0/0 in floating point; its Taylor series 2(1 + l²/12) is exact to float32 there.
  return jnp.where(small, math.log(2.0) + jnp.square(logits) / 12.0, jnp.log(safe / jnp.tanh(0.5 * safe)))


def neg_log_likelihood(logits: Array, x: Array, likelihood: str = 'bernoulli', event_ndim: int = 3) -> Array:
  """D = −log p(x|z) in nats, summed over the trailing `event_ndim` axes (the image): shape logits.shape[:-event_ndim].

  'bernoulli': Σ BCE(logits, x); 'continuous_bernoulli': Σ BCE(logits, x) − log C(sigmoid(logits)). See the module
  docstring for what each means on grey-level data.
  """
  logits = jnp.asarray(logits, jnp.float32)
  x = jnp.broadcast_to(jnp.asarray(x, jnp.float32), logits.shape)
  per_pixel = optax.sigmoid_binary_cross_entropy(logits, x)
  if likelihood == 'continuous_bernoulli':
    per_pixel = per_pixel - _continuous_bernoulli_log_norm(logits)
  elif likelihood != 'bernoulli':
    raise ValueError(f'unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}.')
  return jnp.sum(per_pixel, axis=tuple(range(logits.ndim - event_ndim, logits.ndim)))


def likelihood_mean(logits: Array, likelihood: str = 'bernoulli') -> Array:
  """E[x|z]: λ = sigmoid(l) for the Bernoulli; λ/(2λ − 1) + 1/(2 artanh(1 − 2λ)) for the continuous Bernoulli."""
  lam = jax.nn.sigmoid(jnp.asarray(logits, jnp.float32))
  if likelihood == 'bernoulli':
    return lam
  # In the logit, 2 artanh(1 − 2λ) = −l, so the mean is λ/(2λ − 1) − 1/l; it tends to ½ + l/12 at l = 0.
  l = jnp.asarray(logits, jnp.float32)
  small = jnp.abs(l) < 1e-2
  safe = jnp.where(small, 1.0, l)
  safe_lam = jax.nn.sigmoid(safe)
  return jnp.where(small, 0.5 + l / 12.0, safe_lam / (2.0 * safe_lam - 1.0) - 1.0 / safe)


def gaussian_kl(mean: Array, log_var: Array) -> Array:
  """Per-unit KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²)."""
  mean, log_var = jnp.asarray(mean, jnp.float32), jnp.asarray(log_var, jnp.float32)
  return 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)


def _normal_log_pdf(x: Array, mean: Array, std: Array) -> Array:
  return -0.5 * (jnp.square((x - mean) / std) + _LOG_2PI) - jnp.log(std)


# --- modules -------------------------------------------------------------------------------------------------------


class MLPEncoder(nn.Module):
  """x → flatten → Dense(hidden) ReLU (the Keras port's encoder body)."""
  hidden_size: int = 256

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.relu(nn.Dense(self.hidden_size)(x.reshape(x.shape[0], -1)))


class MLPDecoder(nn.Module):
  """z → Dense(hidden) ReLU → Dense(∏ image_shape) logits, reshaped to the image."""
  image_shape: tuple[int, ...]
  hidden_size: int = 256

  @nn.compact
  def __call__(self, z: Array) -> Array:
    h = nn.relu(nn.Dense(self.hidden_size)(z))
    return nn.Dense(math.prod(self.image_shape))(h).reshape((z.shape[0],) + tuple(self.image_shape))


class ConvEncoder(nn.Module):
  """The Echo paper's encoder body: five ReLU convs, 28×28 → 14 → 7 → 1×1×256 (see the module docstring)."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for features, stride in ((32, 1), (32, 2), (64, 1), (64, 2)):
      x = nn.relu(convolution.Conv(features, (5, 5), strides=(stride, stride), padding='SAME')(x))
    x = nn.relu(convolution.Conv(256, (7, 7), padding='VALID')(x))
    return x.reshape(x.shape[0], -1)


class ConvDecoder(nn.Module):
  """The Echo paper's decoder: z as a 1×1 map → transposed convs 1 → 7 → 14 → 28 → conv to `channels` logits."""
  channels: int = 1

  @nn.compact
  def __call__(self, z: Array) -> Array:
    x = z.reshape(z.shape[0], 1, 1, -1)
    x = nn.relu(convolution.ConvTranspose(64, (7, 7), padding='VALID')(x))
    for features, kernel, stride in ((64, 5, 1), (64, 5, 2), (32, 5, 1), (32, 5, 2), (32, 4, 1)):
      x = nn.relu(convolution.ConvTranspose(features, (kernel, kernel), strides=(stride, stride), padding='SAME')(x))
    return convolution.Conv(self.channels, (5, 5), padding='SAME')(x)


class GaussianLatent(layers.NoiseModule):
  """z = μ + σ ε, ε ~ N(0, I), from h by two Dense heads (μ and log σ²); sows the per-unit KL to N(0, I).

  Returns (z, {'mean', 'log_var'}); z = μ when deterministic.
  """
  features: int
  deterministic: bool | None = None
  rng_collection: str = 'noise'

  @nn.compact
  def __call__(self, h: Array, deterministic: bool | None = None) -> tuple[Array, dict[str, Array]]:
    mean = nn.Dense(self.features, name='mean')(h).astype(jnp.float32)
    log_var = nn.Dense(self.features, name='log_var')(h).astype(jnp.float32)
    self._sow_kl(gaussian_kl(mean, log_var), deterministic)
    posterior = {'mean': mean, 'log_var': log_var}
    key = self._noise_key(deterministic)
    if key is None:
      return mean, posterior
    return mean + jnp.exp(0.5 * log_var) * prng.normal(key, mean.shape, jnp.float32), posterior


class InformationLatent(nn.Module):
  """z = f ⊙ exp(α ε): f = act(Dense(h)), α = 0.001 + max_alpha · sigmoid(Dense(h)), via `layers.InformationDropout`.

  softplus f gets the learned log-normal prior, ReLU f the log-uniform one (`layers.default_prior`); the layer
  sows the KL. Returns (z, {'f', 'alpha'}); z = f when deterministic.
  """
  features: int
  activation: str = 'softplus'
  max_alpha: float = 1.0
  deterministic: bool | None = None

  @nn.compact
  def __call__(self, h: Array, deterministic: bool | None = None) -> tuple[Array, dict[str, Array]]:
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    f = layers.ACTIVATIONS[self.activation](nn.Dense(self.features, name='signal')(h)).astype(jnp.float32)
    alpha_logits = nn.Dense(self.features, name='alpha')(h).astype(jnp.float32)
    z = layers.InformationDropout(max_alpha=self.max_alpha, prior=layers.default_prior(self.activation),
                                  name='noise')(f, alpha_logits, deterministic=deterministic)
    alpha = kl_lib.ALPHA_FLOOR + self.max_alpha * jax.nn.sigmoid(alpha_logits)
    return z, {'f': f, 'alpha': alpha}


class EchoLatent(nn.Module):
  """z = f + S ε, Echo noise: f = tanh(Dense(h) / f_scale), log s = log_sigmoid(Dense(h)) (the original's tanh64).

  Returns (z, {'f', 'log_s'}); z = f when deterministic. `echo.EchoNoise` sows the exact rate −log S.
  """
  features: int
  d_max: int = echo.DEFAULT_D_MAX
  clip_factor: float | None = None
  replace: bool = False
  f_scale: float = 64.0
  deterministic: bool | None = None

  @nn.compact
  def __call__(self, h: Array, deterministic: bool | None = None) -> tuple[Array, dict[str, Array]]:
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    f = jnp.tanh(nn.Dense(self.features, name='signal')(h).astype(jnp.float32) / self.f_scale)
    log_s = jax.nn.log_sigmoid(nn.Dense(self.features, name='log_scale')(h).astype(jnp.float32))
    z = echo.EchoNoise(d_max=self.d_max, clip_factor=self.clip_factor, replace=self.replace,
                       name='noise')(f, log_s, deterministic=deterministic)
    return z, {'f': f, 'log_s': log_s}


class VAE(nn.Module):
  """Encoder → noisy latent → decoder logits; the trainer's model contract (`models`), no BatchNorm.

  `__call__(x, deterministic)` returns {'logits': decoder logits shaped like x, 'z': the latent, and the posterior's
  parameters: 'mean'/'log_var' (gaussian), 'f'/'alpha' (information), 'f'/'log_s' (echo)}, and sows the rate into
  'kl'. `encode(x)` gives the noise-free latent with those parameters, `decode(z)` the logits.
  """
  image_shape: tuple[int, ...]
  latent: str = 'gaussian'
  architecture: str = 'mlp'
  latent_size: int = 2
  hidden_size: int = 256
  info_activation: str = 'softplus'
  max_alpha: float = 1.0
  d_max: int = echo.DEFAULT_D_MAX
  clip_factor: float | None = None
  echo_replace: bool = False
  echo_f_scale: float = 64.0
  deterministic: bool | None = None

  def setup(self):
    if self.latent not in LATENTS:
      raise ValueError(f'VAE: unknown latent {self.latent!r}; expected one of {LATENTS}.')
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f'VAE: unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}.')
    if self.architecture == 'conv':
      if tuple(self.image_shape[:2]) != _CONV_IMAGE_SIZE:
        raise ValueError(f'VAE: the conv architecture needs 28×28 images, got image_shape={self.image_shape}.')
      self.encoder = ConvEncoder()
      self.decoder = ConvDecoder(channels=self.image_shape[-1])
    else:
      self.encoder = MLPEncoder(self.hidden_size)
      self.decoder = MLPDecoder(tuple(self.image_shape), self.hidden_size)
    if self.latent == 'gaussian':
      self.latent_layer = GaussianLatent(self.latent_size)
    elif self.latent == 'information':
      self.latent_layer = InformationLatent(self.latent_size, self.info_activation, self.max_alpha)
    else:
      self.latent_layer = EchoLatent(self.latent_size, self.d_max, self.clip_factor, self.echo_replace,
                                     self.echo_f_scale)

  def __call__(self, x: Array, deterministic: bool | None = None,
               use_running_average: bool | None = None) -> dict[str, Array]:
    del use_running_average  # No BatchNorm; accepted for the trainer's model contract.
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    z, posterior = self.latent_layer(self.encoder(x), deterministic=deterministic)
    return {'logits': self.decoder(z), 'z': z, **posterior}

  def encode(self, x: Array) -> dict[str, Array]:
    """The noise-free latent 'z' (μ or f) and the posterior's parameters."""
    z, posterior = self.latent_layer(self.encoder(x), deterministic=True)
    return {'z': z, **posterior}

  def decode(self, z: Array) -> Array:
    return self.decoder(z)


def create_model(config: ml_collections.ConfigDict, image_shape: Sequence[int]) -> VAE:
  """The VAE `config.vae` describes, for images of `image_shape` (H, W, C)."""
  c = config.vae
  return VAE(image_shape=tuple(int(s) for s in image_shape), latent=c.latent, architecture=c.architecture,
             latent_size=int(c.latent_size), hidden_size=int(c.hidden_size), info_activation=c.info_activation,
             max_alpha=float(c.max_alpha), d_max=int(c.d_max),
             clip_factor=float(c.echo_clip_factor) if c.echo_clip_factor else None,
             echo_replace=bool(c.echo_replace), echo_f_scale=float(c.echo_f_scale))


def has_proper_prior(config: ml_collections.ConfigDict) -> bool:
  """Whether q and p(z) are both densities, so that the IW bound exists: Gaussian, or softplus information latents."""
  return config.vae.latent == 'gaussian' or (config.vae.latent == 'information' and
                                             config.vae.info_activation == 'softplus')


# --- the task ------------------------------------------------------------------------------------------------------


class VAETask:
  """The trainer's task for `config.task = 'vae'`: loss = mean_batch(D + β·R), R in nats per example (no ÷ N_train).

  Train metrics: distortion, rate, neg_elbo (nats per example). Test results (`summary.json`): test/distortion,
  test/rate, test/neg_elbo from the noisy pass (the ELBO needs the noise), test/distortion_d from the noise-free
  reconstruction (z = μ or f). Echo noise in the noisy test pass is built from the other members of each test batch.
  """
  name = 'vae'

  def __init__(self, likelihood: str = 'bernoulli'):
    self.likelihood = likelihood

  def create_model(self, config: ml_collections.ConfigDict, splits: Any) -> nn.Module:
    self.likelihood = config.vae.likelihood
    return create_model(config, splits.train.images.shape[1:])

  def validate_config(self, config: ml_collections.ConfigDict, check: tasks.Check) -> None:
    if config.get('vae') is None:
      raise ValueError("config.vae is missing: config.task = 'vae' needs a config.vae section (see "
                       'configs/vae_mnist.py).')
    c = config.vae
    check(c.latent in LATENTS, 'vae.latent', f'one of {LATENTS}')
    check(c.architecture in ARCHITECTURES, 'vae.architecture', f'one of {ARCHITECTURES}')
    check(c.likelihood in LIKELIHOODS, 'vae.likelihood', f'one of {LIKELIHOODS}')
    check(c.info_activation in INFO_ACTIVATIONS, 'vae.info_activation',
          f"one of {INFO_ACTIVATIONS} (softplus: learned log-normal prior; relu: log-uniform prior)")
    check(int(c.latent_size) > 0, 'vae.latent_size', 'a positive int')
    check(int(c.hidden_size) > 0, 'vae.hidden_size', 'a positive int')
    check(float(c.max_alpha) > 0, 'vae.max_alpha', 'a positive float')
    check(float(c.echo_f_scale) > 0, 'vae.echo_f_scale', 'a positive float')
    check(0.0 <= float(c.echo_clip_factor) < 1.0, 'vae.echo_clip_factor', 'a float in (0, 1), or 0 for the default')
    check(int(c.iw_samples) > 0, 'vae.iw_samples', 'a positive int')
    check(int(c.iw_examples) >= 0, 'vae.iw_examples', 'an int >= 0 (0 = the whole test set)')
    check(config.data.preprocess in _UNIT_PREPROCESSINGS, 'data.preprocess',
          f'images in [0, 1] for a Bernoulli-type likelihood: one of {_UNIT_PREPROCESSINGS}')
    if c.architecture == 'conv':
      check(config.data.name in ('mnist', 'fashion_mnist'), 'data.name',
            "28×28 images for vae.architecture='conv' ('mnist' or 'fashion_mnist'), or vae.architecture='mlp'")
    check(int(c.d_max) >= 1, 'vae.d_max', 'a positive number of echo terms')
    if c.latent == 'echo' and not c.echo_replace:
      # Under pmap each device's model call sees its own slice of the batch; under jit the whole global batch.
      devices = jax.device_count() if config.train.parallel == 'pmap' else 1
      for field in ('train.batch_size', 'eval.batch_size'):
        section, name = field.split('.')
        per_call = int(config[section][name]) // devices
        check(int(c.d_max) <= echo.max_d_max(per_call), 'vae.d_max',
              f'at most {field} per model call − 1 = {per_call} − 1 = {echo.max_d_max(per_call)} (echo noise draws '
              f'd_max *other* examples of the batch without replacement); lower vae.d_max, raise {field}, or set '
              f'vae.echo_replace=True')
    self.likelihood = c.likelihood

  def _per_example(self, outputs: Mapping[str, Array], batch: Mapping[str, Array],
                   kl_collection: Any) -> tuple[Array, Array]:
    distortion = neg_log_likelihood(outputs['logits'], batch['images'], self.likelihood)
    rate = jnp.asarray(kl_lib.kl_per_example(kl_collection), jnp.float32)
    return distortion, jnp.broadcast_to(rate, distortion.shape)

  def loss(self, outputs, batch, kl_collection, *, beta, n_train):
    del n_train  # Per-example rate and distortion: nothing is normalised by the training-set size.
    distortion, rate = self._per_example(outputs, batch, kl_collection)
    metrics = {'distortion': distortion.mean(), 'rate': rate.mean(), 'neg_elbo': (distortion + rate).mean()}
    return jnp.mean(distortion + beta * rate), metrics

  def eval_sums(self, outputs, batch, kl_collection, mask):
    distortion, rate = self._per_example(outputs, batch, kl_collection)
    mask = mask.astype(jnp.float32)
    return {'distortion': jnp.sum(mask * distortion), 'rate': jnp.sum(mask * rate),
            'neg_elbo': jnp.sum(mask * (distortion + rate)), 'count': jnp.sum(mask)}

  def eval_results(self, sums_d, sums_n):
    count = float(sums_n['count'])
    return {'test/distortion': float(sums_n['distortion']) / count, 'test/rate': float(sums_n['rate']) / count,
            'test/neg_elbo': float(sums_n['neg_elbo']) / count,
            'test/distortion_d': float(sums_d['distortion']) / count}


# --- importance-weighted bound and sampling ------------------------------------------------------------------------


def _prior_log_normal_params(variables: Mapping[str, Any]) -> tuple[Array, Array]:
  """(μ_p, σ_p) of the information latent's learned log-normal prior on log z."""
  noise = variables['params']['latent_layer']['noise']
  return noise['prior_mu'], jnp.exp(noise['prior_log_sigma'])


def importance_weighted_nll(model: VAE, variables: Mapping[str, Any], images: Array | np.ndarray, *,
                            num_samples: int, key: Array, likelihood: str = 'bernoulli', batch_size: int = 100,
                            chunk_size: int = 100) -> np.ndarray:
  """The IWAE bound on −log p(x) per example, in nats (Burda, Grosse & Salakhutdinov 2016).

  −log p̂(x) = −log (1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x)), z_k ~ q(z|x) i.i.d. Its expectation is ≥ −log p(x) and
  decreases to it as K grows; K = 1 gives the (one-sample) −ELBO. For 'gaussian' q = N(μ, σ²), p = N(0, I); for
  'information' with softplus units the weights are computed on u = log z, where q(u|x) = N(log max(f, 1e-4), α²)
  and p(u) = N(μ_p, σ_p²) (the Jacobian of z = exp(u) cancels in the ratio; the floor, the same as the layer's KL,
  only changes the proposal, which any density may be). Echo's q(z|x) has no density and the log-uniform prior is
  improper, so neither has this bound.

  Args:
    model, variables: a `VAE` and its variables.
    images: (N, H, W, C) in [0, 1] (binarised already for binary data).
    num_samples: K.
    key: PRNG key of the proposal draws.
    likelihood: as `config.vae.likelihood`.
    batch_size, chunk_size: examples per compiled call and samples per decoder pass (memory: B·chunk images).
  Returns:
    float64 (N,) array of −log p̂(x).
  """
  if model.latent == 'echo' or (model.latent == 'information' and model.info_activation != 'softplus'):
    raise ValueError(f'importance_weighted_nll: no IW bound for latent={model.latent!r} (info_activation='
                     f'{model.info_activation!r}): it needs densities q(z|x) and p(z) (gaussian, or information '
                     'with softplus units and the log-normal prior).')
  if num_samples < 1:
    raise ValueError(f'importance_weighted_nll: num_samples must be positive, got {num_samples}.')
  chunk = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk)

  @jax.jit
  def batch_nll(x, key):
    posterior = model.apply(variables, x, method=VAE.encode)
    if model.latent == 'gaussian':
      loc, scale = posterior['mean'], jnp.exp(0.5 * posterior['log_var'])
      prior_loc, prior_scale = jnp.float32(0.0), jnp.float32(1.0)
    else:
      loc, scale = jnp.log(jnp.maximum(posterior['f'], _LOG_F_FLOOR)), posterior['alpha']
      prior_loc, prior_scale = _prior_log_normal_params(variables)
    b = x.shape[0]

    def log_weights(_, key):
      u = loc[:, None] + scale[:, None] * jax.random.normal(key, (b, chunk) + loc.shape[1:], jnp.float32)
      log_q = jnp.sum(_normal_log_pdf(u, loc[:, None], scale[:, None]), axis=-1)
      log_p = jnp.sum(_normal_log_pdf(u, prior_loc, prior_scale), axis=-1)
      z = u if model.latent == 'gaussian' else jnp.exp(u)
      logits = model.apply(variables, z.reshape((b * chunk,) + z.shape[2:]), method=VAE.decode)
      log_px = -neg_log_likelihood(logits.reshape((b, chunk) + logits.shape[1:]), x[:, None], likelihood)
      return None, log_px + log_p - log_q

    _, log_w = jax.lax.scan(log_weights, None, jax.random.split(key, num_chunks))
    log_w = jnp.moveaxis(log_w, 0, 1).reshape(b, num_chunks * chunk)[:, :num_samples]
    return -(jax.scipy.special.logsumexp(log_w, axis=1) - jnp.log(num_samples))

  images = np.asarray(images, np.float32)
  out = []
  for i, start in enumerate(range(0, len(images), batch_size)):
    out.append(np.asarray(batch_nll(jnp.asarray(images[start:start + batch_size]), jax.random.fold_in(key, i)),
                          np.float64))
  return np.concatenate(out)


def sample_prior(model: VAE, variables: Mapping[str, Any], key: Array, num: int) -> Array:
  """Decoder logits of `num` draws from the prior: N(0, I) (gaussian) or exp(N(μ_p, σ_p²)) (softplus information)."""
  shape = (num, model.latent_size)
  if model.latent == 'gaussian':
    z = jax.random.normal(key, shape)
  elif model.latent == 'information' and model.info_activation == 'softplus':
    mu, sigma = _prior_log_normal_params(variables)
    z = jnp.exp(mu + sigma * jax.random.normal(key, shape))
  else:
    raise ValueError(f'sample_prior: latent={model.latent!r} (info_activation={model.info_activation!r}) has no '
                     'proper prior to sample; decode draws from the aggregate posterior instead (`analyze_vae`).')
  return model.apply(variables, z, method=VAE.decode)


# --- analysis --------------------------------------------------------------------------------------------------------


def _test_images(config: ml_collections.ConfigDict, images: np.ndarray, key: Array) -> np.ndarray:
  """The test images as the model sees them: [0, 1], one fixed Bernoulli draw for 'binarize_stochastic'."""
  from infodrop_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  x = preprocess.to_unit_interval(images)
  if config.data.preprocess == 'binarize_stochastic':
    x = preprocess.binarize_stochastic(x, key)
  return np.asarray(x, np.float32)


def _image_grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """(rows·cols, H, W, C) → one (rows·H, cols·W) grey image (first channel; C = 3 kept as RGB)."""
  n, h, w, c = images.shape
  images = np.concatenate([images, np.zeros((rows * cols - n, h, w, c), images.dtype)]) if n < rows * cols else images
  grid = images[:rows * cols].reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
  return grid if c == 3 else grid[..., 0]


def _save_figure(fig: Any, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def _title(config: ml_collections.ConfigDict, what: str) -> str:
  c = config.vae
  return (f'{what}: {c.latent} latent ({c.architecture}, {c.latent_size}-d), {config.data.name}, '
          f'β = {float(config.loss.beta):g}')


def analyze_vae(config: ml_collections.ConfigDict, workdir: str, out_dir: str, *, splits: Any | None = None,
                step: int | None = None) -> dict[str, Any]:
  """Restores the latest (or `step`) checkpoint of a VAE run and writes its analysis into `out_dir`.

  Files: reconstructions.png/.npz (test inputs, noisy-pass and noise-free reconstructions as E[x|z]),
  samples.png/.npz (decoded draws from the prior for Gaussian and softplus-information latents; from the aggregate
  posterior q(z) = E_x q(z|x), i.e. noisy codes of random test images, for Echo, whose prior *is* q(z), and for the
  improper log-uniform prior), latent_2d.png/.npz (noisy codes of the test set coloured by label, 2-d latents
  only), iw_nll.npz (per-example IW bound, when it exists) and analysis.json (the returned dict).

  Returns:
    {'step', 'beta', 'latent', 'architecture', 'latent_size', 'dataset', 'likelihood', the trainer's test results
    (test/rate, test/distortion, test/neg_elbo, test/distortion_d: the same evaluation as summary.json), and
    'test/iw_nll' with 'test/iw_nll_stderr', 'iw_samples', 'iw_examples' (or 'iw_nll_unavailable': why)}.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (no global backend change)

  from infodrop_jax import train  # pylint: disable=g-import-not-at-top  (train imports tasks, which imports us)

  task = VAETask()
  # pylint: disable-next=protected-access
  run = train._Run(config, workdir, model=None, splits=splits, read_only=True, task=task)
  try:
    if run.checkpointer.latest_step() is None:
      raise FileNotFoundError(f'analyze_vae: no checkpoint in {run.checkpointer.directory}; train first.')
    template = train.create_train_state(run.model, run.tx, run.splits.train.images[:1].astype(np.float32), run.keys,
                                        run.parallel)
    state = run.checkpointer.restore(template, step)
    results: dict[str, Any] = {
        'step': int(jax.device_get(state.step)), 'beta': float(config.loss.beta), 'latent': config.vae.latent,
        'architecture': config.vae.architecture, 'latent_size': int(config.vae.latent_size),
        'dataset': config.data.name, 'likelihood': config.vae.likelihood}
    results.update(run.evaluate(run.parallel.to_device_layout(state)))
    variables = {'params': jax.device_get(state.params)}
  finally:
    run.checkpointer.close()

  model, likelihood = run.model, config.vae.likelihood
  os.makedirs(out_dir, exist_ok=True)
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 0x5AE)
  test = run.splits.test
  x = _test_images(config, test.images, jax.random.fold_in(key, 0))
  labels = np.asarray(test.labels)
  n = len(x)

  # Noisy and noise-free passes over the whole test set in batches of eval.batch_size (echo needs > d_max other
  # examples per batch: the last batch is filled up with examples from the start, whose outputs are dropped).
  batch = int(config.eval.batch_size)

  @jax.jit
  def passes(x, key):
    noisy, _ = model.apply(variables, x, deterministic=False, rngs={'noise': key}, mutable=[kl_lib.KL_COLLECTION])
    clean = model.apply(variables, x, method=VAE.encode)
    return noisy['z'], noisy['logits'], clean['z'], model.apply(variables, clean['z'], method=VAE.decode)

  z_noisy, z_clean, recon_noisy, recon_clean = [], [], [], []
  num_recon = 10
  for i, start in enumerate(range(0, n, batch)):
    idx = np.arange(start, start + batch) % n
    zn, ln, zc, lc = passes(jnp.asarray(x[idx]), jax.random.fold_in(key, 1000 + i))
    keep = min(batch, n - start)
    z_noisy.append(np.asarray(zn)[:keep])
    z_clean.append(np.asarray(zc)[:keep])
    if i == 0:
      recon_noisy = np.asarray(likelihood_mean(ln[:num_recon], likelihood))
      recon_clean = np.asarray(likelihood_mean(lc[:num_recon], likelihood))
  z_noisy, z_clean = np.concatenate(z_noisy), np.concatenate(z_clean)

  # Reconstructions.
  inputs = x[:num_recon]
  np.savez(os.path.join(out_dir, 'reconstructions.npz'), inputs=inputs, reconstruction_noisy=recon_noisy,
           reconstruction_noise_free=recon_clean, labels=labels[:num_recon])
  fig = Figure(figsize=(num_recon * 0.9, 3.2))
  rows = (('input x', inputs), ('E[x|z]\nz ~ q(z|x)', recon_noisy), ('E[x|z]\nnoise-free z', recon_clean))
  for r, (name, images) in enumerate(rows):
    for col in range(num_recon):
      ax = fig.add_subplot(3, num_recon, r * num_recon + col + 1)
      ax.imshow(images[col, ..., 0], cmap='gray', vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      if col == 0:
        ax.set_ylabel(name, fontsize=6)
  fig.suptitle(_title(config, 'Test reconstructions') +
               f'\nD = {results["test/distortion"]:.2f} nats, R = {results["test/rate"]:.2f} nats', fontsize=8)
  _save_figure(fig, os.path.join(out_dir, 'reconstructions.png'))

  # Samples.
  num_samples = 64
  if has_proper_prior(config):
    source = 'prior'
    sample_logits = sample_prior(model, variables, jax.random.fold_in(key, 2), num_samples)
    codes = None
  else:
    source = 'aggregate posterior'
    picks = jax.random.choice(jax.random.fold_in(key, 2), n, (num_samples,), replace=n < num_samples)
    codes = z_noisy[np.asarray(picks)]
    sample_logits = model.apply(variables, jnp.asarray(codes), method=VAE.decode)
  samples = np.asarray(likelihood_mean(sample_logits, likelihood))
  np.savez(os.path.join(out_dir, 'samples.npz'), samples=samples,
           **({'codes': codes} if codes is not None else {}))
  fig = Figure(figsize=(6, 6.4))
  ax = fig.add_subplot(1, 1, 1)
  ax.imshow(_image_grid(samples, 8, 8), cmap='gray', vmin=0, vmax=1)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_xlabel(f'E[x|z], z from the {source} ({"z ~ p(z)" if source == "prior" else "z ~ q(z|x), x ~ test set"})')
  ax.set_title(_title(config, 'Samples'), fontsize=8)
  _save_figure(fig, os.path.join(out_dir, 'samples.png'))
  results['samples_from'] = source

  # 2-d latent.
  if z_noisy.shape[1] == 2:
    np.savez(os.path.join(out_dir, 'latent_2d.npz'), z_noisy=z_noisy, z_noise_free=z_clean, labels=labels)
    fig = Figure(figsize=(6, 5.4))
    ax = fig.add_subplot(1, 1, 1)
    points = ax.scatter(z_noisy[:, 0], z_noisy[:, 1], c=labels, cmap='tab10', s=2, alpha=0.6, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label='test label')
    ax.set_xlabel('z₁ (latent units)')
    ax.set_ylabel('z₂ (latent units)')
    ax.set_title(_title(config, 'Test codes z ~ q(z|x)') + f'\nR = {results["test/rate"]:.2f} nats', fontsize=8)
    _save_figure(fig, os.path.join(out_dir, 'latent_2d.png'))

  # Importance-weighted bound.
  if has_proper_prior(config):
    k, count = int(config.vae.iw_samples), int(config.vae.iw_examples) or n
    nll = importance_weighted_nll(model, variables, x[:count], num_samples=k, key=jax.random.fold_in(key, 3),
                                  likelihood=likelihood, batch_size=batch)
    np.savez(os.path.join(out_dir, 'iw_nll.npz'), nll=nll, labels=labels[:count], num_samples=k)
    stderr = float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else float('nan')
    results.update({'test/iw_nll': float(nll.mean()), 'test/iw_nll_stderr': stderr, 'iw_samples': k,
                    'iw_examples': int(count)})
  else:
    results['iw_nll_unavailable'] = (
        'Echo noise has no density q(z|x)' if config.vae.latent == 'echo' else
        'the log-uniform prior (ReLU information latent) is improper')

  with open(os.path.join(out_dir, 'analysis.json'), 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2, sort_keys=True)
  return results


def plot_rate_distortion(points: Sequence[Mapping[str, Any]], path: str) -> None:
  """Rate (x) against distortion (y), one series per latent kind ordered by β, with lines of equal −ELBO = D + R.

  Args:
    points: dicts with 'beta', 'rate', 'distortion' (nats per example) and 'latent' (series name).
    path: the PNG to write; the points go beside it as `<path without .png>.npz`.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  if not points:
    raise ValueError('plot_rate_distortion: no points to plot.')
  for p in points:
    missing = {'beta', 'rate', 'distortion', 'latent'} - set(p)
    if missing:
      raise ValueError(f'plot_rate_distortion: point {dict(p)} lacks {sorted(missing)}.')
  fig = Figure(figsize=(6, 5))
  ax = fig.add_subplot(1, 1, 1)
  rates = np.array([float(p['rate']) for p in points])
  dists = np.array([float(p['distortion']) for p in points])
  for total in np.unique(np.round(np.linspace((rates + dists).min(), (rates + dists).max(), 4), 1)):
    # D + R = const: the lines on which −ELBO is equal (at β = 1 the objective's level sets).
    span = np.array([0.0, total])
    ax.plot(span, total - span, color='0.85', linewidth=0.8, linestyle='--', zorder=0)
  for latent in sorted({str(p['latent']) for p in points}):
    series = sorted((p for p in points if str(p['latent']) == latent), key=lambda p: float(p['beta']))
    r = [float(p['rate']) for p in series]
    d = [float(p['distortion']) for p in series]
    ax.plot(r, d, marker='o', label=latent)
    for p in series:
      ax.annotate(f'β={float(p["beta"]):g}', (float(p['rate']), float(p['distortion'])), fontsize=7,
                  textcoords='offset points', xytext=(4, 4))
  margin_r, margin_d = 0.1 * (np.ptp(rates) + 1.0), 0.1 * (np.ptp(dists) + 1.0)
  ax.set_xlim(max(0.0, rates.min() - margin_r), rates.max() + margin_r)
  ax.set_ylim(max(0.0, dists.min() - margin_d), dists.max() + margin_d)
  ax.set_xlabel('rate R (nats per example)')
  ax.set_ylabel('distortion D (nats per example)')
  ax.set_title('Rate–distortion (test); dashed: equal −ELBO = D + R', fontsize=9)
  ax.legend(title='latent')
  _save_figure(fig, path)
  np.savez(os.path.splitext(path)[0] + '.npz', beta=np.array([float(p['beta']) for p in points]), rate=rates,
           distortion=dists, latent=np.array([str(p['latent']) for p in points]))
