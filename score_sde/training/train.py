"""``train_and_evaluate(config, workdir)``: the training loop, data-parallel over every device;
``train_classifier(config, workdir)``: the same loop for the noise-conditional classifier of
classifier guidance, into ``<workdir>/classifier``.

One process per host. The train step is compiled once, ahead of the loop (its compile time is
logged and kept out of the progress rates): the state is replicated, the global batch is split over
the mesh's ``'data'`` axis, and XLA averages the gradient over the global batch. Everything random
derives from ``config.seed`` and the step (the batch, its augmentation, the loss's noise and
dropout; ``score_sde.common.rng``), so a run that is killed and restarted on the same ``workdir``
continues exactly as if it had not stopped, whatever the number of devices.

Order of work, so that a bad input costs nothing: the config, the workdir and the data are
checked (every split opened, probed and its first examples decoded) before the state is built
or anything is written. A finished run (its newest checkpoint at ``training.n_iters``) says so
and returns without compiling.

Layout of ``workdir``: ``checkpoints/`` (kept snapshots), ``checkpoints-meta/`` (the frequent
preemption checkpoint), ``samples/`` (PNG grids) and ``tensorboard/`` (event files, flushed at
every checkpoint so that a killed run's history reaches its last checkpoint; with
``training.profile_steps``, the profiler trace under ``plugins/profile/``); a run stopped between
two logging steps keeps the losses since the last one in ``loss_window.json``, so its resumption
logs the values an uninterrupted run logs; with ``logging.wandb``, ``wandb_run.json`` holds the
W&B run that a resumption continues. The classifier's run has the same layout under
``classifier/``. A class-conditional network
(``model.num_classes > 0``) and the classifier read each batch's labels, which must lie in
``[0, num_classes)``.
"""
import functools
import json
import os
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from score_sde import data, losses, optim, sampling, sde_lib
from score_sde.common import errors, parallel, rng, stopping
from score_sde.configs import record, validation
from score_sde.data import images
from score_sde.io import checkpoint, files, summary, workdir as workdir_lib
from score_sde.models import utils as mutils
from score_sde.training import train_state


def restore_or_init(config, workdir: str, mesh, model, tx):
  """The newest readable checkpoint of ``workdir``, or a fresh state; and the checkpointer."""
  init_fn = train_state.state_factory(config, model, tx)
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.training.max_to_keep)
  state, step = ckpt.restore_latest(train_state.abstract_state(init_fn, mesh))
  if state is None:
    state = jax.jit(init_fn, out_shardings=parallel.replicated(mesh))()
    logging.info('Initialised a new state (%d parameters).', mutils.count_params(state.params))
  else:
    logging.info('Resumed from step %d.', step)
  return state, ckpt


def compile_step(config, sde, model, mesh, *, train: bool, tx=None, classifier: bool = False):
  """The jitted train (``train=True``) or eval step: ``step(state, batch, key)``; of the score
  model ``model``, or, with ``classifier``, of the noise-conditional classifier ``model``."""
  training = config.training
  if classifier:
    step_fn = losses.get_classifier_step_fn(sde, model, train=train, optimizer=tx,
                                            ema_rate=config.classifier.ema_rate, eps=training.eps,
                                            grad_accum_steps=training.grad_accum_steps)
  else:
    step_fn = losses.get_step_fn(
        sde, model, train=train, optimizer=tx, ema_rate=config.model.ema_rate,
        reduce_mean=training.reduce_mean, continuous=training.continuous,
        weighting=training.weighting, reverse_variance=config.model.reverse_variance,
        eps=training.eps,
        label_dropout=training.label_dropout, ema_warmup=config.model.ema_warmup,
        compute_dtype=training.compute_dtype, grad_accum_steps=training.grad_accum_steps,
        float32_below_std=training.get('float32_below_std', 0.),
        parameterization=config.model.get('parameterization', 'auto'))
  rep, split = parallel.replicated(mesh), parallel.data_sharding(mesh)
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


