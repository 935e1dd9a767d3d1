"""Cost of the information-plane capture: training wall time of configs/mnist_ip.py:cpu with the capture on vs off.

  python benchmarks/bench_information_plane.py [--variant=cpu] [--num_epochs=100] [--out=/tmp/bench_ip]

Each setting trains in a fresh process (cold compile, as a user pays it) from an empty workdir; the wall time is
`summary.json`'s wall_time_s (setup, compile, training, captures, final evaluation). The overhead is on/off − 1.
A second, load-independent figure comes from the 'on' run alone: the summed `capture_time_s` of its records
(first-capture compile included) over the rest of its wall time. Prints one JSON line with both.

The runs are `launch.py`'s defaults: the CPU speed-ups as the config says (`config.train.cpu_speedups`, 'auto': on
when JAX's default backend is the CPU), one CPU device, and huge pages for malloc only where this process was
started with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (the training processes inherit the environment).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(variant: str, num_epochs: int, workdir: str, enabled: bool) -> dict[str, float]:
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, os.path.join(REPO, 'launch.py'), f'--config={os.path.join(REPO, "configs/mnist_ip.py")}:'
             f'{variant}', f'--workdir={workdir}', f'--config.train.num_epochs={num_epochs}',
             f'--config.optim.decay_epochs={num_epochs}', f'--config.information_plane.enabled={enabled}',
             '--config.logging.tensorboard=False']
  start = time.perf_counter()
  subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
  process_s = time.perf_counter() - start
  with open(os.path.join(workdir, 'summary.json'), encoding='utf-8') as f:
    result = {'wall_time_s': json.load(f)['wall_time_s'], 'process_s': process_s}
  records = os.path.join(workdir, 'information_plane.jsonl')
  if os.path.exists(records):
    with open(records, encoding='utf-8') as f:
      times = [json.loads(line)['capture_time_s'] for line in f]
    result.update(captures=len(times), capture_s=sum(times), first_capture_s=times[0])
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variant', default='cpu')
  parser.add_argument('--num_epochs', type=int, default=100)
  parser.add_argument('--out', default='/tmp/bench_information_plane')
  args = parser.parse_args()
  off = _train(args.variant, args.num_epochs, os.path.join(args.out, 'off'), enabled=False)
  on = _train(args.variant, args.num_epochs, os.path.join(args.out, 'on'), enabled=True)
  print(json.dumps({
      'variant': args.variant, 'num_epochs': args.num_epochs, 'off': off, 'on': on,
      'overhead_on_vs_off': on['wall_time_s'] / off['wall_time_s'] - 1.0,
      'overhead_capture_time': on['capture_s'] / (on['wall_time_s'] - on['capture_s'])}))


if __name__ == '__main__':
  main()
