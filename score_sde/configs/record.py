"""The record a run keeps of its config: ``<workdir>/config.json``, every field flattened,
written when training starts and read back by ``score_sde.load(workdir)``."""
import json
import os
from typing import Any, Dict

import jax
import ml_collections
from etils import epath

from score_sde.common import errors
from score_sde.configs import default, validation
from score_sde.io import files


def flat_config(config: ml_collections.ConfigDict, prefix: str = '') -> Dict[str, Any]:
  """``{'eval.batch_size': 1024, ...}``: every leaf, JSON-normalised (tuples become lists)."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(flat_config(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = json.loads(json.dumps(value, default=repr))
  return flat


# The config a run was trained with, as ``flat_config`` writes it: what
# ``score_sde.load(workdir)`` rebuilds the network and the SDE from.
RUN_CONFIG = 'config.json'


def save_run_config(config, workdir: str) -> None:
  """Writes ``config`` to ``<workdir>/config.json`` (process 0; atomic), replacing the record of
  an earlier start: a resumed run with overrides records what it now trains with."""
  if jax.process_index() != 0:
    return
  record = json.dumps(flat_config(config), indent=1, sort_keys=True) + '\n'
  files.write_text(os.path.join(workdir, RUN_CONFIG), record)


def load_run_config(workdir: str):
  """The ``ml_collections.ConfigDict`` recorded by ``save_run_config``.

  Fields are laid over ``configs/default.py``, so a record from before a field existed gets that
  field's default, and a field replaced since (``validation.REPLACED``) sets its replacement
  to the value that means the same (``training.likelihood_weighting: true`` ->
  ``training.weighting: 'likelihood'``); JSON lists become tuples where the default holds a
  tuple.

  Raises:
    errors.WorkdirError: when ``workdir`` holds no record (a run trained before records were
      written, or a converted released checkpoint without one), naming the fix.
  """
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
  config = default.get_config()
  for field, value in flat.items():
    if field in validation.REPLACED:
      field, values = validation.REPLACED[field]
      value = values.get(value, value)
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
