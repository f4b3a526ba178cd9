"""Training-state checkpoints: periodic snapshots and frequent preemption checkpoints (orbax).

Layout under ``workdir`` (directory names as in the reference score_sde, so users recognise them):

  checkpoints/<step>/        periodic snapshots, kept per ``max_to_keep``; evaluation reads these
  checkpoints-meta/<step>/   preemption checkpoints, only the last ``preemption_to_keep`` kept

Each ``<step>`` directory holds two orbax items: ``state`` (the ``TrainState`` pytree, tensorstore
OCDBT) and ``checksums`` (``crc32.json``: the CRC-32 of every leaf, see ``leaf_checksums``).

Writes are atomic: orbax writes ``<step>.orbax-checkpoint-tmp-<n>`` and renames it to ``<step>``
once every file is written (on GCS, where renames are not atomic, a ``commit_success.txt`` file
marks completion instead), so a run killed mid-save leaves no ``<step>`` directory behind. What
atomicity cannot catch (a disk that truncates or scribbles on a finished file) is caught on
restore: unreadable files fail in tensorstore, and silently wrong bytes fail the checksums.
``restore_latest`` then warns (one line) and falls back to the next newest checkpoint.

A read may take part of the state (``partial=True``; ``restore_params_ema``: the EMA weights that
sampling and evaluation use, an orbax partial restore): only that part's arrays are read, and its
structure and checksums are checked as a whole state's are, while the rest (the optimizer state)
is neither read nor compared.

A failed read is tried again before anything is concluded from it (``_read``): an I/O error that
may pass (``io_errors.TRANSIENT_ERRNOS``: EIO, EAGAIN, ETIMEDOUT, ESTALE, ...; a network file
system or a bucket has them) up to ``READ_ATTEMPTS`` times with doubling waits from
``RETRY_DELAY_SECS``; damage (a checksum mismatch, a missing or undecodable file) once, so that
it is proved by two reads. A checkpoint whose reads still fail with such I/O errors is not
proved damaged: it raises ``CheckpointIOError``, is never moved aside, and a writer stops there
rather than fall back.

A writer (training) moves each damaged checkpoint aside, renaming ``<step>`` to
``<step>.corrupt`` (``<step>.corrupt-2``, ... if that exists), never deleting it: orbax lists only
integer-named directories, so the renamed one no longer counts towards ``max_to_keep``, and the
step that is recomputed after the fallback is saved again. A reader (evaluation, sampling,
``read_only=True``) leaves the directories as they are and skips what it cannot read, saying in
a WARNING which step it loaded instead of which, and why.

A save that finds the disk full (``ENOSPC``, or the quota spent) raises ``files.DiskFullError``
once, from ``save``, ``wait_until_finished`` or ``close``, whichever first meets the failed
(possibly asynchronous) write: it names the filesystem, the space a checkpoint takes and the
space free, and the last complete checkpoint, which the failed write leaves intact (its partial
``*.orbax-checkpoint-tmp*`` directory is removed). orbax's own reports of that failure (an ERROR
with a traceback per write thread, a traceback per write it abandoned) are dropped, as is its
notice that a reader's directory is read only (``orbax_reports``).

Replicated leaves smaller than ``MIN_REPLICA_PARALLEL_SLICE_BYTES`` per replica are written by one
replica (``_state_handler``, with a type registry of its own: orbax's process-wide one, which a
user's own checkpoints in the same process go through, is left as it is). orbax's default on CPU
and TPU splits every replicated leaf over its replicas, compiling one slicing program per leaf,
replica and shape on a process's first save: measured, 14 s for a 40-leaf tree of biases on 8
CPU devices, against 0.03 s with this setting, for leaves whose bytes take microseconds to
write. Large leaves are still written cooperatively; the files are the same either way.

A read that fails raises only once every read it started has ended (``_ReadsEndTogether``, on
each handler of that registry). orbax runs a restore's tensorstore reads with ``asyncio.gather``
on an event loop of its own, which it closes as soon as one read raises, while the others still
run; tensorstore hands each of those, when it ends, to the closed loop, which refuses it, and
prints that refusal (a ``RuntimeError('Event loop is closed')`` traceback, through
``sys.unraisablehook``): up to one per array of the state, on every try of a damaged checkpoint.
"""
import asyncio
import contextlib
import json
import os
import threading
import time
import zlib
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from score_sde.common import errors
from score_sde.io import files, io_errors, orbax_reports

