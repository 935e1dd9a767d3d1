"""Which fields of two experiment configs differ: the one comparison behind resume checks and analysis checks.

    differ = config_diff.differences(config, saved, free=config_diff.RESUME_FREE_FIELDS)
    if differ:
      raise ValueError(f'... {config_diff.describe(differ)}')

Configs are compared as JSON (what `W/config.json` holds), so a tuple and the list it was saved as are equal.
Fields are dotted paths ('optim.lr_drop_epochs'); a free entry covers that field and everything below it
('logging' covers 'logging.tensorboard').
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

ABSENT = '<absent>'

# Fields a resumed training run may change freely: they decide how the run is driven, logged, checkpointed or
# spread over devices, or what the periodic extras do, never the trained weights or the final evaluation.
# `train.num_epochs` is here because no learning-rate schedule depends on it (`optim.create_schedule` takes only
# the optim section: piecewise drops at fixed epochs, cosine over `optim.decay_epochs`), so raising it continues
# the same trajectory. If a schedule ever reads `train.num_epochs`, take it out of this list.
RESUME_FREE_FIELDS = (
    'logging', 'distributed', 'information_plane',
    'eval.batch_size', 'eval.every_epochs',
    'train.num_epochs', 'train.steps_per_call', 'train.log_every_steps', 'train.checkpoint_every_steps',
    'train.keep_checkpoints', 'train.parallel',
    'data.cache_dir',
    # Same parameters and the same function; like train.parallel they change only the float rounding order.
    'model.fuse_alpha', 'train.cpu_speedups',
)


# What the code assumes for fields a config saved by an older version lacks (`config.get(field, default)` where
# they are read): such a field compares equal to this value.
ABSENT_MEANS = {
    'task': 'classification',
    'model.noisy_layers': [],
    'optim.schedule': 'piecewise',
    'optim.decay_epochs': 0,
    'model.fuse_alpha': False,
}


def as_json(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """A config (ConfigDict or already-loaded JSON dict) as the plain dict its config.json would hold."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=repr))


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a.b.c': leaf}; tuples become lists, as in JSON."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
  return out


def _is_free(field: str, free: Iterable[str]) -> bool:
  return any(field == f or field.startswith(f + '.') for f in free)


def differences(ours: ml_collections.ConfigDict | Mapping[str, Any], theirs: ml_collections.ConfigDict | Mapping[str, Any],
                free: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
  """(field, our value, their value) for every field outside `free` that differs, sorted by field.

  A field present in only one of them differs too (its other value is `ABSENT`), unless the other holds what the
  code assumes for it when absent (`ABSENT_MEANS`: fields older versions did not write).
  """
  free = tuple(free)
  a, b = flatten(as_json(ours)), flatten(as_json(theirs))
  differ = []
  for k in sorted(set(a) | set(b)):
    x, y = a.get(k, ABSENT), b.get(k, ABSENT)
    if x == y or _is_free(k, free) or ABSENT in (x, y) and k in ABSENT_MEANS and ABSENT_MEANS[k] in (x, y):
      continue
    differ.append((k, x, y))
  return differ


def describe(differ: list[tuple[str, Any, Any]], ours: str = 'now', theirs: str = 'before', limit: int = 8) -> str:
  """'optim.learning_rate: now 0.1 vs before 0.05; ...' for the first `limit` differences."""
  text = '; '.join(f'{k}: {ours} {a!r} vs {theirs} {b!r}' for k, a, b in differ[:limit])
  return text + (f'; and {len(differ) - limit} more' if len(differ) > limit else '')
