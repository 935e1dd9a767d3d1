"""Sweeps: many runs of one experiment config over a grid of config values, then a table, figures and a report.

A sweep is a config in configs/sweeps/*.py (built with `new_config` and `axis`): a base experiment config, axes of
config values and seeds. Each point of their product is one `launch.py` run (train, then analyze) into
W/<point>/; the sweep then writes W/results.csv, W/results_mean.csv and W/report.md, whose verdict says whether our
numbers agree with the paper's claim.

  spec      the sweep config (its fields are documented there) and its points; W/sweep.json
  files     the files of a sweep workdir and of each point's directory
  commands  one point's launch.py commands (also as one shell line) and its state (done, failed, ...)
  runner    running the points, `parallel` at a time, on shares of this machine's cores and GPUs
  results   results.csv and results_mean.csv
  inference the statistics of a verdict: an effect, its standard error, simultaneous intervals, the decision
  checks    the check kinds of `expect` (the paper's claims) and `preconditions`, and their verdicts
  report    report.md, from the points' directories or a committed results.csv (figures: analysis.sweep_figures)
  slurm     the sweep as a Slurm array job script (--mode=sweep_commands --config.format=slurm)
  cli       `main(mode, config, workdir, ...)`, the entry point launch.py calls for --mode=sweep |
            sweep_commands | report

Pure Python: the package must not import JAX (the sweep process only starts and watches the runs).
"""
from infodrop_jax.sweep import checks, inference
from infodrop_jax.sweep.checks import baseline_overfits
from infodrop_jax.sweep.cli import MODES, main
from infodrop_jax.sweep.commands import (TAIL_LINES, analyze_command, is_finished, log_tail, shell_line, status_of,
                                         train_command)
from infodrop_jax.sweep.files import (DONE_FILE, LAUNCH, LOG_FILE, MEANS_FILE, REPO_ROOT, REPORT_FILE, RESULTS_FILE,
                                      STATUS_FILE, SWEEP_FILE)
from infodrop_jax.sweep.report import CHECKS, verdicts, write_report
from infodrop_jax.sweep.results import mean_rows, point_row, read_csv, write_results
from infodrop_jax.sweep.runner import GPU_ENV, Runner, Slot, gpu_ids, machine, plan_slots, run_sweep
from infodrop_jax.sweep.spec import (DATA_CHOICES, SEED_AXIS, Point, SweepError, axis, base_argument, data_root,
                                     format_value, is_smoke, label_of, load_sweep, new_config, points, sanitize, select)

__all__ = [
    'CHECKS', 'DATA_CHOICES', 'DONE_FILE', 'GPU_ENV', 'LAUNCH', 'LOG_FILE', 'MEANS_FILE', 'MODES', 'REPO_ROOT',
    'REPORT_FILE', 'RESULTS_FILE', 'SEED_AXIS', 'STATUS_FILE', 'SWEEP_FILE', 'TAIL_LINES', 'Point', 'Runner', 'Slot',
    'SweepError', 'analyze_command', 'axis', 'base_argument', 'baseline_overfits', 'checks', 'data_root', 'format_value', 'gpu_ids', 'inference', 'is_finished',
    'is_smoke', 'label_of', 'load_sweep', 'log_tail', 'machine', 'main', 'mean_rows', 'new_config', 'plan_slots',
    'point_row', 'points', 'read_csv', 'run_sweep', 'sanitize', 'select', 'shell_line', 'status_of', 'train_command',
    'verdicts', 'write_report', 'write_results',
]
