"""The package's shape: no import cycles (function-level imports included), no module reaching into another's private
names, plain Flax for library users (the layers and models never import the CPU speed-ups), nothing compiled."""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'infodrop_jax'
# What a library user imports to build a model: none of it may depend on the opt-in CPU speed-ups.
LIBRARY_MODULES = ('infodrop_jax.layers', 'infodrop_jax.kl', 'infodrop_jax.echo', 'infodrop_jax.models',
                   'infodrop_jax.vae', 'infodrop_jax.mutual_information', 'infodrop_jax.noise',
                   'infodrop_jax.nnx_layers', 'infodrop_jax.nnx_models')


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    out[name] = path
  return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> list[tuple[str, str | None, ast.AST]]:
  """(imported module, alias bound in this module or None, node) for every import of a package module, at any depth
  (an `import` inside a function is still a dependency)."""
  tree = ast.parse(path.read_text(encoding='utf-8'))
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('infodrop_jax'):
          found.append((alias.name, alias.asname, node))
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] + ([base] if base else []))
      if not base.startswith('infodrop_jax'):
        continue
      for alias in node.names:
        candidate = f'{base}.{alias.name}'
        if candidate in MODULES:  # `from infodrop_jax import layers`: the submodule.
          found.append((candidate, alias.asname or alias.name, node))
        else:  # `from infodrop_jax.layers import X`: the module itself.
          found.append((base, None, node))
  return found


def _graph() -> dict[str, set[str]]:
  graph = {}
  for name, path in MODULES.items():
    targets = set()
    for target, _, _ in _imports(name, path):
      # Importing a.b.c runs a and a.b too; a package's __init__ is a dependency of its submodules' importers.
      while target and target not in MODULES:
        target = target.rpartition('.')[0]
      if target and target != name:
        targets.add(target)
    graph[name] = targets - {'infodrop_jax'}  # The root package imports nothing eagerly (lazy __getattr__).
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  cycles, state, stack = [], {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt)
    stack.pop()
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node)
  return cycles


def test_the_package_has_no_import_cycles():
  assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle():
  assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]


@pytest.mark.parametrize('name', sorted(MODULES))
def test_no_module_uses_another_modules_private_names(name):
  path = MODULES[name]
  tree = ast.parse(path.read_text(encoding='utf-8'))
  aliases = {alias: target for target, alias, _ in _imports(name, path) if alias and target in MODULES}
  offences = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
      if node.attr.startswith('_') and not node.attr.startswith('__') and aliases[node.value.id] != name:
        offences.append(f'{node.value.id}.{node.attr} (line {node.lineno})')
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('infodrop_jax'):
      offences += [f'from {node.module} import {a.name} (line {node.lineno})' for a in node.names
                   if a.name.startswith('_') and not a.name.startswith('__')]
  assert offences == []


@pytest.mark.parametrize('name', LIBRARY_MODULES)
def test_what_a_library_user_imports_is_plain_flax(name):
  """The layers and models do not depend on the CPU speed-ups, at any depth of their imports."""
  graph, seen, todo = _graph(), set(), [name]
  while todo:
    module = todo.pop()
    if module not in seen:
      seen.add(module)
      todo.extend(graph.get(module, ()))
  assert not {m for m in seen if m == 'infodrop_jax.cpu' or m.startswith('infodrop_jax.cpu.')}


def test_nothing_is_compiled_from_source():
  sources = [p for p in PACKAGE.rglob('*') if p.suffix in ('.c', '.cc', '.cpp', '.cu', '.h', '.so')]
  assert sources == []
  for name, path in MODULES.items():
    text = path.read_text(encoding='utf-8')
    assert 'ctypes' not in text and 'jax.ffi' not in text and 'custom_call' not in text, name
