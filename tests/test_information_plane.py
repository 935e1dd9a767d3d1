"""Information-plane capture during training, the MLP's noisy_layers option, the plots and the config checks."""
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import train_helpers
from infodrop_jax import checkpoint as checkpoint_lib
from infodrop_jax import information_plane
from infodrop_jax import models
from infodrop_jax import optim
from infodrop_jax import parallel as parallel_lib
from infodrop_jax import train
from infodrop_jax.analysis import plane_figures
from test_mutual_information import quadrature_information

STEPS_PER_EPOCH = 6  # 96 generated training examples, batch 16.


def _config(enabled=True, **ip_overrides):
  """3 epochs of an MLP 64-16-8-3 with information dropout on hidden layer 2 only; capture every 2 epochs."""
  config = train_helpers.tiny_config(num_epochs=3, keep_checkpoints=10)
  config.model.hidden_sizes = (16, 8)
  config.model.noisy_layers = (2,)
  config.logging.tensorboard = False
  config.information_plane.update(enabled=enabled, every_epochs=2, num_examples=32)
  config.information_plane.update(ip_overrides)
  return config


def _train(workdir, config):
  return train.train_and_evaluate(config, str(workdir), splits=train_helpers.tiny_splits())


def _params(workdir, config):
  model = models.create_model(config.model, 3)
  template = train.create_train_state(model, optim.create_optimizer(config.optim, STEPS_PER_EPOCH)[0],
                                      np.zeros((1, 8, 8, 1), np.float32), train._root_keys(config.seed),
                                      parallel_lib.Parallel.create('jit'))
  checkpointer = checkpoint_lib.Checkpointer(str(workdir), max_to_keep=100, read_only=True)
  state = checkpointer.restore(template)
  checkpointer.close()
  return parallel_lib.first_replica_to_host(state.params)


