"""Train or evaluate an experiment config.

  python launch.py --config=configs/cifar_info.py --workdir=workdirs/cifar_info
  python launch.py --config=configs/mnist_fc.py:smoke --workdir=/tmp/w --config.model.dropout=binary
  python launch.py --config=configs/cifar_info.py --workdir=W --mode=eval     # evaluate the latest checkpoint
  python launch.py --config=configs/cifar_info.py --print_config              # show the resolved config, exit

Training resumes from the latest checkpoint in --workdir. Multi-host: --config.distributed.enabled=True (with
coordinator_address/num_processes/process_id, or from the cluster environment) on every process.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:variant]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the summary.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                          'train: train (resuming) then evaluate; eval: evaluate the latest checkpoint only.')
_PRINT_CONFIG = flags.DEFINE_bool('print_config', False, 'Print the resolved config and exit.')
flags.mark_flag_as_required('config')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Orbax and JAX log every checkpoint step at INFO; keep the console for the progress line and the summary.
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if _PRINT_CONFIG.value:
    print(config)
    return
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required (unless --print_config).')
  # Imported here so that --print_config and flag errors never initialise JAX.
  from infodrop_jax import parallel  # pylint: disable=g-import-not-at-top
  from infodrop_jax import train  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(config.distributed)
  try:
    if _MODE.value == 'train':
      train.train_and_evaluate(config, _WORKDIR.value)
    else:
      train.evaluate_checkpoint(config, _WORKDIR.value)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config override errors (unknown field, wrong type) as one line instead of a trace."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}\nPass --help for usage.', file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    overrides = [a for a in argv[1:] if a.startswith('--config.')]
    message = str(e).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
    print(f'error: bad --config override among {overrides}: {message}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
