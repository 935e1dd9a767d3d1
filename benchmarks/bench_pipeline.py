"""Input-pipeline overhead: training steps fed by the device-resident pipeline vs steps on one pre-placed batch.

  python benchmarks/bench_pipeline.py --platform=cpu --config=mnist_fc --steps=200
  python benchmarks/bench_pipeline.py --platform=gpu --config=cifar_info --steps=500

Both variants run the same `lax.scan` over `--steps_per_call` train steps (jit, state donated); the pipeline
variant gathers each batch from the resident split by the epoch permutation inside the scan, the baseline reuses a
batch placed on device beforehand. Prints the time per step of each and the overhead in percent (goal ≤ 2 %).
The model and the compile are the trainer's for `config.train.cpu_speedups` = `--cpu_speedups` (default 'auto': on
a CPU the model from `infodrop_jax.cpu.model_parts()` compiled with `cpu.xla.compiler_options()`, the form whose
convolutions XLA:CPU runs on its fast kernels inside a `lax.scan`; 'off': plain Flax and XLA's defaults, which on
a CPU the trainer would not scan for a conv net, since there its convolutions' gradients become naive loop nests).
"""
import functools
import os
import sys
import time

from absl import app
from absl import flags

flags.DEFINE_string('platform', 'cpu', 'JAX platform: cpu | gpu (= cuda) | tpu.')
flags.DEFINE_enum('config', 'mnist_fc', ['mnist_fc', 'cifar_info'], 'Experiment config whose model is trained.')
flags.DEFINE_integer('steps', 200, 'Timed steps per variant (a multiple of --steps_per_call).')
flags.DEFINE_integer('steps_per_call', 50, 'Steps scanned per compiled call.')
flags.DEFINE_integer('batch', 100, 'Global batch size.')
flags.DEFINE_integer('num_examples', 10000, 'Size of the synthetic resident split (uint8 images).')
flags.DEFINE_integer('repeats', 3, 'Timing repeats; the best is reported.')
flags.DEFINE_enum('cpu_speedups', 'auto', ['auto', 'on', 'off'], "The CPU speed-ups (infodrop_jax.cpu), as "
                  "config.train.cpu_speedups: 'auto' = on when JAX's default backend is the CPU.")
FLAGS = flags.FLAGS


def main(_):
  # JAX_PLATFORMS=gpu also asks for ROCm, which fails on CUDA-only installs: name the CUDA backend.
  os.environ.setdefault('JAX_PLATFORMS', {'gpu': 'cuda'}.get(FLAGS.platform, FLAGS.platform))
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import importlib  # pylint: disable=g-import-not-at-top
  from infodrop_jax import cpu, models, optim, parallel, train  # pylint: disable=g-import-not-at-top
  from infodrop_jax.cpu import xla as cpu_xla  # pylint: disable=g-import-not-at-top
  from infodrop_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from infodrop_jax.data.splits import Split  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f'configs.{FLAGS.config}').get_config()
  shape = (28, 28, 1) if FLAGS.config == 'mnist_fc' else (32, 32, 3)
  rng = np.random.default_rng(0)
  split = Split(images=rng.integers(0, 256, (FLAGS.num_examples,) + shape, dtype=np.uint8),
                labels=rng.integers(0, 10, FLAGS.num_examples).astype(np.int32), extras={})
  speedups = cpu.enabled(FLAGS.cpu_speedups, jax.default_backend())
  par = parallel.Parallel.create('jit', compiler_options=cpu_xla.compiler_options() if speedups and
                                 jax.default_backend() == 'cpu' else None)
  data = pipeline.InMemoryPipeline(split, FLAGS.batch, par, key=jax.random.PRNGKey(1))
  model = models.create_model(config.model, 10, **(cpu.model_parts() if speedups else {}))
  init_key, noise_key = jax.random.split(jax.random.PRNGKey(0))
  tx, schedule = optim.create_optimizer(config.optim, data.steps_per_epoch)
  step_fn = functools.partial(train.train_step, beta=float(config.loss.beta), n_train=FLAGS.num_examples,
                              weight_decay=float(config.loss.weight_decay), learning_rate_fn=schedule)
  length = FLAGS.steps_per_call

  def scan(state, get_batch):
    def one(state, _):
      return step_fn(state, get_batch(state), jax.random.fold_in(state.key, state.step))
    return jax.lax.scan(one, state, length=length)

  @functools.partial(par.jit, donate_argnums=(0,))
  def with_pipeline(state, arrays, order):
    return scan(state, lambda s: data.gather_train_batch(arrays, order, s.step % data.steps_per_epoch))

  @functools.partial(par.jit, donate_argnums=(0,))
  def with_fixed_batch(state, batch):
    return scan(state, lambda s: batch)

  fixed = jax.device_put({'images': split.images[:FLAGS.batch].astype(np.float32) / 255,
                          'labels': split.labels[:FLAGS.batch]}, par.batch_sharded)
  order = data.order(0)
  variants = {'pre-placed batch': lambda s: with_fixed_batch(s, fixed),
              'device-resident pipeline': lambda s: with_pipeline(s, data.arrays, order)}
  results = {}
  for name, run in variants.items():
    best = float('inf')
    for _ in range(FLAGS.repeats + 1):  # The first round compiles and warms up.
      state = train.create_train_state(model, tx, split.images[:1].astype(np.float32),
                                       {'init': init_key, 'noise': noise_key}, par)
      jax.block_until_ready(state)
      start = time.perf_counter()
      for _ in range(FLAGS.steps // length):
        state, metrics = run(state)
      jax.block_until_ready(metrics)
      best = min(best, time.perf_counter() - start)
    results[name] = 1000 * best / (FLAGS.steps // length * length)
  base, piped = results['pre-placed batch'], results['device-resident pipeline']
  print(f'devices: {jax.devices()}; {FLAGS.config} model; batch {FLAGS.batch}; '
        f'{FLAGS.steps} steps, {length} per call; best of {FLAGS.repeats}; CPU speed-ups '
        f'{"on" if speedups else "off"} ({FLAGS.cpu_speedups})\n')
  print('| variant | ms/step |\n|---|---|')
  for name, ms in results.items():
    print(f'| {name} | {ms:.3f} |')
  print(f'\npipeline overhead: {100 * (piped - base) / base:+.2f} %')


if __name__ == '__main__':
  app.run(main)