PERIODIC_DIR = 'checkpoints'
PREEMPTION_DIR = 'checkpoints-meta'
_STATE = 'state'
PARAMS_EMA = 'params_ema'  # The stored item holding the EMA weights (``TrainState.params_ema``).
_CHECKSUMS = 'checksums'
_CHECKSUM_FORMAT = 1
_CHECKSUM_FILE = 'crc32.json'
_MAX_LISTED = 8  # Paths named in one error message.
QUARANTINE_SUFFIX = '.corrupt'
_TMP_MARK = '.orbax-checkpoint-tmp'  # orbax's name for a checkpoint being written.
READ_ATTEMPTS = 5  # Tries of one checkpoint read while its errors may be transient.
RETRY_DELAY_SECS = 0.5  # Wait before the second try, doubled before each next (7.5 s in all).
MIN_REPLICA_PARALLEL_SLICE_BYTES = 1 << 20


async def _ending_together(reads):
  """Awaits the coroutine ``reads``; if it raises, first awaits every task that it started and
  that still runs (its reads that ``asyncio.gather`` left running), then raises the same error.

  These tasks are the ones that appeared on the running loop while ``reads`` ran (another
  coroutine's tasks started meanwhile are awaited too, which only delays the error). They are
  awaited, not cancelled: a cancelled task would end a concurrent coroutine's ``gather`` with a
  ``CancelledError`` ahead of this error.
  """
  before = asyncio.all_tasks()
  try:
    return await reads
  except Exception:
    started = asyncio.all_tasks() - before
    if started:
      await asyncio.wait(started)
    raise


class _ReadsEndTogether:
  """Mixed into an orbax type handler: a failed ``metadata`` or ``deserialize`` call raises
  only once every read it started has ended (``_ending_together``), while orbax's event loop
  still runs (module docstring)."""

  async def metadata(self, infos):
    return await _ending_together(super().metadata(infos))

  async def deserialize(self, infos, args=None):
    return await _ending_together(super().deserialize(infos, args))


class _ArrayHandler(_ReadsEndTogether, ocp.type_handlers.ArrayHandler):
  """orbax's ``jax.Array`` handler, replica-parallel only for slices of at least
  ``MIN_REPLICA_PARALLEL_SLICE_BYTES`` (module docstring); whether to use replica-parallel at
  all stays orbax's platform default."""

  def __init__(self):
    super().__init__(min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES)


class _NumpyHandler(_ReadsEndTogether, ocp.type_handlers.NumpyHandler):
  """orbax's ``np.ndarray`` handler."""


class _ScalarHandler(_ReadsEndTogether, ocp.type_handlers.ScalarHandler):
  """orbax's handler of Python and numpy scalars."""


class _StringHandler(_ReadsEndTogether, ocp.type_handlers.StringHandler):
  """orbax's ``str`` handler."""


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """orbax's pytree handler, with ``_ArrayHandler`` for ``jax.Array`` leaves and orbax's own
  handlers for the other leaf types (each with ``_ReadsEndTogether``), in a registry of this
  handler's own. Its state files are those of orbax's ``StandardCheckpointHandler`` over the
  same ``_ArrayHandler``: either reads what the other writes."""
  scalar = _ScalarHandler()
  registry = ocp.type_handlers.create_type_handler_registry(
      (int, scalar), (float, scalar), (bytes, scalar), (np.number, scalar),
      (np.ndarray, _NumpyHandler()), (jax.Array, _ArrayHandler()), (str, _StringHandler()))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class CorruptCheckpointError(errors.UserError, RuntimeError):
  """A checkpoint exists but cannot be read back intact."""


class CheckpointIOError(CorruptCheckpointError):
  """A checkpoint could not be read because the storage kept failing (I/O errors after
  ``READ_ATTEMPTS`` tries): not proved damaged, so never moved aside."""


class StructureMismatchError(errors.UserError, ValueError):
  """A checkpoint holds a different tree (names, shapes or dtypes) than the one asked for."""


# ------------------------------------------------------------------------------ tree helpers
def _path_str(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator='.')


