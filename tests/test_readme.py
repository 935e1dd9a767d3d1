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


def test_parts_example_runs_and_its_batch_norm_syncs_under_pmap():
  (layer_example,) = [block for block in _python_blocks() if 'class MyNet' in block]
  (parts_example,) = [block for block in _python_blocks() if "axis_name='batch'" in block]
  namespace = {}
  exec(compile(layer_example + parts_example, str(README), 'exec'), namespace)  # pylint: disable=exec-used
  jax, jnp, layer = namespace['jax'], namespace['jnp'], namespace['layer']
  assert namespace['model'].axis_name == 'batch'
  x = jax.random.normal(jax.random.key(0), (jax.local_device_count(), 2, 4, 4, 3))
  variables = layer.init({'params': jax.random.key(1)}, x[0], deterministic=True, use_running_average=False)
  apply = lambda x: layer.apply(variables, x, deterministic=True, use_running_average=False,
                                mutable=['batch_stats', 'kl'])[1]['batch_stats']['bn']['mean']
  means = jax.pmap(apply, axis_name='batch')(x)
  # Every device holds the statistics of the whole batch: the same as one device normalising all of it.
  whole = layer.clone(norm=namespace['nn'].BatchNorm).apply(
      variables, x.reshape(-1, 4, 4, 3), deterministic=True, use_running_average=False,
      mutable=['batch_stats', 'kl'])[1]['batch_stats']['bn']['mean']
  np.testing.assert_allclose(means, jnp.broadcast_to(whole, means.shape), rtol=1e-5, atol=1e-6)


def test_every_section_the_readme_points_to_exists():
  # Issue 26, item 14: "see VAEs below" and "information plane (below)" pointed at sections that did not exist.
  text = README.read_text()
  headings = {re.sub(r'[^a-z0-9 -]', '', h.strip().lower()).replace(' ', '-')
              for h in re.findall(r'^#+ (.+)$', text, flags=re.M)}
  links = re.findall(r'\]\(#([^)]+)\)', text)
  assert links and not [link for link in links if link not in headings]
  assert not re.search(r'\(see [^)]* below\)|\((?:[^()]*\s)?below\)', text), 'a "below" with no section named'


def test_nnx_example_trains_with_kl_in_the_loss_and_compiles_once():
  (example,) = [block for block in _python_blocks() if 'class MyNNXNet' in block]
  namespace = {}
  exec(compile(example, str(README), 'exec'), namespace)  # pylint: disable=exec-used
  loss = float(namespace['nnx_loss'])
  assert np.isfinite(loss) and namespace['logits'].shape == (8, 10)
  # After .eval() the noise is off, and the model's KL is its last call's.
  model = namespace['model']
  assert model.info.noise.deterministic and np.isfinite(float(namespace['kl'].total_kl(model, 60_000)))
