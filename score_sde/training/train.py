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
``classifier/``. A class-conditional network (``model.num_classes > 0``) and the classifier read
each batch's labels, which must lie in ``[0, num_classes)``.

Both networks go through one loop, ``_training_loop``; ``_score_model`` and ``_classifier`` say
what differs (the network, its step, its folder, its step count, its snapshots).
"""
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
from flax import linen as nn

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


def jit_step(step_fn: Callable, mesh, *, train: bool):
  """``step_fn(state, batch, key)`` (``losses.get_step_fn``) jitted for ``mesh``: the state and
  the key replicated, the batch split over the ``'data'`` axis, the state donated when
  ``train``."""
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
  return _training_loop(config, workdir, mesh, stop_requested, _score_model)


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
  return _training_loop(config, workdir, mesh, stop_requested, _classifier)


class _Trainee(NamedTuple):
  """What the training loop trains: the score model or the noise-conditional classifier."""
  what: str  # Its name in messages.
  workdir: str  # Its run's directory, checked.
  model: nn.Module  # The network (its parameters are the state's).
  n_iters: int
  num_classes: int  # Its batches' labels must lie in [0, num_classes); 0: labels unused.
  when_finished: str  # The hint a finished run gives.
  step_fn: Callable  # step_fn(train, optimizer) -> step(state, batch, key) (losses.get_step_fn).
  sampler: Optional[Callable]  # sampler(mesh) -> the snapshot sampler; None: no snapshots.


def _score_model(config, workdir: str) -> _Trainee:
  """The score network of ``config``, trained in ``workdir``."""
  sde, model = sde_lib.get_sde(config), mutils.get_model(config)
  settings, training = losses.step_settings(config), config.training

  def snapshot_sampler(mesh):
    return sampling.get_network_sampler(config, sde, model, mesh, training.n_snapshot_samples)

  return _Trainee(
      'score model', workdir, model, training.n_iters, getattr(model, 'num_classes', 0),
      'raise --config.training.n_iters to train longer, or evaluate with --mode eval',
      lambda train, tx: losses.get_step_fn(sde, model, train, tx, settings),
      snapshot_sampler if training.snapshot_sampling else None)


def _classifier(config, workdir: str) -> _Trainee:
  """The noise-conditional classifier of ``config``, trained in its folder of ``workdir``."""
  sde, model = sde_lib.get_sde(config), mutils.get_classifier(config)
  settings = losses.StepSettings(eps=config.training.eps, ema_rate=config.classifier.ema_rate,
                                 grad_accum_steps=config.training.grad_accum_steps)
  return _Trainee(
      'classifier', workdir_lib.check_workdir(workdir_lib.classifier_workdir(config, workdir)),
      model, config.classifier.n_iters, config.classifier.num_classes,
      'raise --config.classifier.n_iters to train longer, or sample with '
      '--config.sampling.classifier_scale=1',
      lambda train, tx: losses.get_classifier_step_fn(sde, model, train, tx, settings), None)


def _wandb_writer(config, workdir: str) -> Optional[summary.WandbWriter]:
  """The Weights & Biases writer that ``config.logging`` asks for, or None."""
  settings = config.logging
  if not settings.wandb:
    return None
  return summary.WandbWriter(workdir, project=settings.wandb_project,
                             entity=settings.wandb_entity, mode=settings.wandb_mode,
                             config=record.flat_config(config))


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


# Start-up and compilation hold nothing unsaved: a stop request there ends the run at once.
_STOPPED_BEFORE_TRAINING = ('Stopped on request before the first training step (while starting '
                            'or compiling): there was nothing to save. Run the same command '
                            'again to go on.')


@stopping.nothing_unsaved(_STOPPED_BEFORE_TRAINING)
def _training_loop(config, workdir: str, mesh, stop_requested: Optional[Callable[[], bool]],
                   trainee_of: Callable[[ml_collections.ConfigDict, str], _Trainee]
                   ) -> train_state.TrainState:
  """``train_and_evaluate`` and ``train_classifier``: checks, then the loop that trains
  ``trainee_of(config, workdir)`` from its newest checkpoint (or a new state) to its
  ``n_iters``, logging to TensorBoard (and W&B)."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  stop_requested = stop_requested or (lambda: False)
  validation.validate_config(config, num_devices=mesh.devices.size,
                             num_hosts=jax.process_count())
  if config.logging.wandb:
    summary.check_wandb_installed()
  trainee = trainee_of(config, workdir_lib.check_workdir(workdir))
  workdir, n_iters, training = trainee.workdir, trainee.n_iters, config.training
  sources = data.open_checked(config.data, ('train', 'test'))
  record.save_run_config(config, workdir)  # What score_sde.load(workdir) rebuilds from.
  tx = optim.get_optimizer(config.optim)
  state, ckpt = restore_or_init(config, workdir, mesh, trainee.model, tx)
  start = last_saved = int(state.step)
  wandb_writer = None
  try:
    if start >= n_iters:
      logging.info('Training of the %s is already finished: %s holds step %d of %d. Nothing to '
                   'do; %s.', trainee.what, workdir, start, n_iters, trainee.when_finished)
      return state
    wandb_writer = _wandb_writer(config, workdir)  # Before the compiles: a failure costs seconds.

    train_key = parallel.replicate(rng.stream_key(config.seed, rng.TRAIN_STREAM), mesh)
    eval_key = parallel.replicate(rng.stream_key(config.seed, rng.EVAL_STREAM), mesh)
    split = parallel.data_sharding(mesh)
    image_shape = images.image_shape(config.data.image_size, config.data.num_channels)
    batch_spec = {'image': jax.ShapeDtypeStruct((training.batch_size,) + image_shape,
                                                jnp.float32, sharding=split),
                  'label': jax.ShapeDtypeStruct((training.batch_size,), jnp.int32,
                                                sharding=split)}
    train_step = compile_logged('train step', jit_step(trainee.step_fn(True, tx), mesh,
                                                       train=True), state, batch_spec, train_key)
    eval_step = compile_logged('eval step', jit_step(trainee.step_fn(False, None), mesh,
                                                     train=False), state, batch_spec, train_key)
    sample_fn = None if trainee.sampler is None else trainee.sampler(mesh)

    scaler = data.get_data_scaler(config.data.centered)
    batch_args = dict(global_batch_size=training.batch_size, seed=config.seed,
                      random_flip=config.data.random_flip,
                      uniform_dequantization=config.data.uniform_dequantization,
                      host_index=jax.process_index(), host_count=jax.process_count())

    def to_device(batch):
      if trainee.num_classes:
        check_labels(batch['label'], trainee.num_classes, trainee.what)
      return parallel.to_global({'image': scaler(batch['image']), 'label': batch['label']},
                                mesh)

    progress = summary.Progress(total_steps=n_iters, start_step=start,
                                batch_size=training.batch_size)
    buffer = _LossBuffer()
    window_path = os.path.join(workdir, LOSS_WINDOW_FILE)
    buffer.restore(window_path, start)
    logging.info('Training the %s from step %d to %d on %d device(s), %d host(s).',
                 trainee.what, start, n_iters, mesh.devices.size, jax.process_count())
    batches = data.batches(sources['train'], start, train=True, num_steps=n_iters - start,
                           **batch_args)
    # A killed run may have logged past its last checkpoint (``start``); the resumed run logs
    # those steps again from start + 1, so TensorBoard is told to drop the killed run's values
    # there.
    tensorboard_dir = os.path.join(workdir, 'tensorboard')
    writers = [summary.SummaryWriter(tensorboard_dir, purge_step=start + 1), wandb_writer]
    with stopping.unsaved_work():  # Steps since the last checkpoint: stops at the poll after one.
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
            extra = _accuracy(writer, 'training_accuracy', metrics, done)
            logging.info('step %d, training loss %.5e%s, %s', done, loss, extra,
                         progress.line(done))
          # What is not a train step stays off the clock of the progress line's rate and ETA.
          if done % training.eval_freq == 0:
            with progress.paused(wait_for=state):
              eval_batch = data.get_batch(sources['test'], done // training.eval_freq,
                                          train=False, **batch_args)
              _, eval_metrics = eval_step(state, to_device(eval_batch), eval_key)
              writer.scalar('eval_loss', float(eval_metrics['loss']), done)
              extra = _accuracy(writer, 'eval_accuracy', eval_metrics, done)
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
                                        nrow=trainee.num_classes or None)
          if done < n_iters and _stop_now(stop_requested, done % training.log_freq == 0):
            if last_saved != done:
              # Never save past a non-finite loss. The losses since the last logged step are
              # kept for the resumed run, whose next training_loss then averages the same steps.
              buffer.save(window_path, done, last_saved)
              ckpt.save(done, state, periodic=False)
            ckpt.wait_until_finished()
            writer.flush()
            raise errors.StopRequested(
                f'Stopped on request at step {done} of {n_iters}, after saving it to '
                f'{workdir}; run the same command again to resume from there.')
      ckpt.wait_until_finished()
      logging.info('Training of the %s finished at step %d; checkpoints are in %s.', trainee.what,
                   n_iters, os.path.join(workdir, checkpoint.PERIODIC_DIR))
    return state
  finally:
    ckpt.close()
    if wandb_writer is not None:
      wandb_writer.close()


def _accuracy(writer, tag: str, metrics: dict, step: int) -> str:
  """The classifier's ``metrics['accuracy']`` written as ``tag``, and its part of the log line;
  '' for a network without accuracy."""
  if 'accuracy' not in metrics:
    return ''
  accuracy = float(metrics['accuracy'])
  writer.scalar(tag, accuracy, step)
  return f', accuracy {accuracy:.3f}'


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
