"""Device-resident input pipeline: epoch coverage, sharding, resume order, dtype handling, feeding a jitted step."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infodrop_jax import parallel as parallel_lib
from infodrop_jax.data import pipeline as pipeline_lib
from infodrop_jax.data.splits import Split

N = 50
BATCH = 16


def _split(dtype=np.uint8):
  labels = np.arange(N, dtype=np.int32)  # label == example index, so batches reveal the order.
  images = np.broadcast_to((labels % 256).astype(np.uint8)[:, None, None, None], (N, 2, 2, 3)).copy()
  return Split(images=images if dtype == np.uint8 else images.astype(np.float32) / 255, labels=labels, extras={})


def _pipeline(mode='jit', devices=None, dtype=np.uint8, shuffle=True, batch=BATCH):
  par = parallel_lib.Parallel.create(mode, devices)
  return pipeline_lib.InMemoryPipeline(_split(dtype), batch, par, key=jax.random.PRNGKey(3), shuffle=shuffle)


def _labels(batch):
  return np.asarray(batch['labels']).reshape(-1)  # pmap batches are (devices, per_device): rows in device order.


def test_epoch_permutation_visits_each_example_once():
  for epoch in range(3):
    order = np.asarray(pipeline_lib.epoch_permutation(jax.random.PRNGKey(3), epoch, N))
    np.testing.assert_array_equal(np.sort(order), np.arange(N))
  p = _pipeline()
  assert p.steps_per_epoch == N // BATCH  # Last partial batch dropped, as in the original.
  seen = np.concatenate([_labels(b) for b in p.iterate(0, p.steps_per_epoch)])
  assert len(np.unique(seen)) == len(seen) == p.steps_per_epoch * BATCH
  order = np.asarray(pipeline_lib.epoch_permutation(jax.random.PRNGKey(3), 0, N))
  np.testing.assert_array_equal(seen, order[:len(seen)])
  next_epoch = np.concatenate([_labels(b) for b in p.iterate(p.steps_per_epoch, p.steps_per_epoch)])
  assert not np.array_equal(seen, next_epoch)  # A fresh permutation each epoch.


def test_sharded_batches_concatenate_to_the_global_batch():
  one = [_labels(b) for b in _pipeline(devices=jax.devices()[:1]).iterate(0, 5)]
  jit8 = list(_pipeline().iterate(0, 5))
  pmap8 = [_labels(b) for b in _pipeline('pmap').iterate(0, 5)]
  for global_batch, sharded, stacked in zip(one, jit8, pmap8):
    assert len(sharded['labels'].sharding.device_set) == 8
    shards = sorted(sharded['labels'].addressable_shards, key=lambda s: s.index[0].start)
    assert [s.data.shape[0] for s in shards] == [BATCH // 8] * 8
    np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]), global_batch)
    np.testing.assert_array_equal(stacked, global_batch)


def test_resume_reproduces_the_batch_order():
  p = _pipeline()
  full = [_labels(b) for b in p.iterate(0, 8)]
  for start in (2, 3, 5):  # mid-epoch, epoch boundary, second epoch.
    epoch, position = p.position(start)
    assert (epoch, position) == divmod(start, p.steps_per_epoch)
    resumed = [_labels(b) for b in _pipeline().iterate(start, 8 - start)]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(full[start:]))


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_images_arrive_as_float32_in_unit_range(dtype):
  batch = next(iter(_pipeline(dtype=dtype).iterate()))
  assert batch['images'].dtype == jnp.float32
  expected = (_labels(batch) % 256).astype(np.float32) / 255
  np.testing.assert_allclose(np.asarray(batch['images'])[:, 0, 0, 0], expected, rtol=1e-6)


def test_eval_order_covers_everything_once_with_padding_masked():
  p = _pipeline(shuffle=False, batch=24)
  batches = list(p.iterate())
  assert len(batches) == p.steps_per_epoch == 3
  labels = np.concatenate([_labels(b) for b in batches])
  mask = np.concatenate([np.asarray(b['mask']).reshape(-1) for b in batches])
  np.testing.assert_array_equal(labels[mask], np.arange(N))
  assert mask.sum() == N


def test_bad_inputs_are_reported():
  par = parallel_lib.Parallel.create('jit')
  with pytest.raises(ValueError, match='multiple of the device count'):
    pipeline_lib.InMemoryPipeline(_split(), 12, par, key=jax.random.PRNGKey(0), name='config.train.batch_size')
  with pytest.raises(ValueError, match='fewer than one batch'):
    pipeline_lib.InMemoryPipeline(_split(), 64, par, key=jax.random.PRNGKey(0))


@pytest.mark.parametrize('num_devices', [1, 8])
def test_feeds_a_jitted_step_without_host_copies(num_devices):
  """The gather runs inside the compiled step: the step's inputs are the resident arrays and the permutation."""
  p = _pipeline(devices=jax.devices()[:num_devices])

  @jax.jit
  def step(total, arrays, order, position):
    batch = p.gather_train_batch(arrays, order, position)
    return total + jnp.sum(batch['labels']), position + 1

  total, position = jnp.int32(0), jnp.int32(0)
  order = p.order(0)
  with jax.transfer_guard_host_to_device('disallow'):
    for _ in range(p.steps_per_epoch):
      total, position = step(total, p.arrays, order, position)
  expected = np.asarray(pipeline_lib.epoch_permutation(jax.random.PRNGKey(3), 0, N))[:p.steps_per_epoch * BATCH]
  assert int(total) == int(expected.sum())


