"""The --config file of launch.py, checked before absl parses the flags: found in argv and loaded as
ml_collections' config_flags loads it, so that each way it can be wrong is one line naming the file.

config_flags itself reports these late and far from the cause: a missing file as a trace once the config is first
used, a syntax error or an exception in get_config as a trace, a module without get_config as a bad override, a dict
or None as an AttributeError in training. Loading the file once more here is cheap (configs only build a
ConfigDict) and imports no JAX.
"""
from __future__ import annotations

import importlib.machinery
import os
import re
import sys
import types

import ml_collections


def config_argument(argv: list[str]) -> str | None:
  """The value of --config in `argv` (`--config=X`, `-config=X` or `--config X`; the last one wins), else None."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == '--':  # absl: what follows is positional.
      break
    match = re.fullmatch(r'--?config(?:=(.*))?', arg, re.DOTALL)
    if match and match.group(1) is not None:
      value = match.group(1)
    elif match and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _one_line(exception: Exception) -> str:
  return ' '.join(f'{type(exception).__name__}: {exception}'.split())


def error(argv: list[str]) -> str | None:
  """What is wrong with the --config file, loaded as config_flags loads it (`get_config(variant)` of the module at
  the path before the first ':'); None when nothing is, or there is no --config."""
  value = config_argument(argv)
  if value is None:
    return None
  path, *variant = value.split(':', 1)
  expected = 'a Python file whose get_config() returns an ml_collections.ConfigDict'
  if not os.path.isfile(path):
    problem = 'is not a file' if os.path.exists(path) else 'does not exist'
    return f'config file {path or repr(path)} {problem} (expected {expected}, e.g. configs/mnist_fc.py).'
  loader = importlib.machinery.SourceFileLoader('_launch_config_check', path)
  module = types.ModuleType(loader.name)
  module.__file__ = path
  sys.modules[loader.name] = module  # Dataclasses defined in a config look their module up there.
  try:
    loader.exec_module(module)
  except SyntaxError as e:
    where = f'line {e.lineno}' if e.filename == path else f'{e.filename}, line {e.lineno}'
    return f'config file {path}, {where}: SyntaxError: {e.msg} (expected Python source defining get_config()).'
  except Exception as e:  # pylint: disable=broad-except
    return f'config file {path}: importing it raised {_one_line(e)}'
  finally:
    sys.modules.pop(loader.name, None)
  if not callable(getattr(module, 'get_config', None)):
    return f'config file {path} defines no get_config() (expected {expected}).'
  call = f'get_config({variant[0]!r})' if variant else 'get_config()'
  try:
    config = module.get_config(*variant)
  except Exception as e:  # pylint: disable=broad-except
    return f'config file {path}: {call} raised {_one_line(e)}'
  if not isinstance(config, ml_collections.ConfigDict):
    got = 'None (a missing return statement?)' if config is None else f'a {type(config).__name__}'
    return f'config file {path}: {call} returned {got}; expected an ml_collections.ConfigDict.'
  return None
