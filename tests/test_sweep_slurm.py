"""A sweep as a Slurm job array (`--mode=sweep_commands --config.format=slurm`, infodrop_jax/sweep/slurm.py),
checked by parsing the script and running its task and submit lines through bash with sbatch and the trainer
replaced by printers (no Slurm here)."""
import os
import re
import shlex
import subprocess

import pytest

import train_helpers
from infodrop_jax import sweep

PRESET = 'configs/sweeps/fig3a_mnist.py:smoke'


def _script(tmp_path, **overrides):
  config = train_helpers.load_module('configs/sweeps/fig3a_mnist.py').get_config('smoke')
  overrides = {'format': 'slurm', **overrides}
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  printed = []
  assert sweep.main('sweep_commands', config, str(tmp_path), config_file=PRESET, overrides=overrides,
                    out=printed.append) == 0
  (script,) = printed
  return config, script


def _sbatch(script):
  """{option: value} of the #SBATCH lines, which must all come before the first command (sbatch stops there)."""
  lines = script.splitlines()
  assert lines[0] == '#!/bin/bash'
  first_command = next(i for i, line in enumerate(lines) if line and not line.startswith('#'))
  assert not [line for line in lines[first_command:] if line.startswith('#SBATCH')]
  options = {}
  for line in lines[1:first_command]:
    if line.startswith('#SBATCH '):
      key, _, value = line[len('#SBATCH '):].partition('=')
      options[key] = value
  return options


def _task_argv(script, index, tmp_path):
  """The command task `index` runs: the script through bash with `exec` replaced by a printer of its arguments."""
  body = script.replace('\nexec ', '\nprintf "%s\\n" ')
  path = tmp_path / 'task.sh'
  path.write_text(body)
  result = subprocess.run(['bash', str(path)], capture_output=True, text=True, check=True,
                          env={**os.environ, 'SLURM_ARRAY_TASK_ID': str(index)})
  return result.stdout.splitlines()


def test_the_array_script_has_one_task_per_selected_point_and_its_resources(tmp_path):
  config, script = _script(tmp_path, only='1 3', **{'slurm.partition': 'gpu', 'slurm.mem': '16G',
                                                     'slurm.extra': ('--qos=normal',)})
  subprocess.run(['bash', '-n'], input=script, text=True, check=True)  # valid bash
  options = _sbatch(script)
  assert options == {'--job-name': 'fig3a_mnist_smoke', '--array': '0-1',
                     '--output': f'{tmp_path}/slurm-%A_%a.out', '--time': '24:00:00', '--cpus-per-task': '8',
                     '--gpus-per-task': '1', '--mem': '16G', '--partition': 'gpu', '--qos': 'normal'}
  chosen = [p for p in sweep.points(config) if p.index in (1, 3)]
  for index, point in enumerate(chosen):
    argv = _task_argv(script, index, tmp_path)
    assert argv[1:3] == [str(sweep.LAUNCH), f'--config={PRESET}']
    assert f'--workdir={tmp_path}' in argv and '--mode=sweep' in argv and '--config.parallel=1' in argv
    assert argv[-1] == f'--config.only={point.name}'
    assert not [a for a in argv if a.startswith(('--config.format', '--config.only=1'))]
    assert '--config.slurm.partition=gpu' in argv  # the task rebuilds the very sweep config
    # `only` with that name selects exactly this point (what the task's --mode=sweep runs).
    config.only = point.name
    assert sweep.select(config, sweep.points(config)) == [point]


def test_the_submit_line_chains_the_report_after_the_whole_array(tmp_path):
  _, script = _script(tmp_path)
  (line,) = [l for l in script.splitlines() if l.startswith('#   jid=$(sbatch --parsable ')]
  submit = line[len('#   '):]
  fake = tmp_path / 'bin'
  fake.mkdir()
  (fake / 'sbatch').write_text('#!/bin/bash\nif [ "$1" = --parsable ]; then echo "4242;cluster"; '
                               'else printf "%s\\n" "$@" > "$SBATCH_LOG"; fi\n')
  (fake / 'sbatch').chmod(0o755)
  log = tmp_path / 'report_job.txt'
  subprocess.run(['bash', '-c', submit], check=True,
                 env={**os.environ, 'PATH': f'{fake}:{os.environ["PATH"]}', 'SBATCH_LOG': str(log)})
  report_job = log.read_text().splitlines()
  assert report_job[0] == '--dependency=afterany:4242'  # the array's id, cluster name dropped
  assert report_job[1] == '--job-name=fig3a_mnist_smoke-report'
  wrapped = report_job[-1]
  assert wrapped.startswith('--wrap=cd ') and wrapped.endswith(f'--workdir={tmp_path} --mode=report')
  assert f'--config={PRESET}' in shlex.split(wrapped[len('--wrap='):])


@pytest.mark.parametrize('overrides,message', [
    ({'format': 'pbs'}, "format='pbs': expected one of ('shell', 'slurm')"),
    ({'slurm.cpus_per_task': -1}, 'slurm.cpus_per_task=-1: expected an int >= 0'),
    ({'slurm.extra': ('qos=normal',)}, 'expected sbatch options such as "--qos=normal"'),
])
def test_bad_slurm_settings_are_one_line_errors(tmp_path, capsys, overrides, message):
  config = train_helpers.load_module('configs/sweeps/fig3a_mnist.py').get_config('smoke')
  for key, value in overrides.items():
    target = config.slurm if key.startswith('slurm.') else config
    target[key.split('.')[-1]] = value
  assert sweep.main('sweep_commands', config, str(tmp_path), config_file=PRESET, out=lambda _: None) == 2
  assert message in capsys.readouterr().err


def test_the_shell_format_is_unchanged(tmp_path):
  config = train_helpers.load_module('configs/sweeps/fig3a_mnist.py').get_config('smoke')
  printed = []
  assert sweep.main('sweep_commands', config, str(tmp_path), config_file=PRESET, out=printed.append) == 0
  assert len(printed) == 4 and all(re.match(r'cd \S+ && mkdir -p ', line) for line in printed)
