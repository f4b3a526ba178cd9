"""README's Python snippets and notebooks/quickstart.ipynb run as written: what users copy must
work. The snippets run in a directory holding a 4-step smoke run at README's workdir path
(runs/embedded); the notebook runs top to bottom in a Jupyter kernel (nbclient) on its own
tiny settings, failing on any error."""
import os
import re

import numpy as np
import pytest

import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks(path):
  with open(path) as f:
    return re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)


@pytest.fixture(scope='module')
def readme_workdir(trained_smoke_run):
  """A directory holding runs/embedded: the smoke network trained for 4 steps (conftest)."""
  _, workdir = trained_smoke_run
  return os.path.dirname(os.path.dirname(workdir))


def test_readme_has_the_snippets_users_copy():
  blocks = python_blocks(os.path.join(ROOT, 'README.md'))
  assert len(blocks) >= 2
  assert any('score_sde.load(' in b for b in blocks)


@pytest.mark.parametrize('index', range(len(python_blocks(os.path.join(ROOT, 'README.md')))))
def test_readme_python_snippet_runs_as_written(index, readme_workdir, monkeypatch):
  """Each ```python block of README, executed unchanged; names it defines must be real."""
  block = python_blocks(os.path.join(ROOT, 'README.md'))[index]
  monkeypatch.chdir(readme_workdir)
  namespace = {'__name__': '__readme__'}
  code = compile(block, f'README.md python block {index}', 'exec')
  exec(code, namespace)  # pylint: disable=exec-used
  arrays = [v for v in namespace.values() if isinstance(v, np.ndarray)]
  assert all(np.all(np.isfinite(a)) for a in arrays if a.dtype.kind == 'f')


def test_quickstart_notebook_runs_top_to_bottom(monkeypatch):
  """notebooks/quickstart.ipynb in a fresh kernel with one CPU device, as a Colab CPU runtime
  has: training the tiny network, two samplers, inpainting, colourisation, bits/dim and
  encode / decode, every cell without an error; the images are shown inline (PNG outputs)."""
  monkeypatch.setenv('XLA_FLAGS', child_env.xla_env(1)['XLA_FLAGS'])
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  path = os.path.join(ROOT, 'notebooks', 'quickstart.ipynb')
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                                   resources={'metadata': {'path': os.path.dirname(path)}})
  client.execute()  # Raises CellExecutionError, with the cell and traceback, on any error.
  images = [o for cell in notebook.cells if cell.cell_type == 'code'
            for o in cell.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert len(images) == 5  # Two sampler grids, inpainting, colourisation, latents.
