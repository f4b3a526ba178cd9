"""``evaluate(config, workdir, eval_folder)``: held-out loss, bits/dim and FID / KID / IS of a run's
checkpoints, resumable at every level.

Which checkpoints: the periodic snapshots ``k * training.snapshot_freq`` for
``eval.begin_ckpt <= k <= eval.end_ckpt`` that training reaches (``<= training.n_iters``), plus
the final checkpoint ``n_iters`` when it is not a multiple of ``snapshot_freq``: it counts as
snapshot ``ceil(n_iters / snapshot_freq)`` and is evaluated when that index is in the range.
A converted released checkpoint ``checkpoint_<N>`` (``conversion.released_checkpoints``) is
filed under its training step, a few updates past ``N * snapshot_freq``, and stands for
snapshot ``step // snapshot_freq``, i.e. ``N`` (``with_converted``).
A checkpoint not on disk yet is waited for, polling, up to ``eval.wait_for_checkpoint_secs``
(training may still be running), then skipped with a warning; when none of them is found, the
evaluation writes nothing and raises ``nothing_to_evaluate``'s error (exit status 2), naming the
checkpoints on disk and the ``--config.eval.begin_ckpt`` / ``end_ckpt`` that choose them (an
evaluation of other steps than those asked for would not be what the report's rows claim). A
damaged one (unreadable or failing its checksums) is skipped with a one-line warning and the
evaluation goes on. The data
the enabled metrics read are opened and checked (``data.open_checked``) before anything is
written.

Per checkpoint, from the EMA weights and as enabled:

* ``eval.enable_loss``: the training objective averaged over every example of the test split
  (padding rows of the last batch masked out), batch ``b`` drawing its noise from
  ``loss_batch_key(seed, b)``: the same noise for every checkpoint, so differences between
  checkpoints are the model's, not the noise's.
* ``eval.enable_bpd``: bits/dim through the probability-flow ODE (``likelihood``) over
  ``eval.bpd_dataset``, ``likelihood.NUM_REPEATS`` passes (5 over test, 1 over train). The data
  are always uniformly dequantized, with fresh noise per pass, whatever
  ``data.uniform_dequantization`` says: the paper's bits/dim (Table 2) are defined on dequantized
  data, and without it they are no bound on the discrete likelihood. Progress is saved after each
  batch, so a killed run resumes at the next batch.
* ``eval.enable_elbo``: the variational bound and its prior / diffusion / reconstruction terms
  over ``eval.bpd_dataset``, one pass, no ODE solve (``evaluation.bound``): the DDPM chain's
  bound on the 8-bit data for a discrete-time VP model, the continuous-time one on the first
  bits/dim pass's dequantized data otherwise; resumable per batch.
* ``eval.enable_sampling``: FID / KID / IS from ``eval.num_samples`` samples
  (``evaluation.samples``), resumable per round.

Results go to ``workdir/<eval_folder>``: ``report.json`` / ``report.csv`` (one row per checkpoint,
updated as each metric finishes; finished metrics are not recomputed on a rerun), TensorBoard
scalars under ``tensorboard/`` and per-checkpoint files under ``ckpt_<step>/``. Process 0 writes;
all processes compute together and follow process 0's view of what is left to do.
"""
import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from score_sde import data, likelihood, losses, sde_lib
from score_sde.common import errors, parallel, rng, stopping
from score_sde.configs import record, validation
from score_sde.evaluation import bound, report as eval_report, samples as eval_samples
from score_sde.io import checkpoint, files, summary, workdir as workdir_lib
from score_sde.metrics import inception, inception_weights
from score_sde.models import utils as mutils
from score_sde.training import restore

POLL_SECS = 30.  # Between looks for a checkpoint that is not there yet.
# The progress is on disk as it is made, so a stop request loses at most the batch in flight.
_STOPPED = ('Stopped on request. The evaluation keeps what it finished (report rows, bits/dim '
            'and ELBO batches, sample rounds) in its folder; run the same command again to go '
            'on from there.')
BPD_PROGRESS_FILE = 'bpd_progress.npz'
# Sub-streams of rng.EVAL_STREAM.
_LOSS_NOISE, _BPD_PROBES, _BPD_DEQUANTIZATION, _ELBO_DRAWS = range(4)

# ``evaluator(params_ema, step, ckpt_dir, writer) -> report columns``: one metric of one
# checkpoint; ``ckpt_dir`` holds its resumable work files.
Evaluator = Callable[[Any, int, str, Optional[summary.SummaryWriter]], Dict[str, Any]]