def leaf_specs(tree) -> Dict[str, Tuple[Tuple[int, ...], str]]:
  """``{'params.Conv_0.kernel': (shape, dtype name), ...}`` for arrays or abstract arrays.

  Works on a ``TrainState`` of arrays, of ``jax.ShapeDtypeStruct``s, and on orbax's metadata tree
  (dicts and lists of ``ArrayMetadata``); the dotted paths agree between all three, because
  attribute, dict and sequence keys all print as their bare name or index.
  """
  specs = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    specs[_path_str(path)] = (tuple(leaf.shape), np.dtype(leaf.dtype).name)
  return specs


def _leaf_crc(x) -> Optional[int]:
  """CRC-32 of a leaf's bytes (C order), or None for an array this process cannot see whole."""
  if isinstance(x, jax.Array):
    if not x.is_fully_addressable and not x.is_fully_replicated:
      return None
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
  return zlib.crc32(np.ascontiguousarray(np.asarray(x)).view(np.uint8).ravel())


def leaf_checksums(tree) -> Dict[str, int]:
  """CRC-32 (``zlib.crc32``) of every leaf's raw bytes, keyed by dotted path.

  Computed on the host, one leaf at a time (peak memory: the largest leaf), from the copy of
  the leaf this process holds; replicated training state is whole on every host. Leaves split
  over hosts are skipped (absent from the dict). It guards against disk corruption; it is not a
  cryptographic hash.

  Args:
    tree: a pytree of ``jax.Array``s or numpy arrays.
  Returns:
    ``{dotted path: crc}`` with Python ints, JSON-ready.
  """
  sums = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    crc = _leaf_crc(leaf)
    if crc is not None:
      sums[_path_str(path)] = crc
  return sums


_CONFIG_HINT = ('It was probably written with another config (model.*, optim.* or data.*). '
                'Pass the config it was trained with, or use a fresh --workdir.')


def check_structure(expected: Dict[str, Any], found: Dict[str, Any], where: str,
                    hint: str = _CONFIG_HINT) -> None:
  """Raises ``StructureMismatchError`` naming the paths where two ``leaf_specs`` differ.

  Args:
    expected, found: ``leaf_specs`` of the wanted tree and of the stored one.
    where: names the stored tree in the message (a checkpoint directory).
    hint: the last line of the message: what to do about it.
  """
  missing = sorted(set(expected) - set(found))
  extra = sorted(set(found) - set(expected))
  changed = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
  if not (missing or extra or changed):
    return
  lines = [f'{where} does not match the tree this run expects:']
  if missing:
    lines.append(f'  missing from the checkpoint ({len(missing)}): '
                 f'{", ".join(missing[:_MAX_LISTED])}')
  if extra:
    lines.append(f'  only in the checkpoint ({len(extra)}): {", ".join(extra[:_MAX_LISTED])}')
  for k in changed[:_MAX_LISTED]:
    lines.append(f'  {k}: checkpoint {found[k]}, expected {expected[k]}')
  lines.append(hint)
  raise StructureMismatchError('\n'.join(lines))


def _join_save_threads(timeout_secs: float) -> None:
  """Waits (up to ``timeout_secs`` in all) for orbax's save threads of this process to end:
  its own thread classes (each write of a save, its finalisation) and its ``async_save``
  threads. Their failures (the full disk that is being reported) are only logged."""
  deadline = time.monotonic() + timeout_secs
  for thread in threading.enumerate():
    if thread is threading.current_thread():
      continue
    if type(thread).__module__.startswith('orbax.') or thread.name == 'async_save':
      try:
        thread.join(max(0., deadline - time.monotonic()))
      except Exception as e:  # orbax's threads re-raise their own failure from join.
        logging.debug('A save thread ended with: %s', io_errors.reason(e))


def _read_failure(where: str, what: str, e: BaseException) -> CorruptCheckpointError:
  """The error for a failed read of ``what`` in checkpoint ``where``: ``CheckpointIOError`` for
  an error that may pass (``io_errors.is_transient``), else ``CorruptCheckpointError``."""
  kind = CheckpointIOError if io_errors.is_transient(e) else CorruptCheckpointError
  return kind(f'{where}: {what} ({io_errors.reason(e)})')