def _records(workdir):
  return [json.loads(line) for line in open(workdir / information_plane.RECORDS_FILE, encoding='utf-8')]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The same 3-epoch run with the capture off and on."""
  off, on = tmp_path_factory.mktemp('off'), tmp_path_factory.mktemp('on')
  _train(off, _config(enabled=False))
  _train(on, _config())
  return off, on


def test_capture_leaves_training_unchanged_and_writes_records_at_the_right_epochs(runs):
  off, on = runs
  assert not (off / information_plane.RECORDS_FILE).exists()
  for a, b in zip(jax.tree.leaves(_params(off, _config())), jax.tree.leaves(_params(on, _config()))):
    np.testing.assert_array_equal(a, b)
  records = _records(on)
  # Step 0, every 2 epochs, and the last step (epoch 3).
  assert [r['step'] for r in records] == [0, 2 * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH]
  assert [r['epoch'] for r in records] == [0.0, 2.0, 3.0]
  for r in records:
    assert (r['method'], r['num_examples'], r['beta']) == ('information', 32, 1.0)
    for split in information_plane.SPLITS:
      assert list(r[split]['layers']) == ['hidden2']  # Only the noisy layer.
      layer = r[split]['layers']['hidden2']
      assert layer['noise'] == 'lognormal' and layer['units'] == 8
      assert 0 <= layer['ixz'] <= r['log_m'] + 1e-4 and layer['kl'] > 0
      assert layer['izy'] <= r[split]['h_y'] + 1e-4
      assert r[split]['izy_ce_n'] == pytest.approx(r[split]['h_y'] - r[split]['ce_n'])
  # The headline numbers also go to metrics.jsonl (and TensorBoard).
  metrics = [json.loads(line) for line in open(on / 'metrics.jsonl', encoding='utf-8')]
  assert [m['step'] for m in metrics if 'info_plane/train/hidden2/ixz' in m] == [0, 12, 18]


def test_resume_drops_records_past_the_checkpoint_and_duplicates_none(runs, tmp_path):
  _, on = runs
  resumed = tmp_path / 'resumed'
  shutil.copytree(on / 'checkpoints' / '9', resumed / 'checkpoints' / '9')
  # The crashed run had captured past the checkpoint (steps 12, 18) and was killed writing a line.
  with open(resumed / information_plane.RECORDS_FILE, 'w', encoding='utf-8') as f:
    f.writelines(open(on / information_plane.RECORDS_FILE, encoding='utf-8').readlines())
    f.write('{"step": 18, "epoch": 3.0, "tr')
  with pytest.warns(RuntimeWarning, match='dropping the torn last line'):
    _train(resumed, _config())
  got, expected = _records(resumed), _records(on)
  assert [r['step'] for r in got] == [0, 12, 18]
  for a, b in zip(got, expected):  # The hook's own keys: the recomputed records are the same.
    assert a['train']['layers'] == b['train']['layers'] and a['test']['izy_ce_n'] == b['test']['izy_ce_n']


def test_noisy_layers_chooses_which_layers_sow_kl():
  x = jnp.ones((4, 8, 8, 1))

  def kl_layers(**overrides):
    model = models.create_model(ml_collections.ConfigDict({**_config().model.to_dict(), **overrides}), 3)
    variables = model.init({'params': jax.random.PRNGKey(0), 'noise': jax.random.PRNGKey(1)}, x, deterministic=False)
    _, cols = model.apply(variables, x, deterministic=False, rngs={'noise': jax.random.PRNGKey(2)}, mutable=['kl'])
    return sorted(cols['kl']), sorted(variables['params'])

  assert kl_layers() == (['hidden2'], ['hidden1', 'hidden2', 'logits'])
  assert kl_layers(noisy_layers=())[0] == ['hidden1', 'hidden2']  # () = every hidden layer, the old default.
  assert kl_layers(noisy_layers=(1,))[0] == ['hidden1']
  for bad in ((3,), (0,), (1, 1), 2, ('1',)):
    with pytest.raises(ValueError, match=r'config\.model\.noisy_layers'):
      kl_layers(noisy_layers=bad)
  config = _config().model
  config.name = 'all_cnn_32'
  with pytest.raises(ValueError, match=r"config\.model\.noisy_layers = \(2,\): expected \(\) \(it applies to model 'mlp' only"):
    models.create_model(config, 3)


def test_plots_and_analysis_write_their_files(runs, tmp_path):
  _, on = runs
  records = information_plane.load_records(str(on))
  path = plane_figures.plot_information_plane(records, str(tmp_path / 'plane.png'))
  assert os.path.getsize(path) > 1000
  gaussian = [dict(r, method='gaussian') for r in records]
  path = plane_figures.plot_method_overlay({'information': records, 'gaussian': gaussian},
                                           str(tmp_path / 'overlay.png'))
  assert os.path.getsize(path) > 1000
  summary = plane_figures.analyze_information_plane(str(on), str(tmp_path / 'analysis'))
  assert os.path.getsize(tmp_path / 'analysis' / 'information_plane.png') > 1000
  arrays = np.load(tmp_path / 'analysis' / 'information_plane.npz')
  np.testing.assert_array_equal(arrays['step'], [0, 12, 18])
  assert arrays['train/hidden2/ixz'].shape == (3,) and np.isfinite(arrays['train/hidden2/ixz']).all()
  layer = summary['splits']['train']['layers']['hidden2']
  assert layer['final_ixz'] == pytest.approx(records[-1]['train']['layers']['hidden2']['ixz'])
  assert layer['compression'] >= 0 and summary['records'] == 3
  json.dumps(summary)  # analysis.json-ready.


def test_binary_dropout_is_recorded_as_null_with_the_reason(tmp_path):
  config = _config()
  config.model.dropout = 'binary'
  run = train.Run(config, str(tmp_path), model=None, splits=train_helpers.tiny_splits())
  hook = information_plane.capture_hook(config)
  hook.prepare(run)
  scalars = hook(run, run.initial_state(), 0)
  run.checkpointer.close()
  layer = _records(tmp_path)[0]['train']['layers']['hidden2']
  assert layer['ixz'] is None and layer['izy'] is None and 'infinite' in layer['reason']
  assert not any('hidden2/ixz' in k for k in scalars) and 'info_plane/train/izy_ce_n' in scalars


# --- values of the capture, against independent answers ---------------------------------------------------------

# Variational dropout's log α per unit, set before the capture: unit 1 above the cap (α = 1, σ = 1), unit 2 below it.
_VARIATIONAL_LOG_ALPHA = np.array([0.5, -2.0])
# The published fit of Kingma, Salimans & Welling (2015) to Gaussian dropout's KL:
# −KL ≈ C + ½ log α + c1 α + c2 α² + c3 α³.
_VD_C = (1.16145124, -1.50204118, 0.58629921)


def _noise_of(method, config, h1, params):
  """The noise family and scale [N, D] of hidden2, from the config and the parameters alone, and the expected KL
  per example (None where the layer has no KL), in the layers' documented conventions."""
  n, m = h1.shape[0], config.model
  if method == 'information':  # α(x) = 0.001 + max_alpha · sigmoid(alpha projection of the layer's input).
    logits = h1 @ params['hidden2']['alpha']['kernel'] + params['hidden2']['alpha']['bias']
    alpha = 0.001 + m.max_alpha / (1.0 + np.exp(-logits))
    return 'lognormal', alpha, np.sum(-np.log(alpha / (m.max_alpha + 0.001)), axis=1)
  if method == 'lognormal_constant':
    alpha = np.full((n, 2), m.lognormal_alpha)
    return 'lognormal', alpha, np.sum(-np.log(alpha / (m.max_alpha + 0.001)), axis=1)
  if method == 'gaussian':  # ε ~ N(1, p/(1 − p)): the variance of binary dropout at rate p.
    return 'gaussian', np.full((n, 2), math.sqrt(m.dropout_rate / (1.0 - m.dropout_rate))), None
  variance = np.exp(np.minimum(_VARIATIONAL_LOG_ALPHA, 0.0))  # ε ~ N(1, α), α capped at 1.
  c1, c2, c3 = _VD_C
  kl = (c1 + c2 + c3) - (0.5 * np.log(variance) + c1 * variance + c2 * variance**2 + c3 * variance**3)
  return 'gaussian', np.broadcast_to(np.sqrt(variance), (n, 2)), np.full(n, kl.sum())


