"""Training loop on a tiny contract-following model and generated data: runs, parallel modes, resume, eval, errors."""
import functools
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers
from infodrop_jax import checkpoint as checkpoint_lib
from infodrop_jax.cpu import convolution
from infodrop_jax import optim
from infodrop_jax import parallel as parallel_lib
from infodrop_jax import train
from infodrop_jax.data.splits import DatasetSplits, Split


def _train(workdir, config=None, model=None, **overrides):
  config = config or train_helpers.tiny_config(**overrides)
  return train.train_and_evaluate(config, str(workdir), model=model or train_helpers.TinyNoisyNet(),
                                  splits=train_helpers.tiny_splits())


def _final_params(workdir, step=None):
  config = train_helpers.tiny_config()
  template = train.create_train_state(train_helpers.TinyNoisyNet(), optim.create_optimizer(config.optim, 6)[0],
                                      np.zeros((1, 8, 8, 1), np.float32), train._root_keys(config.seed),
                                      parallel_lib.Parallel.create('jit'))
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), max_to_keep=100, read_only=True)
  state = checkpointer.restore(template, step)
  checkpointer.close()
  return parallel_lib.first_replica_to_host(state)


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
  """2 epochs × 6 steps on 8 devices ('jit' mode), checkpoints every 3 steps, all kept."""
  workdir = tmp_path_factory.mktemp('trained')
  summary = _train(workdir, keep_checkpoints=10)
  return workdir, summary


def test_few_step_run_writes_metrics_checkpoints_and_summary(trained):
  workdir, summary = trained
  assert summary['steps'] == 12 and summary['epochs'] == 2.0
  for key in ('test/error_d', 'test/error_n'):
    assert 0.0 <= summary[key] <= 1.0
  assert summary['test/error_d'] < 0.5  # Learns the generated task (chance: 2/3).
  assert any(k.startswith('test/kl/') and summary[k] > 0 for k in summary)
  records = [json.loads(line) for line in open(workdir / 'metrics.jsonl', encoding='utf-8')]
  train_records = [r for r in records if 'train/loss' in r]
  assert [r['step'] for r in train_records] == [2, 4, 6, 8, 10, 12]
  for r in train_records:
    for key in ('train/ce', 'train/beta_lz', 'train/accuracy', 'train/grad_norm', 'train/learning_rate'):
      assert np.isfinite(r[key])
    assert any(k.startswith('train/kl/') for k in r)
  # Piecewise schedule: ×0.1 after epoch 1 (step 6).
  assert train_records[0]['train/learning_rate'] == pytest.approx(0.05)
  assert train_records[-1]['train/learning_rate'] == pytest.approx(0.005)
  assert any(r.get('test/error_d') is not None for r in records if r['step'] == 6)  # eval every epoch.
  assert os.listdir(workdir / 'tensorboard')
  assert json.load(open(workdir / 'summary.json', encoding='utf-8'))['steps'] == 12
  assert sorted(checkpoint_lib.Checkpointer(str(workdir), max_to_keep=10, read_only=True).all_steps()) == [
      3, 6, 9, 12]


def test_resume_after_interruption_is_exact(trained, tmp_path):
  """Crash after the mid-epoch checkpoint at step 3, restart: same final parameters, bit for bit."""
  workdir, _ = trained
  resumed = tmp_path / 'resumed'
  shutil.copytree(workdir / 'checkpoints' / '3', resumed / 'checkpoints' / '3')
  shutil.copy(workdir / 'metrics.jsonl', resumed / 'metrics.jsonl')  # the crashed run had logged past step 3
  _train(resumed, keep_checkpoints=10)
  expected, got = _final_params(workdir, 12), _final_params(resumed, 12)
  assert int(got.step) == 12
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b)
  # The log holds each step once. Values match the uninterrupted run's from the first logging window that starts
  # after the resume point (the window ending at step 4 averages steps 3-4 there, only step 4 here).
  train_records = lambda w: [(r['step'], r['train/loss']) for r in map(json.loads, open(w / 'metrics.jsonl'))
                             if 'train/loss' in r]
  resumed_records, expected_records = train_records(resumed), train_records(workdir)
  assert [s for s, _ in resumed_records] == [s for s, _ in expected_records]
  assert [r for r in resumed_records if r[0] > 4] == [r for r in expected_records if r[0] > 4]


