"""Information planes of dropout networks, captured during training (Adilova, Geiger & Fischer, ICLR 2023).

With continuous multiplicative noise z = f(x) ⊙ ε a noisy layer's representation Z is a stochastic function of X, so
I(X;Z) is finite and the information plane (I(X;Z), I(Z;Y)) of that layer is well defined. `capture_hook(config)`
returns a training hook (`train.Hook`) that, at step 0, every `config.information_plane.every_epochs` epochs and at
the last step, takes a fixed subset of M training and M test examples and, for every noisy layer of the model:

- runs the model with the noise off to get the noise-free representation f(x) (the layer's output at
  deterministic=True) and the noise scale: α(x) sown by information dropout, σ = sqrt(p/(1−p)) for Gaussian dropout,
  the fixed α of constant log-normal noise, exp(½ log α) (capped at 1) for variational dropout;
- I(X;Z) = E[log p(z|x) − log p(z)] under the mixture p(z) = (1/M) Σ_j p(z|x_j) (`mutual_information.mixture_information`;
  ≤ log M, a lower bound in expectation) and its leave-one-out upper bound;
- the layer's KL term, mean over the examples of Σ_units KL (the 'kl' collection): what the loss pays for I(X;Z);
- I(Z;Y) two ways: H(Y) − H(Y|Z) from the same mixture, and the paper's bound I(Z;Y) ≥ H(Y) − CE, with CE the
  classifier's cross-entropy on those examples with the training noise on (the noisy network is a decoder of z;
  mean over `num_noise_samples` draws). CE with the noise off is recorded too.

Binary (Bernoulli) dropout has no finite I(X;Z) for continuous inputs (Z has atoms that identify x), so its layers
are recorded with null values and the reason. Each capture is one JSON line in `W/information_plane.jsonl`:

  {"step": s, "epoch": e, "method": "information", "beta": 3.0, "num_examples": M, "log_m": log M,
   "train": {"h_y", "ce_d", "ce_n", "error_d", "error_n", "izy_ce_d", "izy_ce_n",
             "layers": {"hidden3": {"noise", "units", "ixz", "ixz_stderr", "ixz_loo", "ixz_loo_stderr", "izy",
                                    "izy_stderr", "kl", "mean_scale", "dead_units"}}},
   "test": {...}, "capture_time_s": t}

All information is in nats. The hook never touches the training state or keys (its own keys derive from
`information_plane.seed`), so turning it on leaves the training trajectory bit for bit unchanged. On resume, records
(and saved representations) past the checkpointed step are dropped first, as `metrics.jsonl`'s are, so none is
duplicated.

`CaptureHook.m_stability` (run by `--mode=analyze` on the final checkpoint) estimates each layer's I(X;Z) on M and
on 2M other training examples: an estimate that doubling M moves by more than its noise is still limited by M (the
mixture estimate is biased low, towards log M, when M is too small).

`load_records` reads them back; `infodrop_jax.analysis.plane_figures` turns them into figures, an npz of the arrays
and numbers for analysis.json.
"""
from __future__ import annotations

import glob
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from infodrop_jax import config_checks
from infodrop_jax import kl as kl_lib
from infodrop_jax import mutual_information
from infodrop_jax import layers
from infodrop_jax import metrics as metrics_lib
from infodrop_jax.data import preprocess

RECORDS_FILE = 'information_plane.jsonl'
REPRESENTATIONS_DIR = 'information_plane'
SPLITS = ('train', 'test')

# The noise family of the estimator for each method of `layers.METHODS`; None: no finite I(X;Z) ('binary') or no
# noise at all ('none', such layers are not captured).
NOISE_FAMILY = {'information': 'lognormal', 'lognormal_constant': 'lognormal', 'gaussian': 'gaussian',
                'variational': 'gaussian', 'binary': None, 'none': None}
BINARY_REASON = ('binary dropout: z = f·m/keep with m ∈ {0, 1}^D takes at most 2^D values per x, which identify x '
                 'for continuous inputs, so I(X;Z) = H(X) is infinite (Adilova et al., 2023, Sec. 3)')
# Folded into the root key so the hook's keys never coincide with the trainer's (fold_in(PRNGKey(seed), 0..6)).
_KEY_TAG = 0x1F0_91A7


