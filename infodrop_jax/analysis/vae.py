"""The analysis of a trained VAE run (`--mode=analyze` of a `config.task = 'vae'` run) and the rate–distortion plane.

`analyze_vae(train.restore(W), out_dir)` writes reconstructions, samples, the 2-d latent (when there is one) and
the importance-weighted bound on −log p(x) (`vae.importance_weighted_nll`); `plot_rate_distortion` draws the
rate–distortion plane of several runs.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from infodrop_jax import kl as kl_lib
from infodrop_jax import train
from infodrop_jax import vae
from infodrop_jax.data import preprocess

Array = jax.Array


def _test_images(config: ml_collections.ConfigDict, images: np.ndarray, key: Array) -> np.ndarray:
  """The test images as the model sees them: [0, 1], one fixed Bernoulli draw for 'binarize_stochastic'."""
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


def _iw_k_sweep(model, variables, x: np.ndarray, ks: list[int], examples: int, key: jax.Array, likelihood: str,
                batch: int, out_dir: str) -> dict[str, Any]:
  """The IW bound at each k of `ks` on one fixed random subset of `examples` test images (0 = all), and the paired
  change from each k to the next (mean over the same images, its standard error from their differences): the
  bound's expectation cannot rise with k, so a change clearly above 0 is a bug of the bound."""
  n = len(x)
  count = min(examples or n, n)
  subset = np.sort(np.random.default_rng(0x1AF).permutation(n)[:count])
  per_k = np.stack([vae.importance_weighted_nll(model, variables, x[subset], num_samples=k,
                                                key=jax.random.fold_in(key, i), likelihood=likelihood,
                                                batch_size=batch) for i, k in enumerate(ks)])
  np.savez(os.path.join(out_dir, 'iw_k_sweep.npz'), nll=per_k, k=np.array(ks), index=subset)
  sem = lambda v: float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float('nan')
  steps = [{'from_k': ks[i], 'to_k': ks[i + 1], 'change': float((per_k[i + 1] - per_k[i]).mean()),
            'stderr': sem(per_k[i + 1] - per_k[i])} for i in range(len(ks) - 1)]
  return {'examples': int(count), 'k': ks, 'nll': [float(v.mean()) for v in per_k],
          'stderr': [sem(v) for v in per_k], 'steps': steps}


def analyze_vae(restored: train.RestoredRun, out_dir: str) -> dict[str, Any]:
  """Writes the analysis of a VAE run opened by `train.restore` into `out_dir`.

  Files: reconstructions.png/.npz (test inputs, noisy-pass and noise-free reconstructions as E[x|z]),
  samples.png/.npz (decoded draws from the prior for Gaussian and softplus-information latents; from the aggregate
  posterior q(z) = E_x q(z|x), i.e. noisy codes of random test images, for Echo, whose prior *is* q(z), and for the
  improper log-uniform prior), latent_2d.png/.npz (noisy codes of the test set coloured by label, 2-d latents
  only), iw_nll.npz (per-example IW bound, when it exists, on `vae.iw_examples` test images drawn at random once,
  their indices in `index`) and analysis.json (the returned dict).

  Returns:
    {'step', 'beta', 'latent', 'architecture', 'latent_size', 'dataset', 'likelihood', the trainer's test results
    (test/rate, test/distortion, test/neg_elbo, test/distortion_d: the same evaluation as summary.json), and
    'test/iw_nll' with 'test/iw_nll_stderr', 'iw_samples', 'iw_examples' (or 'iw_nll_unavailable': why), and
    'iw_k_sweep' (`_iw_k_sweep`, with iw_k_sweep.npz) when `vae.iw_k_sweep` names its k}.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (no global backend change)

  run, config = restored.run, restored.config
  results: dict[str, Any] = {
      'step': restored.step, 'beta': float(config.loss.beta), 'latent': config.vae.latent,
      'architecture': config.vae.architecture, 'latent_size': int(config.vae.latent_size),
      'dataset': config.data.name, 'likelihood': config.vae.likelihood}
  results.update(run.evaluate(restored.state))
  variables = {'params': run.parallel.first_step_replica(restored.state.params)}

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
    clean = model.apply(variables, x, method=vae.VAE.encode)
    return noisy['z'], noisy['logits'], clean['z'], model.apply(variables, clean['z'], method=vae.VAE.decode)

  z_noisy, z_clean, recon_noisy, recon_clean = [], [], [], []
  num_recon = 10
  for i, start in enumerate(range(0, n, batch)):
    idx = np.arange(start, start + batch) % n
    zn, ln, zc, lc = passes(jnp.asarray(x[idx]), jax.random.fold_in(key, 1000 + i))
    keep = min(batch, n - start)
    z_noisy.append(np.asarray(zn)[:keep])
    z_clean.append(np.asarray(zc)[:keep])
    if i == 0:
      recon_noisy = np.asarray(vae.likelihood_mean(ln[:num_recon], likelihood))
      recon_clean = np.asarray(vae.likelihood_mean(lc[:num_recon], likelihood))
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
  if vae.has_proper_prior(config):
    source = 'prior'
    sample_logits = vae.sample_prior(model, variables, jax.random.fold_in(key, 2), num_samples)
    codes = None
  else:
    source = 'aggregate posterior'
    picks = jax.random.choice(jax.random.fold_in(key, 2), n, (num_samples,), replace=n < num_samples)
    codes = z_noisy[np.asarray(picks)]
    sample_logits = model.apply(variables, jnp.asarray(codes), method=vae.VAE.decode)
  samples = np.asarray(vae.likelihood_mean(sample_logits, likelihood))
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
  if vae.has_proper_prior(config):
    k, count = int(config.vae.iw_samples), min(int(config.vae.iw_examples) or n, n)
    # A fixed random subset, not the first `count`: MNIST's test set is ordered (its first 5000 images are the
    # cleaner, easier half), so a prefix would bias the bound low.
    subset = np.sort(np.random.default_rng(0x1AE).permutation(n)[:count]) if count < n else np.arange(n)
    nll = vae.importance_weighted_nll(model, variables, x[subset], num_samples=k, key=jax.random.fold_in(key, 3),
                                      likelihood=likelihood, batch_size=batch)
    np.savez(os.path.join(out_dir, 'iw_nll.npz'), nll=nll, labels=labels[subset], index=subset, num_samples=k)
    stderr = float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else float('nan')
    results.update({'test/iw_nll': float(nll.mean()), 'test/iw_nll_stderr': stderr, 'iw_samples': k,
                    'iw_examples': int(count)})
    ks = [int(k) for k in config.vae.get('iw_k_sweep', ()) or ()]
    if ks:
      results['iw_k_sweep'] = _iw_k_sweep(model, variables, x, ks, int(config.vae.get('iw_k_sweep_examples', 0)),
                                          jax.random.fold_in(key, 4), likelihood, batch, out_dir)
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
