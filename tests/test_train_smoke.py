"""Every experiment config's `:smoke` variant trains a few steps on real (or generated-from-real) data and evaluates."""
import numpy as np
import pytest

import train_helpers  # noqa: F401  (repo root on sys.path)
from configs import cifar_binary, cifar_info, cifar_softplus, cluttered_info, mnist_fc
from infodrop_jax import train


@pytest.mark.parametrize('module', [mnist_fc, cifar_info, cifar_binary, cifar_softplus, cluttered_info],
                         ids=lambda m: m.__name__.split('.')[-1])
def test_smoke_variant_trains_and_evaluates(module, shared_data, tmp_path):
  del shared_data  # Only its skip-if-absent behaviour: the configs find ../shared/data themselves.
  config = module.get_config('smoke')
  config.train.num_epochs = 1
  config.eval.every_epochs = 0
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] > 1
  assert np.isfinite(summary['test/ce_d']) and np.isfinite(summary['test/ce_n'])
  # Noise off, near chance (log 10 = 2.30) after a few steps, not exploded: the CIFAR smoke runs printed a test CE
  # of 306,000 without noise while their whitening was fitted on the 512-image subset (issue 25, item 0). (With
  # the noise on, one epoch of Cluttered MNIST can reach a CE of 100: the noise of an untrained net, not the data.)
  assert summary['test/ce_d'] < 3.0, summary
  if config.model.dropout == 'information':
    assert any(k.startswith('test/kl/') for k in summary)
