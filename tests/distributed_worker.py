"""One process of a multi-process CPU training run (driven by tests/test_distributed.py).

  python tests/distributed_worker.py WORKDIR NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES [PLACEMENT [PARALLEL]]

Trains the tiny test model on generated data with `jax.distributed` (gloo CPU collectives) when NUM_PROCESSES > 1,
with config.train.data_placement = PLACEMENT (default 'auto') and config.train.parallel = PARALLEL (default 'jit'),
and writes the summary, the final parameters and what this process's devices hold of the training split to
WORKDIR/result_<PROCESS_ID>.json.
"""
import json
import os
import sys


def main(workdir: str, num_processes: int, process_id: int, port: int, local_devices: int,
         placement: str = 'auto', parallel_mode: str = 'jit') -> None:
  os.environ['JAX_PLATFORMS'] = 'cpu'
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={local_devices}'
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import train_helpers  # pylint: disable=g-import-not-at-top
  from infodrop_jax import checkpoint, parallel, train  # pylint: disable=g-import-not-at-top
  from infodrop_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  config = train_helpers.tiny_config()
  config.eval.every_epochs = 0
  config.train.data_placement = placement
  config.train.parallel = parallel_mode
  if num_processes > 1:
    config.distributed.enabled = True
    config.distributed.coordinator_address = f'localhost:{port}'
    config.distributed.num_processes = num_processes
    config.distributed.process_id = process_id
  parallel.initialize_distributed(config.distributed)
  splits = train_helpers.tiny_splits()
  summary = train.train_and_evaluate(config, workdir, model=train_helpers.TinyNoisyNet(), splits=splits)
  # The training data as the run placed it: which examples each of this process's devices holds.
  data = pipeline.InMemoryPipeline(splits.train, config.train.batch_size, parallel.Parallel.create(parallel_mode),
                                   key=train._root_keys(config.seed)['data'], placement=placement)
  device_images = [np.asarray(shard.data).reshape((-1,) + splits.train.images.shape[1:])
                   for shard in data.arrays['images'].addressable_shards]
  expected = splits.train.images[pipeline.process_shard_indices(len(splits.train.labels), process_id, num_processes)
                                 if data.placement == 'process_sharded' else slice(None)]
  state = checkpoint.Checkpointer(workdir, max_to_keep=10, read_only=True).restore(
      train.create_train_state(train_helpers.TinyNoisyNet(), train.optim.create_optimizer(config.optim, 6)[0],
                               np.zeros((1, 8, 8, 1), np.float32), train._root_keys(config.seed),
                               parallel.Parallel.create('jit')))
  params = parallel.first_replica_to_host(state.params)
  with open(os.path.join(workdir, f'result_{process_id}.json'), 'w', encoding='utf-8') as f:
    json.dump({'summary': summary, 'devices': jax.device_count(),
               'params': [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(params)],
               'placement': data.placement, 'examples_per_device': [len(x) for x in device_images],
               'devices_hold_expected_examples': all(np.array_equal(x, expected) for x in device_images)}, f)


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), *sys.argv[6:])
