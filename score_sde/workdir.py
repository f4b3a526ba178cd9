"""The run directory (``--workdir``): checked before anything is written into it.

``check_workdir`` turns what would be a raw ``OSError`` deep inside orbax or TensorBoard (the
path is a file, lies under a file, or cannot be written) into one ``errors.WorkdirError`` that
names the path and the fix, and writes nothing that stays: writability is tested by creating and
removing a temporary file in the directory, or in its nearest existing ancestor when the
directory is yet to be created. Remote paths (``gs://...``) are left to their client.
"""
import json
import os
import tempfile

from score_sde import errors


def check_workdir(workdir: str, *, must_exist: bool = False) -> str:
  """Raises ``errors.WorkdirError`` unless this run can create or write ``workdir``.

  Args:
    workdir: the ``--workdir`` value, relative or absolute.
    must_exist: the directory must already be there (evaluating a training run).
  Returns:
    ``workdir`` unchanged for a remote path, else its absolute path.
  """
  if '://' in str(workdir):
    return str(workdir)
  path = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.WorkdirError(f'--workdir {path} is a file, not a directory. Pass a directory '
                              '(it is created if missing).')
  if must_exist and not os.path.isdir(path):
    raise errors.WorkdirError(f'--workdir {path} does not exist. Pass the --workdir of the '
                              'training run to evaluate.')
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise errors.WorkdirError(f'--workdir {path} cannot be created: {existing} is a file. Pass '
                              'a path under a directory.')
  try:
    with tempfile.TemporaryFile(dir=existing, prefix='.score_sde_write_test_'):
      pass
  except OSError as e:
    where = 'it' if existing == path else f'{existing}, where it would be created,'
    raise errors.WorkdirError(
        f'--workdir {path} is not writable: {where} refuses new files ({e.strerror}). Pass a '
        'directory you can write to, or fix its permissions.') from e
  return path


CLASSIFIER_SUBDIR = 'classifier'


def classifier_workdir(config, workdir: str) -> str:
  """Where the noise-conditional classifier of a run lives: ``sampling.classifier_workdir``, or
  ``<workdir>/classifier`` when that is empty (``--mode train_classifier`` trains it there)."""
  chosen = config.sampling.get('classifier_workdir', '')
  if chosen:
    return chosen if '://' in str(chosen) else os.path.abspath(os.path.expanduser(chosen))
  return os.path.join(workdir, CLASSIFIER_SUBDIR)


# The config a run was trained with, as eval_report.flat_config writes it: what
# ``score_sde.load(workdir)`` rebuilds the network and the SDE from.
RUN_CONFIG = 'config.json'


def save_run_config(config, workdir: str) -> None:
  """Writes ``config`` to ``<workdir>/config.json`` (process 0; atomic), replacing the record of
  an earlier start: a resumed run with overrides records what it now trains with."""
  import jax  # pylint: disable=g-import-not-at-top
  from score_sde.evaluation import report as eval_report  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    return
  record = json.dumps(eval_report.flat_config(config), indent=1, sort_keys=True) + '\n'
  eval_report.write_text(os.path.join(workdir, RUN_CONFIG), record)


def load_run_config(workdir: str):
  """The ``ml_collections.ConfigDict`` recorded by ``save_run_config``.

  Fields are laid over ``configs/default.py``, so a record from before a field existed gets that
  field's default, and a field renamed since (``config_validation.RENAMED``) is read under its
  new name; JSON lists become tuples where the default holds a tuple.

  Raises:
    errors.WorkdirError: when ``workdir`` holds no record (a run trained before records were
      written, or a converted released checkpoint without one), naming the fix.
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  path = epath.Path(workdir) / RUN_CONFIG
  if not path.exists():
    raise errors.WorkdirError(
        f'{workdir} holds no {RUN_CONFIG} (training writes it when it starts). Pass the run\'s '
        'config explicitly: score_sde.load(workdir, config="configs/....py") or a ConfigDict.')
  try:
    flat = json.loads(path.read_text())
  except ValueError as e:
    raise errors.WorkdirError(f'{path} is not valid JSON ({e}); pass the config explicitly: '
                              'score_sde.load(workdir, config=...).') from None
  from score_sde import config_validation  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  for field, value in flat.items():
    field = config_validation.RENAMED.get(field, field)
    *sections, name = field.split('.')
    node = config
    for section in sections:
      if section not in node:
        node[section] = type(config)()
      node = node[section]
    old = node.get(name)
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    elif isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    node[name] = value
  return config