@pytest.mark.parametrize('method', ['information', 'gaussian', 'variational', 'lognormal_constant'])
def test_captured_information_matches_quadrature(tmp_path, method):
  """One capture of a 64-16-2-3 MLP (noise on the 2-unit layer) at its initial parameters, for every noise method
  with a finite I(X;Z): the recorded I(X;Z) and I(Z;Y) against 2-D quadrature of the mixture (the estimator's exact
  expectation given the M = 32 captured examples; `test_mutual_information.quadrature_information`).

  Everything the quadrature uses is recomputed here, not read from the hook: f by a numpy forward pass of the
  captured examples (chosen by their saved indices), the noise scale from the config and parameters in the layers'
  conventions, and that convention checked against the noise the network actually applies (z/f over 200 noisy
  passes). Unit 2 is 0 (ReLU) on most examples, so the zero-pattern atoms are exercised. With 4096 noise draws per
  example the noise error has a standard deviation of about 0.4 % (I(X;Z)) and 0.6 % (I(Z;Y)) (measured over keys);
  tolerance 3 standard errors (which count the 32 inputs, so are loose) and 3 % relative, so a 5 % bias fails (a
  wrong scale convention, σ² for σ or a missed cap, moves I(X;Z) by 10-40 % here). Also the recorded KL against
  its formula.
  """
  config = _config(num_noise_samples=4096, save_representations=True)
  config.model.update(hidden_sizes=(16, 2), dropout=method, dropout_rate=0.2)
  splits = train_helpers.tiny_splits()
  run = train.Run(config, str(tmp_path), model=None, splits=splits)
  hook = information_plane.capture_hook(config)
  hook.prepare(run)
  state = run.initial_state()
  if method == 'variational':
    params = parallel_lib.first_replica_to_host(state.params)
    params['hidden2']['noise']['log_alpha'] = jnp.asarray(_VARIATIONAL_LOG_ALPHA, jnp.float32)
    state = state.replace(params=params)
  hook(run, state, 0)
  run.checkpointer.close()
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), parallel_lib.first_replica_to_host(state.params))
  record = _records(tmp_path)[0]
  saved = np.load(tmp_path / record['representations'])
  for split in information_plane.SPLITS:
    data = getattr(splits, split)
    index = saved[f'{split}__indices']
    labels = data.labels[index]
    np.testing.assert_array_equal(saved[f'{split}__labels'], labels)
    # The noise-free forward pass, in numpy: x/255 → relu(dense) → relu(dense) = f.
    x = data.images[index].reshape(len(index), -1).astype(np.float64) / 255.0
    h1 = np.maximum(x @ params['hidden1']['signal']['kernel'] + params['hidden1']['signal']['bias'], 0.0)
    f = np.maximum(h1 @ params['hidden2']['signal']['kernel'] + params['hidden2']['signal']['bias'], 0.0)
    np.testing.assert_allclose(saved[f'{split}__hidden2__f'], f, rtol=1e-5, atol=1e-6)
    assert 0 < (f == 0).sum() < f.size - len(f)  # Some zeros, and both units alive.
    noise, scale, kl = _noise_of(method, config, h1, params)
    np.testing.assert_allclose(np.broadcast_to(saved[f'{split}__hidden2__scale'], f.shape), scale, rtol=1e-5)

    # The scale is the network's own: the standardised noise of its noisy passes is N(0, 1).
    def noisy_f(key, images=x.reshape(data.images[index].shape).astype(np.float32)):
      _, cols = run.model.apply({'params': state.params}, images, deterministic=False, rngs={'noise': key},
                                mutable=['kl', 'intermediates'],
                                capture_intermediates=lambda mdl, name: mdl.name == 'hidden2' and name == '__call__')
      return cols['intermediates']['hidden2']['__call__'][0]
    z = np.asarray(jax.jit(jax.vmap(noisy_f))(jax.random.split(jax.random.key(30), 200)), np.float64)
    live = np.broadcast_to(f > 0, z.shape)
    ratio = z[live] / np.broadcast_to(f, z.shape)[live]
    standardised = (np.log(ratio) if noise == 'lognormal' else ratio - 1.0) / np.broadcast_to(scale, z.shape)[live]
    assert abs(standardised.std() - 1.0) < 0.03 and abs(standardised.mean()) < 0.05

    layer = record[split]['layers']['hidden2']
    assert layer['noise'] == noise
    if kl is None:
      assert layer['kl'] is None
    else:
      assert layer['kl'] == pytest.approx(kl.mean(), rel=1e-4)
    truth_xz, truth_zy = quadrature_information(f, scale, noise, labels, step=0.02)
    for name, truth in (('ixz', truth_xz), ('izy', truth_zy)):
      assert abs(layer[name] - truth) < 3 * layer[f'{name}_stderr'], (split, name, layer[name], truth)
      assert layer[name] == pytest.approx(truth, rel=0.03), (split, name)
    assert 0.0 < layer['ixz'] <= record['log_m'] + 1e-6 and layer['ixz_loo'] > layer['ixz']
    assert truth_zy <= record[split]['h_y']


