"""The run directory (``--workdir``): checked before anything is written into it.

``check_workdir`` turns what would be a raw ``OSError`` deep inside orbax or TensorBoard (the
path is a file, lies under a file, or cannot be written) into one ``errors.WorkdirError`` that
names the path and the fix, and writes nothing that stays: writability is tested by creating and
removing a temporary file in the directory, or in its nearest existing ancestor when the
directory is yet to be created. Remote paths (``gs://...``) are left to their client.
"""
import os
import tempfile

from score_sde.common import errors


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
