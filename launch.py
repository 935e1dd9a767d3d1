"""Train or evaluate an experiment config.

  python launch.py --config=configs/cifar_info.py --workdir=workdirs/cifar_info
  python launch.py --config=configs/mnist_fc.py:smoke --workdir=/tmp/w --config.model.dropout=binary
  python launch.py --workdir=W --mode=eval               # the latest checkpoint on the test set (W's config)
  python launch.py --workdir=W --mode=analyze            # figures + numbers of a trained run into W/analysis/
  python launch.py --config=configs/cifar_info.py --print_config              # show the resolved config, exit
  python launch.py --config=configs/sweeps/fig3a_mnist.py:cpu --workdir=W --mode=sweep  # every point, then W/report.md
  (--mode=sweep_commands: one shell line per point; --mode=report: W/results*.csv + W/report.md; infodrop_jax/sweep/)

Training resumes from the latest checkpoint in --workdir; a config that differs from the run's config.json in a
field that changes the result is refused unless --allow_config_change, and a finished run is left as it is. Multi-host: --config.distributed.enabled=True (with
coordinator_address/num_processes/process_id, or from the cluster environment) on every process.

Exit status: 0 done; 1 an error, said in one line; 2 a bad flag or config file; 3 (--mode=sweep) points left to run
or running in other processes; 75 the workdir is owned by another running process; 128 + N stopped by signal N
(SIGTERM: 143, Ctrl-C: 130) after saving a checkpoint: run the same command again to resume.

It has no side effects of its own: it neither restarts itself nor edits the environment. The CPU speed-ups are the
trainer's (`--config.train.cpu_speedups`, infodrop_jax/cpu/); splitting the CPU into several XLA devices is asked
for explicitly (--host_devices, off by default since it changes float rounding), and huge pages for malloc are an
environment variable you set yourself (README).
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from infodrop_jax import config_file
from infodrop_jax import stopping
from infodrop_jax.analysis import config as analysis_config
from infodrop_jax.cpu import process as cpu_process

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:variant]); '
                                          'optional with --mode=analyze (the run\'s config.json is used).',
                                          lock_config=True)
_ANALYSIS = config_flags.DEFINE_config_dict('analysis', analysis_config.get_config(),
                                            '--mode=analyze options (infodrop_jax/analysis/config.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the summary.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'analyze', 'sweep', 'sweep_commands', 'report'],
                          'train: train (resuming) then evaluate; eval: evaluate the latest checkpoint only; '
                          'analyze: figures and numbers of the latest checkpoint into <workdir>/analysis/; '
                          'sweep: run every point of a sweep config (configs/sweeps/) into <workdir>/<point>/, then '
                          'report; sweep_commands: print one shell line per point; report: <workdir>/results.csv, '
                          'results_mean.csv and report.md of a sweep.')
_HOST_DEVICES = flags.DEFINE_string(
    'host_devices', '1', "--mode=train/eval on a CPU: XLA CPU devices to split the machine into, the batch split "
    "over them (infodrop_jax/cpu/process.py); 1 (the default) leaves XLA's one device. 'auto': 2 for an All-CNN-32 "
    "classifier on 2+ cores when config.train.parallel='jit' and the batch sizes are even, else 1. It changes the "
    'float rounding of a run. A count already in XLA_FLAGS wins; GPU/TPU runs are not affected.')
_PRINT_CONFIG = flags.DEFINE_bool('print_config', False, 'Print the resolved config and exit.')
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False, 'Resume the run in --workdir even though the config differs from its config.json '
    'in fields that change the result (without it such a resume is refused, naming the fields).')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Orbax and JAX log every checkpoint step at INFO; keep the console for the progress line and the summary.
  logging.set_verbosity(logging.WARNING)
  stopping.stop_with_parent()  # Only when a sweep started this process (it names itself in the environment).
  config = _CONFIG.value
  if config is None and not (_MODE.value in ('eval', 'analyze', 'report') and _WORKDIR.value):
    raise app.UsageError('--config is required (except with --mode=eval, analyze or report and a --workdir: they '
                         'read <workdir>/config.json).')
  if _PRINT_CONFIG.value:
    print(config)
    return
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required (unless --print_config).')
  if _MODE.value in ('sweep', 'sweep_commands', 'report'):  # The sweep process only starts runs: no JAX here.
    from infodrop_jax import sweep  # pylint: disable=g-import-not-at-top
    sys.exit(sweep.main(_MODE.value, config, _WORKDIR.value, config_file=config_flags.get_config_filename(
        flags.FLAGS['config']) if config is not None else None, overrides=config_flags.get_override_values(
            flags.FLAGS['config']) if config is not None else None))
  if _MODE.value == 'eval' and config is None:  # The run's own config.
    from infodrop_jax import train  # pylint: disable=g-import-not-at-top
    try:
      config = train.load_config(_WORKDIR.value)
    except train.WorkdirError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)
  if _MODE.value in ('train', 'eval'):  # Before JAX starts its backends, which read XLA_FLAGS once.
    try:
      cpu_process.use_host_devices(cpu_process.host_devices(config, _HOST_DEVICES.value))
    except ValueError as e:
      raise app.UsageError(str(e)) from e
  # Imported here so that --print_config and flag errors never initialise JAX.
  from infodrop_jax import ownership  # pylint: disable=g-import-not-at-top
  from infodrop_jax import parallel  # pylint: disable=g-import-not-at-top
  from infodrop_jax import train  # pylint: disable=g-import-not-at-top
  try:
    if _MODE.value == 'analyze':
      from infodrop_jax import analysis  # pylint: disable=g-import-not-at-top
      analysis.analyze(_WORKDIR.value, config, _ANALYSIS.value)
      return
    parallel.initialize_distributed(config.distributed)
    if _MODE.value == 'train':
      train.train_and_evaluate(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
    else:
      train.evaluate_checkpoint(config, _WORKDIR.value)
  except stopping.StopRequested as stop:
    print(stop, file=sys.stderr)
    sys.exit(stop.exit_code)
  except ownership.WorkdirBusyError as e:  # Its own status: a sweep tells "another process runs it" from a failure.
    print(f'error: {e}', file=sys.stderr)
    sys.exit(ownership.BUSY_EXIT_CODE)
  except (ValueError, FileNotFoundError, FloatingPointError, ConnectionError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a bad config file or config override errors (unknown field, wrong type) as one line
  instead of a trace."""
  error = config_file.error(argv)
  if error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
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
