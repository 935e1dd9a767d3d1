"""A sweep as a Slurm job array: `--mode=sweep_commands --config.format=slurm` prints a ready array job script.

Task i runs the i-th selected point through `--mode=sweep --config.only=<its name>`: it trains (resuming from the
point's checkpoint, so a requeued or re-submitted task goes on where it stopped), analyses, writes W/<point>/DONE
and, under the sweep's shared-files lock, W/results*.csv and W/report.md. Tasks of different points never block
one another (each owns only its point's workdir). The script's header says how to submit it with the report job
chained after the whole array (`--dependency=afterany:<array id>`), which rewrites the report once every task
ended, whatever their exit status.

Resources come from `config.slurm` (time, cpus_per_task, gpus_per_task, mem, partition, account, extra lines).
"""
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

import ml_collections

from infodrop_jax.sweep.files import LAUNCH, REPO_ROOT
from infodrop_jax.sweep.spec import Point, SweepError

FORMATS = ('shell', 'slurm')
TASK_INDEX = 'SLURM_ARRAY_TASK_ID'


def _job_name(config: ml_collections.ConfigDict) -> str:
  return ''.join(c if c.isalnum() or c in '._-' else '_' for c in str(config.name)) or 'sweep'


def _sbatch_lines(config: ml_collections.ConfigDict, workdir: str, count: int) -> list[str]:
  slurm = config.slurm
  lines = [f'#SBATCH --job-name={_job_name(config)}', f'#SBATCH --array=0-{count - 1}',
           f'#SBATCH --output={os.path.join(workdir, "slurm-%A_%a.out")}',
           f'#SBATCH --time={slurm.time}', f'#SBATCH --cpus-per-task={int(slurm.cpus_per_task)}']
  if int(slurm.gpus_per_task) > 0:
    lines.append(f'#SBATCH --gpus-per-task={int(slurm.gpus_per_task)}')
  for field, flag in (('mem', 'mem'), ('partition', 'partition'), ('account', 'account')):
    if str(slurm[field]):
      lines.append(f'#SBATCH --{flag}={slurm[field]}')
  lines += [f'#SBATCH {line}' for line in slurm.extra]
  return lines


def check(config: ml_collections.ConfigDict) -> None:
  """The sweep config's `format` and `slurm` fields, before anything is printed."""
  if str(config.format) not in FORMATS:
    raise SweepError(f'format={config.format!r}: expected one of {FORMATS}.')
  slurm = config.slurm
  for field in ('cpus_per_task', 'gpus_per_task'):
    if isinstance(slurm[field], bool) or not isinstance(slurm[field], int) or slurm[field] < 0:
      raise SweepError(f'slurm.{field}={slurm[field]!r}: expected an int >= 0.')
  if not str(slurm.time):
    raise SweepError("slurm.time: expected a Slurm time limit such as '04:00:00' or '1-00:00:00'.")
  if any(not str(line).startswith('--') for line in slurm.extra):
    raise SweepError(f'slurm.extra={tuple(slurm.extra)!r}: expected sbatch options such as "--qos=normal".')


def array_script(config: ml_collections.ConfigDict, workdir: str, chosen: Sequence[Point],
                 config_args: Sequence[str]) -> str:
  """The array job script of the `chosen` points; `config_args` are the sweep's own --config arguments (file and
  overrides, without --workdir, --mode, only, parallel and format)."""
  if not chosen:
    raise SweepError('no point to run: the sweep (with only=...) selects none.')
  check(config)
  workdir = os.path.abspath(workdir)
  python, launch = shlex.quote(sys.executable or 'python'), shlex.quote(str(LAUNCH))
  args = ' '.join(shlex.quote(a) for a in [*config_args, f'--workdir={workdir}'])
  task = f'{python} {launch} {args} --mode=sweep --config.parallel=1 --config.only="${{POINTS[${TASK_INDEX}]}}"'
  report = f'cd {shlex.quote(str(REPO_ROOT))} && {python} {launch} {args} --mode=report'
  script_path = os.path.join(workdir, 'sweep.sbatch')
  submit = (f'jid=$(sbatch --parsable {shlex.quote(script_path)}) && '
            f'sbatch --dependency=afterany:${{jid%%;*}} --job-name={_job_name(config)}-report '
            f'--output={shlex.quote(os.path.join(workdir, "slurm-report-%j.out"))} --wrap={shlex.quote(report)}')
  lines = ['#!/bin/bash', *_sbatch_lines(config, workdir, len(chosen)),
           f'# {config.name}: {len(chosen)} points, one array task each (infodrop_jax/sweep/slurm.py).',
           f'# Save this as {script_path} (sbatch writes the tasks\' logs beside it, so the directory must exist),',
           '# then submit it with the report job chained after the whole array:',
           f'#   {submit}',
           '# A task resumes its point from its checkpoint, so re-submitting the array (or requeueing a task) goes on',
           '# where it stopped; finished points are skipped.',
           'set -euo pipefail',
           'POINTS=(', *[f'  {shlex.quote(p.name)}' for p in chosen], ')',
           f'cd {shlex.quote(str(REPO_ROOT))}',
           f'exec {task}', '']
  return '\n'.join(lines)
