"""Storage faults that lose nothing: transient read errors, damage, a full disk.

Protects: an I/O error that passes (one EIO on any file of the newest checkpoint, as a network
file system gives) costs a retry, not the checkpoint: the same step is restored and nothing is
renamed; one that persists is not taken for damage (a writer stops, moving nothing; a reader
skips it saying so); damage proved by a second read (a flipped byte) is still moved aside; a
reader that loads an older step says which step it skipped and why; a full disk stops training
with one message (the filesystem, the space needed and free, the intact last checkpoint), exit
status 2 and no traceback, and that checkpoint restores. Nothing else of orbax's is printed:
neither a traceback for each read still running when another failed nor its notice that a
reader's directory is read only.

The faults are injected below Python, where tensorstore's C++ reads the arrays: ``fault_shim.c``
(an LD_PRELOAD library, built here with gcc) fails the first N opens, reads or writes of the
paths matching a pattern, in a child process.
"""
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import pytest
from etils import epath

import child_env
import loop_config
from test_checkpoint import _flip_one_byte, abstract, toy_state
from score_sde import optim
from score_sde.common import errors, parallel
from score_sde.io import checkpoint, files
from score_sde.models import utils as mutils
from score_sde.training import train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = ROOT / 'tests'
EIO, ENOSPC = 5, 28


@pytest.fixture(scope='module')
def shim(tmp_path_factory):
  """The path of ``fault_shim.so``, compiled from ``tests/fault_shim.c``."""
  gcc = shutil.which('gcc')
  if gcc is None:
    pytest.skip('gcc is not installed: the LD_PRELOAD fault injector cannot be built')
  target = tmp_path_factory.mktemp('shim') / 'fault_shim.so'
  subprocess.run([gcc, '-shared', '-fPIC', '-O1', '-o', str(target), str(TESTS / 'fault_shim.c'),
                  '-ldl'], check=True, capture_output=True)
  return target


def _fault_env(shim, log, op, pattern, count=1, code=EIO, devices=1):
  env = child_env.xla_env(devices)
  env.update(LD_PRELOAD=str(shim), SCORE_SDE_FAULT_OP=op, SCORE_SDE_FAULT_PATTERN=pattern,
             SCORE_SDE_FAULT_COUNT=str(count), SCORE_SDE_FAULT_ERRNO=str(code),
             SCORE_SDE_FAULT_LOG=str(log))
  return env


@pytest.fixture(scope='module')
def states():
  return {seed: toy_state(seed) for seed in range(2)}


@pytest.fixture(scope='module')
def saved(tmp_path_factory, states):
  """A workdir with snapshot 2 (``states[0]``) and the newest checkpoint, preemption 3
  (``states[1]``); each test copies it."""
  workdir = tmp_path_factory.mktemp('saved') / 'run'
  with checkpoint.Checkpointer(workdir, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    ckpt.save(3, states[1], periodic=False)
  return workdir


def _tree(workdir):
  return sorted(str(p.relative_to(workdir)) for p in pathlib.Path(workdir).rglob('*'))


# Restores the newest checkpoint as training (a writer) or as score_sde.load / --mode sample (a
# reader: restore_params_ema) do; prints the step and the CRC-32s of what was restored.
_RESTORE = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {tests!r})
    import jax
    from score_sde.io import checkpoint
    from test_checkpoint import abstract, toy_state

    checkpoint.RETRY_DELAY_SECS = 0.05  # What is tested is the tries, not the waiting.
    shapes = abstract(jax.eval_shape(lambda: toy_state(0)))
    results = []
    for mode in {modes!r}:
      try:
        if mode == 'reader':
          tree, step = checkpoint.restore_params_ema({workdir!r}, shapes.params_ema,
                                                     'score model')
        else:
          with checkpoint.Checkpointer({workdir!r}) as ckpt:
            tree, step = ckpt.restore_latest(shapes)
        results.append({{'step': int(step), 'sums': checkpoint.leaf_checksums(tree)}})
      except checkpoint.CorruptCheckpointError as e:
        results.append({{'error': type(e).__name__, 'message': str(e),
                        'user_error': isinstance(e, checkpoint.errors.UserError)}})
    print('RESULTS ' + json.dumps(results))