def test_eval_mode_on_a_saved_checkpoint(trained):
  workdir, summary = trained
  config = train_helpers.tiny_config()
  evaluated = train.evaluate_checkpoint(config, str(workdir), model=train_helpers.TinyNoisyNet(),
                                        splits=train_helpers.tiny_splits())
  assert evaluated['steps'] == 12
  for key in ('test/error_d', 'test/error_n', 'test/ce_d'):
    assert evaluated[key] == pytest.approx(summary[key], abs=1e-6)


def _two_steps(mode, devices, model):
  """Loss and parameters after two steps on fixed global batches, in `mode` on `devices`."""
  par = parallel_lib.Parallel.create(mode, devices)
  config = train_helpers.tiny_config()
  tx, schedule = optim.create_optimizer(config.optim, 6)
  splits = train_helpers.tiny_splits()
  state = train.create_train_state(model, tx, splits.train.images[:1].astype(np.float32),
                                   train._root_keys(0), par)
  state = par.to_device_layout(state)
  step = par.compile(functools.partial(train.train_step, beta=1.0, n_train=96, weight_decay=1e-3,
                                       learning_rate_fn=schedule), donate_argnums=(0,))
  losses = []
  for i in range(2):
    images = splits.train.images[16 * i:16 * (i + 1)].astype(np.float32) / 255
    batch = {'images': images, 'labels': splits.train.labels[16 * i:16 * (i + 1)]}
    if mode == 'pmap':
      batch = jax.tree.map(lambda x: x.reshape((par.num_local_devices, -1) + x.shape[1:]), batch)
      batch = jax.device_put(batch, par.step_sharding())
      key = par.to_device_layout_host(np.asarray(jax.random.PRNGKey(i)))
    else:
      batch = jax.device_put(batch, par.batch_sharded)
      key = jax.random.PRNGKey(i)
    state, metrics = step(state, batch, key)
    losses.append(float(par.first_step_replica(metrics)['loss']))
  return losses, par.first_step_replica(state.params)


def test_jit_pmap_and_one_device_agree_with_noise_off():
  """Without BatchNorm every mode sees the same function of the global batch."""
  model = train_helpers.TinyNoisyNet(noise=False, batch_norm=False)
  reference_loss, reference_params = _two_steps('jit', jax.devices()[:1], model)
  for mode in ('jit', 'pmap'):
    loss, params = _two_steps(mode, jax.devices(), model)
    np.testing.assert_allclose(loss, reference_loss, rtol=1e-5, err_msg=mode)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference_params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=mode)


def test_batch_norm_makes_one_model_on_any_device_count(tmp_path):
  """All-CNN with BatchNorm and the noise off, built by the trainer: pmap on 8 devices (BatchNorm averages its
  statistics across them), jit on 8 and one device give the same losses and parameters to float rounding. Plain
  Flax here; the CPU speed-ups' BatchNorm averages across devices as nn.BatchNorm does
  (tests/test_cpu_batch_norm.py)."""
  config = train_helpers.tiny_config(cpu_speedups='off')
  config.model.update(name='all_cnn_32', dropout='none', input_dropout_rate=0.0, filter_percentage=0.05)
  config.model.hidden_sizes = (512, 128, 32)
  splits = train_helpers.tiny_splits()
  built = {}
  for mode in ('jit', 'pmap'):
    config.train.parallel = mode
    built[mode] = train.Run(config, str(tmp_path / mode), splits=splits).model
  assert built['pmap'].axis_name == parallel_lib.AXIS and built['jit'].axis_name is None
  reference_loss, reference_params = _two_steps('jit', jax.devices()[:1], built['jit'])
  for mode in ('jit', 'pmap'):
    loss, params = _two_steps(mode, jax.devices(), built[mode])
    np.testing.assert_allclose(loss, reference_loss, rtol=2e-5, err_msg=mode)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference_params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6, err_msg=mode)


def test_pmap_mode_trains_and_checkpoints(tmp_path):
  summary = _train(tmp_path, parallel='pmap', checkpoint_every_steps=6)
  assert summary['steps'] == 12 and np.isfinite(summary['test/ce_d'])
  assert int(_final_params(tmp_path).step) == 12  # Saved in the global layout: restores in 'jit' mode.


