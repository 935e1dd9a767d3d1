"""Config validation: a fuzz of invalid overrides (every one a ValueError naming its field, never a traceback or a
silent acceptance), distributed settings checked before JAX is contacted, warnings for fields the model ignores."""
import copy
import math
import time
import warnings

import jax
import ml_collections
import pytest

import train_helpers
from configs import cifar_info
from configs import mnist_fc
from infodrop_jax import parallel
from infodrop_jax import train

NAN, INF = math.nan, math.inf
NON_FINITE = (NAN, INF, -INF)
COUNTERS = ('train.steps_per_call', 'train.log_every_steps', 'train.checkpoint_every_steps', 'train.keep_checkpoints')

# (field, invalid values, which base config: 'mlp' = mnist_fc:smoke, 'cnn' = cifar_info:smoke, extra fields to set).
CASES = [
    ('loss.beta', NON_FINITE + (-1.0, -1e-9), 'mlp', {}),
    ('loss.weight_decay', NON_FINITE + (-1e-3,), 'mlp', {}),
    ('optim.learning_rate', NON_FINITE + (0.0, -0.1), 'mlp', {}),
    ('optim.momentum', NON_FINITE + (-0.1, 1.0, 1.5), 'mlp', {}),
    ('optim.lr_drop_factor', NON_FINITE + (0.0, -0.1), 'mlp', {}),
    ('optim.lr_drop_epochs', ((1.5,), (0,), (-3,), (10, 2.5), (NAN,), (INF,), ('10',), (True,)), 'mlp', {}),
    ('optim.name', ('', 'sgd', 'ADAM', 'rmsprop'), 'mlp', {}),
    ('optim.schedule', ('', 'linear', 'Cosine'), 'mlp', {}),
    ('optim.decay_epochs', (0, -1, -100), 'mlp', {'optim.schedule': 'cosine'}),
    ('model.name', ('', 'resnet', 'MLP'), 'mlp', {}),
    ('model.dropout', ('', 'infodrop', 'Information'), 'mlp', {}),
    ('model.activation', ('', 'tanh', 'RELU'), 'mlp', {}),
    ('model.dtype', ('', 'float16', 'float64'), 'mlp', {}),
    ('model.max_alpha', NON_FINITE + (0.0, -0.5), 'mlp', {}),
    ('model.filter_percentage', NON_FINITE + (0.0, 1.5, -1.0), 'cnn', {}),
    ('model.dropout_rate', NON_FINITE + (-0.1, 1.0, 2.0), 'mlp', {}),
    ('model.input_dropout_rate', NON_FINITE + (-0.1, 1.0), 'cnn', {}),
    ('model.lognormal_alpha', NON_FINITE + (0.0, -1.0), 'mlp', {}),
    ('model.bn_momentum', NON_FINITE + (0.0, 1.0, 1.5, -0.5), 'cnn', {}),
    ('model.hidden_sizes', ((), (0,), (-1, 32), (32.5,), (True,), ('32',)), 'mlp', {}),
    ('model.noisy_layers', ((0,), (4,), (1, 1), (-1,), (1.0,)), 'mlp', {}),
    ('model.noisy_layers', ((1,),), 'cnn', {}),
    ('train.num_epochs', (0, -1), 'mlp', {}),
    ('train.batch_size', (0, -8, 12), 'mlp', {}),
    ('eval.batch_size', (0, -8, 20), 'mlp', {}),
    ('train.parallel', ('', 'pjit', 'JIT'), 'mlp', {}),
    ('train.data_placement', ('', 'sharded'), 'mlp', {}),
    *[(field, (0, -1, -1000), 'mlp', {}) for field in COUNTERS],
    ('eval.every_epochs', (-1, -5), 'mlp', {}),
    ('eval.bn_reestimate_steps', (-2, -100), 'mlp', {}),
    ('seed', (-1, 2**32), 'mlp', {}),
    ('task', ('', 'regression'), 'mlp', {}),
    ('data.name', ('', 'imagenet'), 'mlp', {}),
    ('data.source', ('', 'http', 'cifar_archive'), 'mlp', {}),
    ('data.source', ('idx',), 'cnn', {}),
    ('data.preprocess', ('', 'whiten', 'gcn', 'gcn_zca'), 'mlp', {}),
    ('data.preprocess', ('binarize_threshold', 'binarize_stochastic'), 'cnn', {}),
    ('data.valid_size', (-1,), 'mlp', {}),
    ('data.limit', (-1, -512), 'mlp', {}),
    ('data.seed', (-1, 2**32), 'mlp', {}),
    ('data.zca_epsilon', NON_FINITE + (-1e-5,), 'cnn', {}),
    ('data.gcn_min_std', NON_FINITE + (0.0, -1e-8), 'cnn', {}),
    ('distributed.coordinator_address',
     (':::', 'localhost', 'host:', ':1234', 'host:0', 'host:70000', 'host:port', '::1:1234', '[::1', '[::1]',
      'a b:1234', 'http://host:1234'), 'mlp', {'distributed.enabled': True}),
    ('distributed.coordinator_address', (':::',), 'mlp', {}),  # Malformed even where distributed is off.
    ('distributed.num_processes', (0, -2, -100), 'mlp', {'distributed.enabled': True}),
    ('distributed.process_id', (-2, -100), 'mlp', {'distributed.enabled': True}),
    ('distributed.process_id', (2, 3), 'mlp', {'distributed.enabled': True, 'distributed.num_processes': 2}),
    ('distributed.process_id', (0,), 'mlp', {'distributed.enabled': True, 'distributed.num_processes': -1}),
]