# --- configuration ------------------------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict, split_sizes: Mapping[str, int] | None = None) -> None:
  """Raises ValueError naming the first bad `config.information_plane` field; called before anything compiles.

  `split_sizes` ({'train': n, 'test': n}) also checks that M = num_examples fits in both splits.
  """
  ip = config.get('information_plane')
  if ip is None:
    raise ValueError('config.information_plane is missing; add it as in configs/base.py.')

  check = config_checks.checker(ip, 'information_plane')
  is_int = config_checks.is_int
  for field in ('every_epochs', 'num_examples', 'num_noise_samples', 'chunk_size'):
    check(is_int(ip.get(field)) and ip.get(field) > 0, field, 'a positive int')
  check(ip.num_examples >= 2, 'num_examples', 'an int >= 2 (the mixture estimators need two examples)')
  check(is_int(ip.get('seed')), 'seed', 'an int')
  check(isinstance(ip.get('save_representations'), bool), 'save_representations', 'a bool')
  check(isinstance(ip.get('max_saved_mb'), (int, float)) and ip.max_saved_mb >= 0, 'max_saved_mb', 'a float >= 0')
  task = config.get('task', 'classification')
  if task != 'classification':
    raise ValueError(f'config.information_plane.enabled needs a classification task (I(Z;Y) of class labels); '
                     f'config.task = {task!r}.')
  if split_sizes is not None:
    for split, size in split_sizes.items():
      check(ip.num_examples <= size, 'num_examples',
            f'at most the size of the {split} split ({size} examples): M examples are drawn from each split')


def capture_hook(config: ml_collections.ConfigDict) -> 'CaptureHook':
  """The information-plane hook of `config` (checked here; the split sizes are checked by `prepare`)."""
  return CaptureHook(config)


# --- capture ------------------------------------------------------------------------------------------------------


def _is_noisy_projection(module: Any, method_name: str) -> bool:
  """capture_intermediates filter: the outputs of the noisy layers (their noise-free f when deterministic)."""
  return (method_name == '__call__' and isinstance(module, (layers.InformationDropoutConv,
                                                            layers.InformationDropoutDense))
          and module.method != 'none')


def _path_keys(path: tuple[Any, ...]) -> list[str]:
  return [entry.key for entry in path if isinstance(getattr(entry, 'key', None), str)]


def _finite_or_none(value: Any) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def _entropy(labels: np.ndarray) -> float:
  p = np.bincount(labels) / labels.size
  p = p[p > 0]
  return float(-np.sum(p * np.log(p)))


