"""launch.py end to end in subprocesses: print, overrides, train then eval, and its error messages."""
import json

import pytest

import train_helpers

_launch = train_helpers.launch


def test_print_config_applies_overrides():
  result = _launch('--config=configs/mnist_fc.py:smoke', '--print_config', '--config.loss.beta=0.25')
  assert result.returncode == 0, result.stderr
  assert 'beta: 0.25' in result.stdout and 'name: mlp' in result.stdout


def test_unknown_field_is_rejected():
  result = _launch('--config=configs/mnist_fc.py', '--print_config', '--config.model.dropuot=binary')
  assert result.returncode != 0
  assert 'dropuot' in result.stderr and 'model' in result.stderr


def test_bad_value_is_reported_without_a_traceback(tmp_path):
  result = _launch('--config=configs/mnist_fc.py:smoke', f'--workdir={tmp_path}', '--config.model.dropout=drop')
  assert result.returncode == 1
  assert "error: config.model.dropout = 'drop': expected one of" in result.stderr


def test_train_then_eval_on_real_mnist(shared_data, tmp_path):
  result = _launch('--config=configs/mnist_fc.py:smoke', f'--workdir={tmp_path}', '--config.train.num_epochs=1',
                   devices=2)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'test error:' in result.stdout and (tmp_path / 'summary.json').exists()
  result = _launch('--config=configs/mnist_fc.py:smoke', f'--workdir={tmp_path}', '--mode=eval', devices=2)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'test error:' in result.stdout and 'steps' in result.stdout
  result = _launch('--config=configs/mnist_fc.py:smoke', f'--workdir={tmp_path / "empty"}', '--mode=eval')
  assert result.returncode == 1 and 'does not exist' in result.stderr


def test_one_cpu_device_and_two_give_the_same_result(shared_data, tmp_path):
  """The batch split over two devices is the same SPMD program: same data order and noise draws, same result."""
  summaries = []
  for devices in (1, 2):
    workdir = tmp_path / f'devices{devices}'
    result = _launch('--config=configs/mnist_fc.py:smoke', f'--workdir={workdir}', '--config.train.num_epochs=1',
                     devices=devices)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries.append(json.loads((workdir / 'summary.json').read_text()))
  for key in ('test/error_d', 'test/error_n', 'test/ce_d', 'test/ce_n', 'test/kl/hidden1/noise'):
    assert summaries[0][key] == pytest.approx(summaries[1][key], rel=1e-4, abs=1e-6), key
