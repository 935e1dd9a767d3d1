"""CPU speed-up: the XLA:CPU options the trainer compiles with when `config.train.cpu_speedups` is on.

XLA:CPU (jaxlib 0.10) hands convolutions, dots and reductions to YNNPACK. Its convolutions are 2-5x slower than the
Eigen kernels XLA falls back to (weight gradients worst; conv-by-conv figures in benchmarks/RESULTS.md), and a CPU
train step of All-CNN-32 runs 1.8-1.9x faster without them; its dots and reductions are kept (without them XLA's
own reductions make BatchNorm ~10x slower). The option is experimental: `compiler_options` checks that this jaxlib
takes it and otherwise leaves XLA's defaults.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any
import warnings

import jax
import numpy as np

_YNN_FUSION_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
_CPU_COMPILER_OPTIONS = {_YNN_FUSION_OPTION: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


@functools.cache
def compiler_options() -> dict[str, str]:
  """The XLA options for CPU devices ({} when this jaxlib lacks them).

  A user's own `--xla_cpu_experimental_ynn_fusion_type` in XLA_FLAGS wins: then nothing is overridden. Pass the
  result to `jax.jit(..., compiler_options=...)` to give a model of your own the same CPU kernels.
  """
  if _YNN_FUSION_OPTION in os.environ.get('XLA_FLAGS', ''):
    return {}
  try:
    probe = jax.device_put(np.float32(0), jax.devices('cpu')[0])
    jax.jit(lambda x: x + 1, compiler_options=_CPU_COMPILER_OPTIONS).lower(probe).compile()
  except Exception as error:  # pylint: disable=broad-except
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    warnings.warn(f'XLA:CPU does not take {_CPU_COMPILER_OPTIONS} ({reason}); its default CPU kernels are used.',
                  stacklevel=2)
    return {}
  return dict(_CPU_COMPILER_OPTIONS)


class OptionsJit:
  """`jax.jit(fn, compiler_options=options)` that may also be called inside another trace (jit, eval_shape, vmap).

  XLA takes compiler options only for a top-level computation, and JAX refuses them on a nested jit; there the
  function is traced without them and the enclosing computation's options apply. `lower`, `trace` and the rest are
  the top-level jit's.
  """

  def __init__(self, fn: Callable[..., Any], options: dict[str, str], **jit_kwargs):
    self._top_level = jax.jit(fn, compiler_options=options, **jit_kwargs)
    self._nested = jax.jit(fn, **jit_kwargs)

  def __call__(self, *args, **kwargs):
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
      try:
        return self._top_level(*args, **kwargs)
      except ValueError as error:  # Called inside a trace with only constant arguments.
        if 'top-level' not in str(error):
          raise
    return self._nested(*args, **kwargs)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._top_level, name)
