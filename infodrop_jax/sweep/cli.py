"""launch.py's sweep modes: `main(mode, config, workdir, ...)` for --mode=sweep | sweep_commands | report."""
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from infodrop_jax import ownership
from infodrop_jax.sweep import checks, slurm
from infodrop_jax.sweep.commands import shell_line
from infodrop_jax.sweep.files import MEANS_FILE, RESULTS_FILE
from infodrop_jax.sweep.report import write_report
from infodrop_jax.sweep.results import read_csv
from infodrop_jax.sweep.runner import run_sweep
from infodrop_jax.sweep.spec import SweepError, format_value, load_sweep, points, select

MODES = ('sweep', 'sweep_commands', 'report')


def _config_args(config_file: str | None, overrides: Mapping[str, Any] | None) -> list[str]:
  """The --config arguments that rebuild this sweep config: its file and the overrides given."""
  args = [f'--config={config_file}'] if config_file else []
  return args + [f'--config.{k}={format_value(v)}' for k, v in (overrides or {}).items()]


def _sweep_command(config_file: str | None, overrides: Mapping[str, Any] | None, workdir: str, mode: str) -> str:
  args = [*_config_args(config_file, overrides), f'--workdir={workdir}', f'--mode={mode}']
  return 'python launch.py ' + ' '.join(shlex.quote(a) for a in args)


def main(mode: str, config: ml_collections.ConfigDict | None, workdir: str, *, config_file: str | None = None,
         overrides: Mapping[str, Any] | None = None, out: Callable[[str], None] = print) -> int:
  """launch.py's --mode=sweep | sweep_commands | report; returns the exit status."""
  try:
    if config is None:
      if mode != 'report':
        raise SweepError(f'--mode={mode} needs --config=configs/sweeps/<x>.py[:variant].')
      config = load_sweep(workdir)
    if 'axes' not in config or 'base' not in config:
      raise SweepError(f'--mode={mode} needs a sweep config (configs/sweeps/*.py, with base and axes); '
                       f'{config_file or "--config"} is an experiment config.')
    checks.validate(config)  # a claim no kind can decide fails here, not after the sweep has run
    if mode == 'sweep_commands':
      slurm.check(config)
      chosen = select(config, points(config))
      if str(config.format) == 'slurm':
        per_task = {k: v for k, v in (overrides or {}).items() if k not in ('format', 'only', 'parallel')}
        out(slurm.array_script(config, workdir, chosen, _config_args(config_file, per_task)))
        return 0
      for p in chosen:
        out(shell_line(p, workdir, bool(config.analyze)))
      return 0
    if mode == 'report':
      os.makedirs(workdir, exist_ok=True)
      with ownership.shared_files_lock(workdir):
        path = write_report(config, workdir)
      out(f'wrote {os.path.join(workdir, RESULTS_FILE)}, {os.path.join(workdir, MEANS_FILE)} and {path}')
      unreadable = [r for r in read_csv(os.path.join(workdir, RESULTS_FILE)) if r['status'] == 'unreadable']
      if unreadable:
        print(f'error: {len(unreadable)} finished point(s) could not be read, so the report gives no verdict: '
              + '; '.join(f'{r["point"]}: {r["problem"]}' for r in unreadable)
              + '. Run the sweep command again to redo them.', file=sys.stderr)
        return 1
      return 0
    # Recorded without `only`: the array tasks of one sweep (one point each) are one sweep command in sweep.json.
    whole = {k: v for k, v in (overrides or {}).items() if k != 'only'}
    return run_sweep(config, workdir, command=_sweep_command(config_file, whole, workdir, 'sweep'), out=out)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
