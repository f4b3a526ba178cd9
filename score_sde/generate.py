"""``generate(config, workdir)``: samples from a trained run, ``python main.py --mode sample``.

Loads the run with ``pipeline.load`` (the newest readable checkpoint of ``workdir``, or checkpoint
``step``; read-only: nothing of the run is renamed or written) and draws ``num_samples`` images
(default ``sampling.batch_size``) in rounds of ``sampling.batch_size`` with ``Pipeline.sampler``,
the one sampling path of a run, from its EMA weights, logging each round with an ETA: unconditional,
or class-conditional for a class-conditional network (classifier-free guidance,
``sampling.cfg_scale``) or with classifier guidance (``sampling.classifier_scale``, the classifier
trained by ``--mode train_classifier``). The classes are ``sampling.class_labels`` in turn (every
class in turn when empty), and the grid has one column per class.

Writes ``<workdir>/<out_folder>/step_<step>/samples.png`` (the first ``GRID_IMAGES``),
``samples.npz`` (``images``: uint8 ``(N, H, W, C)``, rounded as the PNG; ``labels``: int32
``(N,)``, -1 when unconditional; ``nfe`` per image) and ``samples.json`` (what was used: the
checkpoint's step and path, the sampler's method, settings and score evaluations per image, the
seed, the image and round counts), on process 0, and logs the same in one line. Round 0's key is
``fold_in(stream_key(seed, SAMPLE_STREAM), step)`` with ``seed`` the config's by default: the key
of the training snapshot of that step, so with ``sampling.batch_size`` equal to
``training.n_snapshot_samples`` (and as many images) ``samples.png`` is the snapshot's
``samples/step_<step>.png`` byte for byte. Round ``r > 0`` folds in ``r`` as well.
"""
import json
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import ml_collections
import numpy as np
from absl import logging

from score_sde import pipeline
from score_sde.common import errors, parallel, rng, stopping
from score_sde.configs import validation
from score_sde.io import checkpoint, files, summary, workdir as workdir_lib
from score_sde.sampling import from_config, methods

GRID_IMAGES = 256  # Images in samples.png; samples.npz holds them all.
# Nothing is written before every round is drawn, so stopping loses nothing.
_STOPPED = ('Stopped on request before the samples were written (they are written once every '
            'round is drawn): nothing was saved, and nothing is lost. Run the same command again '
            'to sample.')