def _verify(restored, where: str) -> None:
  """Compares the restored leaves' CRC-32s with those saved next to them (if any)."""
  path = epath.Path(where) / _CHECKSUMS / _CHECKSUM_FILE
  if not path.exists():
    logging.warning('%s has no checksums; restored without verifying them.', where)
    return
  try:
    stored = json.loads(path.read_text())['leaves']
  except Exception as e:
    raise _read_failure(where, 'unreadable checksums', e) from None
  actual = leaf_checksums(restored)
  bad = sorted(k for k in actual if k in stored and stored[k] != actual[k])
  if bad:
    raise CorruptCheckpointError(
        f'{where}: checksum mismatch in {len(bad)} arrays, e.g. {", ".join(bad[:_MAX_LISTED])}')


# ------------------------------------------------------------------------------ manager
class Checkpointer:
  """Saves and restores ``TrainState``s under ``workdir``; see the module docstring for layout.

  Every process of a multi-host run must construct it and call ``save`` / ``restore*`` together
  (orbax coordinates them; each host writes the shards it owns).

  Example:
    ckpt = Checkpointer(workdir, max_to_keep=config.training.max_to_keep)
    state, step = ckpt.restore_latest(abstract_state)
    ...
    ckpt.save(step, state, periodic=step % snapshot_freq == 0)
    ckpt.close()  # Waits for the last asynchronous save.
  """

  def __init__(self, workdir: str, max_to_keep: int = 0, preemption_to_keep: int = 2, *,
               async_save: bool = True, read_only: bool = False):
    """Opens (and, unless ``read_only``, creates) both checkpoint directories.

    Args:
      workdir: the run's directory.
      max_to_keep: periodic snapshots kept (the oldest are deleted); 0 keeps all of them.
      preemption_to_keep: preemption checkpoints kept, >= 1. Two survive one bad write.
      async_save: write in a background thread after the device-to-host copy; call
        ``wait_until_finished`` or ``close`` before the process exits.
      read_only: never write or delete (an evaluation job watching a training run).
    """
    if max_to_keep < 0:
      raise ValueError(f'max_to_keep={max_to_keep}; use 0 to keep all checkpoints or a count.')
    if preemption_to_keep < 1:
      raise ValueError(f'preemption_to_keep={preemption_to_keep}; it must be >= 1.')
    # orbax (tensorstore) needs absolute paths, and users pass relative --workdir values.
    self.workdir = os.path.abspath(os.fspath(workdir))
    self.read_only = read_only
    self._disk_full_reported = False
    self._state_bytes = 0  # Of the last state saved: the space a checkpoint needs, at least.
    self._periodic = self._manager(PERIODIC_DIR, max_to_keep or None, async_save, read_only)
    self._preemption = self._manager(PREEMPTION_DIR, preemption_to_keep, async_save, read_only)
    self._write_reports = None
    if not read_only:
      # A failed asynchronous write echoes from orbax's threads while training goes on: these
      # filters stay for the writer's lifetime. Both drop only those echoes of a failure that
      # ``save`` / ``wait_until_finished`` / ``close`` raise themselves.
      self._write_reports = (orbax_reports.OrbaxReports(disk_full=True),
                             orbax_reports.AbandonedWriteReports())
      for reports in self._write_reports:
        reports.add()

  def _manager(self, name, keep, async_save, read_only) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        # What orbax would force for a reader anyway, set here so that it does not warn.
        max_to_keep=None if read_only else keep, save_interval_steps=0 if read_only else 1,
        create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save,
        # Left False on purpose: a reader (evaluation) must not delete a writer's tmp dirs.
        cleanup_tmp_directories=False)
    handlers = {_STATE: _state_handler(),
                _CHECKSUMS: ocp.JsonCheckpointHandler(filename=_CHECKSUM_FILE)}
    with orbax_reports.filtered(orbax_reports.OrbaxReports(read_only_notice=True)):
      return ocp.CheckpointManager(os.path.join(self.workdir, name), options=options,
                                   item_handlers=handlers)

  def _manager_for(self, periodic: bool) -> ocp.CheckpointManager:
    return self._periodic if periodic else self._preemption

  # ---------------------------------------------------------------------------- saving
  def save(self, step: int, state, *, periodic: bool) -> bool:
    """Writes ``state`` as checkpoint ``step`` (asynchronously unless ``async_save=False``).

    A step already present is not written again: in the periodic directory for a periodic save,
    in either directory for a preemption save (a periodic snapshot already covers it).

    Returns:
      Whether a checkpoint was written.
    """
    step = int(step)
    if step < 0:
      raise ValueError(f'step={step}; checkpoint steps are >= 0.')
    mngr = self._manager_for(periodic)
    if step in mngr.all_steps():
      logging.warning('Not saving step %d again: %s exists.', step, self._directory(mngr, step))
      return False
    if not periodic and step in self._periodic.all_steps():
      return False  # The periodic snapshot of this step serves for resuming as well.
    checksums = {'format': _CHECKSUM_FORMAT, 'leaves': leaf_checksums(state)}
    self._state_bytes = sum(int(getattr(x, 'nbytes', 0)) for x in jax.tree.leaves(state))
    args = ocp.args.Composite(**{_STATE: ocp.args.PyTreeSave(state),
                                 _CHECKSUMS: ocp.args.JsonSave(checksums)})
    with self._writing(mngr, step):
      # force: a step below the newest one is legitimate after falling back past a bad one.
      return mngr.save(step, args=args, force=True)

  def wait_until_finished(self) -> None:
    """Blocks until every asynchronous save has been renamed into place.

    Raises:
      files.DiskFullError: a save found the disk full (module docstring).
    """
    for mngr in (self._periodic, self._preemption):
      with self._writing(mngr):
        mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the managers.

    Raises:
      files.DiskFullError: a save found the disk full, unless already raised.
    """
    try:
      for mngr in (self._periodic, self._preemption):
        with self._writing(mngr):
          mngr.close()
    finally:
      # After a full disk, orbax's abandoned writes report whenever they end or are collected,
      # at exit at the latest: the filters then stay for the life of the process.
      if self._write_reports is not None and not self._disk_full_reported:
        for reports in self._write_reports:
          reports.remove()
        self._write_reports = None

  @contextlib.contextmanager
  def _writing(self, mngr: ocp.CheckpointManager, step: Optional[int] = None):
    """Turns a full disk met within the block (by the save of ``step``, or by an earlier
    asynchronous save of ``mngr`` that the block waits for) into one ``files.DiskFullError``;
    once raised, the same failure met again (orbax re-raises it from every later wait) is
    passed over."""
    try:
      yield
    except Exception as e:  # orbax and tensorstore raise ValueErrors, OSErrors, ...
      if not files.is_disk_full(e):
        raise
      if self._disk_full_reported:
        logging.debug('The full disk, met again: %s', io_errors.reason(e))
        return
      self._disk_full_reported = True
      raise self._disk_full(mngr, step, e) from None

  def _disk_full(self, mngr: ocp.CheckpointManager, step: Optional[int],
                 error: BaseException) -> files.DiskFullError:
    """The ``files.DiskFullError`` of a save that failed for space (``_writing``), once every
    write in flight has ended; removes the partial checkpoints (single-process runs: a
    multi-host run's other hosts may still be writing theirs)."""
    for other in (self._periodic, self._preemption):
      try:
        other.wait_until_finished()
      except Exception as e:  # The same full disk, seen by the other directory's writes.
        logging.debug('Also failed while the disk was full: %s', io_errors.reason(e))
    # A failed save's wait returns at its first error, while its other write threads may still
    # be failing (and writing): they end before the partial files go.
    _join_save_threads(timeout_secs=60.)
    partial = []
    for directory in (self._periodic.directory, self._preemption.directory):
      for path in epath.Path(directory).glob(f'*{_TMP_MARK}*'):
        partial.append(path)
    failed = sorted({int(p.name.split('.')[0]) for p in partial if p.name.split('.')[0].isdigit()})
    if partial and jax.process_count() == 1:
      for path in partial:
        path.rmtree(missing_ok=True)
      kept = 'the partial files were removed'
    elif partial:
      kept = f'partial files remain in {", ".join(str(p) for p in partial[:_MAX_LISTED])}'
    else:
      kept = 'no partial files remain'
    complete = [(s, m) for m in (self._periodic, self._preemption) for s in self._steps_of(m)]
    needed = self._state_bytes  # The arrays alone; a complete checkpoint's files say more.
    if complete:
      last, last_mngr = max(complete, key=lambda c: c[0])
      last_dir = self._directory(last_mngr, last)
      needed = files.directory_bytes(last_dir) or needed
      lost = (f'Nothing was lost: the last complete checkpoint, step {last} ({last_dir}), is '
              'intact')
      resume = f'resume from step {last}'
    else:
      lost, resume = 'No checkpoint was complete yet', 'start again'
    if not failed and step is not None:
      failed = [step]
    what = ('a checkpoint' if not failed else f'checkpoint {failed[0]}' if len(failed) == 1 else
            f'checkpoints {", ".join(str(s) for s in failed)}')
    logging.debug('The full disk, as orbax reported it: %s', io_errors.reason(error))
    return files.DiskFullError(
        f'No space left on device: {what} could not be written under {self.workdir} '
        f'({files.space_text(mngr.directory, needed)} for one checkpoint). {lost}; {kept}. '
        'Free some space (or lower training.max_to_keep, or use a --workdir on a larger disk), '
        f'then run the same command again to {resume}.')

  def _steps_of(self, mngr: ocp.CheckpointManager) -> List[int]:
    """The complete checkpoints of ``mngr`` on disk; none where the listing fails."""
    try:
      mngr.reload()
      return list(mngr.all_steps())
    except Exception as e:  # A directory that cannot even be listed holds nothing known.
      logging.debug('Cannot list %s: %s', mngr.directory, io_errors.reason(e))
      return []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # ---------------------------------------------------------------------------- listing
  def periodic_steps(self) -> List[int]:
    """Steps of the periodic snapshots on disk, ascending (re-read: a trainer may add more)."""
    self._periodic.reload()
    return sorted(self._periodic.all_steps())

  def preemption_steps(self) -> List[int]:
    """Steps of the preemption checkpoints on disk, ascending."""
    self._preemption.reload()
    return sorted(self._preemption.all_steps())

  def _directory(self, mngr, step) -> str:
    return os.path.join(os.fspath(mngr.directory), str(step))

  # ---------------------------------------------------------------------------- restoring
  def _read(self, mngr: ocp.CheckpointManager, step: int, abstract_state, partial: bool):
    """Restores one checkpoint (or, ``partial``, the items of it that ``abstract_state`` names)
    after checking its structure; verifies checksums if present.

    A failed read is tried again (module docstring): up to ``READ_ATTEMPTS`` times in all while
    its errors may be transient, waiting ``RETRY_DELAY_SECS``, then twice as long each time;
    damage is concluded only when a second read finds damage too. Each retry is one WARNING.

    Raises:
      StructureMismatchError: the checkpoint holds a different tree.
      CheckpointIOError: I/O errors that may be transient, on every try.
      CorruptCheckpointError: damage (unreadable, missing or wrong on disk), read twice.
    """
    where = self._directory(mngr, step)
    damage, start, delay = None, time.monotonic(), RETRY_DELAY_SECS
    for attempt in range(1, READ_ATTEMPTS + 1):
      try:
        return self._read_once(mngr, step, abstract_state, partial)
      except CheckpointIOError as e:
        error = e
      except CorruptCheckpointError as e:
        if damage is not None:
          raise  # Damage read twice: proof enough.
        damage = error = e
      if attempt == READ_ATTEMPTS:
        break
      logging.warning('Reading checkpoint %s failed (%s); trying again in %.1f s (%d of %d '
                      'tries).', where, str(error)[len(where) + 2:], delay, attempt + 1,
                      READ_ATTEMPTS)
      time.sleep(delay)
      delay *= 2
    raise CheckpointIOError(f'{error} (on each of {READ_ATTEMPTS} tries over '
                            f'{time.monotonic() - start:.0f} s)')

  def _read_once(self, mngr: ocp.CheckpointManager, step: int, abstract_state, partial: bool):
    where = self._directory(mngr, step)
    if partial and not isinstance(abstract_state, dict):
      raise TypeError('A partial restore takes a dict of the stored items to read, e.g. '
                      f'{{{PARAMS_EMA!r}: abstract_params}}; got {type(abstract_state).__name__}.')
    try:
      metadata = mngr.item_metadata(step)[_STATE]
      found = None if metadata is None else leaf_specs(metadata.tree)
    except Exception as e:  # Orbax / tensorstore / json raise many types for a bad file.
      raise _read_failure(where, 'cannot read metadata', e) from None
    if found is None:
      raise CorruptCheckpointError(f'{where}: its {_STATE}/_METADATA file is missing')
    if partial:  # The items not asked for are not read: their structure does not matter.
      found = {k: v for k, v in found.items() if k.split('.', 1)[0] in abstract_state}
    check_structure(leaf_specs(abstract_state), found, f'Checkpoint {where}')
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(**{_STATE: ocp.args.PyTreeRestore(
          abstract_state, ocp.checkpoint_utils.construct_restore_args(abstract_state),
          partial_restore=partial)}))[_STATE]
    except Exception as e:
      raise _read_failure(where, 'cannot read arrays', e) from None
    _verify(restored, where)
    return restored

  def restore(self, step: int, abstract_state, *, partial: bool = False):
    """The checkpoint at ``step`` (periodic directory first, then preemption), on the shardings
    of ``abstract_state``.

    Args:
      step: a step listed by ``periodic_steps`` or ``preemption_steps``.
      abstract_state: the expected ``TrainState`` with ``jax.ShapeDtypeStruct`` leaves carrying
        ``.sharding`` (``jax.eval_shape`` + the mesh's replicated sharding); arrays also work.
      partial: ``abstract_state`` is a dict of some of the stored items (``{'params_ema':
        ...}``); only those are read, checked and returned, as a dict.
    Raises:
      KeyError: no checkpoint at ``step``.
      StructureMismatchError, CorruptCheckpointError: as ``restore_latest``, without fallback.
    """
    step = int(step)
    for mngr in (self._periodic, self._preemption):
      mngr.reload()
      if step in mngr.all_steps():
        return self._read(mngr, step, abstract_state, partial)
    raise KeyError(f'No checkpoint at step {step} under {self.workdir}; periodic steps: '
                   f'{self.periodic_steps()}, preemption steps: {self.preemption_steps()}.')

  def restore_params_ema(self, step: int, abstract_params):
    """The EMA weights alone of the checkpoint at ``step`` (a partial ``restore``), placed as
    ``abstract_params`` (the network's parameter tree, ``jax.ShapeDtypeStruct`` leaves with
    shardings) says; raises as ``restore``."""
    return self.restore(step, {PARAMS_EMA: abstract_params}, partial=True)[PARAMS_EMA]

  def restore_latest(self, abstract_state, *,
                     partial: bool = False) -> Tuple[Optional[Any], int]:
    """The newest readable checkpoint over both directories, or ``(None, 0)`` if there is none.

    Reads are retried as ``_read`` says. A checkpoint proved damaged is logged as a one-line
    WARNING and the next newest is tried. Once a readable one is found, and unless
    ``read_only``, the damaged newer ones are moved aside to ``<step>.corrupt`` (module
    docstring), so they neither hold a ``max_to_keep`` slot nor block the save of the same step
    when training reaches it again. A checkpoint that only met I/O errors that may pass stops a
    writer (``CheckpointIOError``), which would otherwise train again from an older one; a
    reader skips it as it skips damage. A reader that loads an older step than the newest says
    so in a WARNING naming the steps skipped and why. ``partial`` as for ``restore``.

    Returns:
      ``(state, step)``, the state placed on the shardings of ``abstract_state``.
    Raises:
      StructureMismatchError: a checkpoint was written for another config (not a fallback case).
      CheckpointIOError: (writer only) the storage kept failing on a newer checkpoint than any
        readable one; nothing was moved.
      CorruptCheckpointError: checkpoints exist but none is readable. Starting from scratch
        would overwrite the run, so this is left to the user.
    """
    candidates = []
    for mngr in (self._periodic, self._preemption):
      mngr.reload()
      candidates += [(step, mngr) for step in mngr.all_steps()]
    # Newest first; at equal steps the periodic copy (listed first) wins: the sort is stable.
    candidates.sort(key=lambda c: -c[0])
    failures = []
    for step, mngr in candidates:
      try:
        state = self._read(mngr, step, abstract_state, partial)
      except CheckpointIOError as e:
        if not self.read_only:
          raise CheckpointIOError(
              f'Cannot read checkpoint {e}. It may well be intact: nothing was moved or '
              'deleted. Run the same command again once the storage answers; if that file is '
              f'lost for good, move {self._directory(mngr, step)} aside to resume from the '
              'checkpoint before it.') from None
        logging.warning('Skipping checkpoint %s', e)
        failures.append((step, mngr, e))
        continue
      except CorruptCheckpointError as e:
        logging.warning('Skipping unreadable checkpoint %s', e)
        failures.append((step, mngr, e))
        continue
      # Only now that a good one is found: were none readable, renaming them all would let the
      # next run start from scratch silently.
      for bad_step, bad_mngr, e in failures:
        if isinstance(e, CheckpointIOError):
          continue  # Not proved damaged (a reader's case: it moves nothing anyway).
        moved = self._quarantine(bad_mngr, bad_step)
        if moved:
          logging.warning('Moved the unreadable checkpoint aside to %s (kept for inspection; '
                          'delete it when done).', moved)
      if failures and self.read_only:
        skipped = '; '.join(f'step {s} ({str(e)[len(self._directory(m, s)) + 2:]})'
                            for s, m, e in failures)
        logging.warning('Loaded step %d from %s, not the newest checkpoint; skipped, and left '
                        'as they are: %s', step, self._directory(mngr, step), skipped)
      elif failures:
        logging.warning('Resumed from the older checkpoint %s.', self._directory(mngr, step))
      return state, step
    if failures:
      raise CorruptCheckpointError(
          f'None of the {len(failures)} checkpoints under {self.workdir}/{{{PERIODIC_DIR},'
          f'{PREEMPTION_DIR}}} can be read:\n  ' + '\n  '.join(str(e) for *_, e in failures) +
          '\nThey were left untouched. To start this run from scratch, move both directories '
          'aside (or pass a new --workdir).')
    return None, 0

  def _quarantine(self, mngr: ocp.CheckpointManager, step: int) -> Optional[str]:
    """Renames damaged checkpoint ``step`` to ``<step>.corrupt[-k]``; returns the new path.

    Does nothing (returns None) when ``read_only``. Process 0 renames, the others wait for it:
    the checkpoint directory is shared by every host.
    """
    if self.read_only:
      return None
    source = epath.Path(self._directory(mngr, step))
    target = source.parent / f'{step}{QUARANTINE_SUFFIX}'
    k = 1
    while target.exists():
      k += 1
      target = source.parent / f'{step}{QUARANTINE_SUFFIX}-{k}'
    multihost = jax.process_count() > 1
    if multihost:  # Every host has chosen the same free name before process 0 takes it.
      multihost_utils.sync_global_devices(f'score_sde quarantine name {source}')
    if jax.process_index() == 0:
      source.rename(target)
    if multihost:
      multihost_utils.sync_global_devices(f'score_sde quarantine {source}')
    mngr.reload()
    return os.fspath(target)


