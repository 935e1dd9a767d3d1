"""CPU speed-ups of the whole process, both opt-in: nothing here runs unless asked for.

Both are measured in benchmarks/RESULTS.md (2-core Xeon VM, All-CNN-32 + information dropout, the trainer's loop):

* **Huge pages for malloc**: start Python with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` in the environment (glibc ≥
  2.35; the README shows the command). XLA:CPU allocates a step's temporaries afresh on every call (136 MB at 25 %
  filters). With 4 KiB pages that is 33,000 page faults a step, and the transposes' strided reads miss the TLB.
  With transparent huge pages the step is 5–15 % faster. The kernel must allow huge pages on request
  (`/sys/kernel/mm/transparent_hugepage/enabled` set to `madvise`; with `always` they are already used). glibc
  reads its tunables only when a process starts, so this is the user's environment to set: the launcher neither
  restarts itself nor edits it.
* **Several XLA CPU devices** (`launch.py --host_devices=2`: `use_host_devices` adds
  `--xla_force_host_platform_device_count` to XLA_FLAGS before JAX starts; off by default, since it changes the
  float rounding of a run). The trainer then splits each batch over them ('jit' mode). Each device runs its half of the step on its own thread,
  so the many small pieces of a step that XLA runs on one core overlap with the other half's.
  - All-CNN-32 at 25 % filters: 13–18 % faster.
  - All-CNN-32 at 100 % and All-CNN-96 at 48×48: 0–8 % faster. The convolutions are already multi-threaded
    there, and they are most of the step.
  - The MNIST MLP: 1.9× *slower* (its step takes a few milliseconds, and combining the two halves' gradients
    costs more than the split saves).
  - All-CNN-96 keeps one device. It gains 3 %, and its 6-epoch `cluttered_info:cpu` run (β 0.05) ended at 7.31 %
    test error split against 3.93 % on one device. One step agrees to 2e-6, so this is rounding that the short,
    large-step recipe amplifies; but the one-device number is the one documented. MLPs and the VAEs (not
    measured) keep one device too.
  - The math is the same SPMD program: BatchNorm statistics over the whole batch, noise independent of the split
    (`train` module docstring). Only float sums may round differently.
  `host_devices` chooses the count ('auto': 2 where the split was measured to help, else 1).

Neither setting touches a GPU or TPU run. Huge pages are host memory only, and the forced CPU device count leaves
the accelerator the default backend.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any

HUGE_PAGES = 'glibc.malloc.hugetlb=1'  # The GLIBC_TUNABLES entry the README documents.
DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
AUTO_DEVICES = 2  # What `host_devices('auto')` picks where the split applies (measured on 2 cores only).
SPLIT_MODELS = ('all_cnn_32',)  # Classifiers the split is for (module docstring).


def usable_cpus() -> list[int]:
  """The CPU cores this process may run on: its affinity (a sweep slot pins each run to its share), else all."""
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return list(range(os.cpu_count() or 1))


def device_count_in_xla_flags(xla_flags: str) -> int | None:
  """The device count XLA_FLAGS forces on the CPU backend, or None."""
  match = re.search(re.escape(DEVICE_COUNT_FLAG) + r'=(\d+)', xla_flags)
  return int(match.group(1)) if match else None


def host_devices(config: Any, requested: str, cpu_count: int | None = None) -> int:
  """CPU devices for a training/evaluation run of `config` (None: no run to fit): `requested` as an int ('1', '2',
  …) or 'auto'.

  'auto' is AUTO_DEVICES when the split can apply, else 1. It applies when:
  - the run trains a classifier named in SPLIT_MODELS (`config.model.name`);
  - the process may run on at least that many cores (`cpu_count`, default: `usable_cpus`);
  - `config.train.parallel` is 'jit' (pmap takes no XLA options, so a pmap split would lose the trainer's CPU
    kernels, `parallel.cpu_compiler_options`);
  - both batch sizes divide evenly;
  - `config.distributed` is off (multi-host runs keep their devices as they are).
  """
  if requested != 'auto':
    if not requested.isdigit() or int(requested) < 1:
      raise ValueError(f"--host_devices = {requested!r}: expected 'auto' or a positive int.")
    return int(requested)
  if (len(usable_cpus()) if cpu_count is None else cpu_count) < AUTO_DEVICES:
    return 1
  if config is None:  # No run to fit (a benchmark): the machine decides.
    return AUTO_DEVICES
  distributed = config.get('distributed')
  if distributed is not None and distributed.get('enabled', False):
    return 1
  model = config.get('model')
  if config.get('task', 'classification') != 'classification' or model is None or \
      model.get('name') not in SPLIT_MODELS:
    return 1
  train, evaluation = config.get('train'), config.get('eval')
  if train is None or evaluation is None or train.get('parallel', 'jit') != 'jit':
    return 1
  sizes = (train.get('batch_size'), evaluation.get('batch_size'))
  if not all(isinstance(size, int) and size > 0 and size % AUTO_DEVICES == 0 for size in sizes):
    return 1
  return AUTO_DEVICES


def use_host_devices(count: int) -> bool:
  """Asks JAX's CPU backend for `count` devices (through XLA_FLAGS); True when set.

  Left alone (False) where XLA_FLAGS already names a count (the user's choice wins) or for a count of 1. Also
  left alone, with a warning, where JAX's backends are already up: the flag is read when they start.
  """
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if count == 1 or device_count_in_xla_flags(xla_flags) is not None:
    return False
  if _jax_backends_started():
    import warnings  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    warnings.warn(f'{count} CPU devices asked for after JAX started its backends: keeping {jax.device_count()}.',
                  stacklevel=2)
    return False
  os.environ['XLA_FLAGS'] = f'{xla_flags} {DEVICE_COUNT_FLAG}={count}'.strip()
  return True


def _jax_backends_started() -> bool:
  if 'jax' not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()
