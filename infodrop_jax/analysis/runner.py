"""`--mode=analyze`: what a trained run learned, from its workdir (config.json + the latest checkpoint).

Writes `W/analysis/`: PNG figures, `analysis.json` (every number) and one `.npz` per figure holding the arrays it
was drawn from, so a report can re-plot without re-running. The same checkpoint always gives the same numbers: every
random draw comes from keys derived from the run's seed.

Classifier analyses (each runs where it applies; the others are listed in analysis.json 'skipped' with the reason):
  train_error        error on the whole training split, noise off (D) and on (N), and the test error (D) again:
                     whether and how far the net overfits (the generalisation gap the paper's noise should close).
  heatmaps           KL of each noisy conv layer per location, noise off, for `num_images` test images (paper
                     Fig. 2); on datasets with boxes also the localisation of the maps over the whole test split.
  total_correlation  Gaussian TC of the last noisy layer's log z over the test split (paper Fig. 5): noise on (as
                     the original), and of the noise-off log f(x) with the floor independent features of the same
                     (d, n) and marginals give (shuffled columns); the excess over the floor is the evidence.
  info_per_layer     test-set mean KL per noisy layer (nats per example) and per unit (paper Fig. 6).
  prior_fit          histogram of the last noisy layer's log activations against its prior (paper Fig. 1).
  nuisance_probe     softmax regression on the frozen noisy representation predicting the nuisance label
                     (datasets with extras['nuisance_label'], paper Fig. 4).
  curves             training curves from metrics.jsonl.
  information_plane  the information-plane figures of W/information_plane.jsonl, when the run captured one, and
                     the final I(X;Z) on M and on 2M other training examples (whether the estimate is stable in M).
Runs of other tasks (e.g. VAEs) get their task's own analysis.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from infodrop_jax import checkpoint as checkpoint_lib
from infodrop_jax import information_plane as information_plane_lib
from infodrop_jax import kl as kl_lib
from infodrop_jax import layers
from infodrop_jax import tasks
from infodrop_jax import train
from infodrop_jax.analysis import config as analysis_config
from infodrop_jax.analysis import figures
from infodrop_jax.analysis import plane_figures
from infodrop_jax.analysis import stats
from infodrop_jax.analysis import vae as vae_analysis
from infodrop_jax.data import preprocess

# Floor of z in log z where a unit is exactly 0 (ReLU, binary dropout): the layers' own floor for log f.
LOG_Z_FLOOR = 1e-4
# The noise-off representation is kept in memory for its shuffled-columns floor up to this many values (float32:
# 240 MB); beyond, the floor is the closed form for Gaussian marginals alone.
MAX_SHUFFLED_VALUES = 60_000_000
LOG_Z_RANGE = (-10.0, 6.0)


class AnalysisError(ValueError):
  """A workdir or option the analysis cannot use; the message says what was expected."""


# --- forward passes ----------------------------------------------------------------------------------------------


def _is_noise_call(module: nn.Module, method_name: str) -> bool:
  return isinstance(module, layers.NoiseModule) and method_name == '__call__'


def _noise_outputs(intermediates: Mapping[str, Any]) -> dict[str, jax.Array]:
  """'layer/path' → output of each noise module's call, in the order the model ran them.

  Flax fills the collection in the order modules run; `jax.tree_util` would sort the keys instead (so All-CNN-32's
  `input_dropout` came after `block2_pool/noise`), hence the walk over the dicts as they are.
  """
  out = {}

  def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
    for key, value in node.items():
      if key == '__call__' and isinstance(value, tuple):
        out['/'.join(path)] = value[0]
      elif isinstance(value, Mapping):
        walk(value, path + (key,))

  walk(intermediates, ())
  return out


class _Forward:
  """The model on raw split images (as the pipeline would feed them): KL maps and the noise layers' outputs."""

  def __init__(self, run: Any, variables: Mapping[str, Any]):
    self.run, self.variables = run, variables
    model = run.model

    def apply(variables, raw_images, key, deterministic, mutable, **kwargs):
      binarize_key, noise_key = jax.random.split(key)
      batch = run.model_inputs({'images': preprocess.to_unit_interval(raw_images)}, binarize_key)
      return model.apply(variables, batch['images'], deterministic=deterministic, use_running_average=True,
                         rngs={'noise': noise_key}, mutable=mutable, **kwargs)

    def forward(variables, raw_images, key, deterministic):
      _, state = apply(variables, raw_images, key, deterministic, [kl_lib.KL_COLLECTION, 'intermediates'],
                       capture_intermediates=_is_noise_call)
      outputs = _noise_outputs(state.get('intermediates', {}))
      # jit and eval_shape hand dicts back with sorted keys: keep the run order, recorded while tracing.
      self.noise_order = tuple(outputs)
      return kl_lib.kl_maps_by_layer(state.get(kl_lib.KL_COLLECTION)), outputs

    def output(variables, raw_images, key, deterministic):
      return apply(variables, raw_images, key, deterministic, [kl_lib.KL_COLLECTION])[0]

    self.noise_order: tuple[str, ...] = ()
    self._fn = run.parallel.jit(forward, static_argnums=3)
    self._output_fn = run.parallel.jit(output, static_argnums=3)

  def __call__(self, raw_images: np.ndarray, key: jax.Array, deterministic: bool):
    return self._fn(self.variables, jnp.asarray(raw_images), key, deterministic)

  def output(self, raw_images: np.ndarray, key: jax.Array, deterministic: bool) -> jax.Array:
    """The model's output (a classifier's logits) on raw split images."""
    return self._output_fn(self.variables, jnp.asarray(raw_images), key, deterministic)