# In the workdir: the losses since the last logged step of a run stopped between two logging
# steps, so that its resumption logs the mean an uninterrupted run logs.
LOSS_WINDOW_FILE = 'loss_window.json'


class _LossBuffer:
  """Device losses since the last check, fetched in one transfer so steps stay asynchronous."""

  def __init__(self):
    self.steps, self.losses = [], []

  def add(self, step: int, loss: jax.Array):
    self.steps.append(step)
    self.losses.append(loss)

  def _checked(self, last_good: int) -> np.ndarray:
    """float64 losses since the last flush. Raises NonFiniteLossError naming the first bad step."""
    values = np.asarray(jax.device_get(self.losses), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
      raise errors.NonFiniteLossError(
          f'The loss is {values[bad[0]]} at step {self.steps[bad[0]]}; training stopped without '
          f'saving. The last good checkpoint is step {last_good}; lower optim.lr or raise '
          'optim.warmup, then run the same command again to resume from it.')
    return values

  def save(self, path: str, step: int, last_good: int) -> None:
    """Writes the losses since the last flush (checked finite), as the window of checkpoint
    ``step``, to ``path`` (process 0, atomically); JSON keeps each float32 loss exactly."""
    values = self._checked(last_good)
    if jax.process_index() == 0:
      files.write_text(path, json.dumps({'step': int(step), 'steps': [int(s) for s in self.steps],
                                         'losses': values.tolist()}) + '\n')

  def restore(self, path: str, step: int) -> None:
    """Takes up the window that ``save`` wrote for checkpoint ``step``; a window of another
    step (an older stop, or a checkpoint whose save did not finish) is not this run's."""
    path = epath.Path(path)
    if not path.exists():
      return
    try:
      window = json.loads(path.read_text())
    except ValueError:
      logging.warning('Ignoring %s: not valid JSON. The first logged training_loss averages only '
                      'the steps from here on.', path)
      return
    if window.get('step') == step:
      self.steps, self.losses = list(window['steps']), list(window['losses'])

  def flush(self, last_good: int) -> float:
    """Mean loss since the last flush. Raises NonFiniteLossError naming the first bad step."""
    values = self._checked(last_good)
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
      the logging steps and stop together if any host asked. Before the first step (start-up,
      compilation) nothing is unsaved: under ``stopping.install`` a SIGTERM there ends the
      process at once.
  Returns:
    The final state (replicated over the mesh).
  Raises:
    errors.UserError: before anything is written, for a bad config, workdir or dataset; later,
      for a non-finite loss (naming the step) or checkpoints that are all unreadable.
    errors.StopRequested: after saving, when ``stop_requested()`` said so.
  """
  return _fit(config, workdir, mesh, stop_requested, classifier=False)


def train_classifier(config: ml_collections.ConfigDict, workdir: str, mesh=None,
                     stop_requested: Optional[Callable[[], bool]] = None
                     ) -> train_state.TrainState:
  """Trains the noise-conditional classifier ``config.classifier`` of classifier guidance.

  The objective is ``losses.classifier_loss``: cross-entropy of ``p_t(y | x(t))`` on data
  perturbed by the run's SDE at ``t ~ U(training.eps, T)``. Everything else is as for the score
  model (``train_and_evaluate``, same arguments): the same data pipeline, batch size, logging,
  held-out evaluation (loss and accuracy on the test split), checkpoints, resume and
  preemption, in ``workdir_lib.classifier_workdir(config, workdir)`` (``<workdir>/classifier``
  by default), for ``config.classifier.n_iters`` steps.

  Raises:
    errors.UserError: as ``train_and_evaluate``; also for a dataset without labels.
  """
  return _fit(config, workdir, mesh, stop_requested, classifier=True)


# Start-up and compilation hold nothing unsaved: a stop request there ends the run at once.
_STOPPED_BEFORE_TRAINING = ('Stopped on request before the first training step (while starting '
                            'or compiling): there was nothing to save. Run the same command '
                            'again to go on.')


@stopping.nothing_unsaved(_STOPPED_BEFORE_TRAINING)
def _fit(config, workdir: str, mesh, stop_requested, *, classifier: bool):
  """``train_and_evaluate`` (the score model) or ``train_classifier``: checks, then the loop."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  validation.validate_config(config, num_devices=mesh.devices.size,
                             num_hosts=jax.process_count())
  if config.logging.wandb:
    summary.check_wandb_installed()
  workdir = workdir_lib.check_workdir(workdir)
  if classifier:
    workdir = workdir_lib.check_workdir(workdir_lib.classifier_workdir(config, workdir))
  sources = data.open_checked(config.data, ('train', 'test'))
  record.save_run_config(config, workdir)  # What score_sde.load(workdir) rebuilds from.
  sde = sde_lib.get_sde(config)
  model = mutils.get_classifier(config) if classifier else mutils.get_model(config)
  tx = optim.get_optimizer(config.optim)
  state, ckpt = restore_or_init(config, workdir, mesh, model, tx)
  if classifier:
    run = _Run('classifier', config.classifier.n_iters, config.classifier.num_classes,
               'raise --config.classifier.n_iters to train longer, or sample with '
               '--config.sampling.classifier_scale=1')
  else:
    run = _Run('score model', config.training.n_iters, getattr(model, 'num_classes', 0),
               'raise --config.training.n_iters to train longer, or evaluate with --mode eval')
  if _finished(run, workdir, state, ckpt):
    return state
  wandb_writer = None
  try:
    wandb_writer = _wandb_writer(config, workdir)  # Before the compiles: a failure costs seconds.
    image_shape = images.image_shape(config.data.image_size, config.data.num_channels)
    steps = _compile_steps(config, sde, model, mesh, tx, state, image_shape,
                           classifier=classifier)
    sample_fn = None
    if config.training.snapshot_sampling and not classifier:
      sample_fn = sampling.get_network_sampler(config, sde, model, mesh,
                                               config.training.n_snapshot_samples)
    return _train(config, workdir, mesh, run, steps, sample_fn, state, ckpt, sources,
                  stop_requested or (lambda: False), wandb_writer)
  finally:
    ckpt.close()
    if wandb_writer is not None:
      wandb_writer.close()


