"""The All-CNN-32 train step the benchmarks time: one jitted, state-donating `train.train_step` (no flags here).

Shared by bench_train_step.py, bench_vs_pytorch.py and profile_step.py, so all time exactly the step the trainer
compiles, with the CPU speed-ups (`infodrop_jax.cpu`) on or off as the caller says (`build(cpu_speedups=...)`: what
`config.train.cpu_speedups` = 'on' / 'off' gives a trainer run).
"""
import functools
import time
from typing import Any, NamedTuple

N_TRAIN = 50000  # CIFAR-10's training set: the n_train of Lz.


def cifar_config(method: str, filter_percentage: float, dtype: str = 'float32'):
  """configs/cifar_info.py with the dropout method, width and compute dtype set."""
  from configs import cifar_info  # pylint: disable=g-import-not-at-top
  config = cifar_info.get_config()
  config.model.dropout = method
  config.model.filter_percentage = filter_percentage
  config.model.dtype = dtype
  return config


def synthetic_batch(batch_size: int, seed: int = 0):
  """(images float32 [B, 32, 32, 3] ~ N(0, 1), labels int32 [B] in 0..9): the CIFAR-shaped batch every benchmark times."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(batch_size, 32, 32, 3)).astype(np.float32)
  return images, rng.integers(0, 10, batch_size).astype(np.int32)


def run_steps(compiled, state, batch, key, steps: int):
  """(state, seconds) after `steps` calls of the compiled step, key folded with the step index, waited for."""
  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = compiled(state, batch, jax.random.fold_in(key, i))
  jax.block_until_ready((state, metrics))
  return state, time.perf_counter() - start


def step_flops(compiled) -> float:
  """FLOPs of one call of a compiled function by XLA's cost analysis (0.0 when it gives none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # Older JAX: one dict per device program.
  return float((cost or {}).get('flops', 0.0))


def one_device_flops(config, images, labels, key, cpu_speedups: bool) -> float:
  """FLOPs of one step of `config` on one device (`build` on `jax.devices()[:1]`), by XLA's cost analysis.

  For callers whose own step is sharded or scanned: the cost analysis of those counts one device's program or one
  loop body, not the step."""
  import jax  # pylint: disable=g-import-not-at-top
  return step_flops(build(config, images, labels, key, devices=jax.devices()[:1], cpu_speedups=cpu_speedups).compiled)


class Built(NamedTuple):
  """What `build` returns."""
  model: Any  # The Flax module.
  state: Any  # The train state, replicated over `parallel`'s mesh.
  batch: Any  # {'images', 'labels'}, sharded over the mesh.
  compiled: Any  # The compiled step: (state, batch, key) -> (state, metrics), state donated.
  compile_s: float  # Seconds of lower + compile.
  parallel: Any  # The `parallel.Parallel` it runs on (its `compiler_options` are the step's).
  steps_per_call: int  # Steps one call of `compiled` runs: as asked, or 1 where the trainer drives them from the host.


def build(config, images, labels, key, *, devices=None, cpu_speedups: bool = False,
          steps_per_call: int = 1) -> Built:
  """The train step of `config` as the trainer compiles it, on `devices` (default: all) in 'jit' mode, batch
  pre-placed.

  `cpu_speedups` is what `config.train.cpu_speedups` = 'on' / 'off' gives a trainer run (`train.Run`): on, the
  model is built from `cpu.model_parts()` and, on CPU devices, compiled with `cpu.xla.compiler_options()`; off, it
  is plain Flax compiled with XLA's defaults. With `steps_per_call` > 1 one call runs that many steps in a
  `lax.scan` (as the trainer's compiled loops do), step i with the key fold_in(key, i), and returns the metrics of
  the last; except where the trainer would drive its steps from the host instead (`train.Run.host_loops`: one CPU
  device and a step with convolutions XLA:CPU runs as a naive loop nest inside a compiled loop, i.e. plain
  nn.Conv's gradients, speed-ups off): there, as there, one call is one step (`Built.steps_per_call` says which).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from infodrop_jax import cpu, models, optim, parallel, train  # pylint: disable=g-import-not-at-top
  from infodrop_jax.cpu import convolution as cpu_convolution  # pylint: disable=g-import-not-at-top
  from infodrop_jax.cpu import xla as cpu_xla  # pylint: disable=g-import-not-at-top
  devices = jax.devices() if devices is None else list(devices)
  options = cpu_xla.compiler_options() if cpu_speedups and devices[0].platform == 'cpu' else None
  par = parallel.Parallel.create('jit', devices=devices, compiler_options=options)
  model = models.create_model(config.model, 10, **(cpu.model_parts() if cpu_speedups else {}))
  tx, schedule = optim.create_optimizer(config.optim, 500)
  init_key, noise_key = jax.random.split(jax.random.PRNGKey(0))
  state = train.create_train_state(model, tx, images[:1], {'init': init_key, 'noise': noise_key}, par)
  batch = jax.device_put({'images': images, 'labels': labels}, par.batch_sharded)
  step = functools.partial(train.train_step, beta=float(config.loss.beta), n_train=N_TRAIN,
                           weight_decay=float(config.loss.weight_decay), learning_rate_fn=schedule)
  if steps_per_call > 1 and len(devices) == 1 and devices[0].platform == 'cpu':
    lowered = par.jit(step, donate_argnums=(0,)).lower(state, batch, key).as_text()
    if cpu_convolution.loop_unsafe_convolutions(lowered):
      steps_per_call = 1
  if steps_per_call > 1:
    step = functools.partial(_scanned, step, steps_per_call)
  step = par.jit(step, donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, batch, key).compile()
  return Built(model, state, batch, compiled, time.perf_counter() - start, par, steps_per_call)


def _scanned(step, length, state, batch, key):
  import jax  # pylint: disable=g-import-not-at-top
  def body(state, i):
    return step(state, batch, jax.random.fold_in(key, i))
  state, metrics = jax.lax.scan(body, state, jax.numpy.arange(length))
  return state, jax.tree.map(lambda m: m[-1], metrics)
