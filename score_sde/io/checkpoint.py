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

A writer (training) moves each damaged checkpoint aside, renaming ``<step>`` to
``<step>.corrupt`` (``<step>.corrupt-2``, ... if that exists), never deleting it: orbax lists only
integer-named directories, so the renamed one no longer counts towards ``max_to_keep``, and the
step that is recomputed after the fallback is saved again. A reader (evaluation,
``read_only=True``) leaves the directories as they are and skips what it cannot read.

Replicated leaves smaller than ``MIN_REPLICA_PARALLEL_SLICE_BYTES`` per replica are written by one
replica (``_state_handler``, with a type registry of its own: orbax's process-wide one, which a
user's own checkpoints in the same process go through, is left as it is). orbax's default on CPU
and TPU splits every replicated leaf over its replicas, compiling one slicing program per leaf,
replica and shape on a process's first save: measured, 14 s for a 40-leaf tree of biases on 8
CPU devices, against 0.03 s with this setting, for leaves whose bytes take microseconds to
write. Large leaves are still written cooperatively; the files are the same either way.
"""
import contextlib
import gc
import json
import os
import sys
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

PERIODIC_DIR = 'checkpoints'
PREEMPTION_DIR = 'checkpoints-meta'
_STATE = 'state'
_CHECKSUMS = 'checksums'
_CHECKSUM_FORMAT = 1
_CHECKSUM_FILE = 'crc32.json'
_MAX_LISTED = 8  # Paths named in one error message.
_MAX_REASON_CHARS = 160  # tensorstore errors print their whole spec: keep the first line only.
QUARANTINE_SUFFIX = '.corrupt'
MIN_REPLICA_PARALLEL_SLICE_BYTES = 1 << 20


class _ArrayHandler(ocp.type_handlers.ArrayHandler):
  """orbax's ``jax.Array`` handler, replica-parallel only for slices of at least
  ``MIN_REPLICA_PARALLEL_SLICE_BYTES`` (module docstring); whether to use replica-parallel at
  all stays orbax's platform default."""

  def __init__(self):
    super().__init__(min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES)


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """orbax's pytree handler, with ``_ArrayHandler`` for ``jax.Array`` leaves and orbax's own
  handlers for the other leaf types, in a registry of this handler's own. Its state files are
  those of orbax's ``StandardCheckpointHandler`` over the same ``_ArrayHandler``: either reads
  what the other writes."""
  handlers = ocp.type_handlers
  scalar = handlers.ScalarHandler()
  registry = handlers.create_type_handler_registry(
      (int, scalar), (float, scalar), (bytes, scalar), (np.number, scalar),
      (np.ndarray, handlers.NumpyHandler()), (jax.Array, _ArrayHandler()),
      (str, handlers.StringHandler()))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class CorruptCheckpointError(errors.UserError, RuntimeError):
  """A checkpoint exists but cannot be read back intact."""


class StructureMismatchError(errors.UserError, ValueError):
  """A checkpoint holds a different tree (names, shapes or dtypes) than the one asked for."""


@contextlib.contextmanager
def _quiet_closed_loop_callbacks():
  """Silences one harmless report of orbax reading a damaged checkpoint.

  orbax runs the tensorstore reads of a restore on an asyncio loop that it closes as soon as one
  read fails; the reads still in flight then report ``RuntimeError('Event loop is closed')``
  through ``sys.unraisablehook``: one traceback each, hundreds per damaged checkpoint, after
  the one-line warning that says what happened. Within this block those, and only those, are
  counted (debug log) instead of printed; anything else goes to the previous hook. The hook is
  the process's, so the block is kept short: one checkpoint read.
  """
  previous = sys.unraisablehook
  silenced = 0

  def hook(unraisable):
    nonlocal silenced
    if (isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == 'Event loop is closed'):
      silenced += 1
    else:
      previous(unraisable)

  sys.unraisablehook = hook
  failed = False
  try:
    yield
  except BaseException:
    failed = True
    raise
  finally:
    gc.collect()  # Reports still pending are made while the hook filters them.
    if failed or silenced:
      # Reads still in flight on tensorstore's threads report when they end, later on a loaded
      # machine: keep filtering until none has come for 0.2 s (2 s at most, failed reads only).
      last, quiet_since, deadline = silenced, time.monotonic(), time.monotonic() + 2.
      while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.2:
        time.sleep(0.02)
        gc.collect()
        if silenced != last:
          last, quiet_since = silenced, time.monotonic()
    sys.unraisablehook = previous
    if silenced:
      logging.debug('Silenced %d "Event loop is closed" reports of a failed read.', silenced)


def _reason(e: BaseException) -> str:
  """``'TypeName: first line of the message'``, at most ``_MAX_REASON_CHARS`` long.

  The full text (tensorstore adds ~60 lines of spec) goes to debug logging.
  """
  logging.debug('Checkpoint read error in full: %r', e)
  lines = str(e).strip().splitlines()
  first = lines[0] if lines else ''
  if len(first) > _MAX_REASON_CHARS:
    first = first[:_MAX_REASON_CHARS - 3] + '...'
  return f'{type(e).__name__}: {first}'


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


def _verify(restored, where: str) -> None:
  """Compares the restored leaves' CRC-32s with those saved next to them (if any)."""
  path = epath.Path(where) / _CHECKSUMS / _CHECKSUM_FILE
  if not path.exists():
    logging.warning('%s has no checksums; restored without verifying them.', where)
    return
  try:
    stored = json.loads(path.read_text())['leaves']
  except Exception as e:
    raise CorruptCheckpointError(f'{where}: unreadable checksums ({_reason(e)})')
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
    self._periodic = self._manager(PERIODIC_DIR, max_to_keep or None, async_save, read_only)
    self._preemption = self._manager(PREEMPTION_DIR, preemption_to_keep, async_save, read_only)

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
    args = ocp.args.Composite(**{_STATE: ocp.args.PyTreeSave(state),
                                 _CHECKSUMS: ocp.args.JsonSave(checksums)})
    # force: a step below the newest one is legitimate after falling back past a bad checkpoint.
    return mngr.save(step, args=args, force=True)

  def wait_until_finished(self) -> None:
    """Blocks until every asynchronous save has been renamed into place."""
    self._periodic.wait_until_finished()
    self._preemption.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the managers."""
    self._periodic.close()
    self._preemption.close()

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
  def _read(self, mngr: ocp.CheckpointManager, step: int, abstract_state):
    """Restores one checkpoint after checking its structure; verifies checksums if present.

    Raises:
      StructureMismatchError: the checkpoint holds a different tree.
      CorruptCheckpointError: anything unreadable, missing or wrong on disk.
    """
    with _quiet_closed_loop_callbacks():
      return self._read_unquiet(mngr, step, abstract_state)

  def _read_unquiet(self, mngr: ocp.CheckpointManager, step: int, abstract_state):
    where = self._directory(mngr, step)
    try:
      metadata = mngr.item_metadata(step)[_STATE]
      found = None if metadata is None else leaf_specs(metadata.tree)
    except Exception as e:  # Orbax / tensorstore / json raise many types for a bad file.
      raise CorruptCheckpointError(f'{where}: cannot read metadata ({_reason(e)})')
    if found is None:
      raise CorruptCheckpointError(f'{where}: its {_STATE}/_METADATA file is missing')
    check_structure(leaf_specs(abstract_state), found, f'Checkpoint {where}')
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(**{_STATE: ocp.args.PyTreeRestore(
          abstract_state, ocp.checkpoint_utils.construct_restore_args(abstract_state))}))[_STATE]
    except Exception as e:
      raise CorruptCheckpointError(f'{where}: cannot read arrays ({_reason(e)})')
    _verify(restored, where)
    return restored

  def restore(self, step: int, abstract_state):
    """The checkpoint at ``step`` (periodic directory first, then preemption), on the shardings
    of ``abstract_state``.

    Args:
      step: a step listed by ``periodic_steps`` or ``preemption_steps``.
      abstract_state: the expected ``TrainState`` with ``jax.ShapeDtypeStruct`` leaves carrying
        ``.sharding`` (``jax.eval_shape`` + the mesh's replicated sharding); arrays also work.
    Raises:
      KeyError: no checkpoint at ``step``.
      StructureMismatchError, CorruptCheckpointError: as ``restore_latest``, without fallback.
    """
    step = int(step)
    for mngr in (self._periodic, self._preemption):
      mngr.reload()
      if step in mngr.all_steps():
        return self._read(mngr, step, abstract_state)
    raise KeyError(f'No checkpoint at step {step} under {self.workdir}; periodic steps: '
                   f'{self.periodic_steps()}, preemption steps: {self.preemption_steps()}.')

  def restore_latest(self, abstract_state) -> Tuple[Optional[Any], int]:
    """The newest readable checkpoint over both directories, or ``(None, 0)`` if there is none.

    A checkpoint that cannot be read intact is logged as a one-line WARNING and the next newest
    is tried. Once a readable one is found, and unless ``read_only``, the damaged newer ones
    are moved aside to ``<step>.corrupt`` (module docstring), so they neither hold a
    ``max_to_keep`` slot nor block the save of the same step when training reaches it again.

    Returns:
      ``(state, step)``, the state placed on the shardings of ``abstract_state``.
    Raises:
      StructureMismatchError: a checkpoint was written for another config (not a fallback case).
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
        state = self._read(mngr, step, abstract_state)
      except CorruptCheckpointError as e:
        logging.warning('Skipping unreadable checkpoint %s', e)
        failures.append((step, mngr, e))
        continue
      # Only now that a good one is found: were none readable, renaming them all would let the
      # next run start from scratch silently.
      for bad_step, bad_mngr, _ in failures:
        moved = self._quarantine(bad_mngr, bad_step)
        if moved:
          logging.warning('Moved the unreadable checkpoint aside to %s (kept for inspection; '
                          'delete it when done).', moved)
      if failures:
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


def restore_params_ema(workdir: str, abstract_state, what: str, step: Optional[int] = None):
  """``(params_ema, step)`` of the newest readable checkpoint of ``workdir``, or of checkpoint
  ``step`` (read-only: nothing is renamed or written), placed as ``abstract_state`` says.

  Args:
    workdir: a run directory (or a classifier's).
    abstract_state: the expected state with ``jax.ShapeDtypeStruct`` leaves carrying their
      shardings (``training.train_state.abstract_state``).
    what: the network, as messages name it (``'score model'``, ``'classifier'``).
    step: a checkpoint step; None: the newest readable one.
  Raises:
    errors.WorkdirError: when ``workdir`` holds no readable checkpoint of ``what``, or none at
      ``step`` (naming the steps it holds).
    StructureMismatchError: the checkpoint holds another network than ``abstract_state``'s.
    CorruptCheckpointError: checkpoint ``step`` is damaged.
  """
  with Checkpointer(workdir, read_only=True) as ckpt:
    if step is None:
      state, step = ckpt.restore_latest(abstract_state)
    else:
      try:
        state = ckpt.restore(step, abstract_state)
      except KeyError as e:
        raise errors.WorkdirError(e.args[0]) from None
  if state is None:
    raise errors.WorkdirError(f'{workdir} holds no readable checkpoint of the {what}.')
  return state.params_ema, step
