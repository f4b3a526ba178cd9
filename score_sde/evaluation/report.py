"""What an evaluation writes and finds again: the report table and the config record.

An evaluation folder (``workdir/<eval_folder>``) holds

  report.json, report.csv   one row per checkpoint (``COLUMNS``), rewritten as values arrive
  config.json               the config the folder's numbers were computed with
  ckpt_<step>/              per-checkpoint work files (sample rounds, bits/dim and ELBO progress)

Rows are read back when an evaluation starts, so finished metrics are never recomputed. That is
only sound when the numbers would come out the same, hence ``check_config_record``: a folder
refuses a config that differs from the recorded one in any field that changes a result.
"""
import csv
import io
import json
import math
from typing import Any, Dict, List, Mapping, Optional

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from score_sde.common import errors
from score_sde.configs import default
from score_sde.configs.record import flat_config
from score_sde.io import files

REPORT_JSON, REPORT_CSV, CONFIG_RECORD = 'report.json', 'report.csv', 'config.json'

# One row per checkpoint. bpd_nfe: mean score evaluations per likelihood batch; nfe: per sample
# round; num_samples: samples behind fid / kid / is. elbo*: the variational bound's dataset mean
# and its terms' (bits/dim; the terms sum to elbo), elbo_stderr the standard error of that mean
# over the images, elbo_diffusion_stderr the mean per-image standard error of the sampled
# diffusion term (0 for the chain's exact sum), elbo_nfe network evaluations per image.
COLUMNS = ('step', 'loss', 'bpd', 'bpd_stderr', 'bpd_nfe', 'elbo', 'elbo_stderr', 'elbo_prior',
           'elbo_diffusion', 'elbo_reconstruction', 'elbo_diffusion_stderr', 'elbo_nfe', 'fid',
           'kid', 'kid_std', 'is', 'is_std', 'num_samples', 'nfe')

# Fields that change no number already computed: which checkpoints and metrics run, where files
# live, how long to wait, how training ran (the checkpoint fixes the weights; eval.num_samples is
# kept per row, and a row with another count is recomputed).
RESULT_NEUTRAL_FIELDS = frozenset({
    'eval.begin_ckpt', 'eval.end_ckpt', 'eval.enable_loss', 'eval.enable_bpd',
    'eval.enable_elbo', 'eval.enable_sampling', 'eval.num_samples', 'eval.wait_for_checkpoint_secs',
    'eval.inception_path', 'data.data_dir', 'data.tfrecords_path', 'data.random_flip',
    'model.ema_rate', 'model.ema_warmup', 'eval.save_samples', 'training.batch_size',
    'training.n_iters', 'training.log_freq',
    'training.eval_freq', 'training.snapshot_freq', 'training.snapshot_freq_for_preemption',
    'training.max_to_keep', 'training.snapshot_sampling', 'training.n_snapshot_samples',
    'training.compute_dtype', 'training.grad_accum_steps', 'model.remat', 'data.num_workers',
    'training.profile_steps',
})
RESULT_NEUTRAL_SECTIONS = ('optim.', 'logging.', 'distributed.')


# ------------------------------------------------------------------------------ hosts
def host0_view(values) -> np.ndarray:
  """Process 0's ``values`` on every process.

  Process 0 writes the folder, so its view of what is done decides what all processes compute
  together (every process must take part in each sharded computation); other hosts may not even
  see the files.
  """
  values = np.asarray(values)
  if jax.process_count() == 1:
    return values
  return np.asarray(multihost_utils.broadcast_one_to_all(values))


# ------------------------------------------------------------------------------ report
def _clean(value: Any) -> Any:
  """JSON-ready: numpy scalars become Python numbers, non-finite floats None."""
  if isinstance(value, (np.integer, np.floating)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class Report:
  """The report table of one evaluation folder, loaded from disk and rewritten on each update.

  Example:
    report = Report(folder, write=jax.process_index() == 0)
    if report.row(step)['loss'] is None:
      report.update(step, {'loss': 1.23})  # report.json and report.csv are rewritten
  """

  def __init__(self, folder, write: bool = True):
    self.folder = epath.Path(folder)
    self.write = write
    self._rows: Dict[int, Dict[str, Any]] = {}
    path = self.folder / REPORT_JSON
    if path.exists():
      try:
        rows = json.loads(path.read_text())
      except ValueError as e:
        raise errors.BadDataError(f'{path} is not valid JSON ({e}); delete it and the metrics are '
                         'recomputed (sample rounds on disk are reused).') from None
      for row in rows:
        self._rows[int(row['step'])] = {c: row.get(c) for c in COLUMNS}

  def row(self, step: int) -> Dict[str, Any]:
    """A copy of the row of ``step``; every column present, None where not computed."""
    return dict(self._rows.get(int(step), {c: None for c in COLUMNS}), step=int(step))

  def rows(self, steps: Optional[List[int]] = None) -> List[Dict[str, Any]]:
    """Rows in step order (of ``steps`` only, when given, skipping steps without a row)."""
    keep = sorted(self._rows) if steps is None else sorted(set(steps) & set(self._rows))
    return [self.row(step) for step in keep]

  def update(self, step: int, values: Mapping[str, Any]) -> None:
    """Sets columns of the row of ``step`` and rewrites both files (when writing)."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
      raise KeyError(f'Unknown report columns {sorted(unknown)}; known: {COLUMNS}.')
    row = self.row(step)
    row.update({k: _clean(v) for k, v in values.items()})
    self._rows[int(step)] = row
    if self.write:
      rows = self.rows()
      files.write_text(self.folder / REPORT_JSON, json.dumps(rows, indent=1) + '\n')
      files.write_text(self.folder / REPORT_CSV, _csv(rows))


def _csv(rows: List[Dict[str, Any]]) -> str:
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({k: '' if row[k] is None else row[k] for k in COLUMNS})
  return out.getvalue()


# ------------------------------------------------------------------------------ config record
def _result_neutral(field: str) -> bool:
  return field in RESULT_NEUTRAL_FIELDS or field.startswith(RESULT_NEUTRAL_SECTIONS)


def config_differences(recorded: Mapping[str, Any], config: ml_collections.ConfigDict
                       ) -> List[str]:
  """Fields (outside the result-neutral ones) whose value differs, as 'field: old -> new'.

  A field a record lacks (written before the field existed) counts as its default
  (``configs/default.py``), the value that run computed with."""
  current = flat_config(config)
  defaults = flat_config(default.get_config())
  old = {**defaults, **recorded}
  fields = sorted(set(old) | set(current))
  return [f'{f}: {old.get(f, "<absent>")!r} -> {current.get(f, "<absent>")!r}'
          for f in fields if not _result_neutral(f) and old.get(f) != current.get(f)]


def check_config_record(folder, config: ml_collections.ConfigDict, write: bool = True) -> None:
  """Records ``config`` in a new folder; in a used one, checks it matches the record.

  Raises:
    ValueError: listing the fields that differ, when the folder's numbers were computed with
      another config; the fix is a new ``--eval_folder`` (or deleting the old one).
  """
  path = epath.Path(folder) / CONFIG_RECORD
  if not path.exists():
    if write:
      files.write_text(path, json.dumps(flat_config(config), indent=1, sort_keys=True) + '\n')
    return
  differences = config_differences(json.loads(path.read_text()), config)
  if differences:
    raise errors.ConfigError(
        f'{folder} holds results computed with another config; reusing them would mix the two. '
        'Differences:\n  ' + '\n  '.join(differences) +
        '\nPass a new --eval_folder for this config (or delete that folder to start over).')
