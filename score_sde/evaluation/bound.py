"""The variational bound of one checkpoint over a split (``eval.enable_elbo``), resumable per batch.

One pass over ``eval.bpd_dataset`` in batches of ``eval.batch_size``, split over the mesh: every
image's bound in bits/dim and its prior, diffusion and reconstruction terms
(``elbo.get_elbo_fn`` through ``elbo.get_run_elbo_fn``: the DDPM chain's bound on the 8-bit
images for a discrete-time VP model, the continuous-time bound on dequantized images otherwise,
with the dequantization noise of the bits/dim evaluator's first pass, so the two compare image
by image). Batch ``b`` draws its chain steps or times and noise from ``fold_in(key, b)``: the
same for every checkpoint and device count. Padding rows of the last batch are left out. Each
batch's per-image values are saved to ``ckpt_<step>/ELBO_PROGRESS_FILE`` as it finishes, so a
killed evaluation resumes at the next batch.

The report gets the dataset means of the bound and of each term (which sum to it), the standard
error of the mean bound over the images, the mean per-image standard error of the sampled
diffusion term (0 for the chain's exact sum) and the network evaluations per image.
"""
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from score_sde import data, elbo
from score_sde.common import parallel
from score_sde.evaluation import report as eval_report
from score_sde.io import files, summary
from score_sde.models import utils as mutils

ELBO_PROGRESS_FILE = 'elbo_progress.npz'
# Per-image values kept per batch: the bound and elbo.TERMS, in bits/dim.
VALUES = ('bpd',) + elbo.TERMS


class ElboBatch(NamedTuple):
  """One batch's per-image values (``VALUES``, float64 numpy over its real, unpadded images)
  and its network evaluations per image."""
  values: Dict[str, np.ndarray]
  nfe: int


def make_elbo_evaluator(config, sde, model, mesh, source: data.Source, key: jax.Array,
                        dequantization_seed: int,
                        after_batch: Optional[Callable[[], None]] = None) -> Callable:
  """``evaluate_elbo(params, step, ckpt_dir, writer=None) -> report columns`` (``elbo``,
  ``elbo_stderr``, ``elbo_prior``, ``elbo_diffusion``, ``elbo_reconstruction``,
  ``elbo_diffusion_stderr``, ``elbo_nfe``), compiled once; see the module docstring.

  Args:
    config: the run's config (``eval.elbo_samples``, ``eval.elbo_time_sampling``,
      ``eval.batch_size``, ``model.reverse_variance``).
    sde, model, mesh: the run's SDE, network and device mesh.
    source: the split (``eval.bpd_dataset``).
    key: typed key of the bound's draws; batch ``b`` uses ``fold_in(key, b)``.
    dequantization_seed: the data pipeline's seed of the dequantization noise (continuous).
    after_batch: called after each batch is saved (a stop request raises there).
  Returns:
    The evaluator. Values are computed on every process; the progress file and the returned
    columns are process 0's (empty elsewhere). A class-conditional network is scored with its
    null label: the bound on ``p(x)``.
  """
  elbo_fn, continuous = elbo.get_run_elbo_fn(config, sde)
  discrete = elbo.uses_chain(config)
  null_label = getattr(model, 'num_classes', 0) or None
  fn = elbo.get_sharded_elbo_fn(
      elbo_fn,
      lambda p: mutils.get_score_fn(
          sde, model, p, train=False, continuous=continuous, class_labels=null_label,
          parameterization=mutils.config_parameterization(config, sde)),
      mesh, scaler=data.get_data_scaler(config.data.centered))
  batch_size = config.eval.batch_size

  def evaluate_elbo(params, step, ckpt_dir: str, writer=None) -> Dict[str, Any]:
    del writer
    path = os.path.join(ckpt_dir, ELBO_PROGRESS_FILE)
    done = load_progress(path) if jax.process_index() == 0 else []
    start = int(eval_report.host0_view(len(done)))
    batches = data.epoch_batches(source, batch_size, jax.process_index(), jax.process_count(),
                                 uniform_dequantization=not discrete, seed=dequantization_seed)
    total = -(-len(source) // batch_size)
    started = time.time()
    for index, batch in enumerate(batches):
      if index < start:
        continue
      bpd, terms = fn(jax.random.fold_in(key, index), params, batch['image'])
      real = parallel.gather_rows(batch['mask']).astype(bool)
      values = {name: parallel.gather_rows(value)[real].astype(np.float64)
                for name, value in dict(terms, bpd=bpd).items() if name in VALUES}
      if not np.all(np.isfinite(values['bpd'])):
        raise FloatingPointError(
            f'The variational bound is not finite in batch {index} of step {step}: the score '
            'function returned NaN or infinite values.')
      done.append(ElboBatch(values, int(jax.device_get(terms['nfe']))))
      if jax.process_index() == 0:
        save_progress(path, done)
      logging.info('step %d: ELBO batch %d of %d: %.4f bits/dim (%d network evaluations per '
                   'image); %s', step, index + 1, total, float(np.mean(values['bpd'])),
                   done[-1].nfe, summary.countdown(index + 1 - start, total - start,
                                                   time.time() - started, unit='batch'))
      if after_batch is not None:
        after_batch()
    return summarize(done) if jax.process_index() == 0 else {}

  return evaluate_elbo


def summarize(done: List[ElboBatch]) -> Dict[str, float]:
  """The report columns of a finished pass (see the module docstring)."""
  if not done:
    raise ValueError('No ELBO batches were evaluated.')
  v = {name: np.concatenate([b.values[name] for b in done]) for name in VALUES}
  n = v['bpd'].size
  stderr = v['bpd'].std(ddof=1) / np.sqrt(n) if n > 1 else float('nan')
  return {'elbo': float(v['bpd'].mean()), 'elbo_stderr': float(stderr),
          'elbo_prior': float(v['prior'].mean()), 'elbo_diffusion': float(v['diffusion'].mean()),
          'elbo_reconstruction': float(v['reconstruction'].mean()),
          'elbo_diffusion_stderr': float(v['diffusion_stderr'].mean()),
          'elbo_nfe': float(np.mean([b.nfe for b in done]))}


def save_progress(path: str, done: List[ElboBatch]) -> None:
  """Writes the finished batches to ``path`` (atomically)."""
  files.save_npz(path, nfe=np.array([b.nfe for b in done], np.int64),
                 count=np.array([b.values['bpd'].size for b in done], np.int64),
                 **{name: np.concatenate([b.values[name] for b in done]) for name in VALUES})


def load_progress(path: str) -> List[ElboBatch]:
  """The batches ``save_progress`` wrote to ``path`` (none when there is no file)."""
  if not epath.Path(path).exists():
    return []
  arrays = files.load_npz(path)
  cuts = np.cumsum(arrays['count'])[:-1]
  split = {name: np.split(arrays[name], cuts) for name in VALUES}
  return [ElboBatch({name: split[name][i] for name in VALUES}, int(nfe))
          for i, nfe in enumerate(arrays['nfe'])]
