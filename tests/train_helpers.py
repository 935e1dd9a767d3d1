"""Shared by the training tests: a tiny model following the models contract, generated splits, tiny configs."""
from __future__ import annotations

import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from infodrop_jax.data.splits import DatasetSplits, Split

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `from configs import ...` inside config files.
  sys.path.insert(0, str(REPO_ROOT))



class TinyNoisyNet(nn.Module):
  """Conv → BatchNorm → ReLU → multiplicative log-normal noise (sows a KL map) → dense: the models contract."""
  num_classes: int = 3
  batch_norm: bool = True
  noise: bool = True

  @nn.compact
  def __call__(self, x, deterministic: bool = False, use_running_average: bool = False):
    alpha = 0.001 + 0.7 * nn.sigmoid(nn.Conv(4, (3, 3), strides=2, name='alpha')(x))
    x = nn.Conv(4, (3, 3), strides=2)(x)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=use_running_average, momentum=0.9)(x)
    x = nn.relu(x)
    self.sow('kl', 'kl_map', -jnp.log(alpha / 0.701))
    if self.noise and not deterministic:
      x = x * jnp.exp(alpha * jax.random.normal(self.make_rng('noise'), x.shape))
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes)(x)


def tiny_splits(n_train: int = 96, n_test: int = 40, shape=(8, 8, 1), num_classes: int = 3,
                dtype=np.uint8, seed: int = 0) -> DatasetSplits:
  """Learnable generated data: the class sets the mean brightness."""
  rng = np.random.default_rng(seed)
  def split(n):
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    images = rng.normal(60.0 + 60.0 * labels[:, None, None, None], 20.0, (n,) + shape).clip(0, 255)
    images = images.astype(np.uint8) if dtype == np.uint8 else (images / 255).astype(np.float32)
    return Split(images=images, labels=labels, extras={})
  return DatasetSplits(name='generated', num_classes=num_classes, train=split(n_train), test=split(n_test),
                       valid=None)


def tiny_config(**train_overrides):
  """A mnist_fc smoke config shrunk further for the generated data above (tensorboard on, progress off)."""
  from configs import mnist_fc  # pylint: disable=g-import-not-at-top
  config = mnist_fc.get_config('smoke')
  config.train.batch_size = 16
  config.train.num_epochs = 2
  config.train.steps_per_call = 4
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 3
  config.eval.batch_size = 16
  config.eval.every_epochs = 1
  config.eval.bn_reestimate_steps = -1
  config.optim.name = 'sgd_nesterov'
  config.optim.learning_rate = 0.05
  config.optim.lr_drop_epochs = (1,)
  config.loss.weight_decay = 1e-3
  config.train.update(train_overrides)
  return config


def launch_env(devices: int | None = None) -> dict[str, str]:
  """The environment for a launch.py subprocess on the CPU: this one's, with `devices` forced CPU devices (None:
  XLA_FLAGS unset, so launch.py chooses)."""
  import os  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  if devices is not None:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def launch(*args, devices: int | None = 1):
  """`python launch.py *args` from the repo root on the CPU, with `devices` forced CPU devices (None: XLA_FLAGS
  unset, so launch.py chooses); the CompletedProcess, output captured."""
  import subprocess  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, str(REPO_ROOT / 'launch.py'), *args], capture_output=True, text=True,
                        timeout=600, cwd=REPO_ROOT, env=launch_env(devices), check=False)


def load_module(path: str):
  """The module of a config file (relative to the repository root), loaded as launch.py would."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, REPO_ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
