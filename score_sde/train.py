"""``train_and_evaluate(config, workdir)``: the training loop, data-parallel over every device.

One process per host. The train step is compiled once with ``jax.jit``: the state is replicated,
the global batch is split over the mesh's ``'data'`` axis, and XLA averages the gradient over the
global batch. Everything random derives from ``config.seed`` and the step (the batch, its
augmentation, the loss's noise and dropout), so a run that is killed and restarted on the same
``workdir`` continues exactly as if it had not stopped, whatever the number of devices.

Layout of ``workdir``: ``checkpoints/`` (kept snapshots), ``checkpoints-meta/`` (the frequent
preemption checkpoint), ``samples/`` (PNG grids) and ``tensorboard/`` (event files).
"""
import functools
import os
import time
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from score_sde import (checkpoint, config_validation, data, losses, optim, sampling, sde_lib,
                       sharding, summary, train_state)
from score_sde.models import utils as mutils

# Independent random streams, each folded out of the run's seed (evaluate.py reads them too).
INIT_STREAM, TRAIN_STREAM, EVAL_STREAM, SAMPLE_STREAM = range(4)


def stream_key(seed: int, stream: int) -> jax.Array:
  """The key of one random stream of a run (initialisation, training, evaluation, sampling)."""
  return jax.random.fold_in(jax.random.key(seed), stream)


def image_shape(config) -> Tuple[int, int, int]:
  return (config.data.image_size, config.data.image_size, config.data.num_channels)


def state_factory(config, model, tx) -> Callable[[], train_state.TrainState]:
  """A function making the step-0 state; jit it, or ``eval_shape`` it for the abstract state."""

  def init():
    params = mutils.init_params(stream_key(config.seed, INIT_STREAM), model, image_shape(config))
    return train_state.create_train_state(params, tx)

  return init


def abstract_state(init_fn, mesh) -> train_state.TrainState:
  """Shapes, dtypes and (replicated) shardings of the state, without computing it."""
  rep = sharding.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                      jax.eval_shape(init_fn))


def restore_or_init(config, workdir: str, mesh, model, tx):
  """The newest readable checkpoint of ``workdir``, or a fresh state; and the checkpointer."""
  init_fn = state_factory(config, model, tx)
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.training.max_to_keep)
  state, step = ckpt.restore_latest(abstract_state(init_fn, mesh))
  if state is None:
    state = jax.jit(init_fn, out_shardings=sharding.replicated(mesh))()
    logging.info('Initialised a new state (%d parameters).', mutils.count_params(state.params))
  else:
    logging.info('Resumed from step %d.', step)
  return state, ckpt


def compile_step(config, sde, model, mesh, *, train: bool, tx=None):
  """The jitted train (``train=True``) or eval step: ``step(state, batch, key)``."""
  training = config.training
  step_fn = losses.get_step_fn(
      sde, model, train=train, optimizer=tx, ema_rate=config.model.ema_rate,
      reduce_mean=training.reduce_mean, continuous=training.continuous,
      likelihood_weighting=training.likelihood_weighting, eps=training.eps)
  rep, split = sharding.replicated(mesh), sharding.data_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(rep, split, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,) if train else ())


def make_snapshot_sampler(config, sde, model, mesh, num_samples: int, quantize: bool = False):
  """``sample(params_ema, key) -> (images, nfe)`` with the configured sampler, compiled once for
  ``mesh`` (``sampling.get_sharded_sampler``).

  ``images`` are ``(num_samples, H, W, C)`` in [0, 1], split over the mesh's ``'data'`` axis;
  with ``quantize`` rounded to the 8-bit grid, as images saved to disk are (what FID sees).
  """
  shape = (num_samples,) + image_shape(config)
  sampler = sampling.get_sampler(config, sde, shape, data.get_data_inverse_scaler(
      config.data.centered), eps=config.sampling.eps)

  def to_images(rng, score_fn):
    samples, nfe = sampler(rng, score_fn)
    images = jnp.clip(samples, 0., 1.)
    return (jnp.round(images * 255.) / 255. if quantize else images), nfe

  def make_score_fn(params):
    return mutils.get_score_fn(sde, model, params, train=False,
                               continuous=config.training.continuous)

  return sampling.get_sharded_sampler(to_images, make_score_fn, mesh)


