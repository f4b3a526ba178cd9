"""``train_and_evaluate(config, workdir)``: the training loop, data-parallel over every device.

One process per host. The train step is compiled once, ahead of the loop (its compile time is
logged and kept out of the progress rates): the state is replicated, the global batch is split
over the mesh's ``'data'`` axis, and XLA averages the gradient over the global batch. Everything
random derives from ``config.seed`` and the step (the batch, its augmentation, the loss's noise
and dropout; ``score_sde.rng``), so a run that is killed and restarted on the same ``workdir``
continues exactly as if it had not stopped, whatever the number of devices.

Order of work, so that a bad input costs nothing: the config, the workdir and the data are
checked (every split opened, probed and its first examples decoded) before the state is built
or anything is written. A finished run (its newest checkpoint at ``training.n_iters``) says so
and returns without compiling.

Layout of ``workdir``: ``checkpoints/`` (kept snapshots), ``checkpoints-meta/`` (the frequent
preemption checkpoint), ``samples/`` (PNG grids) and ``tensorboard/`` (event files, flushed at
every checkpoint so that a killed run's history reaches its last checkpoint).
"""
import functools
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from score_sde import (checkpoint, config_validation, data, errors, losses, optim, rng, sampling,
                       sde_lib, sharding, summary, train_state)
from score_sde import workdir as workdir_lib
from score_sde.data import images
from score_sde.models import utils as mutils


def restore_or_init(config, workdir: str, mesh, model, tx):
  """The newest readable checkpoint of ``workdir``, or a fresh state; and the checkpointer."""
  init_fn = train_state.state_factory(config, model, tx)
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.training.max_to_keep)
  state, step = ckpt.restore_latest(train_state.abstract_state(init_fn, mesh))
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


def compile_logged(what: str, jitted, *args):
  """``jitted`` compiled ahead of time for ``args`` (arrays or ``ShapeDtypeStruct``s), with a
  log line before (compiling can take minutes) and after (how long it took)."""
  logging.info('Compiling the %s...', what)
  start = time.time()
  compiled = jitted.lower(*args).compile()
  logging.info('Compiled the %s in %.1f s.', what, time.time() - start)
  return compiled


