"""The All-CNN-32 train step the benchmarks time: one jitted, state-donating `train.train_step` (no flags here).

Shared by bench_train_step.py and bench_vs_pytorch.py, so both time exactly the step the trainer compiles.
"""
import functools
import time

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


def has_native_calls(compiled) -> bool:
  """Whether a compiled function calls the compiled CPU kernels (`infodrop_jax.native`)."""
  from infodrop_jax import native  # pylint: disable=g-import-not-at-top
  text = compiled.as_text()
  return native.KERNEL_GRADIENT_TARGET in text or native.FORWARD_TARGET in text


def xla_step_flops(config, images, labels, key, compiled=None, par=None) -> float:
  """FLOPs of one step of `config` on `par`'s devices (default: one) by XLA's cost analysis, counted on a step
  without the compiled CPU kernels (`infodrop_jax.native`): the analysis counts nothing in a custom call.
  `compiled`, the same step already built on `par`, is used when it has none (a GPU's); else the step is built
  again under `native.disabled()`. Both compute the same convolutions."""
  import jax  # pylint: disable=g-import-not-at-top
  from infodrop_jax import native, parallel  # pylint: disable=g-import-not-at-top
  if compiled is None or has_native_calls(compiled):
    par = par or parallel.Parallel.create('jit', jax.devices()[:1])
    with native.disabled():
      compiled = build(config, images, labels, par, key)[3]
    assert not has_native_calls(compiled), 'a cached trace with the custom calls: FLOPs would be undercounted'
  return step_flops(compiled)


def build(config, images, labels, par, key, xla_cpu_defaults: bool = False, steps_per_call: int = 1):
  """(model, state, batch, compiled step, compile seconds) for `config` on `par`'s mesh, batch pre-placed.

  The step gets the trainer's XLA options (`parallel.cpu_compiler_options` on CPU); `xla_cpu_defaults` compiles it
  with XLA's own defaults instead, for comparison. With `steps_per_call` > 1 one call runs that many steps in a
  `lax.scan` (as the trainer's compiled loops do), step i with the key fold_in(key, i), and returns the metrics of
  the last.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from infodrop_jax import models, optim, train  # pylint: disable=g-import-not-at-top
  model = models.create_model(config.model, 10)
  tx, schedule = optim.create_optimizer(config.optim, 500)
  state = train.create_train_state(model, tx, images[:1], train._root_keys(0), par)  # pylint: disable=protected-access
  batch = jax.device_put({'images': images, 'labels': labels}, par.batch_sharded)
  step = functools.partial(train.train_step, beta=float(config.loss.beta), n_train=N_TRAIN,
                           weight_decay=float(config.loss.weight_decay), learning_rate_fn=schedule)
  if steps_per_call > 1:
    step = functools.partial(_scanned, step, steps_per_call)
  jit = jax.jit if xla_cpu_defaults else par.jit
  step = jit(step, donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, batch, key).compile()
  return model, state, batch, compiled, time.perf_counter() - start


def _scanned(step, length, state, batch, key):
  import jax  # pylint: disable=g-import-not-at-top
  def body(state, i):
    return step(state, batch, jax.random.fold_in(key, i))
  state, metrics = jax.lax.scan(body, state, jax.numpy.arange(length))
  return state, jax.tree.map(lambda m: m[-1], metrics)
