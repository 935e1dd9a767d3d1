"""The opt-in CPU speed-ups: everything that makes XLA:CPU train our models faster, in one place.

A library user gets plain Flax (`nn.Conv`, `nn.BatchNorm`, `jax.random`) from `infodrop_jax.layers` and `.models`.
The trainer switches these on through one field, `config.train.cpu_speedups` ('auto': only when JAX's default
backend is the CPU; 'on'; 'off'), and they never change a result beyond float rounding (tests/test_cpu_speedups.py):

* `model_parts()`: the parts injected into the models' `conv` / `conv_transpose` / `norm` / `sampler` fields:
  - `convolution.Conv`, `convolution.ConvTranspose`: gradients in the form XLA:CPU's fast kernels take, also inside
    compiled loops, with a polyphase input gradient for strides above 1;
  - `batch_norm.BatchNorm`: nn.BatchNorm with its training-mode gradient in closed form;
  - `SAMPLER`: `jax.random`'s normals and Bernoulli masks, bit for bit, with the Threefry hash unrolled
    (`prng`);
  these use custom VJPs, so `jax.jvp` through them raises, and `jax.lax.platform_dependent`, so off the CPU they are
  Flax's and JAX's own.
* `xla.compiler_options()`: XLA:CPU's YNNPACK convolutions off (1.8-1.9x faster All-CNN steps).
* `process`: the launcher's opt-in split of the CPU into several XLA devices (`--host_devices`) and the huge-page
  setting for malloc (an environment variable the README documents; nothing restarts the process).

`convolution.loop_unsafe_convolutions` is not a speed-up but a guard the trainer applies on every single-CPU-device
run: a step whose convolutions XLA:CPU would run as a naive loop nest inside a compiled loop (a plain nn.Conv's
gradients) is driven from the host one step per call instead.

Measured figures are in benchmarks/RESULTS.md.
"""
from __future__ import annotations

from typing import Any

SETTINGS = ('auto', 'on', 'off')


def enabled(setting: str, backend: str) -> bool:
  """Whether `config.train.cpu_speedups = setting` switches the speed-ups on for a run on JAX backend `backend`."""
  if setting not in SETTINGS:
    raise ValueError(f'config.train.cpu_speedups = {setting!r}: expected one of {SETTINGS}.')
  return setting == 'on' or (setting == 'auto' and backend == 'cpu')


def model_parts() -> dict[str, Any]:
  """The CPU variants of the parts the models take as fields (`models.create_model(..., **parts)`, `vae.VAE`)."""
  # Imported here: `launch.py` reads `process` before JAX starts, and that needs none of these.
  from infodrop_jax.cpu import batch_norm, convolution, prng  # pylint: disable=g-import-not-at-top
  return {'conv': convolution.Conv, 'conv_transpose': convolution.ConvTranspose, 'norm': batch_norm.BatchNorm,
          'sampler': prng.SAMPLER}
