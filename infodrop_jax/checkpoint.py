"""Training checkpoints with orbax: periodic + final, keep-last-k, atomic, with the run's config beside them.

A checkpoint holds the whole `TrainState` as a state dict (params, optimizer state, BatchNorm statistics, the noise
key and the step; the epoch follows from the step) plus the config as JSON. Arrays are saved from the global
replicated layout (see `infodrop_jax.parallel`), so a checkpoint written in 'pmap' mode restores in 'jit' mode and
on a different device count.
"""
from __future__ import annotations

import os
from typing import Any

import flax.serialization
import jax
import ml_collections
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'


def check_workdir(workdir: str) -> None:
  """Creates `workdir` and raises ValueError if it cannot be written (before anything is compiled)."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{jax.process_index()}')
    with open(probe, 'w', encoding='utf-8') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'--workdir {workdir!r} is not a writable directory: {e}') from e


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for `TrainState`s in the global layout."""

  def __init__(self, workdir: str, *, max_to_keep: int, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only, read_only=read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state: Any, config: ml_collections.ConfigDict) -> None:
    """Saves `state` (global layout) at its step. Returns once the arrays are copied off device; writes finish in
    the background and become visible atomically."""
    step = int(jax.device_get(state.step))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
        config=ocp.args.JsonSave(config.to_dict())), force=True)

  def restore(self, template: Any, step: int | None = None) -> Any:
    """The state saved at `step` (default: latest), with `template`'s structure and shardings (global layout)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}.')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return flax.serialization.from_state_dict(template, restored['state'])

  def restore_config(self, step: int | None = None) -> dict[str, Any]:
    step = self.latest_step() if step is None else step
    return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
