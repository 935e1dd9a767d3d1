"""The package's public API: every name in `__all__` imports from `infodrop_jax` itself, and lazily."""
import importlib
import subprocess
import sys

import pytest

import infodrop_jax


def test_documented_layer_imports_work():
  # pylint: disable=import-outside-toplevel,g-multiple-import
  from infodrop_jax import EchoNoise, InformationDropout, InformationDropoutConv, InformationDropoutDense, total_kl
  from infodrop_jax import echo, kl, layers  # pylint: disable=import-outside-toplevel
  assert InformationDropout is layers.InformationDropout and InformationDropoutConv is layers.InformationDropoutConv
  assert InformationDropoutDense is layers.InformationDropoutDense and EchoNoise is echo.EchoNoise
  assert total_kl is kl.total_kl


@pytest.mark.parametrize('name', sorted(infodrop_jax._EXPORTS))  # pylint: disable=protected-access
def test_every_public_name_is_its_modules_own_object(name):
  """`infodrop_jax.X` is the very object the submodule it is documented in defines (not a copy or a stand-in)."""
  module = importlib.import_module(f'infodrop_jax.{infodrop_jax._EXPORTS[name]}')  # pylint: disable=protected-access
  assert getattr(infodrop_jax, name) is getattr(module, name)
  assert name in infodrop_jax.__all__


def test_all_covers_the_public_layers_kl_echo_and_models():
  from infodrop_jax import echo, kl, layers, models  # pylint: disable=import-outside-toplevel
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  expected = {name for module in (layers, echo, models) for name, value in vars(module).items()
              if isinstance(value, type) and issubclass(value, nn.Module) and not name.startswith('_')
              and value.__module__ == module.__name__}
  expected |= {'kl_per_example', 'kl_per_layer', 'total_kl', 'log_uniform_kl', 'log_normal_kl',
               'variational_dropout_kl', 'create_model', 'echo_sample', 'echo_mutual_information'}
  assert expected <= set(infodrop_jax.__all__), expected - set(infodrop_jax.__all__)
  assert set(infodrop_jax.__all__) <= set(dir(infodrop_jax))
  with pytest.raises(AttributeError, match='no attribute'):
    getattr(infodrop_jax, 'no_such_name')


def test_importing_the_package_loads_neither_flax_nor_the_data_stack():
  code = ('import sys, infodrop_jax; from infodrop_jax import total_kl; '
          'print(sorted(m for m in ("flax", "tensorflow_datasets", "tensorflow", "infodrop_jax.data", "orbax") '
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       env={'JAX_PLATFORMS': 'cpu', 'PATH': ''}).stdout
  # total_kl needs jax only; Flax comes with the layers, TFDS with infodrop_jax.data.
  assert out.strip() == '[]', out
