"""launch.py end to end in subprocesses: print, overrides, train then eval, and its error messages. (One device
against two: tests/test_cpu_process.py.)"""
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
  assert 'Variant folder' not in result.stderr  # TFDS's noise about data_dirs without MNIST (data/sources.py).
  # Once, which copy was read and where the run writes; at the end, the next command (issue 26, item 12).
  first = result.stdout.splitlines()[0]
  assert first.startswith('data: mnist, 1024 train / 1024 test examples (read from ') and '/mnist' in first
  assert first.endswith(f'This run writes {tmp_path} (config.json, checkpoints/, metrics.jsonl, summary.json).')
  assert f'Next: python launch.py --workdir={tmp_path} --mode=analyze' in result.stdout
  assert 'orbax' not in result.stderr and 'read only' not in result.stderr
  trained = [line for line in result.stdout.splitlines() if line.startswith('test error:')]
  result = _launch(f'--workdir={tmp_path}', '--mode=eval', devices=2)  # No --config: the run's config.json.
  assert result.returncode == 0, result.stderr[-3000:]
  assert [line for line in result.stdout.splitlines() if line.startswith('test error:')] == trained
  assert 'read only' not in result.stderr and 'wall time' not in result.stdout  # eval trains nothing
  result = _launch('--config=configs/mnist_fc.py:smoke', f'--workdir={tmp_path / "empty"}', '--mode=eval')
  assert result.returncode == 1 and 'does not exist' in result.stderr

