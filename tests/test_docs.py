"""README's Python snippets and notebooks/quickstart.ipynb run as written: what users copy must
work. The snippets run in a directory holding a 4-step smoke run at README's workdir path
(runs/embedded); the notebook runs top to bottom in a Jupyter kernel (nbclient), failing on any
error, where it trains a tiny network itself (QUICKSTART_CONFIG). The committed notebook holds
the outputs of the default run, which a test checks are there. The files and modules that
README, CONTRIBUTING and docs/ name exist."""
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


NOTEBOOK = os.path.join(ROOT, 'notebooks', 'quickstart.ipynb')


def execute(notebook, cwd):
  """Runs ``notebook`` (nbformat) in place in a fresh python3 kernel started in ``cwd``."""
  import nbclient  # pylint: disable=g-import-not-at-top
  client = nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                                   resources={'metadata': {'path': cwd}})
  client.execute()  # Raises CellExecutionError, with the cell and traceback, on any error.


def outputs(notebook, kind):
  """Every output of ``kind`` ('image/png', 'text', 'error') of the notebook's code cells."""
  found = []
  for cell in notebook.cells:
    for output in cell.get('outputs', []) if cell.cell_type == 'code' else []:
      if kind == 'error' and output.get('output_type') == 'error':
        found.append(output)
      elif kind == 'text':
        found.append(output.get('text', '') + output.get('data', {}).get('text/plain', ''))
      elif kind in output.get('data', {}):
        found.append(output['data'][kind])
  return found