def _base(kind):
  return mnist_fc.get_config('smoke') if kind == 'mlp' else cifar_info.get_config('smoke')


def _set(config, field, value):
  *sections, name = field.split('.')
  node = config
  for section in sections:
    node = node[section]
  node[name] = value


def _overrides():
  bases = {kind: _base(kind) for kind in ('mlp', 'cnn')}
  for field, values, kind, extra in CASES:
    # The trainer's own fields are checked the same way for every model: try them on both.
    kinds = ('mlp', 'cnn') if field.split('.')[0] in ('loss', 'optim', 'train', 'eval', 'seed') else (kind,)
    for kind in kinds:
      for value in values:
        config = copy.deepcopy(bases[kind])
        for extra_field, extra_value in extra.items():
          _set(config, extra_field, extra_value)
        _set(config, field, value)
        yield field, value, kind, config


def test_base_configs_pass():
  for kind in ('mlp', 'cnn'):
    train.validate_config(_base(kind), num_devices=8)
  config = _base('mlp')
  config.optim.schedule, config.optim.decay_epochs = 'cosine', 5
  config.distributed.update(enabled=True, coordinator_address='[::1]:1234', num_processes=2, process_id=1)
  train.validate_config(config, num_devices=8)


def test_fuzz_of_invalid_overrides_gives_a_value_error_naming_the_field():
  """Every override is rejected with a ValueError (no other exception: that would be a traceback from launch.py),
  and its message names the field."""
  tried, accepted, unnamed = 0, [], []
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    for field, value, kind, config in _overrides():
      tried += 1
      try:
        train.validate_config(config, num_devices=8)
      except ValueError as e:
        if f'config.{field}' not in str(e) and not (field == 'distributed.process_id' and 'num_processes' in str(e)):
          unnamed.append((field, value, str(e)))
      else:
        accepted.append((kind, field, value))
  assert tried >= 200
  assert not accepted, f'silently accepted: {accepted}'
  assert not unnamed, unnamed


def test_fields_the_model_ignores_warn():
  config = _base('mlp')
  config.model.filter_percentage = 0.5
  with pytest.warns(UserWarning, match=r"config.model.filter_percentage = 0.5 has no effect: model 'mlp'"):
    train.validate_config(config)
  config = _base('mlp')
  config.model.input_dropout_rate = 0.5
  with pytest.warns(UserWarning, match=r'config.model.input_dropout_rate = 0.5 has no effect'):
    train.validate_config(config)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # The shipped configs (smoke included) set nothing their model ignores.
    for kind in ('mlp', 'cnn'):
      train.validate_config(_base(kind))


def test_eval_batch_larger_than_the_test_split_is_refused(tmp_path):
  config = train_helpers.tiny_config()
  config.eval.batch_size = 48  # The tiny test split has 40 examples: 5 batches of 8 on 8 devices.
  with pytest.raises(ValueError, match=r'config.eval.batch_size = 48: expected at most 40 \(the test split has 40'):
    train.Run(config, str(tmp_path), model=train_helpers.TinyNoisyNet(), splits=train_helpers.tiny_splits())


def test_malformed_coordinator_is_refused_before_jax_is_contacted(monkeypatch):
  def initialize(**kwargs):
    raise AssertionError(f'jax.distributed.initialize called with {kwargs}')
  monkeypatch.setattr(jax.distributed, 'initialize', initialize)
  config = ml_collections.ConfigDict(dict(enabled=True, coordinator_address=':::', num_processes=2, process_id=0))
  start = time.perf_counter()
  with pytest.raises(ValueError, match=r"coordinator_address = ':::': expected 'host:port'"):
    parallel.initialize_distributed(config)
  config.update(coordinator_address='10.0.0.1:1234', process_id=2)
  with pytest.raises(ValueError, match=r'process_id = 2: expected an int in \[0, 2\)'):
    parallel.initialize_distributed(config)
  assert time.perf_counter() - start < 1
  config.update(process_id=1)
  with pytest.raises(AssertionError, match="coordinator_address': '10.0.0.1:1234'"):
    parallel.initialize_distributed(config)  # Valid: handed to JAX as given.


@pytest.mark.parametrize('override, message', [
    ('--config.optim.learning_rate=nan', 'error: config.optim.learning_rate = nan: expected a finite positive float'),
    ('--config.optim.lr_drop_epochs=(1.5,)', 'error: config.optim.lr_drop_epochs = (1.5,): expected a tuple of whole'),
    ('--config.distributed.coordinator_address=:::', "error: config.distributed.coordinator_address = ':::'"),
])
def test_launch_reports_invalid_overrides_in_one_line(tmp_path, override, message):
  args = ['--config=configs/mnist_fc.py:smoke', f'--workdir={tmp_path / "w"}', override]
  if 'distributed' in override:
    args.append('--config.distributed.enabled=True')
  result = train_helpers.launch(*args, devices=8)  # The test session's 8 forced devices, as before.
  assert result.returncode == 1, result.stderr[-2000:]
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'w').exists()


def test_a_failing_jax_distributed_initialize_is_reported_as_a_connection_error(monkeypatch):
  def initialize(**kwargs):
    raise RuntimeError('DEADLINE_EXCEEDED: Barrier timed out')
  monkeypatch.setattr(jax.distributed, 'initialize', initialize)
  config = ml_collections.ConfigDict(dict(enabled=True, coordinator_address='10.0.0.1:1234', num_processes=2,
                                          process_id=1))
  with pytest.raises(ConnectionError, match=r"coordinator_address='10.0.0.1:1234'.*Barrier timed out.*process 0"):
    parallel.initialize_distributed(config)
