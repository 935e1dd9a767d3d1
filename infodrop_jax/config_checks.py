"""What config fields must hold: the type tests and the one error format every validator shares.

Each field is validated in one place (the trainer's fields in `train.validate_config`, the model's in
`models.validate_config`, the data's in `data.config.validate`, ...); they all build their `check` here, so an error
always reads `config.<section>.<field> = <value>: expected <what>.` and names the field before anything compiles.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# check(ok, field, expected): raises ValueError naming the field (relative to its section) unless `ok`.
Check = Callable[[bool, str, str], None]


def is_int(value: Any) -> bool:
  """An int (numpy ints too), not a bool: what an int config field must hold."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_finite_real(value: Any) -> bool:
  """A finite int or float (not a bool, nan or inf): what a float config field must hold."""
  return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
          and math.isfinite(value))


def is_bool(value: Any) -> bool:
  return isinstance(value, (bool, np.bool_))


def _lookup(section: Mapping[str, Any], field: str) -> Any:
  value: Any = section
  for part in field.split('.'):
    if not isinstance(value, Mapping) and not hasattr(value, 'get'):
      return None
    value = value.get(part)
  return value


def checker(section: Mapping[str, Any], path: str = '') -> Check:
  """`check(ok, field, expected)` for the fields of `section`, reported as `config.<path>.<field>`.

  `path` is where `section` sits in the experiment config ('' for the root, 'model', 'data', ...).
  """
  prefix = f'config.{path}.' if path else 'config.'

  def check(ok: bool, field: str, expected: str) -> None:
    if not ok:
      raise ValueError(f'{prefix}{field} = {_lookup(section, field)!r}: expected {expected}.')

  return check


def require(section: Mapping[str, Any], path: str, fields: tuple[str, ...], what: str) -> None:
  """Raises ValueError naming the first of `fields` that `section` lacks (`what` says who needs it)."""
  for field in fields:
    if field not in section:
      raise ValueError(f'config.{path}.{field} is missing; it is required by {what}.')
