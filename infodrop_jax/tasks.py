"""What the one trainer optimises and reports: a task is the model it builds, its loss and its test metrics.

`train.train_and_evaluate(config, workdir)` takes the task named by `config.task` ('classification' unless a
config says otherwise) from `TASKS`; a caller may also pass its own object with the same methods:

  create_model(config, splits, **parts) -> nn.Module
                                                  the model, called as every model here (see `models`); `parts`
                                                  (`conv`, `norm`, `sampler`, ...) are the modules to build it from
                                                  when the run's CPU speed-ups are on (`infodrop_jax.cpu`), and
                                                  absent otherwise: a model of Flax's own parts
  validate_config(config, check) -> None          task-specific fields; check(ok, 'field.path', 'what was expected')
  loss(outputs, batch, kl_collection, *, beta, n_train) -> (loss, metrics)
                                                  the per-batch objective without weight decay, and train metrics
  eval_sums(outputs, batch, kl_collection, mask) -> sums over the batch's real examples ('count' included)
  eval_results(sums_d, sums_n) -> {'test/...': float}
                                                  from the test-set sums with the noise off (D) and on (N)

`outputs` is whatever the model returns; `kl_collection` is the 'kl' collection the call sowed (see `kl`). All of
these run inside the compiled step, so they must be pure jnp functions of their arguments.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from infodrop_jax import config_checks
from infodrop_jax import echo
from infodrop_jax import kl as kl_lib
from infodrop_jax import models
from infodrop_jax import vae

Array = jax.Array
Check = config_checks.Check
Sums = dict[str, jax.Array]


class Task(Protocol):
  """The contract of a task (see the module docstring)."""

  def create_model(self, config: ml_collections.ConfigDict, splits: Any, **parts: Any) -> nn.Module: ...

  def validate_config(self, config: ml_collections.ConfigDict, check: Check) -> None: ...

  def loss(self, outputs: Any, batch: Mapping[str, jax.Array], kl_collection: Any, *, beta: float,
           n_train: int) -> tuple[jax.Array, dict[str, jax.Array]]: ...

  def eval_sums(self, outputs: Any, batch: Mapping[str, jax.Array], kl_collection: Any, mask: jax.Array) -> Sums: ...

  def eval_results(self, sums_d: Mapping[str, Any], sums_n: Mapping[str, Any]) -> dict[str, float]: ...


def masked_kl_per_layer_sums(kl_collection: Any, mask: jax.Array) -> Sums:
  """{'kl/<layer>': Σ over the real examples of Σ_units KL}: the per-layer KL of a padded evaluation batch."""
  masked = jax.tree.map(lambda m: m * mask.reshape((-1,) + (1,) * (m.ndim - 1)).astype(m.dtype), kl_collection)
  # kl_per_layer averages over the batch; scaling back by the batch size gives the sum over the unpadded examples.
  return {f'kl/{name}': value * mask.shape[0] for name, value in kl_lib.kl_per_layer(masked).items()}


class Classification:
  """The paper's classifiers: loss = CE + beta·Lz with Lz = Σ_layers mean_batch(Σ_units KL) / N_train.

  Train metrics: ce, beta_lz, accuracy, kl/<layer> (nats per example). Test results: error and CE with the noise
  off (D) and on (N), and the per-layer KL (the KL depends on the noise only through its parameters, so the noisy
  pass reports it for every method).
  """
  name = 'classification'

  def create_model(self, config: ml_collections.ConfigDict, splits: Any, **parts: Any) -> nn.Module:
    return models.create_model(config.model, splits.num_classes, **parts)

  def validate_config(self, config: ml_collections.ConfigDict, check: Check) -> None:
    del check  # The model's fields are validated in one place, `models.validate_config`, with its own messages.
    models.validate_config(config.model)

  def loss(self, outputs, batch, kl_collection, *, beta, n_train):
    logits = outputs.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels']).mean()
    beta_lz = beta * kl_lib.total_kl(kl_collection, n_train)
    metrics = {'ce': ce, 'beta_lz': beta_lz, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['labels'])}
    metrics.update({f'kl/{name}': value for name, value in kl_lib.kl_per_layer(kl_collection).items()})
    return ce + beta_lz, metrics

  def eval_sums(self, outputs, batch, kl_collection, mask):
    logits = outputs.astype(jnp.float32)
    mask = mask.astype(jnp.float32)
    sums = {'correct': jnp.sum(mask * (jnp.argmax(logits, -1) == batch['labels'])),
            'ce': jnp.sum(mask * optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels'])),
            'count': jnp.sum(mask)}
    sums.update(masked_kl_per_layer_sums(kl_collection, mask))
    return sums

  def eval_results(self, sums_d, sums_n):
    count = float(sums_d['count'])
    result = {'test/error_d': 1.0 - float(sums_d['correct']) / count,
              'test/error_n': 1.0 - float(sums_n['correct']) / count,
              'test/ce_d': float(sums_d['ce']) / count, 'test/ce_n': float(sums_n['ce']) / count}
    result.update({f'test/{k}': float(v) / count for k, v in sums_n.items() if k.startswith('kl/')})
    return result


class VAETask:
  """The trainer's task for `config.task = 'vae'`: loss = mean_batch(D + β·R), R in nats per example (no ÷ N_train).

  Train metrics: distortion, rate, neg_elbo (nats per example). Test results (`summary.json`): test/distortion,
  test/rate, test/neg_elbo from the noisy pass (the ELBO needs the noise), test/distortion_d from the noise-free
  reconstruction (z = μ or f). Echo noise in the noisy test pass is built from the other members of each test batch.
  """
  name = 'vae'

  def __init__(self, likelihood: str = 'bernoulli'):
    self.likelihood = likelihood

  def create_model(self, config: ml_collections.ConfigDict, splits: Any, **parts: Any) -> nn.Module:
    self.likelihood = config.vae.likelihood
    return vae.create_model(config, splits.train.images.shape[1:], **parts)

  def validate_config(self, config: ml_collections.ConfigDict, check: Check) -> None:
    if config.get('vae') is None:
      raise ValueError("config.vae is missing: config.task = 'vae' needs a config.vae section (see "
                       'configs/vae_mnist.py).')
    c = config.vae
    check(c.latent in vae.LATENTS, 'vae.latent', f'one of {vae.LATENTS}')
    check(c.architecture in vae.ARCHITECTURES, 'vae.architecture', f'one of {vae.ARCHITECTURES}')
    check(c.likelihood in vae.LIKELIHOODS, 'vae.likelihood', f'one of {vae.LIKELIHOODS}')
    check(c.info_activation in vae.INFO_ACTIVATIONS, 'vae.info_activation',
          f"one of {vae.INFO_ACTIVATIONS} (softplus: learned log-normal prior; relu: log-uniform prior)")
    check(int(c.latent_size) > 0, 'vae.latent_size', 'a positive int')
    check(int(c.hidden_size) > 0, 'vae.hidden_size', 'a positive int')
    check(int(c.get('hidden_layers', 1)) > 0, 'vae.hidden_layers', 'a positive int')
    check(float(c.max_alpha) > 0, 'vae.max_alpha', 'a positive float')
    check(float(c.echo_f_scale) > 0, 'vae.echo_f_scale', 'a positive float')
    check(0.0 <= float(c.echo_clip_factor) < 1.0, 'vae.echo_clip_factor', 'a float in (0, 1), or 0 for the default')
    check(int(c.iw_samples) > 0, 'vae.iw_samples', 'a positive int')
    check(int(c.iw_examples) >= 0, 'vae.iw_examples', 'an int >= 0 (0 = the whole test set)')
    ks = [int(k) for k in c.get('iw_k_sweep', ()) or ()]
    check(all(k > 0 for k in ks) and ks == sorted(set(ks)), 'vae.iw_k_sweep',
          'increasing positive ints (the k of the IW bound to compare), or () for none')
    check(int(c.get('iw_k_sweep_examples', 0)) >= 0, 'vae.iw_k_sweep_examples', 'an int >= 0 (0 = the whole test set)')
    check(config.data.preprocess in vae.UNIT_PREPROCESSINGS, 'data.preprocess',
          f'images in [0, 1] for a Bernoulli-type likelihood: one of {vae.UNIT_PREPROCESSINGS}')
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
    distortion = vae.neg_log_likelihood(outputs['logits'], batch['images'], self.likelihood)
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


TASKS: dict[str, Callable[[], Task]] = {
    'classification': Classification,
    'vae': VAETask,
}


def register_task(name: str, factory: Callable[[], Task]) -> None:
  """Makes `config.task = name` select `factory()`: how a new experiment type plugs into the one trainer."""
  TASKS[name] = factory


def task_name(config: ml_collections.ConfigDict) -> str:
  # Workdirs written before tasks existed have no `task` field: they are classification runs.
  return config.get('task', 'classification')


def create_task(config: ml_collections.ConfigDict) -> Task:
  name = task_name(config)
  if name not in TASKS:
    raise ValueError(f'config.task = {name!r}: expected one of {tuple(TASKS)}.')
  return TASKS[name]()
