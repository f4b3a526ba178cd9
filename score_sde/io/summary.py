"""What a run reports: scalars and image grids through one writer interface (``MetricWriter``:
TensorBoard, optionally Weights & Biases), PNG files, a profiler trace and a progress line.

Only process 0 of a multi-host run writes (every process computes the same replicated values);
elsewhere the writers do nothing, so callers need no ``if process_index() == 0``.
"""
import contextlib
import importlib.util
import json
import math
import os
import time
import uuid
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from absl import logging
from etils import epath
from PIL import Image
from tensorboardX import event_file_writer
from tensorboardX import summary as tb_summary
from tensorboardX.proto import event_pb2

from score_sde.common import errors
from score_sde.io import files


# ------------------------------------------------------------------------------ images
def image_grid(images, nrow: Optional[int] = None, padding: int = 2,
               pad_value: float = 0.) -> np.ndarray:
  """Tiles a batch into one image, row-major, as torchvision / the reference's save_image.

  Image ``k`` sits in grid row ``k // nrow``, column ``k % nrow``; every image is framed by
  ``padding`` pixels of ``pad_value``, and cells after the last image stay ``pad_value``.
  Pixels map to bytes as ``clip(255 x + 0.5, 0, 255)`` (round to nearest).

  Args:
    images: (B, H, W, C) floats in [0, 1], numpy or jax.
    nrow: images per grid row; default ``floor(sqrt(B))`` (square for square B).
    padding: frame width in pixels.
    pad_value: frame colour in [0, 1].
  Returns:
    uint8 array of shape ``(rows (H + p) + p, ncol (W + p) + p, C)`` with ``ncol = min(nrow, B)``,
    ``rows = ceil(B / ncol)``, ``p = padding``.
  """
  images = np.asarray(images, dtype=np.float32)
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(f'image_grid takes a non-empty (B, H, W, C) batch; got shape {images.shape}.')
  b, h, w, c = images.shape
  ncol = min(nrow or max(int(math.isqrt(b)), 1), b)
  if ncol < 1 or padding < 0:
    raise ValueError(f'nrow={nrow}, padding={padding}: need nrow >= 1 and padding >= 0.')
  rows = -(-b // ncol)
  cells = np.full((rows * ncol, h + padding, w + padding, c), pad_value, np.float32)
  cells[:b, padding:, padding:] = images  # Each cell: its top/left frame, then the image.
  grid = cells.reshape(rows, ncol, h + padding, w + padding, c).transpose(0, 2, 1, 3, 4)
  grid = grid.reshape(rows * (h + padding), ncol * (w + padding), c)
  grid = np.pad(grid, ((0, padding), (0, padding), (0, 0)), constant_values=pad_value)
  return np.clip(grid * 255. + .5, 0, 255).astype(np.uint8)


def _pil(grid: np.ndarray) -> Image.Image:
  grid = np.asarray(grid)
  if grid.dtype != np.uint8 or grid.ndim != 3 or grid.shape[-1] not in (1, 3, 4):
    raise ValueError(f'Expected a uint8 (H, W, 1|3|4) grid (see image_grid); got '
                     f'{grid.dtype} {grid.shape}.')
  return Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)