@pytest.mark.parametrize('field, value, message', [
    ('every_epochs', 0, r'config\.information_plane\.every_epochs = 0: expected a positive int'),
    ('num_noise_samples', -1, r'config\.information_plane\.num_noise_samples = -1: expected a positive int'),
    ('num_examples', 41, r'config\.information_plane\.num_examples = 41: expected at most the size of the test '
                         r'split \(40 examples\)')])
def test_bad_config_is_reported_before_training(tmp_path, field, value, message):
  config = _config(**{field: value})
  with pytest.raises(ValueError, match=message):
    _train(tmp_path, config)
  assert not os.listdir(tmp_path / 'checkpoints') if (tmp_path / 'checkpoints').exists() else True
  assert not (tmp_path / information_plane.RECORDS_FILE).exists()


@pytest.mark.parametrize('variant', ['', 'gaussian', 'cpu', 'cpu_gaussian', 'smoke', 'smoke_gaussian'])
def test_mnist_ip_config_variants_validate(variant):
  from configs import mnist_ip  # pylint: disable=g-import-not-at-top
  config = mnist_ip.get_config(variant)
  train.validate_config(config, num_devices=1)
  information_plane.validate_config(config)
  assert tuple(config.model.noisy_layers) == (3,) and len(config.model.hidden_sizes) == 3
  if not variant.startswith('smoke'):  # The smoke variant shrinks the widths.
    assert tuple(config.model.hidden_sizes) == (512, 128, 32)
  assert config.model.dropout == ('gaussian' if variant.endswith('gaussian') else 'information')
  assert config.information_plane.enabled and config.optim.decay_epochs == config.train.num_epochs
  assert (config.optim.name, config.optim.schedule, config.loss.beta) == ('sgd_momentum', 'cosine', 3.0)


def test_cosine_schedule_and_plain_momentum_sgd():
  from configs import mnist_ip  # pylint: disable=g-import-not-at-top
  config = mnist_ip.get_config('cpu').optim
  schedule = optim.create_schedule(config, 10)
  total = 10 * config.decay_epochs
  assert [float(schedule(s)) for s in (0, total // 2, total)] == pytest.approx([0.1, 0.05, 0.0], abs=1e-7)
  tx, _ = optim.create_optimizer(config, 10)
  params = {'w': jnp.ones(2)}
  updates, state = tx.update({'w': jnp.ones(2)}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -0.1)  # Heavy ball: the first step is plain SGD (Nesterov would be 0.19).
  for field, value, message in (('schedule', 'step', r"config\.optim\.schedule = 'step'"),
                                ('decay_epochs', 0, r'config\.optim\.decay_epochs = 0')):
    bad = ml_collections.ConfigDict(config.to_dict())
    bad[field] = value
    with pytest.raises(ValueError, match=message):
      optim.create_schedule(bad, 10)
