"""Experiment configs: every file and variant loads and validates; variants derive from their base."""
import pytest

import train_helpers  # noqa: F401  (puts the repo root on sys.path for `configs`)
from configs import cifar_binary, cifar_info, cifar_softplus, cluttered_info, mnist_fc
from infodrop_jax import train

CONFIGS = {'cifar_info': cifar_info, 'cifar_binary': cifar_binary, 'cifar_softplus': cifar_softplus,
           'cluttered_info': cluttered_info, 'mnist_fc': mnist_fc}


def _flat(config, prefix=''):
  out = {}
  for key, value in config.items():
    if hasattr(value, 'items'):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


@pytest.mark.parametrize('name', sorted(CONFIGS))
@pytest.mark.parametrize('variant', [None, 'smoke'])
def test_config_loads_and_validates(name, variant):
  config = CONFIGS[name].get_config(variant)
  train.validate_config(config, num_devices=1)
  assert CONFIGS[name].get_config.__doc__ or CONFIGS[name].__doc__
  if variant == 'smoke':
    assert config.train.num_epochs <= 2 and config.data.limit > 0


def test_cifar_info_has_the_original_defaults():
  c = cifar_info.get_config()
  assert (c.model.name, c.model.dropout, c.model.activation, c.model.max_alpha) == (
      'all_cnn_32', 'information', 'relu', 0.7)
  assert (c.loss.beta, c.loss.weight_decay, c.train.batch_size, c.train.num_epochs) == (3.0, 1e-3, 100, 200)
  assert (c.optim.name, c.optim.learning_rate, tuple(c.optim.lr_drop_epochs)) == ('sgd_nesterov', 0.05,
                                                                                   (80, 120, 160))
  d = cluttered_info.get_config()
  assert (d.model.name, d.loss.beta, d.model.max_alpha, d.loss.weight_decay) == ('all_cnn_96', 0.5, 1.0, 0.0)
  assert (d.train.batch_size, d.optim.learning_rate, tuple(d.optim.lr_drop_epochs), d.train.num_epochs) == (
      128, 0.01, (30, 60), 80)


@pytest.mark.parametrize('derived, field, value', [
    (cifar_binary, 'model.dropout', 'binary'), (cifar_softplus, 'model.activation', 'softplus')])
def test_variants_differ_from_their_base_in_one_field(derived, field, value):
  for variant in (None, 'smoke'):
    base, child = _flat(cifar_info.get_config(variant)), _flat(derived.get_config(variant))
    assert {k for k in base if base[k] != child[k]} == {field} and child[field] == value


def test_unknown_variant_is_reported():
  with pytest.raises(ValueError, match="unknown config variant 'tiny'"):
    mnist_fc.get_config('tiny')