# --- the analyses --------------------------------------------------------------------------------------------------


class _Progress:
  """One line per step that takes a while (plain lines: they read well in logs too)."""

  def __init__(self, log: Callable[[str], None]):
    self.log = log
    self.start = time.perf_counter()

  def __call__(self, message: str) -> None:
    self.log(f'[analyze {time.perf_counter() - self.start:6.1f} s] {message}')


def _title(config: ml_collections.ConfigDict, test: Mapping[str, float], what: str) -> str:
  m = config.model
  error = ''
  if 'test/error_d' in test:
    error = f', test error {100 * test["test/error_d"]:.2f} % (D) / {100 * test["test/error_n"]:.2f} % (N)'
  return (f'{what} — {config.data.name}, {m.name}, {m.dropout} dropout ({m.activation}), '
          f'β = {config.loss.beta:g}{error}')


def _requested(options: ml_collections.ConfigDict) -> tuple[str, ...] | None:
  only = tuple(s.strip() for s in str(options.only).split(',') if s.strip())
  unknown = [s for s in only if s not in analysis_config.ANALYSES]
  if unknown:
    raise AnalysisError(f'--analysis.only: unknown analysis {", ".join(unknown)}; expected a comma-separated subset '
                        f'of {", ".join(analysis_config.ANALYSES)}.')
  return only or None


def _check_options(options: ml_collections.ConfigDict) -> None:
  for field in ('num_images', 'probe_epochs', 'probe_batch_size', 'histogram_bins'):
    if int(options[field]) <= 0:
      raise AnalysisError(f'--analysis.{field}={options[field]!r}: expected a positive int.')
  if int(options.batch_size) < 0:
    raise AnalysisError(f'--analysis.batch_size={options.batch_size!r}: expected an int >= 0 (0 = eval batch).')
  if not float(options.probe_learning_rate) > 0 or not math.isfinite(float(options.probe_learning_rate)):
    raise AnalysisError(f'--analysis.probe_learning_rate={options.probe_learning_rate!r}: expected a positive float.')


def _test_results(run: Any, state: Any, workdir: str, step: int) -> dict[str, float]:
  """The run's test results at this checkpoint: summary.json when it belongs to it, else a fresh evaluation."""
  path = os.path.join(workdir, 'summary.json')
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      summary = json.load(f)
    if summary.get('steps') == step:
      return {k: v for k, v in summary.items() if k.startswith('test/')}
  return run.evaluate(state)


def _np_tree(tree: Any) -> Any:
  return jax.tree.map(np.asarray, tree)


def _json_ready(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_ready(v) for v in value]
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _layer_param(params: Mapping[str, Any], layer: str, name: str) -> float | None:
  node = params
  for part in layer.split('/'):
    if not isinstance(node, Mapping) or part not in node:
      return None
    node = node[part]
  return float(node[name]) if isinstance(node, Mapping) and name in node else None