class CaptureHook:
  """`train.Hook` that appends an information-plane record every `every_epochs` epochs (see the module doc).

  Called as hook(run, state, step). `prepare(run)` (called by the trainer before anything compiles, else at the
  first call) checks the split sizes, draws the fixed example subsets and drops stale records of a crashed run.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    validate_config(config)
    self.config = config
    ip = config.information_plane
    self.every_epochs = int(ip.every_epochs)
    self.num_examples = int(ip.num_examples)
    self.num_noise_samples = int(ip.num_noise_samples)
    self.chunk_size = int(ip.chunk_size)
    self.save_representations = bool(ip.save_representations)
    self.max_saved_bytes = float(ip.max_saved_mb) * 2**20
    self.method = str(config.model.get('dropout', 'none'))
    self.beta = float(config.loss.beta)
    self._root = jax.random.fold_in(jax.random.PRNGKey(int(ip.seed)), _KEY_TAG)
    self._seed = int(ip.seed)
    self._prepared = False
    self._examples: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    self._fn = None
    self._saving_warned = False

  # --- setup ---

  def prepare(self, run: Any, resume_step: int | None = None) -> None:
    """Checks M against the splits, draws the subsets, trims records past `resume_step` (default: the checkpoint's).

    A fresh run (no checkpoint) starts the records afresh: anything in the file came from a run that never reached
    a checkpoint and is recomputed.
    """
    if self._prepared:
      return
    splits = {'train': run.splits.train, 'test': run.splits.test}
    validate_config(self.config, {name: int(split.labels.shape[0]) for name, split in splits.items()})
    # Fixed subsets from the hook's own seed, independent of the training keys and of the device count.
    rng = np.random.default_rng([self._seed, _KEY_TAG])
    for name, split in splits.items():
      index = np.sort(rng.choice(split.labels.shape[0], self.num_examples, replace=False))
      self._examples[name] = (index, np.asarray(split.images[index]), np.asarray(split.labels[index], np.int32))
    if resume_step is None:
      resume_step = run.checkpointer.latest_step()
    self._trim(run.workdir, -1 if resume_step is None else int(resume_step))
    self._prepared = True

  def _trim(self, workdir: str, last_kept_step: int) -> None:
    if jax.process_index() != 0:
      return
    path = os.path.join(workdir, RECORDS_FILE)
    if os.path.exists(path):
      # The same rewrite as metrics.jsonl's on resume (atomic; a torn last line goes too).
      metrics_lib.drop_records_after(path, last_kept_step)
    for npz in glob.glob(os.path.join(workdir, REPRESENTATIONS_DIR, 'step_*.npz')):
      if int(os.path.basename(npz)[len('step_'):-len('.npz')]) > last_kept_step:
        os.remove(npz)

  def _compiled(self, run: Any):
    """The network-side work of one split in one compiled call (compiled once per hook; eager ops would each
    compile on first use, seconds in all on CPU):

    (variables, uint8-or-float images, labels, key) → CE and error with the noise off and on (mean over
    `num_noise_samples` draws), per-layer mean KL, and per noisy layer its noise-free f [N, D], the information
    dropout α(x) [N, D] where sown, and the number of units that are 0 on every example.
    """
    if self._fn is None:
      model, draws = run.model, self.num_noise_samples

      def analyse(variables, images, labels, key):
        images = preprocess.to_unit_interval(images)
        # Stochastic binarisation draws its pixels from the hook's key, never from the trainer's.
        images = run.model_inputs({'images': images, 'labels': labels}, jax.random.fold_in(key, 0))['images']
        logits, cols = model.apply(variables, images, deterministic=True, use_running_average=True,
                                   mutable=[kl_lib.KL_COLLECTION, 'intermediates'],
                                   capture_intermediates=_is_noisy_projection)
        ce = lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
        error = lambda logits: jnp.mean(jnp.argmax(logits, -1) != labels)
        out = {'ce_d': jnp.mean(ce(logits)), 'error_d': error(logits),
               'kl': kl_lib.kl_per_layer(cols.get(kl_lib.KL_COLLECTION)), 'f': {}, 'alpha': {}, 'dead': {}}
        for path, leaf in jax.tree_util.tree_flatten_with_path(cols.get('intermediates', {}))[0]:
          keys = _path_keys(path)
          if keys and keys[-1] == '__call__':
            name = '/'.join(keys[:-1])
            out['f'][name] = leaf.astype(jnp.float32)
            out['dead'][name] = jnp.sum(jnp.all(leaf.reshape(leaf.shape[0], -1) == 0, axis=0))
          elif keys[-2:] == ['noise', 'alpha']:
            out['alpha']['/'.join(keys[:-2])] = leaf.astype(jnp.float32)

        def noisy(key):
          # mutable 'kl': the noise layers expect their KL to be collected when the noise is on.
          logits, _ = model.apply(variables, images, deterministic=False, use_running_average=True,
                                  rngs={'noise': key}, mutable=[kl_lib.KL_COLLECTION])
          return jnp.mean(ce(logits)), error(logits)
        ce_n, error_n = jax.lax.map(noisy, jax.random.split(jax.random.fold_in(key, 1), draws))
        out.update(ce_n=jnp.mean(ce_n), error_n=jnp.mean(error_n))
        return out

      self._fn = run.parallel.jit(analyse)
    return self._fn

  # --- the hook ---

  def due(self, run: Any, step: int) -> bool:
    epoch, within = divmod(step, run.steps_per_epoch)
    return not within and (epoch % self.every_epochs == 0 or step == run.total_steps)

  def recorded(self, run: Any, step: int) -> bool:
    """Whether the capture of `step` is done: not due, or in the records file (written before its headline numbers
    go to metrics.jsonl). The trainer redoes a capture a killed run did not finish (`train.Hook`)."""
    if not self.due(run, step):
      return True
    try:
      records = load_records(run.workdir)
    except FileNotFoundError:
      return False
    return any(r.get('step') == step for r in records)

  def __call__(self, run: Any, state: Any, step: int) -> dict[str, float] | None:
    if not self.due(run, step):
      return None
    if not self._prepared:  # Called without the trainer's prepare: nothing past this step can be valid.
      latest = run.checkpointer.latest_step()
      self.prepare(run, resume_step=min(step - 1, latest if latest is not None else -1))
    if jax.process_index() != 0:
      return None
    start = time.perf_counter()
    host = run.parallel.first_step_replica({'params': state.params, 'batch_stats': state.batch_stats})
    variables = {'params': host['params']}
    if host['batch_stats']:
      variables['batch_stats'] = host['batch_stats']
    key = jax.random.fold_in(self._root, step)
    record: dict[str, Any] = {'step': int(step), 'epoch': step / run.steps_per_epoch, 'method': self.method,
                              'beta': self.beta, 'num_examples': self.num_examples,
                              'num_noise_samples': self.num_noise_samples, 'log_m': math.log(self.num_examples)}
    saved: dict[str, np.ndarray] = {}
    for i, split in enumerate(SPLITS):
      record[split] = self._capture_split(run, variables, split, jax.random.fold_in(key, i), saved)
    if self.save_representations:
      record['representations'] = self._save(run.workdir, step, saved)
    record['capture_time_s'] = time.perf_counter() - start
    with open(os.path.join(run.workdir, RECORDS_FILE), 'a', encoding='utf-8') as f:
      f.write(json.dumps(record) + '\n')
    return _scalars(record)

  def _capture_split(self, run: Any, variables: dict[str, Any], split: str, key: jax.Array,
                     saved: dict[str, np.ndarray]) -> dict[str, Any]:
    _, images, labels = self._examples[split]
    net = jax.device_get(self._compiled(run)(variables, images, labels, key))
    h_y, ce_d, ce_n = _entropy(labels), float(net['ce_d']), float(net['ce_n'])
    out: dict[str, Any] = {
        'h_y': h_y, 'ce_d': _finite_or_none(ce_d), 'ce_n': _finite_or_none(ce_n),
        'error_d': float(net['error_d']), 'error_n': float(net['error_n']),
        'izy_ce_d': _finite_or_none(h_y - ce_d), 'izy_ce_n': _finite_or_none(h_y - ce_n), 'layers': {}}
    if self.save_representations:
      saved[f'{split}/labels'] = labels
      saved[f'{split}/indices'] = self._examples[split][0]
    for j, (name, f) in enumerate(sorted(net['f'].items())):
      kl = [float(v) for k, v in net['kl'].items() if k == name or k.startswith(name + '/')]
      layer = {'noise': NOISE_FAMILY.get(self.method), 'units': int(np.prod(f.shape[1:])),
               'kl': sum(kl) if kl else None, 'dead_units': int(net['dead'][name])}
      scale = self._noise_scale(variables['params'], name, f, net['alpha'].get(name))
      if self.save_representations:
        saved[f'{split}/{name}/f'] = f.reshape(f.shape[0], -1)
        if scale is not None:
          saved[f'{split}/{name}/scale'] = scale
      layer.update(self._estimate(f.reshape(f.shape[0], -1), scale, labels, jax.random.fold_in(key, 2 + j)))
      out['layers'][name] = layer
    return out

  def m_stability(self, run: Any, variables: dict[str, Any]) -> dict[str, Any]:
    """{layer: {'m', 'ixz', 'ixz_stderr', 'ixz_2m', 'ixz_2m_stderr'}} of the noisy layers on the training split:
    I(X;Z) estimated on M examples and on 2M others (disjoint, so the two errors are independent), with `variables`
    (the final checkpoint's). {'unavailable': why} where the split has fewer than 3M examples."""
    m = self.num_examples
    train_split = run.splits.train
    n = int(train_split.labels.shape[0])
    if n < 3 * m:
      return {'unavailable': f'the training split has {n} examples, fewer than the 3M = {3 * m} that M and 2M '
                             f'disjoint examples need'}
    index = np.random.default_rng([self._seed, _KEY_TAG, 2]).choice(n, 3 * m, replace=False)
    key = jax.random.fold_in(self._root, _KEY_TAG)  # no capture's key (those fold in a step)
    out: dict[str, Any] = {}
    for i, (suffix, subset) in enumerate((('', np.sort(index[:m])), ('_2m', np.sort(index[m:])))):
      images = np.asarray(train_split.images[subset])
      labels = np.asarray(train_split.labels[subset], np.int32)
      net = jax.device_get(self._compiled(run)(variables, images, labels, jax.random.fold_in(key, i)))
      for j, (name, f) in enumerate(sorted(net['f'].items())):
        scale = self._noise_scale(variables['params'], name, f, net['alpha'].get(name))
        if scale is None:
          continue
        estimate = self._estimate(f.reshape(f.shape[0], -1), scale, labels, jax.random.fold_in(key, 2 + 2 * j + i))
        out.setdefault(name, {'m': m}).update({f'ixz{suffix}': estimate['ixz'],
                                               f'ixz{suffix}_stderr': estimate['ixz_stderr']})
    return out

  def _noise_scale(self, params: Any, name: str, f: np.ndarray, alpha: np.ndarray | None) -> np.ndarray | None:
    """The layer's noise scale (σ or α) as [N, D] (per example) or [D] (per unit) for f [N, ...]; None: no noise
    family with a finite I(X;Z)."""
    model = self.config.model
    if self.method == 'information':
      return np.asarray(alpha, np.float32).reshape(f.shape[0], -1)
    if self.method == 'gaussian':
      scale = math.sqrt(model.dropout_rate / (1.0 - model.dropout_rate))
    elif self.method == 'lognormal_constant':
      scale = float(model.lognormal_alpha)
    elif self.method == 'variational':  # N(1, α), α = exp(log α) capped at 1, one per feature (last axis).
      node = params
      for part in name.split('/') + ['noise', 'log_alpha']:
        node = node[part]
      scale = np.exp(0.5 * np.minimum(np.asarray(node, np.float32), 0.0))
    else:
      return None
    return np.broadcast_to(np.asarray(scale, np.float32), f.shape[1:]).reshape(-1)

  def _estimate(self, f: np.ndarray, scale: np.ndarray | None, labels: np.ndarray,
                key: jax.Array) -> dict[str, Any]:
    """I(X;Z) (mixture and leave-one-out) and I(Z;Y) (mixture) of one layer, with their standard errors."""
    fields = ('ixz', 'ixz_stderr', 'ixz_loo', 'ixz_loo_stderr', 'izy', 'izy_stderr')
    if scale is None:
      reason = BINARY_REASON if self.method == 'binary' else f'no noise (method {self.method!r})'
      return {**dict.fromkeys(fields), 'mean_scale': None, 'reason': reason}
    if not scale.min() > 0:  # Gaussian dropout at rate 0: a deterministic layer.
      return {**dict.fromkeys(fields), 'mean_scale': 0.0,
              'reason': 'noise scale 0: the layer is deterministic, I(X;Z) is infinite'}
    info = mutual_information.mixture_information(f, labels, noise=NOISE_FAMILY[self.method], scale=scale, key=key,
                                           num_noise_samples=self.num_noise_samples, chunk_size=self.chunk_size)
    values = (info.i_xz.value, info.i_xz.stderr, info.i_xz_leave_one_out.value, info.i_xz_leave_one_out.stderr,
              info.i_zy.value, info.i_zy.stderr)
    return {**{k: _finite_or_none(v) for k, v in zip(fields, values)}, 'mean_scale': float(scale.mean())}

  def _save(self, workdir: str, step: int, arrays: dict[str, np.ndarray]) -> str | None:
    """Writes this capture's arrays to W/information_plane/step_<step>.npz unless that passes max_saved_mb."""
    directory = os.path.join(workdir, REPRESENTATIONS_DIR)
    used = sum(os.path.getsize(p) for p in glob.glob(os.path.join(directory, 'step_*.npz')))
    size = sum(a.nbytes for a in arrays.values())
    if used + size > self.max_saved_bytes:
      if not self._saving_warned:
        warnings.warn(f'information_plane: representations of step {step} ({size / 2**20:.1f} MB) would pass '
                      f'config.information_plane.max_saved_mb ({self.max_saved_bytes / 2**20:g} MB with '
                      f'{used / 2**20:.1f} MB saved); not saving them or later ones that do not fit.', RuntimeWarning)
        self._saving_warned = True
      return None
    os.makedirs(directory, exist_ok=True)
    name = f'step_{step:08d}.npz'
    np.savez(os.path.join(directory, name), **{k.replace('/', '__'): v for k, v in arrays.items()})
    return os.path.join(REPRESENTATIONS_DIR, name)


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
  """The record's finite headline numbers for metrics.jsonl and TensorBoard: info_plane/<split>/<layer>/<name>."""
  out = {}
  for split in SPLITS:
    out[f'info_plane/{split}/izy_ce_n'] = record[split]['izy_ce_n']
    for layer, values in record[split]['layers'].items():
      for name in ('ixz', 'izy', 'kl'):
        out[f'info_plane/{split}/{layer}/{name}'] = values.get(name)
  return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


# --- reading ------------------------------------------------------------------------------------------------------


def load_records(workdir: str) -> list[dict[str, Any]]:
  """The records of W/information_plane.jsonl in step order (a torn last line is skipped)."""
  path = os.path.join(workdir, RECORDS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: train with --config.information_plane.enabled=True first.')
  lines = metrics_lib.read_records(path)
  return sorted((json.loads(line) for line in lines), key=lambda r: r['step'])