def test_noise_differs_per_device_and_per_step():
  """pmap folds the device index into the step key; jit draws one noise tensor over the sharded global batch."""
  par = parallel_lib.Parallel.create('pmap')
  draw = jax.pmap(lambda k: jax.random.normal(jax.random.fold_in(k, jax.lax.axis_index('batch')), (3,)),
                  axis_name='batch')
  keys = par.to_device_layout_host(np.asarray(jax.random.fold_in(jax.random.PRNGKey(0), 5)))
  noise = np.asarray(draw(keys))
  assert len({tuple(row) for row in noise}) == 8


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = train_helpers.tiny_config(keep_checkpoints=10)
  config.optim.lr_drop_factor = 1e30  # lr 0.05 → 5e28 at step 6: the weights blow up right after.
  with pytest.raises(FloatingPointError, match=r'non-finite training at step (\d+)') as error:
    _train(tmp_path, config=config)
  bad_step = int(error.value.args[0].split('at step ')[1].split(' ')[0])
  assert 6 < bad_step <= 9
  steps = checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=10, read_only=True).all_steps()
  assert max(steps) < bad_step and 6 in steps
  # "Good" means good: the kept checkpoint's weights are finite and of a sane size, not the blown-up update.
  params = jax.tree.leaves(_final_params(tmp_path, max(steps)).params)
  assert all(np.isfinite(p).all() and np.abs(p).max() < 1e3 for p in params)


@pytest.mark.parametrize('field, value, message', [
    ('model.dropout', 'infodrop', "config.model.dropout = 'infodrop': expected one of"),
    ('model.activation', 'tanh', "config.model.activation = 'tanh': expected one of"),
    ('train.batch_size', 12, r'config.train.batch_size = 12: expected a positive multiple of the device count \(8\)'),
    ('eval.batch_size', 20, r'config.eval.batch_size = 20: expected a positive multiple'),
    ('loss.beta', -1.0, 'config.loss.beta = -1.0: expected a finite float >= 0'),
    ('train.parallel', 'pjit', "config.train.parallel = 'pjit': expected one of"),
    ('optim.name', 'rmsprop', "config.optim.name = 'rmsprop': expected one of"),
    ('train.data_placement', 'sharded',
     r"config.train.data_placement = 'sharded': expected one of \('auto', 'replicated', 'process_sharded'\)"),
])
def test_bad_config_values_are_named_before_compiling(tmp_path, field, value, message):
  config = train_helpers.tiny_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    _train(tmp_path, config=config)
  assert not os.listdir(tmp_path)  # Nothing written: it failed before the run started.


