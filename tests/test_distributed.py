"""A 2-process `jax.distributed` run on localhost (gloo CPU collectives) matches a 1-process run on 4 devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

import train_helpers

WORKER = str(train_helpers.REPO_ROOT / 'tests' / 'distributed_worker.py')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _run(workdir, num_processes, local_devices):
  port = _free_port()
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  procs = [subprocess.Popen([sys.executable, WORKER, str(workdir), str(num_processes), str(i), str(port),
                             str(local_devices)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env) for i in range(num_processes)]
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
  return [json.load(open(workdir / f'result_{i}.json', encoding='utf-8')) for i in range(num_processes)]


def test_two_processes_match_one(tmp_path):
  single = _run(tmp_path / 'single', 1, 4)[0]
  multi = _run(tmp_path / 'multi', 2, 2)
  assert single['devices'] == multi[0]['devices'] == 4
  for result in multi:
    for a, b in zip(result['params'], single['params']):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # All-reduce order may differ in the last bit.
    assert abs(result['summary']['test/ce_d'] - single['summary']['test/ce_d']) < 1e-5
