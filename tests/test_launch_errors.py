"""launch.py on a bad --config file: one `error:` line naming the file and what was expected, exit status 2, no
traceback, before JAX starts. (Bad --config.x=y overrides: tests/test_launch.py.)"""
import pytest

import train_helpers


def _one_error_line(result, *expected: str) -> str:
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  for text in expected:
    assert text in lines[0]
  return lines[0]


def _config_file(tmp_path, source: str) -> str:
  path = tmp_path / 'my_config.py'
  path.write_text(source)
  return str(path)


@pytest.mark.parametrize('form', ['equals', 'space'])
def test_missing_config_file(tmp_path, form):
  args = ['--config=configs/nope.py:smoke'] if form == 'equals' else ['--config', 'configs/nope.py:smoke']
  result = train_helpers.launch(*args, f'--workdir={tmp_path}')
  _one_error_line(result, 'configs/nope.py', 'does not exist', 'get_config()', 'ml_collections.ConfigDict')


def test_config_file_with_a_syntax_error(tmp_path):
  path = _config_file(tmp_path, 'import ml_collections\n\ndef get_config(:\n  pass\n')
  result = train_helpers.launch(f'--config={path}', f'--workdir={tmp_path}')
  _one_error_line(result, path, 'line 3', 'SyntaxError')


def test_get_config_that_raises(tmp_path):
  path = _config_file(tmp_path, 'def get_config(config_string=None):\n'
                                '  raise RuntimeError("no such\\nsetting")\n')
  result = train_helpers.launch(f'--config={path}', f'--workdir={tmp_path}')
  _one_error_line(result, path, 'get_config() raised RuntimeError: no such setting')


def test_unknown_variant(tmp_path):
  result = train_helpers.launch('--config=configs/mnist_fc.py:smok', f'--workdir={tmp_path}')
  _one_error_line(result, 'configs/mnist_fc.py', "get_config('smok') raised ValueError",
                  "unknown config variant 'smok'")


def test_module_without_get_config(tmp_path):
  path = _config_file(tmp_path, 'CONFIG = {"a": 1}\n')
  result = train_helpers.launch(f'--config={path}', f'--workdir={tmp_path}')
  line = _one_error_line(result, path, 'defines no get_config()', 'ml_collections.ConfigDict')
  assert 'override' not in line


@pytest.mark.parametrize('returned, described', [('{"a": 1}', 'returned a dict'), ('None', 'returned None')])
def test_get_config_that_returns_no_config_dict(tmp_path, returned, described):
  path = _config_file(tmp_path, f'def get_config():\n  return {returned}\n')
  result = train_helpers.launch(f'--config={path}', '--print_config')
  _one_error_line(result, path, described, 'expected an ml_collections.ConfigDict')