class _LossBuffer:
  """Device losses since the last check, fetched in one transfer so steps stay asynchronous."""

  def __init__(self):
    self.steps, self.losses = [], []

  def add(self, step: int, loss: jax.Array):
    self.steps.append(step)
    self.losses.append(loss)

  def flush(self, last_good: int) -> float:
    """Mean loss since the last flush. Raises NonFiniteLossError naming the first bad step."""
    values = np.asarray(jax.device_get(self.losses), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
      raise errors.NonFiniteLossError(
          f'The loss is {values[bad[0]]} at step {self.steps[bad[0]]}; training stopped without '
          f'saving. The last good checkpoint is step {last_good}; lower optim.lr or raise '
          'optim.warmup, then run the same command again to resume from it.')
    self.steps, self.losses = [], []
    return float(values.mean()) if values.size else float('nan')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, mesh=None,
                       stop_requested: Optional[Callable[[], bool]] = None
                       ) -> train_state.TrainState:
  """Trains ``config`` in ``workdir``, resuming from its newest readable checkpoint.

  Args:
    config: a validated-on-entry config (see ``configs/default.py``).
    workdir: the run's directory (created if missing).
    mesh: the device mesh; by default every device of every host.
    stop_requested: polled after every step (``main.py`` sets it on SIGTERM, a preemption
      notice); when it returns True the state is saved as a preemption checkpoint at that step,
      the logs are flushed and ``errors.StopRequested`` is raised. Multi-host runs poll it at
      the logging steps and stop together if any host asked.
  Returns:
    The final state (replicated over the mesh).
  Raises:
    errors.UserError: before anything is written, for a bad config, workdir or dataset; later,
      for a non-finite loss (naming the step) or checkpoints that are all unreadable.
    errors.StopRequested: after saving, when ``stop_requested()`` said so.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  config_validation.validate_config(config, num_devices=mesh.devices.size,
                                    num_hosts=jax.process_count())
  workdir = workdir_lib.check_workdir(workdir)
  sources = data.open_checked(config.data, ('train', 'test'))
  training = config.training
  sde = sde_lib.get_sde(config)
  model = mutils.get_model(config)
  tx = optim.get_optimizer(config.optim)
  state, ckpt = restore_or_init(config, workdir, mesh, model, tx)
  start = int(state.step)
  if start >= training.n_iters:
    ckpt.close()
    logging.info('Training is already finished: %s holds step %d and training.n_iters is %d. '
                 'Nothing to do; raise --config.training.n_iters to train longer, or evaluate '
                 'with --mode eval.', workdir, start, training.n_iters)
    return state
  try:
    return _train(config, workdir, mesh, sde, model, tx, state, ckpt, sources,
                  stop_requested or (lambda: False))
  finally:
    ckpt.close()


def _stop_now(stop_requested: Callable[[], bool], log_step: bool) -> bool:
  """Whether to stop after this step: this host's request alone, or any host's on a logging
  step of a multi-host run (all hosts must stop at the same step to save together)."""
  if jax.process_count() == 1:
    return bool(stop_requested())
  if not log_step:
    return False
  flags = multihost_utils.process_allgather(np.asarray(bool(stop_requested())))
  return bool(np.any(flags))


def _train(config, workdir, mesh, sde, model, tx, state, ckpt, sources, stop_requested):
  """The loop of ``train_and_evaluate`` from the restored (or new) ``state`` to ``n_iters``."""
  training = config.training
  start = last_saved = int(state.step)
  rep, split = sharding.replicated(mesh), sharding.data_sharding(mesh)
  train_key = jax.device_put(rng.stream_key(config.seed, rng.TRAIN_STREAM), rep)
  eval_key = jax.device_put(rng.stream_key(config.seed, rng.EVAL_STREAM), rep)
  image_shape = images.image_shape(config.data.image_size, config.data.num_channels)
  batch_spec = {'image': jax.ShapeDtypeStruct((training.batch_size,) + image_shape, jnp.float32,
                                              sharding=split)}
  train_step = compile_logged('train step', compile_step(config, sde, model, mesh, train=True,
                                                         tx=tx), state, batch_spec, train_key)
  eval_step = compile_logged('eval step', compile_step(config, sde, model, mesh, train=False),
                             state, batch_spec, eval_key)
  sample_fn = (sampling.get_snapshot_sampler(config, sde, model, mesh,
                                             training.n_snapshot_samples)
               if training.snapshot_sampling else None)
  scaler = data.get_data_scaler(config.data.centered)
  hosts = dict(host_index=jax.process_index(), host_count=jax.process_count())
  get_batch = functools.partial(
      data.get_batch, global_batch_size=training.batch_size, seed=config.seed,
      random_flip=config.data.random_flip,
      uniform_dequantization=config.data.uniform_dequantization, **hosts)
  to_device = lambda batch: sharding.to_global({'image': scaler(batch['image'])}, mesh)
  progress = summary.Progress(total_steps=training.n_iters, start_step=start,
                              batch_size=training.batch_size)
  buffer = _LossBuffer()
  logging.info('Training from step %d to %d on %d device(s), %d host(s).', start,
               training.n_iters, mesh.devices.size, jax.process_count())

  batches = data.batches(sources['train'], start, training.batch_size, config.seed, train=True,
                         random_flip=config.data.random_flip,
                         uniform_dequantization=config.data.uniform_dequantization,
                         num_steps=training.n_iters - start, **hosts)
  # A killed run may have logged past its last checkpoint (``start``); the resumed run logs those
  # steps again from start + 1, so TensorBoard is told to drop the killed run's values there.
  tensorboard_dir = os.path.join(workdir, 'tensorboard')
  with summary.SummaryWriter(tensorboard_dir, purge_step=start + 1) as writer:
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
      # What is not a train step stays off the clock of the progress line's rate and ETA.
      if done % training.eval_freq == 0:
        with progress.paused(wait_for=state):
          eval_batch = to_device(get_batch(sources['test'], done // training.eval_freq,
                                           train=False))
          _, eval_metrics = eval_step(state, eval_batch, eval_key)
          writer.scalar('eval_loss', float(eval_metrics['loss']), done)
          logging.info('step %d, eval loss %.5e', done, float(eval_metrics['loss']))
      if is_snapshot or is_preemption:
        with progress.paused(wait_for=state):
          ckpt.save(done, state, periodic=is_snapshot)
          writer.flush()  # The events up to this checkpoint survive a kill.
          last_saved = done
      if is_snapshot and sample_fn is not None:
        with progress.paused(wait_for=state):
          key = jax.device_put(
              jax.random.fold_in(rng.stream_key(config.seed, rng.SAMPLE_STREAM), done), rep)
          sample_fn = _save_samples(sample_fn, state, key, done, workdir, writer)
      if done < training.n_iters and _stop_now(stop_requested, done % training.log_freq == 0):
        if last_saved != done:
          buffer.flush(last_saved)  # Never save past a non-finite loss.
          ckpt.save(done, state, periodic=False)
        ckpt.wait_until_finished()
        writer.flush()
        raise errors.StopRequested(
            f'Stopped on request at step {done} of {training.n_iters}, after saving it to '
            f'{workdir}; run the same command again to resume from there.')
  ckpt.wait_until_finished()
  logging.info('Training finished at step %d; checkpoints are in %s.', training.n_iters,
               os.path.join(workdir, checkpoint.PERIODIC_DIR))
  return state


def _save_samples(sample_fn, state, key: jax.Array, step: int, workdir: str, writer):
  """A grid of samples from the EMA weights, as a PNG and a TensorBoard image.

  Returns ``sample_fn`` compiled (logged, at the first call) for the next snapshot.
  """
  if not isinstance(sample_fn, jax.stages.Compiled):
    sample_fn = compile_logged('snapshot sampler', sample_fn, state.params_ema, key)
  start = time.time()
  samples = jax.device_get(multihost_utils.process_allgather(
      sample_fn(state.params_ema, key)[0], tiled=True))
  grid = summary.image_grid(np.asarray(samples))
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, 'samples'), exist_ok=True)
    summary.save_png(os.path.join(workdir, 'samples', f'step_{step}.png'), grid)
  writer.image('samples', grid, step)
  logging.info('step %d, saved %d samples in %.1f s', step, samples.shape[0], time.time() - start)
  return sample_fn