def save_png(path, grid: np.ndarray) -> None:
  """Writes a uint8 (H, W, C) grid (C = 1 grey, 3 RGB, 4 RGBA) as a PNG; local or gs:// paths."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    _pil(grid).save(f, format='PNG')


# ------------------------------------------------------------------------------ writers
class MetricWriter:
  """What a run logs, wherever it goes: scalars, uint8 image grids and text at a step.

  Subclasses implement ``scalar``, ``image`` and ``text``; ``flush`` and ``close`` default to
  doing nothing. Steps are written in increasing order (W&B drops a step below one it has).
  """

  def scalar(self, tag: str, value, step: int) -> None:
    """One float (a Python number, numpy or jax scalar) at ``step``."""
    raise NotImplementedError

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    """Several scalars at the same step, ``{tag: value}``."""
    for tag, value in values.items():
      self.scalar(tag, value, step)

  def image(self, tag: str, grid: np.ndarray, step: int) -> None:
    """A uint8 (H, W, C) grid from ``image_grid``."""
    raise NotImplementedError

  def text(self, tag: str, text: str, step: int = 0) -> None:
    """Markdown text, e.g. the config of the run."""
    raise NotImplementedError

  def flush(self) -> None:
    """Puts every value so far where a reader (or a killed run's resumption) finds it."""

  def close(self) -> None:
    """Flushes and releases the writer."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class MultiWriter(MetricWriter):
  """Every call goes to each of ``writers`` in turn (None entries are left out)."""

  def __init__(self, writers: Sequence[Optional[MetricWriter]]):
    self.writers = [w for w in writers if w is not None]

  def scalar(self, tag, value, step):
    for w in self.writers:
      w.scalar(tag, value, step)

  def image(self, tag, grid, step):
    for w in self.writers:
      w.image(tag, grid, step)

  def text(self, tag, text, step=0):
    for w in self.writers:
      w.text(tag, text, step)

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


# ------------------------------------------------------------------------------ TensorBoard
class SummaryWriter(MetricWriter):
  """TensorBoard event files under ``logdir``, written by process 0 only.

  Events are written synchronously (tensorboardX's ``EventsWriter``; its ``SummaryWriter``
  queues them for a thread that its ``flush()`` does not drain). The event file is created at
  the first value (a run that writes nothing leaves no empty file) and reaches the disk at once,
  then at least every ``flush_secs``, at every ``flush()`` (training calls it at each
  checkpoint) and at ``close()``. A run killed after a checkpoint therefore has on disk every
  value up to that checkpoint; resuming with ``purge_step`` set to the first step the resumed
  run logs tells TensorBoard to drop the killed run's values from that step on, which the
  resumed run writes again: the history has neither a hole nor a doubled stretch.

  Example:
    with SummaryWriter(os.path.join(workdir, 'tensorboard'), purge_step=start_step) as writer:
      writer.scalars(step, {'training_loss': loss})
      writer.image('samples', image_grid(samples), step)
  """

  def __init__(self, logdir, enabled: Optional[bool] = None, flush_secs: float = 60.,
               purge_step: Optional[int] = None):
    """Args:
      logdir: directory of the event files (created with the first event file).
      enabled: write or not; default ``jax.process_index() == 0``.
      flush_secs: longest time a value waits in memory before reaching disk.
      purge_step: the first step a resumed run logs (None or 0: purge nothing); TensorBoard
        hides events of earlier files in ``logdir`` at steps >= ``purge_step``.
    """
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._logdir = epath.Path(logdir)
    self._flush_secs = float(flush_secs)
    self._purge_step = int(purge_step) if purge_step else None
    self._events = None
    self._last_flush = 0.

  def _write(self, summary_proto, step: int) -> None:
    if self._events is None:
      self._logdir.mkdir(parents=True, exist_ok=True)
      self._events = event_file_writer.EventsWriter(os.fspath(self._logdir / 'events'))
      if self._purge_step is not None:  # What TensorBoard reads as a restart at this step.
        self._events.write_event(event_pb2.Event(
            step=self._purge_step, wall_time=time.time(),
            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
        self._purge_step = None  # Once: a file reopened after close() must not purge again.
      self._last_flush = -math.inf  # The first value reaches the disk at once.
    self._events.write_event(event_pb2.Event(summary=summary_proto, step=int(step),
                                             wall_time=time.time()))
    if time.time() - self._last_flush >= self._flush_secs:
      self.flush()

  def scalar(self, tag: str, value, step: int) -> None:
    """One float (a Python number, numpy or jax scalar) at ``step``."""
    if self.enabled:
      self._write(tb_summary.scalar(tag, float(value)), step)

  def image(self, tag: str, grid: np.ndarray, step: int) -> None:
    """A uint8 (H, W, C) grid from ``image_grid``; grey grids are shown as RGB."""
    if self.enabled:
      grid = np.asarray(_pil(grid).convert('RGB'))  # Also validates dtype and shape.
      self._write(tb_summary.image(tag, grid, dataformats='HWC'), step)

  def text(self, tag: str, text: str, step: int = 0) -> None:
    """Markdown text, e.g. the config of the run."""
    if self.enabled:
      self._write(tb_summary.text(tag, text), step)

  def flush(self) -> None:
    """Writes every value so far to disk (no-op before the first value)."""
    if self._events is not None:
      self._events.flush()
      self._last_flush = time.time()

  def close(self) -> None:
    """Flushes and closes the event file; a later value opens a new one."""
    if self._events is not None:
      self._events.close()
      self._events = None


# ------------------------------------------------------------------------------ Weights & Biases
WANDB_RUN_FILE = 'wandb_run.json'  # In the workdir: the id that a resumed run continues.
WANDB_INSTALL = 'pip install ".[wandb]"'


def check_wandb_installed() -> None:
  """Raises ``errors.MissingDependencyError`` naming the install command when wandb is absent
  (without importing it: the import takes seconds)."""
  if importlib.util.find_spec('wandb') is None:
    raise errors.MissingDependencyError(
        f'config.logging.wandb is on but wandb is not installed: {WANDB_INSTALL} (or turn it '
        'off with --config.logging.wandb=False).')


class WandbWriter(MetricWriter):
  """One Weights & Biases run per workdir, written by process 0 only; wandb is imported here.

  The run's id is kept in ``<workdir>/wandb_run.json``, so a resumed training continues the
  same W&B run (``resume='allow'``) and a new workdir starts a new one. wandb's files go under
  ``$WANDB_DIR`` when it is set, else under ``<workdir>/wandb``. Values logged at one step form
  one W&B history row; W&B ignores a step below one it holds, so the steps a killed run logged
  after its last checkpoint keep their first values (the resumed run computes the same ones).

  Example:
    with WandbWriter(workdir, project='score_sde', mode='offline') as writer:
      writer.scalar('training_loss', 0.5, 100)
  """

  def __init__(self, workdir: str, project: str = '', entity: str = '', mode: str = '',
               config: Optional[Mapping[str, Any]] = None, enabled: Optional[bool] = None):
    """Args:
      workdir: the run's directory (holds ``wandb_run.json``).
      project, entity: the W&B project and team or user; '' for wandb's defaults.
      mode: 'online', 'offline' or 'disabled'; '' for wandb's default (``$WANDB_MODE``, else
        online).
      config: the run's config, flattened (``configs.record.flat_config``), shown by W&B.
      enabled: write or not; default ``jax.process_index() == 0``.
    Raises:
      errors.MissingDependencyError: wandb is not installed.
      errors.UserError: wandb cannot start the run (e.g. online without a login).
    """
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._run = None
    if not self.enabled:
      return
    check_wandb_installed()
    import wandb  # pylint: disable=import-outside-toplevel  # Optional; seconds to import.
    self._wandb = wandb
    record = epath.Path(workdir) / WANDB_RUN_FILE
    if record.exists():
      run_id = json.loads(record.read_text())['id']
    else:
      run_id = uuid.uuid4().hex[:16]
      files.write_text(record, json.dumps({'id': run_id}) + '\n')
    try:
      self._run = wandb.init(
          project=project or None, entity=entity or None, mode=mode or None,
          dir=None if os.environ.get('WANDB_DIR') else os.fspath(workdir),
          name=os.path.basename(os.path.normpath(os.fspath(workdir))), id=run_id,
          resume='allow', config=dict(config or {}))
    except wandb.errors.Error as e:
      raise errors.UserError(
          f'Weights & Biases could not start the run ({e}). Log in with `wandb login`, run '
          'offline with --config.logging.wandb_mode=offline (upload later with `wandb sync`), '
          'or turn it off with --config.logging.wandb=False.') from None

  def scalar(self, tag: str, value, step: int) -> None:
    if self._run is not None:
      self._run.log({tag: float(value)}, step=int(step))

  def image(self, tag: str, grid: np.ndarray, step: int) -> None:
    if self._run is not None:
      self._run.log({tag: self._wandb.Image(_pil(grid))}, step=int(step))

  def text(self, tag: str, text: str, step: int = 0) -> None:
    del step  # W&B keeps text in the run's summary, not in the history.
    if self._run is not None:
      self._run.summary[tag] = text

  def close(self) -> None:
    """Finishes the W&B run (its last values reach wandb's files); a second call does nothing."""
    if self._run is not None:
      self._run.finish()
      self._run = None


# ------------------------------------------------------------------------------ profiler
class ProfileWindow:
  """A ``jax.profiler`` trace of the train steps ``first .. first + count - 1`` (the step
  numbers the logs show), on process 0, for TensorBoard's profile plugin: the trace lands in
  ``<logdir>/plugins/profile/<time>/`` (``<host>.xplane.pb`` and a Perfetto
  ``.trace.json.gz``). A run resumed inside the window traces the steps of it that it runs.

  Example:
    with ProfileWindow(tensorboard_dir, (first, count)) as profile:
      for step in ...:
        profile.before(step)
        state = train_step(state)
        progress.exclude(profile.after(step, wait_for=state))
  """

  def __init__(self, logdir, steps: Sequence[int] = (), enabled: Optional[bool] = None):
    """Args:
      logdir: the TensorBoard directory of the run.
      steps: ``(first, count)``, or empty for no trace.
      enabled: trace or not; default ``jax.process_index() == 0``.
    """
    self.enabled = bool(steps) and (jax.process_index() == 0 if enabled is None else enabled)
    self._logdir = os.fspath(logdir)
    self._first, self._last = (int(steps[0]), int(steps[0]) + int(steps[1]) - 1) if steps else (
        0, -1)
    self._active = self._done = False

  def before(self, step: int) -> None:
    """Call before the train step whose update number is ``step``."""
    if self.enabled and self._first <= step <= self._last and not (self._active or self._done):
      jax.profiler.start_trace(self._logdir)
      self._active = True
      logging.info('Profiling steps %d to %d.', step, self._last)

  def after(self, step: int, wait_for=None) -> float:
    """Call after that step; ends the trace after the last step of the window, once
    ``wait_for`` (the new state) is computed. Returns the seconds spent writing the trace."""
    if not self._active or step < self._last:
      return 0.
    jax.block_until_ready(wait_for)
    start = time.time()
    self._stop()
    logging.info('Wrote the profile up to step %d to %s/plugins/profile (TensorBoard\'s Profile '
                 'tab).', self._last, self._logdir)
    return time.time() - start

  def _stop(self):
    self._active, self._done = False, True
    jax.profiler.stop_trace()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self._active:  # Stopped inside the window (an error, a stop request): keep what ran.
      self._stop()


# ------------------------------------------------------------------------------ progress
def format_duration(seconds: float) -> str:
  """``'2d 03:04:05'``, ``'03:04:05'``; ``'?'`` for an unknown (inf / nan) duration."""
  if not math.isfinite(seconds):
    return '?'
  days, rest = divmod(int(round(max(seconds, 0.))), 86400)
  hours, rest = divmod(rest, 3600)
  text = f'{hours:02d}:{rest // 60:02d}:{rest % 60:02d}'
  return f'{days}d {text}' if days else text


def countdown(done: int, total: int, elapsed: float, unit: str = 'round') -> str:
  """``'3/16 rounds (18.8%) | 12.1 s/round | ETA 00:02:37'``: a progress line for ``total``
  equal parts of work still to do (sample rounds, bits/dim batches; parts already on disk count
  in neither), ``done`` of them finished in ``elapsed`` seconds."""
  per = elapsed / done if done > 0 else float('nan')
  eta = (total - done) * per if done > 0 else float('inf')
  percent = 100. * done / total if total else 100.
  return (f'{done}/{total} {unit}s ({percent:.1f}%) | {per:.1f} s/{unit} | '
          f'ETA {format_duration(eta)}')


class Progress:
  """Progress lines with throughput measured since the previous line, over training time only.

  Measuring over the last interval (not since the start) keeps earlier intervals out of later
  rates and ETAs, and time spent inside ``paused()`` (evaluation, checkpoints, sampling) is
  taken out of the interval it falls in, so the rate is that of the train steps and the ETA
  does not jump after every snapshot. Times default to ``time.time()``; tests pass them.

  Example:
    progress = Progress(total_steps=n_iters, start_step=step, batch_size=batch)
    ...
    logging.info('loss %.4f, %s', loss, progress.line(step))
    with progress.paused(wait_for=state):
      save_checkpoint(state)
  """

  def __init__(self, total_steps: int, start_step: int, batch_size: int,
               now: Optional[float] = None):
    if total_steps < start_step:
      raise ValueError(f'total_steps={total_steps} is before start_step={start_step}.')
    self.total_steps = int(total_steps)
    self.batch_size = int(batch_size)
    self._last = (int(start_step), time.time() if now is None else float(now))
    self._excluded = 0.

  def exclude(self, seconds: float) -> None:
    """Takes ``seconds`` of the current interval off the clock."""
    self._excluded += max(float(seconds), 0.)

  @contextlib.contextmanager
  def paused(self, wait_for=None):
    """Keeps the time of the ``with`` block off the clock.

    Args:
      wait_for: a pytree of arrays whose computation counts as training (the state after the
        last train step): waited for before the clock stops, since steps run asynchronously.
    """
    if wait_for is not None:
      jax.block_until_ready(wait_for)
    start = time.time()
    try:
      yield
    finally:
      self.exclude(time.time() - start)

  def line(self, step: int, now: Optional[float] = None) -> str:
    """``'step 1200/2000 (60.0%) | 5.00 steps/s | 320 images/s | ETA 00:02:40'``.

    Rates come from the steps and the seconds, less the paused ones, since the last call (or
    construction); the ETA assumes the remaining ``total_steps - step`` run at that rate.
    """
    now = time.time() if now is None else float(now)
    last_step, last_time = self._last
    self._last = (int(step), now)
    dt, ds = now - last_time - self._excluded, step - last_step
    self._excluded = 0.
    rate = ds / dt if dt > 0 and ds > 0 else float('nan')
    eta = (self.total_steps - step) / rate if rate > 0 else float('inf')
    percent = 100. * step / self.total_steps if self.total_steps else 100.
    return (f'step {step}/{self.total_steps} ({percent:.1f}%) | {rate:.2f} steps/s | '
            f'{rate * self.batch_size:.0f} images/s | ETA {format_duration(eta)}')
