"""One process of a multi-process CPU training run (driven by tests/test_distributed.py).

  python tests/distributed_worker.py WORKDIR NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES

Trains the tiny test model on generated data with `jax.distributed` (gloo CPU collectives) when NUM_PROCESSES > 1,
and writes the final train loss and a digest of the parameters to WORKDIR/result_<PROCESS_ID>.json.
"""
import json
import os
import sys


def main(workdir: str, num_processes: int, process_id: int, port: int, local_devices: int) -> None:
  os.environ['JAX_PLATFORMS'] = 'cpu'
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={local_devices}'
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import train_helpers  # pylint: disable=g-import-not-at-top
  from infodrop_jax import checkpoint, parallel, train  # pylint: disable=g-import-not-at-top

  config = train_helpers.tiny_config()
  config.eval.every_epochs = 0
  if num_processes > 1:
    config.distributed.enabled = True
    config.distributed.coordinator_address = f'localhost:{port}'
    config.distributed.num_processes = num_processes
    config.distributed.process_id = process_id
  parallel.initialize_distributed(config.distributed)
  summary = train.train_and_evaluate(config, workdir, model=train_helpers.TinyNoisyNet(),
                                     splits=train_helpers.tiny_splits())
  state = checkpoint.Checkpointer(workdir, max_to_keep=10, read_only=True).restore(
      train.create_train_state(train_helpers.TinyNoisyNet(), train.optim.create_optimizer(config.optim, 6)[0],
                               np.zeros((1, 8, 8, 1), np.float32), train._root_keys(config.seed),
                               parallel.Parallel.create('jit')))
  params = parallel.first_replica_to_host(state.params)
  with open(os.path.join(workdir, f'result_{process_id}.json'), 'w', encoding='utf-8') as f:
    json.dump({'summary': summary, 'devices': jax.device_count(),
               'params': [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(params)]}, f)


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
