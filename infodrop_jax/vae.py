"""Variational autoencoders with Gaussian, information-dropout and Echo latents: rate–distortion on (binary) MNIST.

Objective, per example and in nats (`tasks.VAETask`): loss = D + β·R, reported with neg_elbo = D + R, where

  D = −log p(x|z), z ~ q(z|x) one noisy draw per example (the distortion), and the rate R is, by `config.vae.latent`:
  'gaussian':    z = μ + σ ε; R = KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_d (μ_d² + σ_d² − 1 − log σ_d²), analytic.
  'information': z = f ⊙ exp(α ε) (multiplicative log-normal noise, `layers.InformationDropout`), R = its KL:
                 softplus f (default) with the learned log-normal prior N(μ_p, σ_p²) on log z:
                 R = Σ_d KL(N(log f_d, α_d²) ‖ N(μ_p, σ_p²)) (`kl.log_normal_kl`), a proper KL, so D + R is the
                 −ELBO; ReLU f with the log-uniform prior (the Keras port's VAE): R = −Σ_d log(α_d/(max_alpha +
                 0.001)), the KL to an improper prior up to a constant, so D + R is *not* a bound on −log p(x).
  'echo':        z = f + S ε with Echo noise (`echo.EchoNoise`, Brekelmans et al. 2019), R = I(X;Z) = −Σ_d log S_d(x)
                 exactly; Echo's marginal q(z) is the prior, so D + R bounds −log p(x) for that prior.

The objective is `tasks.VAETask`. Unlike the classifiers' Lz, R is not divided by N_train: rate and distortion are
both per example, as VAE papers report them. Every rate is sown into the 'kl' collection (the Gaussian one by `GaussianLatent`), so
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
          `hidden_layers` stacks more hidden layers of `hidden_size` units in each: 784-500-500-50 is the usual
          size of MLP VAE papers (e.g. `configs/vae_mnist.py:mlp50`).
  'conv': the Echo paper's (brekelma/echo `experiments/configs/echo.json`): conv 32·5×5/1, 32·5×5/2, 64·5×5/1,
          64·5×5/2, 256·7×7 valid (all ReLU) → latent (32); decoder: transposed conv 64·7×7 valid, 64·5×5/1,
          64·5×5/2, 32·5×5/1, 32·5×5/2, 32·4×4/1 (ReLU), conv C·5×5 → logits. Needs 28×28 images.

Beyond the trainer's metrics, `importance_weighted_nll` gives the IWAE bound on −log p(x) (Burda et al. 2016) that
VAE papers report, for Gaussian and log-normal-prior information latents; `infodrop_jax.analysis.vae` computes it
on the test set after training (not in every evaluation: k = 1000 samples per example costs k decoder passes)
together with reconstructions, samples and the 2-d latent, and draws the rate–distortion plane.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from infodrop_jax import echo
from infodrop_jax import kl as kl_lib
from infodrop_jax import layers
from infodrop_jax import noise as noise_lib

Array = jax.Array
ModuleDef = Any

LATENTS = ('gaussian', 'information', 'echo')
ARCHITECTURES = ('mlp', 'conv')
LIKELIHOODS = ('bernoulli', 'continuous_bernoulli')
INFO_ACTIVATIONS = ('softplus', 'relu')
# Values in [0, 1], as both likelihoods need; GCN/ZCA data is not.
UNIT_PREPROCESSINGS = ('none', 'scale', 'binarize_threshold', 'binarize_sample', 'binarize_stochastic')
_CONV_IMAGE_SIZE = (28, 28)
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
  """x → flatten → `hidden_layers` × (Dense(hidden) ReLU) (one: the Keras port's encoder body)."""
  hidden_size: int = 256
  hidden_layers: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = x.reshape(x.shape[0], -1)
    for _ in range(self.hidden_layers):
      h = nn.relu(nn.Dense(self.hidden_size)(h))
    return h


class MLPDecoder(nn.Module):
  """z → `hidden_layers` × (Dense(hidden) ReLU) → Dense(∏ image_shape) logits, reshaped to the image."""
  image_shape: tuple[int, ...]
  hidden_size: int = 256
  hidden_layers: int = 1

  @nn.compact
  def __call__(self, z: Array) -> Array:
    h = z
    for _ in range(self.hidden_layers):
      h = nn.relu(nn.Dense(self.hidden_size)(h))
    return nn.Dense(math.prod(self.image_shape))(h).reshape((z.shape[0],) + tuple(self.image_shape))


class ConvEncoder(nn.Module):
  """The Echo paper's encoder body: five ReLU convs, 28×28 → 14 → 7 → 1×1×256 (see the module docstring)."""
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for features, stride in ((32, 1), (32, 2), (64, 1), (64, 2)):
      x = nn.relu(self.conv(features, (5, 5), strides=(stride, stride), padding='SAME')(x))
    x = nn.relu(self.conv(256, (7, 7), padding='VALID')(x))
    return x.reshape(x.shape[0], -1)


class ConvDecoder(nn.Module):
  """The Echo paper's decoder: z as a 1×1 map → transposed convs 1 → 7 → 14 → 28 → conv to `channels` logits."""
  channels: int = 1
  conv: ModuleDef = nn.Conv
  conv_transpose: ModuleDef = nn.ConvTranspose

  @nn.compact
  def __call__(self, z: Array) -> Array:
    x = z.reshape(z.shape[0], 1, 1, -1)
    x = nn.relu(self.conv_transpose(64, (7, 7), padding='VALID')(x))
    for features, kernel, stride in ((64, 5, 1), (64, 5, 2), (32, 5, 1), (32, 5, 2), (32, 4, 1)):
      x = nn.relu(self.conv_transpose(features, (kernel, kernel), strides=(stride, stride), padding='SAME')(x))
    return self.conv(self.channels, (5, 5), padding='SAME')(x)


class GaussianLatent(layers.NoiseModule):
  """z = μ + σ ε, ε ~ N(0, I), from h by two Dense heads (μ and log σ²); sows the per-unit KL to N(0, I).

  Returns (z, {'mean', 'log_var'}); z = μ when deterministic.
  """
  features: int
  deterministic: bool | None = None
  rng_collection: str = 'noise'
  sampler: layers.NoiseSampler = layers.JAX_RANDOM

  @nn.compact
  def __call__(self, h: Array, deterministic: bool | None = None) -> tuple[Array, dict[str, Array]]:
    mean = nn.Dense(self.features, name='mean')(h).astype(jnp.float32)
    log_var = nn.Dense(self.features, name='log_var')(h).astype(jnp.float32)
    self._sow_kl(gaussian_kl(mean, log_var), deterministic)
    posterior = {'mean': mean, 'log_var': log_var}
    key = self._noise_key(deterministic)
    if key is None:
      return mean, posterior
    return mean + jnp.exp(0.5 * log_var) * self.sampler.normal(key, mean.shape, jnp.float32), posterior


class InformationLatent(nn.Module):
  """z = f ⊙ exp(α ε): f = act(Dense(h)), α = 0.001 + max_alpha · sigmoid(Dense(h)), via `layers.InformationDropout`.

  softplus f gets the learned log-normal prior, ReLU f the log-uniform one (`layers.default_prior`); the layer
  sows the KL. Returns (z, {'f', 'alpha'}); z = f when deterministic.
  """
  features: int
  activation: str = 'softplus'
  max_alpha: float = 1.0
  deterministic: bool | None = None
  sampler: layers.NoiseSampler = layers.JAX_RANDOM

  @nn.compact
  def __call__(self, h: Array, deterministic: bool | None = None) -> tuple[Array, dict[str, Array]]:
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    f = layers.ACTIVATIONS[self.activation](nn.Dense(self.features, name='signal')(h)).astype(jnp.float32)
    alpha_logits = nn.Dense(self.features, name='alpha')(h).astype(jnp.float32)
    z = layers.InformationDropout(max_alpha=self.max_alpha, prior=layers.default_prior(self.activation),
                                  sampler=self.sampler, name='noise')(f, alpha_logits, deterministic=deterministic)
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

  Plain Flax by default; `conv`, `conv_transpose` (the conv architecture) and `sampler` (the Gaussian and
  information latents' noise) take other parts, as the classifiers' fields do (`models`).
  """
  image_shape: tuple[int, ...]
  latent: str = 'gaussian'
  architecture: str = 'mlp'
  latent_size: int = 2
  hidden_size: int = 256
  hidden_layers: int = 1
  info_activation: str = 'softplus'
  max_alpha: float = 1.0
  d_max: int = echo.DEFAULT_D_MAX
  clip_factor: float | None = None
  echo_replace: bool = False
  echo_f_scale: float = 64.0
  deterministic: bool | None = None
  conv: ModuleDef = nn.Conv
  conv_transpose: ModuleDef = nn.ConvTranspose
  sampler: layers.NoiseSampler = layers.JAX_RANDOM

  def setup(self):
    if self.latent not in LATENTS:
      raise ValueError(f'VAE: unknown latent {self.latent!r}; expected one of {LATENTS}.')
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f'VAE: unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}.')
    if self.architecture == 'conv':
      if tuple(self.image_shape[:2]) != _CONV_IMAGE_SIZE:
        raise ValueError(f'VAE: the conv architecture needs 28×28 images, got image_shape={self.image_shape}.')
      self.encoder = ConvEncoder(conv=self.conv)
      self.decoder = ConvDecoder(channels=self.image_shape[-1], conv=self.conv, conv_transpose=self.conv_transpose)
    else:
      self.encoder = MLPEncoder(self.hidden_size, self.hidden_layers)
      self.decoder = MLPDecoder(tuple(self.image_shape), self.hidden_size, self.hidden_layers)
    if self.latent == 'gaussian':
      self.latent_layer = GaussianLatent(self.latent_size, sampler=self.sampler)
    elif self.latent == 'information':
      self.latent_layer = InformationLatent(self.latent_size, self.info_activation, self.max_alpha,
                                            sampler=self.sampler)
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


def create_model(config: ml_collections.ConfigDict, image_shape: Sequence[int], **parts: Any) -> VAE:
  """The VAE `config.vae` describes, for images of `image_shape` (H, W, C); `parts` (`conv`, `conv_transpose`,
  `sampler`) replace Flax's defaults, those the VAE has no field for are left out."""
  c = config.vae
  parts = {k: v for k, v in parts.items() if k in VAE.__dataclass_fields__}
  return VAE(image_shape=tuple(int(s) for s in image_shape), latent=c.latent, architecture=c.architecture,
             latent_size=int(c.latent_size), hidden_size=int(c.hidden_size),
             hidden_layers=int(c.get('hidden_layers', 1)), info_activation=c.info_activation,
             max_alpha=float(c.max_alpha), d_max=int(c.d_max),
             clip_factor=float(c.echo_clip_factor) if c.echo_clip_factor else None,
             echo_replace=bool(c.echo_replace), echo_f_scale=float(c.echo_f_scale), **parts)


def has_proper_prior(config: ml_collections.ConfigDict) -> bool:
  """Whether q and p(z) are both densities, so that the IW bound exists: Gaussian, or softplus information latents."""
  return config.vae.latent == 'gaussian' or (config.vae.latent == 'information' and
                                             config.vae.info_activation == 'softplus')


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
      loc, scale = jnp.log(jnp.maximum(posterior['f'], noise_lib.LOG_F_FLOOR)), posterior['alpha']
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