@stopping.nothing_unsaved(_STOPPED)
def generate(config: ml_collections.ConfigDict, workdir: str, out_folder: str = 'generated',
             mesh: Optional[jax.sharding.Mesh] = None, step: Optional[int] = None,
             num_samples: Optional[int] = None, seed: Optional[int] = None,
             stop_requested: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
  """Samples ``num_samples`` images (default ``sampling.batch_size``) from checkpoint ``step``
  (default the newest readable one) of ``workdir``, with the random stream of ``seed`` (default
  ``config.seed``, which reproduces the training snapshot). ``stop_requested`` is polled between
  rounds (``main.py`` sets it on SIGTERM); under ``stopping.install`` a SIGTERM before the writing
  ends the process at once.

  Returns:
    ``{'images': float32 (N, H, W, C) in [0, 1], 'labels': int32 (N,), 'nfe': int (per
    image), 'step': int, 'path': the PNG's path, 'record': what samples.json holds}`` (every
    host gets every image).
  Raises:
    errors.UserError: for a bad config, a workdir without a readable checkpoint (or without
      ``step``), or classifier guidance without a trained classifier; before anything is
      written.
    errors.StopRequested: when ``stop_requested()`` said so between rounds; nothing written.
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
  seed = config.seed if seed is None else int(seed)
  sample, labels = pipe.sampler(batch)
  first = jax.random.fold_in(rng.stream_key(seed, rng.SAMPLE_STREAM), step)
  rounds = -(-total // batch)
  settings = sampler_settings(config, pipe.sde)
  ckpt_path = _checkpoint_path(workdir, step)
  logging.info('Sampling %d images from checkpoint step %d (%s) with seed %d, in %d round(s) of '
               '%d with the %s sampler.', total, step, ckpt_path, seed, rounds, batch,
               settings['method'])
  chunks, start = [], time.time()
  for r in range(rounds):
    key = first if r == 0 else jax.random.fold_in(first, r)
    images, nfe = sample(parallel.replicate(key, mesh))
    chunks.append(parallel.gather_rows(images))
    logging.info('Sample round %d done (%d score evaluations per image); %s', r + 1, int(nfe),
                 summary.countdown(r + 1, rounds, time.time() - start))
    if r + 1 < rounds and stop_requested is not None and stopping.any_process(stop_requested):
      raise errors.StopRequested(_STOPPED)
  images = np.concatenate(chunks)[:total]
  labels = (np.full((batch,), -1, np.int32) if labels is None else labels)
  labels = np.tile(labels, rounds)[:total]
  classes = len(set(labels.tolist())) if labels.min() >= 0 else None
  grid = summary.image_grid(images[:GRID_IMAGES], nrow=classes)
  folder = os.path.join(workdir, out_folder, f'step_{step}')
  path = os.path.join(folder, 'samples.png')
  used = {'checkpoint': {'step': int(step), 'path': ckpt_path},
          'sampler': dict(settings, nfe=int(nfe)), 'seed': seed, 'num_samples': total,
          'batch_size': batch, 'rounds': rounds}
  with stopping.unsaved_work():  # A stop waits for the files.
    if jax.process_index() == 0:
      summary.save_png(path, grid)
      np.savez(os.path.join(folder, 'samples.npz'),
               images=np.clip(np.round(images * 255.), 0, 255).astype(np.uint8), labels=labels,
               nfe=np.asarray(int(nfe)))
      files.write_text(os.path.join(folder, 'samples.json'), json.dumps(used, indent=1) + '\n')
      details = ', '.join(f'{k}={v}' for k, v in settings.items() if k != 'method')
      logging.info('Sampled %d images from checkpoint step %d (%s) with seed %d and the %s sampler '
                   '(%s; %d score evaluations per image); wrote %s, samples.npz and samples.json '
                   'in %.1f s.', total, step, ckpt_path, seed, settings['method'], details,
                   int(nfe), path, time.time() - start)
  return {'images': images, 'labels': labels, 'nfe': int(nfe), 'step': step, 'path': path,
          'record': used}


def sampler_settings(config: ml_collections.ConfigDict, sde) -> Dict[str, Any]:
  """The sampler ``config.sampling`` builds on ``sde`` (``sampling.get_sampler``): its method,
  the builder's settings from its registry entry (defaults that a 0 or '' leaves to the method
  filled in), its step count and grid; JSON-ready."""
  s = config.sampling
  entry = methods.get(s.method)
  own = entry.settings(s, sde)
  settings: Dict[str, Any] = {'method': entry.name}
  settings.update({k: v if isinstance(v, (bool, int, float)) else str(v) for k, v in own.items()})
  times = [float(t) for t in s.times]
  eps = float(s.eps)
  if entry.steps_field:
    settings['num_steps'] = (int(s[entry.steps_field]) or
                             (entry.steps(len(times), own) if times else sde.N))
    schedule = 'times' if times else from_config.schedule_name(s, entry)
    settings['schedule'] = schedule
    if schedule == 'karras':
      settings['rho'] = float(s.rho)
    if times:
      settings['times'] = times
      eps = times[-1]  # A given grid carries its own smallest time.
  settings['eps'] = eps
  if s.cfg_scale:
    settings['cfg_scale'] = float(s.cfg_scale)
  if s.classifier_scale:
    settings['classifier_scale'] = float(s.classifier_scale)
  return settings


def _checkpoint_path(workdir: str, step: int) -> str:
  """The directory ``pipeline.load`` read checkpoint ``step`` from (periodic before
  preemption, as ``checkpoint.Checkpointer.restore``)."""
  periodic = os.path.join(workdir, checkpoint.PERIODIC_DIR, str(step))
  if os.path.isdir(periodic):
    return periodic
  return os.path.join(workdir, checkpoint.PREEMPTION_DIR, str(step))