class _LossBuffer:
  """Device losses since the last check, fetched in one transfer so steps stay asynchronous."""

  def __init__(self):
    self.steps, self.losses = [], []

  def add(self, step: int, loss: jax.Array):
    self.steps.append(step)
    self.losses.append(loss)

  def flush(self, last_good: int) -> float:
    """Mean loss since the last flush. Raises FloatingPointError naming the first bad step."""
    values = np.asarray(jax.device_get(self.losses), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
      raise FloatingPointError(
          f'The loss is {values[bad[0]]} at step {self.steps[bad[0]]}; training stopped without '
          f'saving. The last good checkpoint is step {last_good}; lower optim.lr or raise '
          'optim.warmup, then run the same command again to resume from it.')
    self.steps, self.losses = [], []
    return float(values.mean()) if values.size else float('nan')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh=None) -> train_state.TrainState:
  """Trains ``config`` in ``workdir``, resuming from its newest readable checkpoint.

  Args:
    config: a validated-on-entry config (see ``configs/default.py``).
    workdir: the run's directory.
    mesh: the device mesh; by default every device of every host.
  Returns:
    The final state (replicated over the mesh).
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  config_validation.validate_config(config, num_devices=mesh.devices.size,
                                    num_hosts=jax.process_count())
  training = config.training
  sde = sde_lib.get_sde(config)
  model = mutils.get_model(config)
  tx = optim.get_optimizer(config.optim)
  state, ckpt = restore_or_init(config, workdir, mesh, model, tx)
  start = int(state.step)
  last_saved = start
  train_step = compile_step(config, sde, model, mesh, train=True, tx=tx)
  eval_step = compile_step(config, sde, model, mesh, train=False)
  scaler = data.get_data_scaler(config.data.centered)
  train_source = data.get_dataset(config.data, 'train')
  eval_source = data.get_dataset(config.data, 'test')
  writer = summary.SummaryWriter(os.path.join(workdir, 'tensorboard'))
  sample_fn = (make_snapshot_sampler(config, sde, model, mesh, training.n_snapshot_samples)
               if training.snapshot_sampling else None)
  hosts = dict(host_index=jax.process_index(), host_count=jax.process_count())
  get_batch = functools.partial(
      data.get_batch, global_batch_size=training.batch_size, seed=config.seed,
      random_flip=config.data.random_flip,
      uniform_dequantization=config.data.uniform_dequantization, **hosts)
  to_device = lambda batch: sharding.to_global({'image': scaler(batch['image'])}, mesh)
  train_key, eval_key = stream_key(config.seed, TRAIN_STREAM), stream_key(config.seed, EVAL_STREAM)
  progress = summary.Progress(total_steps=training.n_iters, start_step=start,
                              batch_size=training.batch_size)
  buffer = _LossBuffer()
  logging.info('Training from step %d to %d on %d device(s), %d host(s).', start,
               training.n_iters, mesh.devices.size, jax.process_count())

  batches = data.batches(train_source, start, training.batch_size, config.seed, train=True,
                         random_flip=config.data.random_flip,
                         uniform_dequantization=config.data.uniform_dequantization,
                         num_steps=max(training.n_iters - start, 0), **hosts)
  try:
    for step, batch in batches:
      state, metrics = train_step(state, to_device(batch), train_key)
      done = step + 1  # Updates completed; the number a checkpoint of this state carries.
      buffer.add(done, metrics['loss'])
      is_snapshot = done % training.snapshot_freq == 0 or done == training.n_iters
      is_preemption = done % training.snapshot_freq_for_preemption == 0
      if done % training.log_freq == 0 or is_snapshot or is_preemption:
        loss = buffer.flush(last_saved)  # Never save or log past a non-finite loss.
        writer.scalar('training_loss', loss, done)
        writer.scalar('grad_norm', float(metrics['grad_norm']), done)
        logging.info('step %d, training loss %.5e, %s', done, loss, progress.line(done))
      if done % training.eval_freq == 0:
        eval_batch = to_device(get_batch(eval_source, done // training.eval_freq, train=False))
        _, eval_metrics = eval_step(state, eval_batch, eval_key)
        writer.scalar('eval_loss', float(eval_metrics['loss']), done)
        logging.info('step %d, eval loss %.5e', done, float(eval_metrics['loss']))
      if is_snapshot or is_preemption:
        ckpt.save(done, state, periodic=is_snapshot)
        last_saved = done
      if is_snapshot and sample_fn is not None:
        _save_samples(sample_fn, state, config.seed, done, workdir, writer)
  finally:
    ckpt.close()
    writer.close()
  return state


def _save_samples(sample_fn, state, seed: int, step: int, workdir: str, writer) -> None:
  """A grid of samples from the EMA weights, as a PNG and a TensorBoard image."""
  start = time.time()
  key = jax.random.fold_in(stream_key(seed, SAMPLE_STREAM), step)
  samples = jax.device_get(multihost_utils.process_allgather(
      sample_fn(state.params_ema, key)[0], tiled=True))
  grid = summary.image_grid(np.asarray(samples))
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, 'samples'), exist_ok=True)
    summary.save_png(os.path.join(workdir, 'samples', f'step_{step}.png'), grid)
  writer.image('samples', grid, step)
  logging.info('step %d, saved %d samples in %.1fs', step, samples.shape[0], time.time() - start)
