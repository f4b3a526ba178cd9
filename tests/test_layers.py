"""The package's layers point one way: every import inside ``score_sde`` (module-level or
deferred into a function) goes to the module's own layer or a lower one, and the modules'
import graph has no circle. Protects the architecture ``score_sde/__init__.py`` states, which a
reader follows from the folder list: a lower layer that reached up (losses into training, the
workdir into evaluation) would make each change ripple both ways."""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'score_sde')

# Lowest first. A module belongs to the longest prefix listed; each may import its own layer
# and those before it.
LAYERS = (
    ('score_sde.common',),
    ('score_sde.io',),
    ('score_sde.sde_lib', 'score_sde.analytic'),
    ('score_sde.data',),
    ('score_sde.models',),
    ('score_sde.optim', 'score_sde.low_noise', 'score_sde.losses'),
    ('score_sde.sampling',),
    ('score_sde.likelihood', 'score_sde.elbo'),
    ('score_sde.metrics',),
    ('score_sde.configs',),
    ('score_sde.training',),
    ('score_sde.pipeline', 'score_sde.pipeline_inputs', 'score_sde.conversion'),
    ('score_sde.evaluation', 'score_sde.generate'),
    ('score_sde.cli',),
    ('score_sde',),
)


def _modules():
  """``{dotted name: path}`` of every module of the package."""
  found = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
        if parts[-1] == '__init__':
          parts = parts[:-1]
        found['.'.join(parts)] = path
  return found


MODULES = _modules()


def _imports(module):
  """The package's modules that ``module`` imports, anywhere in its code."""
  path = MODULES[module]
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  targets = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      targets.update(a.name for a in node.names if a.name.split('.')[0] == 'score_sde')
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] +
                        ([base] if base else []))
      if base.split('.')[0] != 'score_sde':
        continue
      for alias in node.names:
        name = f'{base}.{alias.name}'
        targets.add(name if name in MODULES else base)
  return {t for t in targets if t in MODULES and t != module}


def _layer(module):
  best = max((prefix for layer in LAYERS for prefix in layer
              if module == prefix or module.startswith(prefix + '.')), key=len)
  return next(i for i, layer in enumerate(LAYERS) if best in layer)


GRAPH = {m: _imports(m) for m in MODULES}


@pytest.mark.parametrize('module', sorted(MODULES))
def test_a_module_imports_only_its_layer_and_the_ones_below(module):
  upward = sorted(t for t in GRAPH[module] if _layer(t) > _layer(module))
  assert not upward, f'{module} (layer {_layer(module)}) imports higher layers: {upward}'


def test_the_import_graph_has_no_circle():
  """Depth-first search for a back edge; the circle found is named."""
  state, stack = {}, []

  def visit(module):
    state[module] = 'open'
    stack.append(module)
    for target in sorted(GRAPH[module]):
      if state.get(target) == 'open':
        circle = stack[stack.index(target):] + [target]
        pytest.fail('Import circle: ' + ' -> '.join(circle))
      if target not in state:
        visit(target)
    stack.pop()
    state[module] = 'done'

  for module in sorted(GRAPH):
    if module not in state:
      visit(module)


def test_the_layer_check_sees_deferred_and_relative_imports(tmp_path, monkeypatch):
  """The checker itself: an import inside a function, and a relative one, are found."""
  source = tmp_path / 'probe.py'
  source.write_text('def f():\n  from score_sde import pipeline\nfrom .base import identity\n')
  monkeypatch.setitem(MODULES, 'score_sde.sampling.probe', str(source))
  assert _imports('score_sde.sampling.probe') == {'score_sde.pipeline', 'score_sde.sampling.base'}