def coloured_digits(folder, n_train=64, n_test=16):
  """An RGB image folder (train/ and test/) of 16x16 embedded digits, each in a random colour."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from score_sde import data  # pylint: disable=g-import-not-at-top
  from score_sde.configs import smoke  # pylint: disable=g-import-not-at-top
  train = data.get_dataset(smoke.get_config().data, 'train')  # Sorted by class.
  digits = train.get(np.arange(n_train + n_test) * 53 % len(train))
  rng = np.random.default_rng(0)
  for i, grey in enumerate(digits['image'].astype(np.float32)):
    split = os.path.join(folder, 'train' if i < n_train else 'test')
    os.makedirs(split, exist_ok=True)
    colour = (grey * rng.uniform(0.2, 1., 3)).astype(np.uint8)
    Image.fromarray(colour).save(os.path.join(split, f'{i}.png'))
  return str(folder)


def test_quickstart_notebook_trains_and_runs_top_to_bottom(tmp_path, monkeypatch):
  """notebooks/quickstart.ipynb in a fresh kernel started in notebooks/ with one CPU device, as
  a Colab CPU runtime has, where QUICKSTART_WORKDIR holds no run: the notebook trains
  QUICKSTART_CONFIG (tests/notebook_config.py: a tiny network on digits in random colours)
  with README's command, then runs both samplers, inpainting, colourisation, bits/dim and
  encode / decode without an error, shows the five grids inline as PNG and reports the step it
  trained to."""
  import nbformat  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('XLA_FLAGS', child_env.xla_env(1)['XLA_FLAGS'])
  monkeypatch.setenv('QUICKSTART_WORKDIR', str(tmp_path / 'runs' / 'tiny'))
  monkeypatch.setenv('QUICKSTART_CONFIG', os.path.join(ROOT, 'tests', 'notebook_config.py'))
  monkeypatch.setenv('QUICKSTART_TEST_IMAGES', coloured_digits(tmp_path / 'coloured_digits'))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  execute(notebook, os.path.dirname(NOTEBOOK))
  text = ''.join(outputs(notebook, 'text'))
  assert 'No trained run in $QUICKSTART_WORKDIR: training $QUICKSTART_CONFIG there.' in text
  assert '$QUICKSTART_WORKDIR: step 4 of 4' in text
  assert 'colourisation needs an RGB run' not in text
  assert len(outputs(notebook, 'image/png')) == 5  # Two sample grids, inpainting, colours, latents.


@pytest.mark.parametrize('start', ['.', 'notebooks'])
def test_quickstart_finds_the_default_run_from_the_root_or_notebooks(start, monkeypatch):
  """Without QUICKSTART_WORKDIR the notebook reads README's run, <root>/runs/embedded, whether
  its kernel starts in the repository root or in notebooks/ (its setup cells, then WORKDIR)."""
  import nbformat  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('QUICKSTART_WORKDIR', raising=False)
  monkeypatch.delenv('QUICKSTART_CONFIG', raising=False)
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  notebook.cells = [c for c in notebook.cells if 'setup' in c.metadata.get('tags', [])]
  notebook.cells.append(nbformat.v4.new_code_cell('print(WORKDIR, CONFIG, sep="\\n")'))
  execute(notebook, os.path.join(ROOT, start))
  printed = notebook.cells[-1].outputs[0]['text'].split()
  assert printed == [os.path.join(ROOT, 'runs', 'embedded'),
                     os.path.join(ROOT, 'configs', 'embedded.py')]


def test_committed_quickstart_shows_the_default_runs_results():
  """The notebook is committed executed on the default run (README's first command), so that
  a reader sees results without running it: every code cell ran, in order, without an error;
  the grids are there as PNG; the run is configs/embedded.py's, at its last step; and no
  output shows a path of the machine it ran on."""
  import nbformat  # pylint: disable=g-import-not-at-top
  from score_sde.configs import embedded  # pylint: disable=g-import-not-at-top
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in notebook.cells if c.cell_type == 'code']
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
  assert not outputs(notebook, 'error')
  assert len(outputs(notebook, 'image/png')) >= 4  # Two sample grids, inpainting, latents.
  text = ''.join(outputs(notebook, 'text'))
  steps = embedded.get_config().training.n_iters
  assert f': step {steps} of {steps}, MNIST_EMBEDDED images' in text
  assert not re.search(r'(^|[\s\'"(])/(tmp|home|work|content|root|Users)/', text)


DOC_FILES = ['README.md', 'CONTRIBUTING.md'] + sorted(
    os.path.join('docs', name) for name in os.listdir(os.path.join(ROOT, 'docs'))
    if name.endswith('.md'))
# A path of the checkout inside a backticked span: `score_sde/io/checkpoint.py`,
# `python benchmarks/elbo.py --workdir DIR`, `tests/fixtures/parity/`.
REPO_PATH = re.compile(r'(?<![\w./-])((?:score_sde|benchmarks|tests|configs|notebooks)/[\w./-]*)')


def named_paths(doc):
  """The checkout paths in ``doc``'s backticked spans and the targets of its relative links,
  each relative to the repository root."""
  with open(os.path.join(ROOT, doc)) as f:
    text = f.read()
  paths = {path.rstrip('.') for span in re.findall(r'`([^`\n]+)`', text)
           for path in REPO_PATH.findall(span)}
  for target in re.findall(r'\]\(([^)#\s]+)[^)]*\)', text):
    if '://' not in target:
      paths.add(os.path.normpath(os.path.join(os.path.dirname(doc), target)))
  return paths


def test_every_path_the_docs_name_exists():
  """Each module, benchmark, test, config or notebook path that README, CONTRIBUTING or a page
  of docs/ names in backticks, and each file a relative link points to, is in the checkout: a
  moved or deleted file fails here rather than leave a reader at a dead name."""
  named = {(doc, path) for doc in DOC_FILES for path in named_paths(doc)}
  assert len(named) > 100  # The pattern still finds the paths the docs name.
  assert [(doc, path) for doc, path in sorted(named)
          if not os.path.exists(os.path.join(ROOT, path))] == []


def test_contributing_layer_table_names_existing_modules():
  """In CONTRIBUTING.md's layer table, every name in a layer's cell is a module or package of
  score_sde, and every module a package's row holds (`checkpoint`, `models.utils`,
  `from_config.get_sampler`) is one of that package's modules or subpackages."""
  with open(os.path.join(ROOT, 'CONTRIBUTING.md')) as f:
    rows = re.findall(r'^\| (`.*`[^|]*) \| (.*) \|$', f.read(), flags=re.M)
  assert len(rows) > 10
  not_modules = {'score_fn', 'config.json'}  # The samplers' argument; a run's file.

  def is_module(path):  # Relative to score_sde/: a package (`io/`, `io`) or a module.
    path = os.path.join(ROOT, 'score_sde', path)
    return os.path.isdir(path) or os.path.exists(path if path.endswith('.py') else path + '.py')

  missing = []
  for layer, holds in rows:
    names = re.findall(r'`([^`]+)`', layer)
    missing += [name for name in names if not is_module(name)]
    if len(names) == 1 and names[0].endswith('/'):  # A package's row: its modules.
      for name in re.findall(r'`([\w.]+)`', holds):
        module = name.removeprefix(names[0].rstrip('/') + '.').split('.')[0]
        if name not in not_modules and not is_module(names[0] + module):
          missing.append(names[0] + name)
  assert missing == []
