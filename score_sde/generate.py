"""``generate(config, workdir)``: samples from a trained run, ``python main.py --mode sample``.

Loads the run with ``pipeline.load`` (the newest readable checkpoint of ``workdir``, or checkpoint
``step``; read-only: nothing of the run is renamed or written) and draws ``num_samples`` images
(default ``sampling.batch_size``) in rounds of ``sampling.batch_size`` with ``Pipeline.sampler``,
the one sampling path of a run, from its EMA weights, logging each round with an ETA: unconditional,
or class-conditional for a class-conditional network (classifier-free guidance,
``sampling.cfg_scale``) or with classifier guidance (``sampling.classifier_scale``, the classifier
trained by ``--mode train_classifier``). The classes are ``sampling.class_labels`` in turn (every
class in turn when empty), and the grid has one column per class.

Writes ``<workdir>/<out_folder>/step_<step>/samples.png`` (the first ``GRID_IMAGES``) and
``samples.npz`` (``images``: uint8 ``(N, H, W, C)``, rounded as the PNG; ``labels``: int32
``(N,)``, -1 when unconditional; ``nfe`` per image), on process 0. Round 0's key is
``fold_in(SAMPLE_STREAM key, step)``, the one training snapshots use, so a snapshot's grid is
reproduced exactly; round ``r > 0`` folds in ``r`` as well.
"""
import os
import time
from typing import Dict, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from score_sde import pipeline
from score_sde.common import errors, parallel, rng
from score_sde.configs import validation
from score_sde.io import checkpoint, summary, workdir as workdir_lib

GRID_IMAGES = 256  # Images in samples.png; samples.npz holds them all.


def generate(config: ml_collections.ConfigDict, workdir: str, out_folder: str = 'generated',
             mesh: Optional[jax.sharding.Mesh] = None, step: Optional[int] = None,
             num_samples: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Samples ``num_samples`` images (default ``sampling.batch_size``) from checkpoint ``step``
  (default the newest readable one) of ``workdir``.

  Returns:
    ``{'images': float32 (N, H, W, C) in [0, 1], 'labels': int32 (N,), 'nfe': int (per
    image), 'step': int, 'path': the PNG's path}`` (every host gets every image).
  Raises:
    errors.UserError: for a bad config, a workdir without a readable checkpoint (or without
      ``step``), or classifier guidance without a trained classifier; before anything is
      written.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  validation.validate_config(config, num_devices=mesh.devices.size,
                             num_hosts=jax.process_count())
  batch = config.sampling.batch_size
  total = batch if num_samples is None else int(num_samples)
  if total < 1:
    raise errors.ConfigError(f'--num_samples={num_samples} must be at least 1.')
  workdir = workdir_lib.check_workdir(workdir, must_exist=True)
  reserved = (checkpoint.PERIODIC_DIR, checkpoint.PREEMPTION_DIR, 'tensorboard',
              workdir_lib.CLASSIFIER_SUBDIR)
  if os.path.normpath(out_folder) in reserved:
    raise errors.WorkdirError(f'--sample_folder {out_folder} is one of the run\'s own '
                              f'directories {reserved}; pick another name, e.g. generated.')
  pipe = pipeline.load(workdir, step=step, config=config, mesh=mesh)
  step = pipe.step
  sample, labels = pipe.sampler(batch)
  first = jax.random.fold_in(rng.stream_key(config.seed, rng.SAMPLE_STREAM), step)
  rounds = -(-total // batch)
  logging.info('Sampling %d images from step %d in %d round(s) of %d with the %s sampler.',
               total, step, rounds, batch, config.sampling.method)
  chunks, start = [], time.time()
  for r in range(rounds):
    key = first if r == 0 else jax.random.fold_in(first, r)
    images, nfe = sample(parallel.replicate(key, mesh))
    chunks.append(np.asarray(jax.device_get(multihost_utils.process_allgather(images,
                                                                              tiled=True))))
    logging.info('Sample round %d done (%d score evaluations per image); %s', r + 1, int(nfe),
                 summary.countdown(r + 1, rounds, time.time() - start))
  images = np.concatenate(chunks)[:total]
  labels = (np.full((batch,), -1, np.int32) if labels is None else labels)
  labels = np.tile(labels, rounds)[:total]
  classes = len(set(labels.tolist())) if labels.min() >= 0 else None
  grid = summary.image_grid(images[:GRID_IMAGES], nrow=classes)
  folder = os.path.join(workdir, out_folder, f'step_{step}')
  path = os.path.join(folder, 'samples.png')
  if jax.process_index() == 0:
    summary.save_png(path, grid)
    np.savez(os.path.join(folder, 'samples.npz'),
             images=np.clip(np.round(images * 255.), 0, 255).astype(np.uint8), labels=labels,
             nfe=np.asarray(int(nfe)))
    logging.info('Wrote %s and samples.npz (%d images) in %.1f s.', path, total,
                 time.time() - start)
  return {'images': images, 'labels': labels, 'nfe': int(nfe), 'step': step, 'path': path}