class EvalResult(NamedTuple):
  """What ``evaluate`` returns: the report rows of the evaluated checkpoints (``eval_report.
  COLUMNS``, None where not computed), the steps skipped because they never appeared, and those
  skipped because their checkpoint could not be read intact."""
  rows: List[Dict[str, Any]]
  missing_steps: List[int]
  corrupt_steps: List[int]


# ------------------------------------------------------------------------------ checkpoints
def checkpoint_steps(begin_ckpt: int, end_ckpt: int, snapshot_freq: int,
                     n_iters: int) -> List[int]:
  """The training steps whose checkpoints an evaluation visits, ascending (module docstring).

  >>> checkpoint_steps(1, 26, 4, 6)
  [4, 6]
  """
  if not 1 <= begin_ckpt <= end_ckpt or snapshot_freq < 1:
    raise errors.ConfigError(f'Need 1 <= begin_ckpt ({begin_ckpt}) <= end_ckpt ({end_ckpt}) '
                             f'and snapshot_freq ({snapshot_freq}) >= 1.')
  steps = [k * snapshot_freq for k in range(begin_ckpt, end_ckpt + 1)
           if k * snapshot_freq <= n_iters]
  if n_iters % snapshot_freq and begin_ckpt <= -(-n_iters // snapshot_freq) <= end_ckpt:
    steps.append(n_iters)
  if not steps:
    raise errors.ConfigError(
        f'No checkpoint to evaluate: snapshots {begin_ckpt}..{end_ckpt} of '
        f'training.snapshot_freq={snapshot_freq} are all past training.n_iters={n_iters}. '
        'Lower config.eval.begin_ckpt.')
  return steps


def with_converted(steps: List[int], on_disk: List[int], begin_ckpt: int, end_ckpt: int,
                   snapshot_freq: int, n_iters: int) -> List[int]:
  """``steps`` (``checkpoint_steps``) with the converted checkpoints of ``on_disk`` in place of
  the snapshots they stand for, ascending.

  Training writes no periodic checkpoint off the grid ``k * snapshot_freq`` but ``n_iters``; one
  that is (a converted ``checkpoint_<N>`` at its training step) stands for snapshot
  ``step // snapshot_freq`` and is visited when that is in ``begin_ckpt..end_ckpt``, in place
  of ``k * snapshot_freq`` when that is not on disk.

  >>> with_converted([1300000], [1300005], 26, 26, 50000, 1300001)
  [1300005]
  """
  converted = [s for s in on_disk if s % snapshot_freq and s != n_iters
               and begin_ckpt <= s // snapshot_freq <= end_ckpt]
  stood_for = {s // snapshot_freq * snapshot_freq for s in converted} - set(on_disk)
  return sorted(set(steps) - stood_for | set(converted))


def nothing_to_evaluate(config, workdir: str, steps: List[int],
                        on_disk: List[int]) -> errors.WorkdirError:
  """The error of an evaluation that found none of its ``steps`` among the periodic checkpoints
  ``on_disk``: names both and the ``--config`` flags that select those on disk (with the run's
  ``training.snapshot_freq`` and ``n_iters`` from its ``config.json`` where they differ)."""
  e, t = config.eval, config.training
  where = os.path.join(workdir, checkpoint.PERIODIC_DIR)
  visited = (f'steps {_steps_text(steps)} (snapshots {e.begin_ckpt} to {e.end_ckpt} of '
             f'training.snapshot_freq={t.snapshot_freq}, up to training.n_iters={t.n_iters})')
  if not on_disk:
    return errors.WorkdirError(
        f'Nothing to evaluate: {where} holds no checkpoint yet, and this evaluation visits '
        f'{visited}. Train first, or set --config.eval.wait_for_checkpoint_secs to wait for '
        'training to write them.')
  flags = _selecting_flags(config, workdir, on_disk)
  fix = (f'Evaluate them with {flags}' if flags else 'Evaluate with the config the run was '
         'trained with (its training.snapshot_freq and n_iters), choosing snapshots with '
         '--config.eval.begin_ckpt and --config.eval.end_ckpt')
  return errors.WorkdirError(
      f'Nothing to evaluate: none of {visited} is in {where}, which holds steps '
      f'{_steps_text(on_disk)}. {fix} (checkpoint k is step k * training.snapshot_freq).')


def _selecting_flags(config, workdir: str, on_disk: List[int]) -> str:
  """``--config.`` flags whose ``checkpoint_steps`` include checkpoints ``on_disk``, or ''."""
  snapshot_freq, n_iters = config.training.snapshot_freq, config.training.n_iters
  try:
    run = record.load_run_config(workdir)
    snapshot_freq, n_iters = run.training.snapshot_freq, run.training.n_iters
  except errors.UserError:  # No config.json (e.g. a converted checkpoint): the config's grid.
    pass
  # Snapshot k holds step k * snapshot_freq; the final step n_iters counts as the next one.
  index = lambda s: max(1, -(-s // snapshot_freq) if s == n_iters else s // snapshot_freq)
  begin, end = index(min(on_disk)), index(max(on_disk))
  try:
    chosen = with_converted(checkpoint_steps(begin, end, snapshot_freq, n_iters), on_disk,
                            begin, end, snapshot_freq, n_iters)
  except errors.ConfigError:  # Every step on disk is past n_iters.
    return ''
  if not set(on_disk) & set(chosen):
    return ''
  flags = [f'--config.eval.begin_ckpt={begin}', f'--config.eval.end_ckpt={end}']
  if snapshot_freq != config.training.snapshot_freq:
    flags.append(f'--config.training.snapshot_freq={snapshot_freq}')
  if n_iters != config.training.n_iters:
    flags.append(f'--config.training.n_iters={n_iters}')
  return ' '.join(flags)


def _steps_text(steps: List[int]) -> str:
  """``'[4, 8, 12]'``, or ``'[50000, 100000, ..., 1300000] (26)'`` for a long list."""
  steps = list(steps)
  if len(steps) <= 6:
    return str(steps)
  return f'[{steps[0]}, {steps[1]}, ..., {steps[-1]}] ({len(steps)})'


def wait_for_checkpoint(available: Callable[[], List[int]], step: int, timeout_secs: float,
                        poll_secs: float = POLL_SECS, sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.monotonic) -> bool:
  """Whether checkpoint ``step`` is in ``available()``, polling up to ``timeout_secs``."""
  deadline = clock() + timeout_secs
  while step not in available():
    left = deadline - clock()
    if left <= 0:
      return False
    logging.info('Waiting for checkpoint %d (%.0f s left).', step, left)
    sleep(min(poll_secs, left))
  return True


# ------------------------------------------------------------------------------ loss
def loss_batch_key(seed: int, index: int) -> jax.Array:
  """The key of held-out batch ``index`` (the same for every checkpoint)."""
  eval_key = rng.stream_key(seed, rng.EVAL_STREAM)
  return jax.random.fold_in(jax.random.fold_in(eval_key, _LOSS_NOISE), index)


def make_loss_evaluator(config, sde, model, mesh, source: data.Source) -> Evaluator:
  """``evaluate_loss(params, ...) -> {'loss': mean over the test split}``, compiled once."""
  # The objective itself: in float32, whatever precision training ran in.
  settings = dataclasses.replace(losses.step_settings(config), compute_dtype='float32')
  loss_fn = losses.get_per_example_loss_fn(sde, model, train=False, settings=settings)

  def masked_sums(params, batch, key):
    values = loss_fn(key, params, batch)
    mask = batch['mask'].astype(values.dtype)
    return jnp.sum(values * mask), jnp.sum(mask)

  rep, split = parallel.replicated(mesh), parallel.data_sharding(mesh)
  compiled = jax.jit(masked_sums, in_shardings=(rep, split, rep), out_shardings=(rep, rep))
  scaler = data.get_data_scaler(config.data.centered)

  def evaluate_loss(params, step=None, ckpt_dir=None, writer=None) -> Dict[str, float]:
    del step, ckpt_dir, writer  # The loss keeps no files.
    sums = []
    batches = data.epoch_batches(
        source, config.eval.batch_size, jax.process_index(), jax.process_count(),
        uniform_dequantization=config.data.uniform_dequantization, seed=config.seed)
    for index, batch in enumerate(batches):
      batch = parallel.to_global({'image': scaler(batch['image']), 'mask': batch['mask'],
                                  'label': batch['label']}, mesh)
      sums.append(compiled(params, batch, loss_batch_key(config.seed, index)))
    totals = np.asarray(jax.device_get(sums), np.float64)  # One transfer at the end.
    return {'loss': float(totals[:, 0].sum() / totals[:, 1].sum())}

  return evaluate_loss


# ------------------------------------------------------------------------------ bits/dim
def dequantization_seed(seed: int, repeat: int) -> int:
  """The data pipeline's seed for the dequantization noise of pass ``repeat``."""
  return int(np.random.SeedSequence([seed, _BPD_DEQUANTIZATION, repeat]).generate_state(1)[0])


def make_bpd_evaluator(config, sde, model, mesh, source: data.Source,
                       stop_requested: Optional[Callable[[], bool]] = None) -> Evaluator:
  """``evaluate_bpd(params, step, ckpt_dir) -> {'bpd', 'bpd_stderr', 'bpd_nfe'}``, resumable per
  batch through ``ckpt_dir/BPD_PROGRESS_FILE``; polling ``stop_requested`` after each batch.

  The likelihood uses ``likelihood.get_likelihood_fn``'s defaults: one Rademacher probe per
  example, the reference's RK45 (Dormand-Prince) at its rtol = atol = 1e-5, from t = 1e-5, on
  the score ``models.utils.ode_score_continuous`` picks (continuous labels and std for VP /
  sub-VP whatever the training, as the reference). Values are
  computed on every process; the progress file and the returned columns are process 0's (empty
  elsewhere). A class-conditional network's bits/dim are those of its unconditional score (the
  null label), the likelihood of ``p(x)``.
  """
  split = config.eval.bpd_dataset
  num_repeats = likelihood.NUM_REPEATS[split]
  centered = config.data.centered
  if not config.data.uniform_dequantization:
    logging.info('bits/dim: uniform dequantization is on for the likelihood data, as the paper '
                 'defines bits/dim on dequantized data (data.uniform_dequantization is False).')
  likelihood_fn = likelihood.get_likelihood_fn(sde, data.get_data_inverse_scaler(centered))
  # A class-conditional network is scored with its null label: bits/dim of p(x), not p(x | y).
  null_label = getattr(model, 'num_classes', 0) or None
  bpd_fn = likelihood.get_sharded_likelihood_fn(
      likelihood_fn,
      lambda p: mutils.get_score_fn(
          sde, model, p, train=False,
          continuous=mutils.ode_score_continuous(sde, config.training.continuous),
          class_labels=null_label,
          parameterization=mutils.config_parameterization(config, sde)),
      mesh, scaler=data.get_data_scaler(centered))
  probe_key = jax.random.fold_in(rng.stream_key(config.seed, rng.EVAL_STREAM), _BPD_PROBES)

  def make_batches(repeat):
    return data.epoch_batches(source, config.eval.batch_size, jax.process_index(),
                              jax.process_count(), uniform_dequantization=True,
                              seed=dequantization_seed(config.seed, repeat))

  def evaluate_bpd(params, step, ckpt_dir: str, writer=None) -> Dict[str, float]:
    del writer
    path = os.path.join(ckpt_dir, BPD_PROGRESS_FILE)
    done = _load_bpd_progress(path) if jax.process_index() == 0 else []
    start = eval_report.host0_view(_next_batch(done)).tolist()
    rounds = likelihood.dataset_bpd_rounds(lambda key, x: bpd_fn(key, params, x), make_batches,
                                           probe_key, num_repeats, start=tuple(start))
    batches = num_repeats * -(-len(source) // config.eval.batch_size)
    left, started = batches - len(done), time.time()
    for count, bpd_round in enumerate(rounds, 1):
      done.append(bpd_round)
      if jax.process_index() == 0:
        _save_bpd_progress(path, done)
      logging.info('step %d: bits/dim pass %d of %d, batch %d: %.4f (%d score evaluations); %s',
                   step, bpd_round.repeat + 1, num_repeats, bpd_round.batch + 1,
                   float(np.mean(bpd_round.bpd)), bpd_round.nfe,
                   summary.countdown(count, left, time.time() - started, unit='batch'))
      _stop_if_requested(stop_requested)
    if jax.process_index() != 0:
      return {}
    result = likelihood.summarize_bpd(done)
    return {'bpd': result.mean, 'bpd_stderr': result.stderr, 'bpd_nfe': result.mean_nfe}

  return evaluate_bpd


def _next_batch(done: List[likelihood.BpdRound]) -> List[int]:
  return [done[-1].repeat, done[-1].batch + 1] if done else [0, 0]


def _save_bpd_progress(path: str, done: List[likelihood.BpdRound]) -> None:
  files.save_npz(path, index=np.array([[r.repeat, r.batch] for r in done], np.int64),
                 nfe=np.array([r.nfe for r in done], np.int64),
                 count=np.array([r.bpd.size for r in done], np.int64),
                 bpd=np.concatenate([r.bpd for r in done]))


def _load_bpd_progress(path: str) -> List[likelihood.BpdRound]:
  if not epath.Path(path).exists():
    return []
  arrays = files.load_npz(path)
  values = np.split(arrays['bpd'], np.cumsum(arrays['count'])[:-1])
  return [likelihood.BpdRound(int(r), int(b), v, int(n))
          for (r, b), v, n in zip(arrays['index'], values, arrays['nfe'])]


# ------------------------------------------------------------------------------ driver
def _sample_setup(config, workdir: str, mesh):
  """Reference statistics, the Inception network and (for classifier guidance) the trained
  classifier: loaded before any checkpoint or sampler, so a missing file fails in the first
  seconds with the command that makes it."""
  reference = eval_samples.load_reference_stats(config)
  params = inception_weights.load_inception_params(config.eval.inception_path)
  classifier = None
  if config.sampling.classifier_scale:
    net = restore.load_classifier(config, workdir, mesh)
    logging.info('Classifier guidance (scale %s) with the classifier of step %d.',
                 config.sampling.classifier_scale, net.step)
    classifier = (net.module, net.params)
  return inception.get_inception_fn(params, mesh), reference, classifier


def _pending(row: Dict[str, Any], eval_config) -> List[str]:
  """The enabled metrics that ``row`` lacks (a sample row with another count is stale)."""
  todo = []
  if eval_config.enable_loss and row['loss'] is None:
    todo.append('loss')
  if eval_config.enable_bpd and row['bpd'] is None:
    todo.append('bpd')
  if eval_config.enable_elbo and row['elbo'] is None:
    todo.append('elbo')
  if eval_config.enable_sampling and (row['fid'] is None
                                      or row['num_samples'] != eval_config.num_samples):
    todo.append('samples')
  return todo


def _stop_if_requested(stop_requested: Optional[Callable[[], bool]]) -> None:
  """Raises ``errors.StopRequested`` when any process was asked to stop (every process calls it
  at the same point)."""
  if stop_requested is not None and stopping.any_process(stop_requested):
    raise errors.StopRequested(_STOPPED)


@stopping.nothing_unsaved(_STOPPED)
def evaluate(config: ml_collections.ConfigDict, workdir: str, eval_folder: str = 'eval',
             mesh: Optional[jax.sharding.Mesh] = None,
             stop_requested: Optional[Callable[[], bool]] = None) -> EvalResult:
  """Evaluates the checkpoints of the run in ``workdir`` (see the module docstring).

  Args:
    config: the config the run was trained with, plus the ``eval`` fields to use.
    workdir: the training run's directory (its ``checkpoints/`` are read, never written).
    eval_folder: sub-directory of ``workdir`` for the results.
    mesh: the device mesh; by default every device of every host.
    stop_requested: polled after each metric and bits/dim batch (``main.py`` sets it on
      SIGTERM); when it returns True, ``errors.StopRequested`` is raised, the finished work kept.
      All of an evaluation but its report updates holds nothing unsaved: under
      ``stopping.install`` a SIGTERM ends the process at once, losing at most the batch or
      round in flight.
  Returns:
    ``EvalResult``: the rows of the evaluated checkpoints (process 0 has every column) and the
    steps that never appeared.
  Raises:
    errors.UserError: before anything is written, for a bad config, a missing workdir, data
      that cannot be read, a missing ``eval.stats_path`` or Inception weights, or a folder
      holding another config's results (``ConfigError`` / ``DataError`` / ``WorkdirError``;
      the first two are also ``ValueError`` / ``FileNotFoundError``); or, with nothing written,
      when none of the checkpoints it visits is found (``nothing_to_evaluate``).
    errors.StopRequested: when ``stop_requested()`` said so, the finished work kept.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  validation.validate_config(config, num_devices=mesh.devices.size,
                             num_hosts=jax.process_count())
  workdir = workdir_lib.check_workdir(workdir, must_exist=True)
  e, is_writer = config.eval, jax.process_index() == 0
  periodic_dir = epath.Path(workdir) / checkpoint.PERIODIC_DIR
  if not e.wait_for_checkpoint_secs and not periodic_dir.is_dir():
    raise errors.WorkdirError(
        f'--workdir {workdir} holds no {checkpoint.PERIODIC_DIR}/ to evaluate. Pass the workdir '
        'of a training run, or set --config.eval.wait_for_checkpoint_secs to wait for one.')
  steps = checkpoint_steps(e.begin_ckpt, e.end_ckpt, config.training.snapshot_freq,
                           config.training.n_iters)
  splits = (['test'] if e.enable_loss else []) + (
      [e.bpd_dataset] if e.enable_bpd or e.enable_elbo else [])
  sources = data.open_checked(config.data, sorted(set(splits)))
  sample_setup = _sample_setup(config, workdir, mesh) if e.enable_sampling else None
  folder = os.path.join(workdir, eval_folder)
  # Checked now, written with the first checkpoint found: an evaluation that finds none writes
  # nothing (see nothing_to_evaluate).
  eval_report.check_config_record(folder, config, write=False)
  report = eval_report.Report(folder, write=is_writer)

  sde, model = sde_lib.get_sde(config), mutils.get_model(config)
  abstract = restore.abstract_params_ema(config, model, mesh)  # Only the EMA weights are read.
  evaluators = {}  # Built (and compiled) at first use: a finished folder compiles nothing.
  builders = {'loss': lambda: make_loss_evaluator(config, sde, model, mesh, sources['test']),
              'bpd': lambda: make_bpd_evaluator(config, sde, model, mesh,
                                                sources[e.bpd_dataset], stop_requested),
              'elbo': lambda: bound.make_elbo_evaluator(
                  config, sde, model, mesh, sources[e.bpd_dataset],
                  jax.random.fold_in(rng.stream_key(config.seed, rng.EVAL_STREAM), _ELBO_DRAWS),
                  dequantization_seed(config.seed, 0),
                  lambda: _stop_if_requested(stop_requested)),
              'samples': lambda: eval_samples.make_sample_evaluator(config, sde, model, mesh,
                                                                    *sample_setup)}
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  steps = with_converted(steps, ckpt.periodic_steps(), e.begin_ckpt, e.end_ckpt,
                         config.training.snapshot_freq, config.training.n_iters)
  # Every event reaches the disk at once (a few per checkpoint), as the report rows do: a run
  # that stops at any moment leaves the two in agreement.
  writer = summary.SummaryWriter(os.path.join(folder, 'tensorboard'), flush_secs=0)
  missing, corrupt = [], []
  try:
    for step in steps:
      present = wait_for_checkpoint(ckpt.periodic_steps, step, e.wait_for_checkpoint_secs)
      if not eval_report.host0_view(present):
        missing.append(step)
        continue
      eval_report.check_config_record(folder, config, write=is_writer)  # Written at the first.
      flags = [name in _pending(report.row(step), e) for name in builders]
      todo = [name for name, flag in zip(builders, eval_report.host0_view(flags)) if flag]
      if not todo:
        logging.info('step %d: already evaluated (%s).', step, folder)
        continue
      try:
        params = ckpt.restore_params_ema(step, abstract)
      except checkpoint.CorruptCheckpointError as err:
        logging.warning('Skipping step %d: %s', step, err)
        corrupt.append(step)
        continue
      ckpt_dir = os.path.join(folder, f'ckpt_{step}')
      for name in todo:
        if name not in evaluators:
          evaluators[name] = builders[name]()
        start = time.time()
        values = evaluators[name](params, step, ckpt_dir, writer)
        with stopping.unsaved_work():  # A stop waits for both the report and its events.
          report.update(step, values)
          writer.scalars(step, {f'eval/{k}': v for k, v in values.items() if v is not None})
        logging.info('step %d: %s in %.1f s: %s', step, name, time.time() - start, values)
        _stop_if_requested(stop_requested)
      writer.flush()
    if len(missing) == len(steps):
      raise nothing_to_evaluate(config, workdir, steps, ckpt.periodic_steps())
  finally:
    writer.close()
    ckpt.close()
  if missing:
    logging.warning(
        'Checkpoints %s were not found under %s/%s (waited up to %s s each) and were skipped. '
        'Run the evaluation again once training has written them (config.eval.'
        'wait_for_checkpoint_secs sets the wait); finished checkpoints are not recomputed.',
        missing, workdir, checkpoint.PERIODIC_DIR, e.wait_for_checkpoint_secs)
  if corrupt:
    logging.warning(
        'Checkpoints %s under %s/%s could not be read intact and were skipped. Resuming '
        'training moves damaged checkpoints aside and writes those steps again.', corrupt,
        workdir, checkpoint.PERIODIC_DIR)
  return EvalResult(report.rows(steps), missing, corrupt)
