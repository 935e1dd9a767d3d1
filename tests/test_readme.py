"""The README's layer example must run as printed: a newcomer pastes it and trains a few steps."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def _python_blocks():
  return re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.S)


def test_layer_example_trains_with_kl_in_the_loss():
  (example,) = [block for block in _python_blocks() if 'class MyNet' in block]
  namespace = {}
  exec(compile(example, str(README), 'exec'), namespace)  # pylint: disable=exec-used
  assert np.isfinite(float(namespace['loss']))
  first = float(namespace['loss_fn'](namespace['model'].init(
      namespace['jax'].random.key(1), namespace['x'], deterministic=True)['params'], namespace['jax'].random.key(9)))
  assert float(namespace['loss']) < first  # five Adam steps on one batch lower the loss