def restore_params_ema(workdir: str, abstract_params, what: str, step: Optional[int] = None):
  """``(params_ema, step)`` of the newest readable checkpoint of ``workdir``, or of checkpoint
  ``step`` (read-only: nothing is renamed or written), placed as ``abstract_params`` says. Only
  the EMA weights are read and checked (a partial restore; module docstring).

  Args:
    workdir: a run directory (or a classifier's).
    abstract_params: the network's parameter tree with ``jax.ShapeDtypeStruct`` leaves carrying
      their shardings (``training.restore.abstract_params_ema``).
    what: the network, as messages name it (``'score model'``, ``'classifier'``).
    step: a checkpoint step; None: the newest readable one.
  Raises:
    errors.WorkdirError: when ``workdir`` holds no readable checkpoint of ``what``, or none at
      ``step`` (naming the steps it holds).
    StructureMismatchError: the checkpoint's EMA weights are another network's than
      ``abstract_params``'s.
    CorruptCheckpointError: checkpoint ``step`` is damaged where the EMA weights are read.
  """
  wanted = {PARAMS_EMA: abstract_params}
  with Checkpointer(workdir, read_only=True) as ckpt:
    if step is None:
      tree, step = ckpt.restore_latest(wanted, partial=True)
    else:
      try:
        tree = ckpt.restore(step, wanted, partial=True)
      except KeyError as e:
        raise errors.WorkdirError(e.args[0]) from None
  if tree is None:
    raise errors.WorkdirError(f'{workdir} holds no readable checkpoint of the {what}.')
  return tree[PARAMS_EMA], step