def _wandb_writer(config, workdir: str) -> Optional[summary.WandbWriter]:
  """The Weights & Biases writer that ``config.logging`` asks for, or None."""
  settings = config.logging
  if not settings.wandb:
    return None
  return summary.WandbWriter(workdir, project=settings.wandb_project,
                             entity=settings.wandb_entity, mode=settings.wandb_mode,
                             config=record.flat_config(config))


class _Run(NamedTuple):
  """What a training loop trains: its name in messages, its step count, the number of classes
  its batches' labels must lie in (0: labels unused) and the hint a finished run gives."""
  what: str
  n_iters: int
  num_classes: int
  when_finished: str


def _finished(run: _Run, workdir: str, state, ckpt) -> bool:
  """Whether ``state`` is already at ``run.n_iters`` (then says so and closes ``ckpt``)."""
  start = int(state.step)
  if start < run.n_iters:
    return False
  ckpt.close()
  logging.info('Training of the %s is already finished: %s holds step %d of %d. Nothing to do; '
               '%s.', run.what, workdir, start, run.n_iters, run.when_finished)
  return True


def _compile_steps(config, sde, model, mesh, tx, state, image_shape, *, classifier: bool):
  """The train and eval steps compiled for the global batch: ``(train_step, eval_step)``."""
  split = parallel.data_sharding(mesh)
  batch_size = config.training.batch_size
  batch_spec = {'image': jax.ShapeDtypeStruct((batch_size,) + image_shape, jnp.float32,
                                              sharding=split),
                'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=split)}
  key = parallel.replicate(rng.stream_key(config.seed, rng.TRAIN_STREAM), mesh)
  train_step = compile_logged('train step', compile_step(
      config, sde, model, mesh, train=True, tx=tx, classifier=classifier), state, batch_spec, key)
  eval_step = compile_logged('eval step', compile_step(
      config, sde, model, mesh, train=False, classifier=classifier), state, batch_spec, key)
  return train_step, eval_step


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
  """Raises ``errors.DataError`` unless every label lies in ``[0, num_classes)``: a
  class-conditional network or a classifier needs labelled data (unlabelled sources give -1)."""
  labels = np.asarray(labels)
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    value = int(labels[np.flatnonzero(bad)[0]])
    hint = ('this dataset has no class labels' if value < 0 else
            f'the data has more than {num_classes} classes')
    raise errors.DataError(
        f'The {what} needs labels in [0, {num_classes}), but a batch holds label {value}: '
        f'{hint}. Use a labelled dataset, or set model.num_classes (classifier.num_classes) '
        'to the number of classes of the data.')


def _stop_now(stop_requested: Callable[[], bool], log_step: bool) -> bool:
  """Whether to stop after this step: this host's request alone, or any host's on a logging
  step of a multi-host run (all hosts must stop at the same step to save together)."""
  if jax.process_count() == 1:
    return bool(stop_requested())
  return log_step and stopping.any_process(stop_requested)


@stopping.unsaved_work()  # Steps since the last checkpoint: stops at the poll after a step.
def _train(config, workdir, mesh, run: _Run, steps, sample_fn, state, ckpt, sources,
           stop_requested, extra_writer: Optional[summary.MetricWriter] = None):
  """The loop of ``train_and_evaluate`` / ``train_classifier`` from the restored (or new)
  ``state`` to ``run.n_iters``, logging to TensorBoard and to ``extra_writer`` (W&B)."""
  training = config.training
  n_iters = run.n_iters
  train_step, eval_step = steps
  start = last_saved = int(state.step)
  train_key = parallel.replicate(rng.stream_key(config.seed, rng.TRAIN_STREAM), mesh)
  eval_key = parallel.replicate(rng.stream_key(config.seed, rng.EVAL_STREAM), mesh)
  scaler = data.get_data_scaler(config.data.centered)
  hosts = dict(host_index=jax.process_index(), host_count=jax.process_count())
  get_batch = functools.partial(
      data.get_batch, global_batch_size=training.batch_size, seed=config.seed,
      random_flip=config.data.random_flip,
      uniform_dequantization=config.data.uniform_dequantization, **hosts)

  def to_device(batch):
    if run.num_classes:
      check_labels(batch['label'], run.num_classes, run.what)
    return parallel.to_global({'image': scaler(batch['image']), 'label': batch['label']}, mesh)

  progress = summary.Progress(total_steps=n_iters, start_step=start,
                              batch_size=training.batch_size)
  buffer = _LossBuffer()
  window_path = os.path.join(workdir, LOSS_WINDOW_FILE)
  buffer.restore(window_path, start)
  logging.info('Training the %s from step %d to %d on %d device(s), %d host(s).', run.what,
               start, n_iters, mesh.devices.size, jax.process_count())

  batches = data.batches(sources['train'], start, training.batch_size, config.seed, train=True,
                         random_flip=config.data.random_flip,
                         uniform_dequantization=config.data.uniform_dequantization,
                         num_steps=n_iters - start, **hosts)
  # A killed run may have logged past its last checkpoint (``start``); the resumed run logs those
  # steps again from start + 1, so TensorBoard is told to drop the killed run's values there.
  tensorboard_dir = os.path.join(workdir, 'tensorboard')
  writers = [summary.SummaryWriter(tensorboard_dir, purge_step=start + 1), extra_writer]
  with summary.MultiWriter(writers) as writer, summary.ProfileWindow(
      tensorboard_dir, training.profile_steps) as profile:
    for step, batch in batches:
      profile.before(step + 1)
      state, metrics = train_step(state, to_device(batch), train_key)
      done = step + 1  # Updates completed; the number a checkpoint of this state carries.
      progress.exclude(profile.after(done, wait_for=state))
      buffer.add(done, metrics['loss'])
      is_snapshot = done % training.snapshot_freq == 0 or done == n_iters
      is_preemption = done % training.snapshot_freq_for_preemption == 0
      if done % training.log_freq == 0 or is_snapshot or is_preemption:
        loss = buffer.flush(last_saved)  # Never save or log past a non-finite loss.
        writer.scalar('training_loss', loss, done)
        writer.scalar('grad_norm', float(metrics['grad_norm']), done)
        extra = ''
        if 'accuracy' in metrics:  # The classifier's, of this step's batch.
          writer.scalar('training_accuracy', float(metrics['accuracy']), done)
          extra = f', accuracy {float(metrics["accuracy"]):.3f}'
        logging.info('step %d, training loss %.5e%s, %s', done, loss, extra,
                     progress.line(done))
      # What is not a train step stays off the clock of the progress line's rate and ETA.
      if done % training.eval_freq == 0:
        with progress.paused(wait_for=state):
          eval_batch = to_device(get_batch(sources['test'], done // training.eval_freq,
                                           train=False))
          _, eval_metrics = eval_step(state, eval_batch, eval_key)
          writer.scalar('eval_loss', float(eval_metrics['loss']), done)
          extra = ''
          if 'accuracy' in eval_metrics:
            writer.scalar('eval_accuracy', float(eval_metrics['accuracy']), done)
            extra = f', accuracy {float(eval_metrics["accuracy"]):.3f}'
          logging.info('step %d, eval loss %.5e%s', done, float(eval_metrics['loss']), extra)
      if is_snapshot or is_preemption:
        with progress.paused(wait_for=state):
          ckpt.save(done, state, periodic=is_snapshot)
          writer.flush()  # The events up to this checkpoint survive a kill.
          last_saved = done
      if is_snapshot and sample_fn is not None:
        with progress.paused(wait_for=state):
          key = parallel.replicate(
              jax.random.fold_in(rng.stream_key(config.seed, rng.SAMPLE_STREAM), done), mesh)
          sample_fn = _save_samples(sample_fn, state, key, done, workdir, writer,
                                    nrow=run.num_classes or None)
      if done < n_iters and _stop_now(stop_requested, done % training.log_freq == 0):
        if last_saved != done:
          # Never save past a non-finite loss. The losses since the last logged step are kept
          # for the resumed run, whose next training_loss then averages the same steps.
          buffer.save(window_path, done, last_saved)
          ckpt.save(done, state, periodic=False)
        ckpt.wait_until_finished()
        writer.flush()
        raise errors.StopRequested(
            f'Stopped on request at step {done} of {n_iters}, after saving it to '
            f'{workdir}; run the same command again to resume from there.')
  ckpt.wait_until_finished()
  logging.info('Training of the %s finished at step %d; checkpoints are in %s.', run.what,
               n_iters, os.path.join(workdir, checkpoint.PERIODIC_DIR))
  return state


def _save_samples(sample_fn, state, key: jax.Array, step: int, workdir: str, writer,
                  nrow: Optional[int] = None):
  """A grid of samples from the EMA weights, as a PNG and a TensorBoard image (``nrow`` images
  a row: one class per column for a class-conditional network, whose samples cycle the classes).

  Returns ``sample_fn`` compiled (logged, at the first call) for the next snapshot.
  """
  if not isinstance(sample_fn, jax.stages.Compiled):
    sample_fn = compile_logged('snapshot sampler', sample_fn, state.params_ema, key)
  start = time.time()
  samples = parallel.gather_rows(sample_fn(state.params_ema, key)[0])
  grid = summary.image_grid(samples, nrow=nrow)
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, 'samples'), exist_ok=True)
    summary.save_png(os.path.join(workdir, 'samples', f'step_{step}.png'), grid)
  writer.image('samples', grid, step)
  logging.info('step %d, saved %d samples in %.1f s', step, samples.shape[0], time.time() - start)
  return sample_fn