''')


def _restore_in_child(workdir, env, modes):
  """``(results, stderr)`` of ``_RESTORE`` run in a child, whose stderr must hold no traceback
  (tensorstore prints one for each read still running when orbax's event loop closes after a
  failed one, unless the read's handler waits for them: ``checkpoint._ReadsEndTogether``)."""
  script = _RESTORE.format(tests=str(TESTS), workdir=str(workdir), modes=list(modes))
  run = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
  assert run.returncode == 0, run.stderr[-3000:]
  for noise in ('Traceback', 'Event loop is closed'):
    assert noise not in run.stderr, run.stderr[-3000:]
  line = [l for l in run.stdout.splitlines() if l.startswith('RESULTS ')][-1]
  return json.loads(line[len('RESULTS '):]), run.stderr


@pytest.mark.parametrize('op,pattern,mode', [
    ('open', 'checkpoints-meta/3/state/manifest.ocdbt', 'writer'),
    ('read', 'checkpoints-meta/3/checksums/crc32.json', 'writer'),
    ('read', 'checkpoints-meta/3/state/d/', 'reader'),
], ids=['open-manifest-train', 'read-crc32-train', 'read-arrays-load'])
def test_one_transient_read_error_restores_the_same_step(saved, states, shim, tmp_path, op,
                                                         pattern, mode):
  """One EIO on the newest checkpoint's OCDBT manifest, its checksums or an array data file
  (opened or read by tensorstore's C++ or by Python): the read is tried again after one
  WARNING, step 3 is restored bit for bit (its CRC-32s), and no directory is renamed."""
  workdir = tmp_path / 'run'
  shutil.copytree(saved, workdir)
  before = _tree(workdir)
  log = tmp_path / 'faults.log'
  (result,), stderr = _restore_in_child(workdir, _fault_env(shim, log, op, pattern), [mode])
  injected = log.read_text().splitlines()
  assert len(injected) == 1 and pattern in injected[0], injected
  assert result.get('step') == 3, (result, stderr[-3000:])
  expected = states[1] if mode == 'writer' else states[1].params_ema
  assert result['sums'] == checkpoint.leaf_checksums(expected)
  assert _tree(workdir) == before
  retries = [l for l in stderr.splitlines() if 'trying again' in l]
  assert len(retries) == 1 and 'Input/output error' in retries[0], stderr[-3000:]
  assert 'Given directory is read only' not in stderr


def test_persistent_io_errors_are_not_taken_for_damage(saved, states, shim, tmp_path):
  """The manifest of checkpoint 3 fails on every read: after READ_ATTEMPTS tries a reader
  (score_sde.load, --mode sample) loads step 2 with a WARNING that names step 3 and the I/O
  error; a writer (training) stops with a CheckpointIOError (a UserError) saying nothing was
  moved, rather than train again from step 2; nothing is renamed either way."""
  workdir = tmp_path / 'run'
  shutil.copytree(saved, workdir)
  before = _tree(workdir)
  log = tmp_path / 'faults.log'
  env = _fault_env(shim, log, 'read', 'checkpoints-meta/3/state/manifest.ocdbt', count=-1)
  (reader, writer), stderr = _restore_in_child(workdir, env, ['reader', 'writer'])
  assert len(log.read_text().splitlines()) >= 2 * checkpoint.READ_ATTEMPTS
  assert reader.get('step') == 2, reader
  assert reader['sums'] == checkpoint.leaf_checksums(states[0].params_ema)
  loaded = [l for l in stderr.splitlines() if 'not the newest checkpoint' in l]
  assert len(loaded) == 1, stderr[-3000:]
  assert 'step 3 (' in loaded[0] and 'Input/output error' in loaded[0], loaded
  assert writer.get('error') == 'CheckpointIOError', writer
  assert writer['user_error']
  assert 'nothing was moved' in writer['message']
  assert str(workdir / 'checkpoints-meta' / '3') in writer['message']
  assert _tree(workdir) == before


def test_damage_is_read_twice_then_moved_aside_and_readers_say_what_they_skip(
    saved, states, tmp_path, caplog):
  """A flipped byte (a checksum mismatch) is damage: read a second time to rule out a passing
  fault, then a reader loads step 2 with a WARNING naming step 3 and the mismatch (moving
  nothing), and a writer moves it aside to 3.corrupt and restores step 2 intact."""
  workdir = tmp_path / 'run'
  shutil.copytree(saved, workdir)
  bad = workdir / 'checkpoints-meta' / '3'
  _flip_one_byte(bad)
  monkey = pytest.MonkeyPatch()
  monkey.setattr(checkpoint, 'RETRY_DELAY_SECS', 0.01)
  try:
    with caplog.at_level(logging.WARNING):
      with checkpoint.Checkpointer(workdir, read_only=True) as reader:
        _, step = reader.restore_latest(abstract(states[0]))
      assert step == 2 and bad.is_dir()
      loaded = [r.getMessage() for r in caplog.records
                if 'not the newest checkpoint' in r.getMessage()]
      assert len(loaded) == 1 and 'step 3 (checksum mismatch' in loaded[0], loaded
      caplog.clear()
      with checkpoint.Checkpointer(workdir, async_save=False) as writer:
        restored, step = writer.restore_latest(abstract(states[0]))
  finally:
    monkey.undo()
  assert step == 2
  assert checkpoint.leaf_checksums(restored) == checkpoint.leaf_checksums(states[0])
  assert not bad.exists() and (workdir / 'checkpoints-meta' / '3.corrupt').is_dir()
  retries = [r.getMessage() for r in caplog.records if 'trying again' in r.getMessage()]
  assert len(retries) == 1 and 'checksum mismatch' in retries[0], retries


def test_read_only_notice_is_not_printed_and_the_filter_goes(saved, states, caplog):
  """orbax's 'Given directory is read only' WARNING (one per directory, two per load) is
  dropped while a reader opens its directories, and the filter is gone afterwards: absl's
  logger keeps the filters it had."""
  absl_logger = logging.getLogger('absl')
  filters = list(absl_logger.filters)
  with caplog.at_level(logging.INFO):
    with checkpoint.Checkpointer(saved, read_only=True) as reader:
      assert reader.restore_latest(abstract(states[0]))[1] == 3
  assert not [r for r in caplog.records if 'read only' in r.getMessage()]
  assert absl_logger.filters == filters


def _mount_tmpfs(directory, size):
  """Mounts a tmpfs of ``size`` at ``directory``; whether that worked (root only)."""
  if not sys.platform.startswith('linux') or shutil.which('mount') is None:
    return False
  run = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(directory)],
                       capture_output=True)
  return run.returncode == 0


def test_full_disk_stops_training_with_one_message_and_keeps_the_last_checkpoint(tmp_path,
                                                                                 request):
  """main.py on a 2 MiB tmpfs (or, where no tmpfs can be mounted, on a disk whose writes of
  checkpoint 6 fail with ENOSPC through the LD_PRELOAD shim): status 2, one 'Error:' message
  naming the filesystem, the space free and needed and the last complete checkpoint, without a
  traceback (orbax's write threads fail in the background); no partial checkpoint is left, and
  the named checkpoint restores with its checksums verified."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  env = child_env.xla_env(1)
  if _mount_tmpfs(disk, '2m'):
    request.addfinalizer(lambda: subprocess.run(['umount', '-l', str(disk)], check=False))
    where = str(disk)
  else:
    shim_path = request.getfixturevalue('shim')  # Skips without gcc.
    env = _fault_env(shim_path, tmp_path / 'faults.log', 'write', '/6.orbax-checkpoint-tmp',
                     count=-1, code=ENOSPC)
    where = 'mounted at'
  workdir = disk / 'run'
  run = subprocess.run(
      [sys.executable, 'main.py', '--config', 'configs/smoke.py', '--workdir', str(workdir),
       '--config.training.n_iters=12', '--config.training.snapshot_freq=4',
       '--config.training.snapshot_freq_for_preemption=2'] + loop_config.main_overrides(),
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  stderr = run.stderr
  assert run.returncode == 2, stderr[-3000:]
  for noise in ('Traceback', 'Exception ignored', 'Event loop is closed'):
    assert noise not in stderr, stderr[-3000:]
  # Lines, not substrings: a warning may quote an exception's name ('FileNotFoundError: ...',
  # from JAX's compilation cache shared with the other test processes).
  error_lines = [line for line in stderr.splitlines() if line.startswith('Error: ')]
  assert len(error_lines) == 1, stderr[-3000:]
  message = stderr[stderr.index(error_lines[0]):]
  assert 'No space left on device' in message and where in message, message
  assert re.search(r'[\d.]+ (bytes|KiB|MiB|GiB) free, about [\d.]+ (KiB|MiB) needed', message)
  step = int(re.search(r'Nothing was lost: the last complete checkpoint, step (\d+)',
                       message).group(1))
  assert step >= 2
  assert not list(workdir.glob('checkpoints*/*orbax-checkpoint-tmp*'))

  config = loop_config.get_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  init = train_state.state_factory(config, mutils.get_model(config),
                                   optim.get_optimizer(config.optim))
  with checkpoint.Checkpointer(workdir, read_only=True) as reader:
    state = reader.restore(step, train_state.abstract_state(init, mesh))  # Checksums verified.
  assert int(state.step) == step


def test_atomic_file_write_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
  """files.write_text meeting ENOSPC raises DiskFullError (a UserError and an OSError) naming
  the file and the space, leaves the previous contents and no temporary file."""
  path = tmp_path / 'report.json'
  files.write_text(path, 'old')

  def full(self, data):
    raise OSError(ENOSPC, os.strerror(ENOSPC), str(self))

  monkeypatch.setattr(type(epath.Path(path)), 'write_bytes', full)  # What files.py writes with.
  with pytest.raises(files.DiskFullError) as err:
    files.write_text(path, 'new')
  monkeypatch.undo()
  assert isinstance(err.value, errors.UserError) and isinstance(err.value, OSError)
  assert str(path) in str(err.value) and 'free' in str(err.value)
  assert path.read_text() == 'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['report.json']