def test_unwritable_workdir_is_reported(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(ValueError, match='is not a writable directory'):
    _train(blocker / 'workdir')


def test_missing_data_is_reported(tmp_path):
  config = train_helpers.tiny_config()
  config.data.source = 'idx'
  config.data.path = str(tmp_path / 'no_such_mnist')
  with pytest.raises(FileNotFoundError, match='no_such_mnist'):
    train.train_and_evaluate(config, str(tmp_path / 'w'), model=train_helpers.TinyNoisyNet())


def test_eval_mode_without_checkpoint_is_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    train.evaluate_checkpoint(train_helpers.tiny_config(), str(tmp_path), model=train_helpers.TinyNoisyNet(),
                              splits=train_helpers.tiny_splits())


class _BrightnessThroughBatchNorm(nn.Module):
  """Predicts 'bright' (class 0) when the BatchNorm-centred mean pixel is positive: its error measures how well the
  BatchNorm statistics match the whole training set. Nothing to learn (its one parameter gets no gradient)."""

  @nn.compact
  def __call__(self, x, deterministic: bool = False, use_running_average: bool = False):
    del deterministic
    x = nn.BatchNorm(use_running_average=use_running_average, momentum=0.9, use_scale=False, use_bias=False)(x)
    return self._classify(x)

  def _classify(self, x):
    brightness = jnp.mean(x, axis=(1, 2, 3))
    return jnp.stack([brightness, -brightness], -1) + 0.0 * self.param('unused', nn.initializers.zeros_init(), ())


class _BrightnessWithBnMomentum(_BrightnessThroughBatchNorm):
  """The same, with a `bn_momentum` field like infodrop_jax.models: re-estimation then averages batch statistics."""
  bn_momentum: float = 0.999

  @nn.compact
  def __call__(self, x, deterministic: bool = False, use_running_average: bool = False):
    del deterministic
    x = nn.BatchNorm(use_running_average=use_running_average, momentum=self.bn_momentum, use_scale=False,
                     use_bias=False)(x)
    return self._classify(x)


@pytest.mark.parametrize('model', [_BrightnessThroughBatchNorm(), _BrightnessWithBnMomentum()],
                         ids=['moving_average_0.9', 'exact_average_at_0.999'])
def test_bn_reestimation_is_unbiased_on_a_class_sorted_training_set(tmp_path, model):
  """Image folders (e.g. the CIFAR-10 JPEG proxy) list the training set class by class. A moving average taken in
  that order would describe only the last class (here the dark one) and misclassify about half of the dark test
  images; the re-estimation pass must not depend on the stored order. At decay 0.999 a one-pass moving average
  would also keep most of the training-time statistics (here the initial 0/1 after a short run), so models that
  expose `bn_momentum` get an exact average of the pass's batch statistics."""
  rng = np.random.default_rng(0)

  def split(labels):
    images = rng.normal(np.where(labels == 0, 200.0, 50.0)[:, None, None, None], 10.0, (len(labels), 4, 4, 1))
    return Split(images=images.clip(0, 255).astype(np.uint8), labels=labels.astype(np.int32), extras={})

  sorted_train = split(np.repeat([0, 1], 1024))  # 64 batches of the dark class last: 0.9**64 ≈ 0.001
  test = split(rng.permutation(np.repeat([0, 1], 64)))
  splits = DatasetSplits(name='sorted', num_classes=2, train=sorted_train, test=test, valid=None)
  config = train_helpers.tiny_config()
  config.train.num_epochs = 1
  config.eval.every_epochs = 0
  summary = train.train_and_evaluate(config, str(tmp_path), model=model, splits=splits)
  assert summary['test/error_d'] < 0.02


def test_stochastic_binarisation_reaches_the_model_fresh_each_step(tmp_path):
  """preprocess='binarize_stochastic' keeps the data in [0, 1] on device; every step must see binary pixels."""
  config = train_helpers.tiny_config()
  config.data.preprocess = 'binarize_stochastic'
  run = train.Run(config, str(tmp_path), model=train_helpers.TinyNoisyNet(), splits=train_helpers.tiny_splits())
  order = run.train_data.order(0)
  batch = run.train_data.gather_train_batch(run.train_data.arrays, order, 0)
  assert 0 < float(jnp.mean(batch['images'])) < 1 and len(np.unique(np.asarray(batch['images']))) > 2
  first, second = (run.model_inputs(batch, jax.random.fold_in(run.keys['binarize'], step)) for step in (0, 1))
  assert set(np.unique(np.asarray(first['images']))) == {0.0, 1.0}
  assert not np.array_equal(first['images'], second['images'])
  # Bernoulli(p) pixels: the batch mean of 1024 draws is within 5 sd (sd <= 0.016) of the mean of p.
  np.testing.assert_allclose(float(jnp.mean(first["images"])), float(jnp.mean(batch["images"])), atol=0.08)
  config.data.preprocess = 'none'
  plain = train.Run(config, str(tmp_path), model=train_helpers.TinyNoisyNet(), splits=train_helpers.tiny_splits())
  assert plain.model_inputs(batch, run.keys['binarize']) is batch


def test_an_update_that_explodes_the_weights_is_not_checkpointed(tmp_path):
  """The loss of step 7 is computed before its update, so it is finite even when that update blows the weights up
  (lr 5e36 from step 7). The guard must catch the weights themselves and not save step 7 as a good checkpoint."""
  config = train_helpers.tiny_config(keep_checkpoints=10, checkpoint_every_steps=7, steps_per_call=7)
  config.optim.lr_drop_factor = 1e38
  with pytest.raises(FloatingPointError, match=r'non-finite training at step 7 .*param_norm=inf'):
    _train(tmp_path, config=config)
  assert 7 not in checkpoint_lib.Checkpointer(str(tmp_path), max_to_keep=10, read_only=True).all_steps()


def _convolution_forms(compiled_text):
  return {line.split('dim_labels=')[1].split(',')[0] for line in compiled_text.splitlines()
          if ' convolution(' in line}


def test_a_one_step_chunk_has_only_canonical_convolutions(tmp_path):
  """XLA:CPU gives only the entry computation's convolutions the NHWC/HWIO form of its fast kernels; inside a loop
  (even a scan of length 1) the gradient convolutions fall back to a naive loop nest, ~35x slower. The host-driven
  CPU loops (`host_loops`) rely on the one-step chunk having no loop around the step."""
  config = train_helpers.tiny_config()
  run = train.Run(config, str(tmp_path), model=train_helpers.TinyNoisyNet(), splits=train_helpers.tiny_splits())
  state = run.parallel.to_device_layout(run.initial_state())
  text = run._chunk_fn(1).lower(state, run.train_data.arrays, run.train_data.order(0)).compile().as_text()
  assert _convolution_forms(text) == {'b01f_01io->b01f'}


def _one_device(monkeypatch):
  """`Run` on the first CPU device only, as a one-device process would have it."""
  create = parallel_lib.Parallel.create
  monkeypatch.setattr(parallel_lib.Parallel, 'create',
                      classmethod(lambda cls, mode='jit', devices=None, compiler_options=None: create(
                          mode, jax.devices()[:1], compiler_options)))


class _OurConvNet(nn.Module):
  """TinyNoisyNet's convolution, as our convolution.Conv."""

  @nn.compact
  def __call__(self, x, deterministic=False, use_running_average=False):
    del deterministic, use_running_average
    x = nn.relu(convolution.Conv(4, (3, 3), strides=2)(x))
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_one_cpu_device_compiles_its_loops_unless_a_convolution_would_be_slow_there(tmp_path, monkeypatch):
  _one_device(monkeypatch)
  config = train_helpers.tiny_config()
  plain = train.Run(config, str(tmp_path / 'plain'), model=train_helpers.TinyNoisyNet(),
                     splits=train_helpers.tiny_splits())
  assert plain.parallel.num_devices == 1
  assert len(plain.loop_unsafe_convolutions()) == 2  # The weight gradients of nn.Conv's two convolutions.
  assert plain.host_loops
  for name, model in (('ours', _OurConvNet()), ('mlp', None)):
    run = train.Run(config, str(tmp_path / name), model=model, splits=train_helpers.tiny_splits())
    assert not run.loop_unsafe_convolutions() and not run.host_loops, name


def test_host_driven_loops_match_the_compiled_loops(tmp_path, monkeypatch):
  """Training, BN re-estimation and test batches driven from the host (one device, nn.Conv's gradients) give what
  the compiled loops give: same data order and noise draws."""
  _one_device(monkeypatch)
  config = train_helpers.tiny_config()
  summaries = {}
  for host_loops in (True, False):
    monkeypatch.setattr(train.Run, 'host_loops', property(lambda self, value=host_loops: value))
    summaries[host_loops] = train.train_and_evaluate(config, str(tmp_path / str(host_loops)),
                                                     model=train_helpers.TinyNoisyNet(),
                                                     splits=train_helpers.tiny_splits())
  for key in ('test/error_d', 'test/error_n', 'test/ce_d', 'test/ce_n'):
    assert summaries[True][key] == pytest.approx(summaries[False][key], rel=1e-4, abs=1e-6), key


class _NoKLNet(nn.Module):
  """A model with no noise layer: the task's KL terms are constants, not arrays."""

  @nn.compact
  def __call__(self, x, deterministic=False, use_running_average=False):
    del deterministic, use_running_average
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_a_one_step_chunk_stacks_every_metric_even_constant_ones(tmp_path):
  config = train_helpers.tiny_config()
  run = train.Run(config, str(tmp_path), model=_NoKLNet(), splits=train_helpers.tiny_splits())
  state = run.parallel.to_device_layout(run.initial_state())
  _, metrics = run._chunk_fn(1)(state, run.train_data.arrays, run.train_data.order(0))
  assert metrics['beta_lz'].shape == (1,) and metrics['loss'].shape == (1,)