def analyze_classifier(config: ml_collections.ConfigDict, workdir: str, options: ml_collections.ConfigDict, *,
                       model: nn.Module | None = None, splits: Any | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
  """Every classifier analysis that applies to the run in `workdir`; returns what analysis.json holds."""
  requested = _requested(options)
  _check_options(options)
  out_dir = output_dir(workdir, options)
  progress = _Progress(log)
  progress(f'loading the data and the latest checkpoint of {workdir}; the results go to {out_dir}')
  restored = _restore(workdir, config, model=model, splits=splits)
  run, state, step = restored.run, restored.state, restored.step
  with restored:
    progress(f'checkpoint step {step}; re-estimating BatchNorm statistics and reading the test results')
    variables = _np_tree(restored.variables())
    test = _test_results(run, state, workdir, step)
    forward = _Forward(run, variables)
    result: dict[str, Any] = {'workdir': os.path.abspath(workdir), 'checkpoint_step': step,
                              'run': {'dataset': config.data.name, 'model': config.model.name,
                                      'dropout': config.model.dropout, 'activation': config.model.activation,
                                      'beta': float(config.loss.beta), 'seed': int(config.seed)},
                              'test': test, 'files': [], 'skipped': {}}
    ctx = _Context(config, options, run, forward, variables, test, out_dir, result, progress)
    steps = {'train_error': ctx.train_error, 'heatmaps': ctx.heatmaps,
             'total_correlation': ctx.representation_statistics,
             'info_per_layer': ctx.representation_statistics, 'prior_fit': ctx.representation_statistics,
             'nuisance_probe': ctx.nuisance_probe, 'curves': ctx.curves, 'information_plane': ctx.information_plane}
    done = set()
    for name in analysis_config.ANALYSES:
      if requested and name not in requested:
        continue
      reason = ctx.not_applicable(name)
      if reason:
        if requested:
          raise AnalysisError(f'--analysis.only={options.only}: {name} does not apply to this run: {reason}.')
        result['skipped'][name] = reason
        progress(f'{name}: skipped ({reason})')
        continue
      if steps[name] in done:
        continue
      done.add(steps[name])
      steps[name]()
    with open(os.path.join(out_dir, 'analysis.json'), 'w', encoding='utf-8') as f:
      json.dump(_json_ready(result), f, indent=2, sort_keys=True)
    progress(f'wrote {len(result["files"])} files and analysis.json to {out_dir}')
    return result


def output_dir(workdir: str, options: ml_collections.ConfigDict) -> str:
  """Where the analysis of `workdir` goes (`--analysis.out_dir`, else W/<output_subdir>), created and checked
  writable before anything is loaded or compiled."""
  out_dir = os.path.abspath(str(options.get('out_dir', '') or os.path.join(workdir, options.output_subdir)))
  error = checkpoint_lib.write_error(out_dir)
  if error is not None:
    raise AnalysisError(f'cannot write the analysis into {out_dir}: {checkpoint_lib.unwritable_reason(error)}. Pass '
                        '--analysis.out_dir=<a writable directory> to write it elsewhere (the workdir itself is only '
                        'read).') from None
  return out_dir


def _restore(workdir: str, config: ml_collections.ConfigDict, **kwargs: Any) -> train.RestoredRun:
  """`train.restore`, its workdir problems reported as AnalysisError."""
  try:
    return train.restore(workdir, config, **kwargs)
  except (train.WorkdirError, FileNotFoundError) as e:
    raise AnalysisError(str(e)) from e


class _Context:
  """The state shared by one analysis run's steps."""

  def __init__(self, config, options, run, forward, variables, test, out_dir, result, progress):
    self.config, self.options, self.run, self.forward = config, options, run, forward
    self.variables, self.test, self.out_dir, self.result, self.progress = variables, test, out_dir, result, progress
    self.root_key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 0xA11)
    self.batch_size = int(options.batch_size) or int(config.eval.batch_size)
    self.test_split = run.splits.test
    sample_kl, sample_z = jax.eval_shape(lambda x: forward(x, self.root_key, True), self.test_split.images[:2])
    self.kl_shapes = {k: v.shape[1:] for k, v in sample_kl.items()}
    self.noise_shapes = {k: sample_z[k].shape[1:] for k in forward.noise_order}  # in the order the model runs them
    self.last_noise = list(self.noise_shapes)[-1] if self.noise_shapes else None

  # --- applicability ---

  def not_applicable(self, name: str) -> str | None:
    if name in ('heatmaps',):
      if not self.kl_shapes:
        return f'the model has no layer with a KL term (model.dropout={self.config.model.dropout!r})'
      if not any(len(s) == 3 for s in self.kl_shapes.values()):
        return f'no convolutional noisy layer (model.name={self.config.model.name!r}): KL maps have no locations'
    if name in ('info_per_layer',) and not self.kl_shapes:
      return f'the model has no layer with a KL term (model.dropout={self.config.model.dropout!r})'
    if name in ('total_correlation', 'prior_fit') and self.last_noise is None:
      return f'the model has no noisy layer (model.dropout={self.config.model.dropout!r})'
    if name == 'prior_fit' and self.config.model.dropout != 'information':
      return f'only information dropout has a prior on z (model.dropout={self.config.model.dropout!r})'
    if name == 'nuisance_probe':
      if 'nuisance_label' not in self.test_split.extras:
        return f'dataset {self.config.data.name!r} has no nuisance labels (extras["nuisance_label"])'
      if self.last_noise is None:
        return 'the model has no noisy layer whose representation could be probed'
    if name == 'curves' and not os.path.isfile(os.path.join(self.run.workdir, 'metrics.jsonl')):
      return 'no metrics.jsonl in the workdir'
    if name == 'information_plane' and not os.path.isfile(os.path.join(self.run.workdir, 'information_plane.jsonl')):
      return 'the run captured no information plane (config.information_plane.enabled was off)'
    return None

  def _save_npz(self, name: str, **arrays: Any) -> None:
    np.savez_compressed(os.path.join(self.out_dir, name), **arrays)
    self.result['files'].append(name)

  def _figure(self, name: str) -> str:
    self.result['files'].append(name)
    return os.path.join(self.out_dir, name)

  def _batches(self, split_images: np.ndarray):
    for start in range(0, len(split_images), self.batch_size):
      yield start, split_images[start:start + self.batch_size]

  # --- how far the net fits its training split ---

  def _errors(self, split: Any, key: jax.Array, deterministic: bool) -> np.ndarray:
    """Per example of `split`: whether the classifier's top class is wrong."""
    wrong = np.zeros(len(split), bool)
    for start, images in self._batches(split.images):
      logits = np.asarray(self.forward.output(images, jax.random.fold_in(key, start), deterministic))
      wrong[start:start + len(images)] = logits.argmax(axis=-1) != split.labels[start:start + len(images)]
    return wrong

  def train_error(self) -> None:
    train_split = self.run.splits.train
    self.progress(f'train error: {len(train_split)} training images with the noise off and on, and the '
                  f'{len(self.test_split)} test images with it off')
    key = jax.random.fold_in(self.root_key, 5)
    wrong_train_d = self._errors(train_split, jax.random.fold_in(key, 0), True)
    wrong_train_n = self._errors(train_split, jax.random.fold_in(key, 1), False)
    wrong_test_d = self._errors(self.test_split, jax.random.fold_in(key, 2), True)
    fit = {'train_error_d': float(wrong_train_d.mean()), 'train_error_n': float(wrong_train_n.mean()),
           'test_error_d': float(wrong_test_d.mean()), 'train_examples': len(train_split),
           'test_examples': len(self.test_split)}
    fit['generalization_gap_d'] = fit['test_error_d'] - fit['train_error_d']
    fit['note'] = ('errors of the checkpoint the analysis reads, over every image of each split, with the noise off '
                   '(D) and, for the training split, on (N; one draw); BatchNorm as in the evaluation. test_error_d '
                   'is recomputed here and equals summary.json\'s test/error_d; generalization_gap_d = test_error_d '
                   '- train_error_d. Training-split images are the training\'s own inputs before any augmentation.')
    self.result['train_error'] = fit
    self._save_npz('train_error.npz', train_wrong_d=wrong_train_d, train_wrong_n=wrong_train_n,
                   test_wrong_d=wrong_test_d)
    self.progress(f'train error {100 * fit["train_error_d"]:.2f} % (D) / {100 * fit["train_error_n"]:.2f} % (N), '
                  f'test error {100 * fit["test_error_d"]:.2f} % (D)')

  # --- heatmaps and localisation ---

  def heatmaps(self) -> None:
    conv_layers = [k for k, s in self.kl_shapes.items() if len(s) == 3]
    split = self.test_split
    n = len(split)
    k = min(int(self.options.num_images), n)
    indices = np.sort(np.random.default_rng(int(self.config.seed)).choice(n, k, replace=False)).astype(np.int32)
    boxes = split.extras.get('bbox')
    height, width = split.images.shape[1:3]
    localization = {name: stats.BoxLocalization(height, width) for name in conv_layers} if boxes is not None else {}
    picked = {name: np.zeros((k,) + self.kl_shapes[name][:2], np.float32) for name in conv_layers}
    self.progress(f'heatmaps: KL maps of {len(conv_layers)} layers, noise off, over {n} test images')
    key = jax.random.fold_in(self.root_key, 1)
    for start, images in self._batches(split.images):
      kl_maps, _ = self.forward(images, jax.random.fold_in(key, start), True)
      rows = np.arange(start, start + len(images))
      chosen = np.isin(rows, indices)
      for name in conv_layers:
        maps = stats.channel_heatmaps(np.asarray(kl_maps[name]))
        if chosen.any():
          picked[name][np.searchsorted(indices, rows[chosen])] = maps[chosen]
        if name in localization:
          localization[name].add(maps, boxes[start:start + len(images)])
    arrays = {**picked, 'indices': indices}
    if boxes is not None:
      arrays['bbox'] = boxes[indices].astype(np.int32)
    self._save_npz('heatmaps.npz', **arrays)
    box_label = 'digit box' if self.config.data.name == 'cluttered_mnist' else 'box'
    figures.heatmaps(self._figure('heatmaps.png'), split.images[indices], picked,
                     title=_title(self.config, self.test, f'Information heatmaps (noise off), {k} test images'),
                     boxes=arrays.get('bbox'), box_label=box_label)
    if localization:
      results = {name: loc.result() for name, loc in localization.items()}
      self.result['localization'] = {
          'mass_in_box': {name: r['mass_in_box'] for name, r in results.items()},
          'pointing': {name: r['pointing'] for name, r in results.items()},
          'chance': next(iter(results.values()))['chance'],
          'num_images': next(iter(results.values()))['num_images'],
          'box': 'digit placement box' if self.config.data.name == 'cluttered_mnist' else 'extras["bbox"]'}
      self.progress('localisation: ' + ', '.join(f'{n} mass in box {100 * r["mass_in_box"]:.1f} % (chance '
                                                 f'{100 * r["chance"]:.1f} %)' for n, r in results.items()))

  # --- TC, information per layer, prior fit: one noisy pass over the test split ---

  def representation_statistics(self) -> None:
    split = self.test_split
    n = len(split)
    last = self.last_noise
    shape = self.noise_shapes[last] if last else ()
    flat_dim = int(np.prod(shape)) if last else 0
    per_location = bool(last) and n <= flat_dim and len(shape) == 3
    tc_dim = shape[-1] if per_location else flat_dim
    moments = stats.MomentAccumulator(tc_dim) if last else None
    # The same statistics of the noise-off log f(x): the representation being judged, without the layer's own
    # independent noise (which lowers TC by itself).
    clean_moments = stats.MomentAccumulator(tc_dim) if last else None
    keep_clean = bool(last) and n * flat_dim <= MAX_SHUFFLED_VALUES
    clean_rows: list[np.ndarray] = []
    edges = np.linspace(*LOG_Z_RANGE, int(self.options.histogram_bins) + 1)
    counts = np.zeros(len(edges) - 1, np.int64)
    zeros = below = above = total_units = 0
    kl_sums = {name: 0.0 for name in self.kl_shapes}
    kl_squares = {name: 0.0 for name in self.kl_shapes}  # of each example's KL: the noise's Monte Carlo error
    self.progress(f'noisy pass over {n} test images: KL per layer, total correlation and prior fit of {last!r}')
    key = jax.random.fold_in(self.root_key, 2)
    for start, images in self._batches(split.images):
      kl_maps, outputs = self.forward(images, jax.random.fold_in(key, start), False)
      for name, kl_map in kl_maps.items():
        per_example = np.asarray(kl_map, np.float64).reshape(len(images), -1).sum(axis=1)
        kl_sums[name] += float(per_example.sum())
        kl_squares[name] += float((per_example ** 2).sum())
      if last:
        z = np.asarray(outputs[last], np.float64)
        positive = z > 0
        zeros += int((~positive).sum())
        total_units += z.size
        log_z = np.log(np.maximum(z, LOG_Z_FLOOR))
        rows = log_z.reshape(-1, tc_dim) if per_location else log_z.reshape(len(images), -1)
        moments.add(rows)
        _, clean = self.forward(images, jax.random.fold_in(key, start), True)
        log_f = np.log(np.maximum(np.asarray(clean[last], np.float64), LOG_Z_FLOOR))
        clean_block = log_f.reshape(-1, tc_dim) if per_location else log_f.reshape(len(images), -1)
        clean_moments.add(clean_block)
        if keep_clean:
          clean_rows.append(clean_block.astype(np.float32))
        values = np.log(z[positive])
        below += int((values < edges[0]).sum())
        above += int((values > edges[-1]).sum())
        counts += np.histogram(values, bins=edges)[0]
    if self.kl_shapes:
      names = list(self.kl_shapes)
      units = {name: int(np.prod(self.kl_shapes[name])) for name in names}
      per_layer = {name: kl_sums[name] / n for name in names}
      per_unit = {name: per_layer[name] / units[name] for name in names}
      self.result.update(info_per_layer=per_layer, info_per_unit=per_unit, units=units)
      variance = {name: max(kl_squares[name] / n - per_layer[name] ** 2, 0.0) for name in names}
      self.result['info_per_layer_stderr'] = {name: math.sqrt(variance[name] / max(n - 1, 1)) for name in names}
      self.result['info_note'] = (
          'test-set mean of each layer\'s KL, summed over its units (nats per example), with the noise on as in the '
          'test/kl metrics of summary.json; per unit = per layer / units. This pass draws its own noise (keys from '
          'the run\'s seed, so the analysis repeats exactly), the training\'s evaluation drew other noise: the first '
          'noisy layer sees a noise-free input and agrees with test/kl to float precision, a later layer\'s KL '
          'depends on the noise drawn before it and differs by Monte Carlo error, of the order of '
          'info_per_layer_stderr (the standard error of the mean over the test examples).')
      self._save_npz('info_per_layer.npz', names=np.array(names), info_per_layer=np.array([per_layer[x] for x in names]),
                     info_per_unit=np.array([per_unit[x] for x in names]), units=np.array([units[x] for x in names]))
      figures.info_per_layer(self._figure('info_per_layer.png'), names, [per_layer[x] for x in names],
                             [per_unit[x] for x in names], [units[x] for x in names],
                             title=_title(self.config, self.test, 'Information in each noisy layer (test set)'))
    if not last:
      return
    tc = stats.gaussian_total_correlation(moments.covariance(), moments.n)
    eigenvalues = tc.pop('eigenvalues')
    tc.update(layer=last, variant='per_location' if per_location else 'flattened',
              zero_fraction=zeros / max(total_units, 1), log_floor=LOG_Z_FLOOR)
    if per_location:
      tc['note'] = (f'{n} test images do not exceed the {flat_dim} dimensions of the flattened representation, whose '
                    f'correlation matrix is therefore singular; TC is computed per location instead (channels as '
                    f'dimensions, images × locations as samples)')
    if tc['zero_fraction'] > 0:
      tc['zero_note'] = (f'{100 * tc["zero_fraction"]:.1f} % of the activations are 0 (ReLU or dropped units); their '
                         f'log is taken at the floor log({LOG_Z_FLOOR:g})')
    self.result['total_correlation'] = tc
    clean = stats.gaussian_total_correlation(clean_moments.covariance(), clean_moments.n)
    clean_eigenvalues = clean.pop('eigenvalues')
    clean.update(layer=last, variant=tc['variant'], of='log f(x), the noise off',
                 floor_closed_form_per_dim_nats=stats.independence_floor(clean['dims'], clean['samples']))
    if clean_rows:
      shuffled = stats.shuffled_total_correlation(np.concatenate(clean_rows),
                                                  np.random.default_rng([int(self.config.seed), 0x7C]))
      clean['floor_per_dim_nats'] = shuffled['tc_per_dim_nats']
      clean['floor_method'] = 'shuffled columns (each column permuted on its own, seeded)'
    else:
      clean['floor_per_dim_nats'] = clean['floor_closed_form_per_dim_nats']
      clean['floor_method'] = (f'closed form for independent Gaussian features (the representation, {n} × '
                               f'{flat_dim} values, is above MAX_SHUFFLED_VALUES for a shuffled floor)')
    if clean['tc_per_dim_nats'] is not None and clean['floor_per_dim_nats'] is not None:
      clean['excess_per_dim_nats'] = clean['tc_per_dim_nats'] - clean['floor_per_dim_nats']
    clean['note'] = ('TC of the noise-off log f(x) (the layer\'s independent noise, which lowers TC by itself, left '
                     'out) and the TC that independent features of the same dimensions, samples and marginals give '
                     '(floor); only the excess over the floor is evidence of dependence between the units')
    self.result['total_correlation_clean'] = clean
    self._save_npz('total_correlation.npz', correlation_eigenvalues=eigenvalues,
                   variances=np.diag(moments.covariance()), clean_correlation_eigenvalues=clean_eigenvalues)
    self.progress(f'total correlation of {last}: {tc["tc_per_dim_nats"]} nats per dimension ({tc["variant"]}, '
                  f'{tc["samples"]} samples × {tc["dims"]} dims); noise off: {clean["tc_per_dim_nats"]}, floor '
                  f'{clean["floor_per_dim_nats"]}')
    if self.config.model.dropout != 'information':
      return
    prior = layers.default_prior(self.config.model.activation)
    centres = 0.5 * (edges[:-1] + edges[1:])
    fit: dict[str, Any] = {'layer': last, 'prior': prior, 'zero_fraction': tc['zero_fraction'],
                           'positive_below_range': below, 'positive_above_range': above,
                           'log_z_range': list(LOG_Z_RANGE)}
    if prior == 'log_normal':
      mu = _layer_param(self.variables['params'], last, 'prior_mu')
      sigma = math.exp(_layer_param(self.variables['params'], last, 'prior_log_sigma'))
      density = np.exp(-0.5 * ((centres - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
      label = f'learned log-normal prior: log z ~ N({mu:.2f}, {sigma:.2f}²)'
      fit.update(mu=mu, sigma=sigma)
    else:
      occupied = np.nonzero(counts)[0]
      lo, hi = (edges[occupied[0]], edges[occupied[-1] + 1]) if len(occupied) else LOG_Z_RANGE
      density = np.where((centres >= lo) & (centres <= hi), 1.0 / (hi - lo), 0.0)
      label = 'log-uniform prior (flat in log z; improper, drawn over the observed range)'
      fit.update(drawn_range=[float(lo), float(hi)])
    self.result['prior_fit'] = fit
    self._save_npz('prior_fit.npz', bin_edges=edges, counts=counts, prior_density=density)
    figures.prior_fit(self._figure('prior_fit.png'), edges, counts, density, prior_label=label,
                      zero_fraction=tc['zero_fraction'],
                      title=_title(self.config, self.test, f'Activations of {last} vs the prior'))

  # --- nuisance probe ---

  def nuisance_probe(self) -> None:
    last = self.last_noise
    run = self.run

    def features(raw_images, key):
      _, outputs = self.forward._fn(self.variables, raw_images, key, False)  # pylint: disable=protected-access
      return outputs[last]

    train, test = run.splits.train, self.test_split
    self.progress(f'nuisance probe: softmax regression on the noisy {last} ({int(self.options.probe_epochs)} epochs '
                  f'over {len(train)} training images)')
    num_classes = int(max(train.extras['nuisance_label'].max(), test.extras['nuisance_label'].max())) + 1
    probe = stats.train_softmax_probe(
        features, train.images, train.extras['nuisance_label'], test.images, test.extras['nuisance_label'],
        num_classes, epochs=int(self.options.probe_epochs), batch_size=int(self.options.probe_batch_size),
        learning_rate=float(self.options.probe_learning_rate), key=jax.random.fold_in(self.root_key, 3),
        progress=self.progress)
    counts = np.bincount(test.extras['nuisance_label'], minlength=num_classes)
    self.result['nuisance'] = {
        'nuisance_error': probe['test_error'], 'chance_error': 1.0 - counts.max() / counts.sum(),
        'error_d': self.test.get('test/error_d'), 'error_n': self.test.get('test/error_n'),
        'layer': last, 'probe': {**probe, 'seed': int(self.config.seed), 'optimizer': 'adam',
                                 'representation': 'noise on (fresh noise per batch), frozen network'}}
    self.progress(f'nuisance error {100 * probe["test_error"]:.2f} % (chance {100 * (1 - counts.max() / counts.sum()):.1f}'
                  f' %), probe train error {100 * probe["train_error"]:.2f} %')

  # --- training curves ---

  def curves(self) -> None:
    train: dict[str, list[tuple[int, float]]] = {}
    test: dict[str, list[tuple[int, float]]] = {}
    with open(os.path.join(self.run.workdir, 'metrics.jsonl'), encoding='utf-8') as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue  # a torn last line of a killed run
        for key, value in record.items():
          if not isinstance(value, (int, float)) or key == 'step':
            continue
          target = train if key.startswith('train/') else test if key.startswith('test/') else None
          if target is not None:
            target.setdefault(key, []).append((int(record['step']), float(value)))
    as_arrays = lambda d: {k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in d.items()}
    train_arrays, test_arrays = as_arrays(train), as_arrays(test)
    self._save_npz('curves.npz', **{f'{k}:steps': v[0] for k, v in {**train_arrays, **test_arrays}.items()},
                   **{f'{k}:values': v[1] for k, v in {**train_arrays, **test_arrays}.items()})
    figures.curves(self._figure('curves.png'), train_arrays, test_arrays,
                   epoch_of_step=float(self.run.steps_per_epoch),
                   title=_title(self.config, self.test, 'Training curves'))

  def information_plane(self) -> None:
    self.progress('information plane: plotting W/information_plane.jsonl')
    self.result['information_plane'] = plane_figures.analyze_information_plane(self.run.workdir, self.out_dir)
    self.progress('information plane: the final I(X;Z) on M and on 2M training examples')
    stability = information_plane_lib.CaptureHook(self.config).m_stability(self.run, self.variables)
    self.result['information_plane']['m_stability'] = stability
    self.result['files'].extend(['information_plane.png', 'information_plane.npz'])


# --- entry point ----------------------------------------------------------------------------------------------------


def analyze(workdir: str, config: ml_collections.ConfigDict | None = None,
            options: ml_collections.ConfigDict | None = None, *, model: nn.Module | None = None,
            splits: Any | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Analyses the run in `workdir` (see the module docstring); returns the contents of analysis.json.

  Args:
    workdir: a training run's directory (config.json, checkpoints/, metrics.jsonl).
    config: the run's config if already known (e.g. from --config); it must agree with config.json.
    options: `analysis.config.get_config()` with overrides.
    model, splits: as for `train.train_and_evaluate` (tests pass tiny ones); default from the config.
    log: where progress lines go.

  Raises:
    AnalysisError: an unusable workdir or option, or a requested analysis that does not apply.
  """
  try:
    config = train.load_config(workdir, config)
  except train.WorkdirError as e:
    raise AnalysisError(str(e)) from e
  options = options if options is not None else analysis_config.get_config()
  name = tasks.task_name(config)
  analyzer = ANALYZERS.get(name)
  if analyzer is None:
    raise AnalysisError(f'the run in {workdir} has task {name!r}; --mode=analyze knows {tuple(ANALYZERS)}.')
  return analyzer(config, workdir, options, model=model, splits=splits, log=log)


def _analyze_vae(config, workdir, options, *, model=None, splits=None, log=print):
  out_dir = output_dir(workdir, options)
  log(f'[analyze] VAE analysis of {workdir}; the results go to {out_dir}')
  with _restore(workdir, config, model=model, splits=splits) as restored:
    result = vae_analysis.analyze_vae(restored, out_dir)
  with open(os.path.join(out_dir, 'analysis.json'), 'w', encoding='utf-8') as f:
    json.dump(_json_ready(result), f, indent=2, sort_keys=True)
  return result


ANALYZERS: dict[str, Callable[..., dict[str, Any]]] = {'classification': analyze_classifier, 'vae': _analyze_vae}
