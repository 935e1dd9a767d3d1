"""2-process `jax.distributed` runs on localhost (gloo CPU collectives): replicated data matches a 1-process run on
4 devices; process-sharded data trains with each process holding only its half of the training split."""
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


def _run(workdir, num_processes, local_devices, *worker_args):
  port = _free_port()
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  procs = [subprocess.Popen([sys.executable, WORKER, str(workdir), str(num_processes), str(i), str(port),
                             str(local_devices), *worker_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env) for i in range(num_processes)]
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
  return [json.load(open(workdir / f'result_{i}.json', encoding='utf-8')) for i in range(num_processes)]


def test_two_processes_match_one(tmp_path):
  single = _run(tmp_path / 'single', 1, 4)[0]
  multi = _run(tmp_path / 'multi', 2, 2, 'replicated')
  assert single['devices'] == multi[0]['devices'] == 4
  for result in multi:
    for a, b in zip(result['params'], single['params']):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # All-reduce order may differ in the last bit.
    assert abs(result['summary']['test/ce_d'] - single['summary']['test/ce_d']) < 1e-5
    assert result['examples_per_device'] == [96] * 2 and result['devices_hold_expected_examples']


def test_two_processes_with_process_sharded_data(tmp_path):
  results = _run(tmp_path, 2, 2, 'auto')  # 'auto' with 2 processes: process_sharded.
  for result in results:
    assert result['placement'] == 'process_sharded'
    assert result['examples_per_device'] == [96 // 2] * 2  # Only this process's shard, on each of its devices.
    assert result['devices_hold_expected_examples']
    assert np.isfinite(result['summary']['test/ce_d'])
  for a, b in zip(results[0]['params'], results[1]['params']):
    np.testing.assert_array_equal(a, b)  # One global step: both processes hold the same replicated state.
  assert results[0]['summary'] == {**results[1]['summary'], 'wall_time_s': results[0]['summary']['wall_time_s']}