def _emulated_processes(mode='jit', devices=2, n=49, batch=BATCH, key=3):
  """One pipeline per emulated process (P=2) sharing this process's first `devices` devices."""
  par = parallel_lib.Parallel.create(mode, jax.devices()[:devices])
  split = Split(images=_split().images[:n], labels=np.arange(n, dtype=np.int32), extras={})
  return [pipeline_lib.InMemoryPipeline(split, batch, par, key=jax.random.PRNGKey(key), placement='process_sharded',
                                        process_index=p, process_count=2) for p in range(2)]


@pytest.mark.parametrize('mode', ['jit', 'pmap'])
def test_process_sharded_placement_emulating_two_processes(mode):
  pipes = _emulated_processes(mode)
  n_local = 49 // 2  # Example 48 (the remainder) is dropped; 24 = 3 local batches of 8.
  for p, pipe in enumerate(pipes):
    assert pipe.num_local_examples == n_local and pipe.num_examples == 2 * n_local
    shards = pipe.arrays['labels'].addressable_shards
    assert len(shards) == 2
    for shard in shards:  # Each device holds exactly its process's shard: i % 2 == p, i < 50.
      np.testing.assert_array_equal(np.asarray(shard.data).reshape(-1), np.arange(p, 2 * n_local, 2))
  assert pipes[0].steps_per_epoch == 2 * n_local // BATCH == 3
  steps = pipes[0].steps_per_epoch
  batches = [[_labels(b) for b in pipe.iterate(0, 2 * steps)] for pipe in pipes]
  for epoch in range(2):
    seen = []
    for p, pipe in enumerate(pipes):
      local = np.concatenate(batches[p][epoch * steps:(epoch + 1) * steps])
      key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(3), epoch), p)
      order = np.arange(p, 2 * n_local, 2)[np.asarray(jax.random.permutation(key, n_local))]
      np.testing.assert_array_equal(local, order[:steps * BATCH // 2])  # The documented per-process order.
      seen.append(local)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(2 * n_local))  # Each kept one once.
  for start in (2, 4):  # Resume mid-epoch and in the second epoch reproduces the batches.
    resumed = [_labels(b) for b in _emulated_processes(mode)[1].iterate(start, 2)]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(batches[1][start:start + 2]))


def test_process_sharded_local_slices_concatenate_to_the_global_batch():
  """Device d of process p gathers rows d·B/(P·L)... of p's B/P; the global batch is the concatenation."""
  global_batches = []
  for pipe in _emulated_processes(devices=8, batch=32):
    for step, batch in enumerate(pipe.iterate(0, 3)):
      shards = sorted(batch['labels'].addressable_shards, key=lambda s: s.index[0].start)
      assert [s.data.shape[0] for s in shards] == [32 // (2 * 8)] * 8
      np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]), _labels(batch))
      if len(global_batches) <= step:
        global_batches.append([])
      global_batches[step].append(_labels(batch))
  pmap_pipes = _emulated_processes('pmap', devices=8, batch=32)
  for step, per_process in enumerate(global_batches):
    stacked = [np.asarray(next(iter(pipe.iterate(step, 1)))['labels']) for pipe in pmap_pipes]
    np.testing.assert_array_equal(np.concatenate([s.reshape(-1) for s in stacked]), np.concatenate(per_process))
    assert np.concatenate(per_process).shape == (32,)


def test_process_sharded_feeds_a_jitted_step_without_host_copies():
  pipe = _emulated_processes(devices=8, batch=32)[1]

  @jax.jit
  def step(total, arrays, order, position):
    batch = pipe.gather_train_batch(arrays, order, position)
    return total + jnp.sum(batch['labels']), position + 1

  total, position, order = jnp.int32(0), jnp.int32(0), pipe.order(0)
  with jax.transfer_guard_host_to_device('disallow'):
    for _ in range(pipe.steps_per_epoch):
      total, position = step(total, pipe.arrays, order, position)
  assert int(total) == sum(int(_labels(b).sum()) for b in pipe.iterate(0, pipe.steps_per_epoch))


def test_process_sharded_bad_inputs_are_reported():
  par = parallel_lib.Parallel.create('jit')
  make = functools.partial(pipeline_lib.InMemoryPipeline, _split(), key=jax.random.PRNGKey(0), process_count=2,
                           process_index=0, name='config.train.batch_size')
  with pytest.raises(ValueError, match=r'multiple of processes × local devices \(2 × 8 = 16\)'):
    make(24, par, placement='process_sharded')
  with pytest.raises(ValueError, match='evaluation splits stay replicated'):
    make(16, par, placement='process_sharded', shuffle=False)
  with pytest.raises(ValueError, match="config.train.data_placement = 'sharded': expected one of"):
    make(16, par, placement='sharded')
  assert make(16, par, placement='auto').placement == 'process_sharded'  # 'auto' with 2 processes.
  assert make(16, par, placement='auto', process_count=1).placement == 'replicated'
