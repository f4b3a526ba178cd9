"""Tests for score_sde.io.checkpoint: exact round trips, retention, fallback past bad
checkpoints."""
import gc
import json
import logging
import os
import pathlib
import sys
import types
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts

from score_sde.common import errors, parallel
from score_sde.io import checkpoint
from score_sde.training.train_state import create_train_state

TX = optax.adam(1e-2)


def toy_state(seed: int):
  """A TrainState after two Adam steps, so every leaf (step, mu, nu, EMA) is non-trivial.

  The (32, 64) kernel is large enough to be stored out of line in the OCDBT data files.
  """
  keys = jax.random.split(jax.random.key(seed), 3)
  params = {'Dense_0': {'kernel': jax.random.normal(keys[0], (32, 64)),
                        'bias': jax.random.normal(keys[1], (64,))},
            'Conv_0': {'kernel': jax.random.normal(keys[2], (3, 3, 1, 4))}}
  state = create_train_state(params, TX)
  for i in range(2):
    grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1)), state.params)
    updates, opt_state = TX.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                          params_ema=jax.tree.map(lambda e, p: .9 * e + .1 * p,
                                                  state.params_ema, params))
  return state


def abstract(state, mesh=None):
  sh = parallel.replicated(mesh or parallel.make_mesh())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state)


def assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='module')
def states():
  return {seed: toy_state(seed) for seed in range(3)}


def test_round_trip_is_exact_and_lands_replicated_on_the_mesh(tmp_path, states):
  """Every leaf (step, params, EMA, Adam count/mu/nu) comes back bit for bit, on the 8-device
  replicated sharding asked for, through a fresh Checkpointer (a restarted process)."""
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 8
  state = jax.device_put(states[0], parallel.replicated(mesh))
  with checkpoint.Checkpointer(tmp_path) as ckpt:  # Asynchronous save, awaited by close().
    assert ckpt.save(7, state, periodic=True)
  ckpt = checkpoint.Checkpointer(tmp_path)
  restored = ckpt.restore(7, abstract(state, mesh))
  assert_same(restored, states[0])
  for leaf in jax.tree.leaves(restored):
    assert leaf.sharding == parallel.replicated(mesh)
    assert len(leaf.addressable_shards) == 8
  restored, step = ckpt.restore_latest(abstract(state, mesh))
  assert step == 7
  assert_same(restored, states[0])
  ckpt.close()


def test_checkpoints_of_orbax_standard_handler_still_restore(tmp_path, states):
  """Runs saved before the state handler got a registry of its own wrote through orbax's
  StandardCheckpointHandler: such a checkpoint (written here the way that code did) restores bit
  for bit, checksums verified, and building Checkpointers leaves orbax's process-wide type
  registry as it was (a user's own orbax checkpoints in the same process go through it)."""
  mesh = parallel.make_mesh()
  state = jax.device_put(states[1], parallel.replicated(mesh))
  checksums = {'format': checkpoint._CHECKSUM_FORMAT, 'leaves': checkpoint.leaf_checksums(state)}
  handlers = {checkpoint._STATE: ocp.StandardCheckpointHandler(),
              checkpoint._CHECKSUMS: ocp.JsonCheckpointHandler(filename=checkpoint._CHECKSUM_FILE)}
  with ocp.CheckpointManager(tmp_path / checkpoint.PERIODIC_DIR, item_handlers=handlers) as old:
    old.save(5, args=ocp.args.Composite(**{
        checkpoint._STATE: ocp.args.StandardSave(state),
        checkpoint._CHECKSUMS: ocp.args.JsonSave(checksums)}))
  default = type(ocp.type_handlers.get_type_handler(jax.Array))
  with checkpoint.Checkpointer(tmp_path, read_only=True) as ckpt:
    restored, step = ckpt.restore_latest(abstract(state, mesh))
  assert step == 5
  assert_same(restored, states[1])
  assert type(ocp.type_handlers.get_type_handler(jax.Array)) is default
  assert not issubclass(default, checkpoint._ArrayHandler)


def test_relative_workdir_round_trips(tmp_path, states, monkeypatch):
  """``--workdir runs/x`` is relative; orbax refuses relative paths, so the Checkpointer must
  resolve it (a first real run died at its first checkpoint without this)."""
  monkeypatch.chdir(tmp_path)
  with checkpoint.Checkpointer('runs/x') as ckpt:
    assert ckpt.save(3, states[1], periodic=False)
  restored, step = checkpoint.Checkpointer('runs/x').restore_latest(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), states[1]))
  assert step == 3
  assert_same(restored, states[1])
  assert (tmp_path / 'runs' / 'x' / checkpoint.PREEMPTION_DIR / '3').is_dir()


def test_retention_of_periodic_and_preemption_directories(tmp_path, states):
  """max_to_keep keeps the newest periodic snapshots (0 keeps all); the preemption directory
  keeps only the last few; a step is never written twice into one directory."""
  st = states[0]
  with checkpoint.Checkpointer(tmp_path / 'a', max_to_keep=2, async_save=False) as ckpt:
    for step in range(1, 5):
      ckpt.save(step, st, periodic=True)
      ckpt.save(step + 10, st, periodic=False)
    assert ckpt.periodic_steps() == [3, 4]
    assert ckpt.preemption_steps() == [13, 14]
    assert sorted(os.listdir(tmp_path / 'a')) == ['checkpoints', 'checkpoints-meta']
    assert not ckpt.save(4, states[1], periodic=True)  # Existing step: refused, not replaced.
    assert not ckpt.save(4, states[1], periodic=False)  # Covered by the periodic snapshot.
    assert_same(ckpt.restore(4, abstract(st)), st)
  with checkpoint.Checkpointer(tmp_path / 'b', max_to_keep=0, async_save=False) as ckpt:
    for step in range(1, 5):
      ckpt.save(step, st, periodic=True)
    assert ckpt.periodic_steps() == [1, 2, 3, 4]


def test_restore_latest_takes_the_newest_over_both_directories(tmp_path, states):
  """The newest step wins whichever directory holds it; no checkpoint at all gives (None, 0)."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    assert ckpt.restore_latest(abstract(states[0])) == (None, 0)
    ckpt.save(4, states[0], periodic=True)
    ckpt.save(6, states[1], periodic=False)
    restored, step = ckpt.restore_latest(abstract(states[0]))
    assert step == 6
    assert_same(restored, states[1])
    ckpt.save(8, states[2], periodic=True)
    restored, step = ckpt.restore_latest(abstract(states[0]))
    assert step == 8
    assert_same(restored, states[2])


def _array_files(step_dir: pathlib.Path):
  files = sorted(p for p in (step_dir / 'state').rglob('*')
                 if p.is_file() and p.parent.name == 'd')
  assert files, f'no OCDBT data files under {step_dir}'
  return files


def _truncate(step_dir):
  for f in _array_files(step_dir):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _delete(step_dir):
  for f in _array_files(step_dir):
    f.unlink()


def _junk(step_dir):
  rng = np.random.default_rng(0)
  for f in _array_files(step_dir):
    f.write_bytes(rng.bytes(f.stat().st_size))


def _stored_chunks(step_dir: pathlib.Path, item: str = ''):
  """``[(file, offset, length)]`` of the array chunks the checkpoint's newest OCDBT version
  refers to, read from its B-tree (a leaf node: the test states are small); with ``item``, of
  that stored item only (``'params_ema'``: the arrays a sampling restore reads).

  The data files also hold bytes that no version refers to (written for commits that a later
  one superseded, on the order of the state's own size): a byte flipped there changes nothing
  that is read, so a flip meant to damage the state must land inside a referenced chunk.
  """
  state = step_dir / 'state'
  base = ts.KvStore.open(f'file://{state}/').result()
  root = ts.ocdbt.dump(base).result()['versions'][-1]['root']['location']
  node = ts.ocdbt.dump(base, root).result()
  assert node['height'] == 0, 'a B-tree of more than one node: walk its children'
  chunks = []
  for entry in node['entries']:
    if not entry['key'].decode().startswith(item):
      continue
    if 'indirect_value' in entry:  # 'value:<subdirectory>:<file>:<offset>:<length>'
      _, subdirectory, name, offset, length = entry['indirect_value'].split(':')
      chunks.append((state / subdirectory / name, int(offset), int(length)))
  assert chunks, f'no array chunk stored out of line under {state}'
  return chunks


def _flip_one_byte(step_dir, item: str = ''):
  """One byte flipped in the middle of the largest array chunk the checkpoint reads (of stored
  item ``item``, when given)."""
  path, offset, length = max(_stored_chunks(step_dir, item), key=lambda chunk: chunk[2])
  data = bytearray(path.read_bytes())
  data[offset + length // 2] ^= 0x5A
  path.write_bytes(bytes(data))


def _delete_metadata(step_dir):
  (step_dir / 'state' / '_METADATA').unlink()


def _junk_checksums(step_dir):
  (step_dir / 'checksums' / 'crc32.json').write_text('{"leaves": ')


CORRUPTIONS = [_truncate, _delete, _junk, _flip_one_byte, _delete_metadata, _junk_checksums]


@pytest.mark.parametrize('corrupt', CORRUPTIONS, ids=lambda f: f.__name__.strip('_'))
def test_bad_newest_checkpoint_warns_moves_it_aside_and_falls_back(tmp_path, states, corrupt,
                                                                    caplog):
  """A damaged newest checkpoint (truncated, deleted or junk array files, one flipped byte, lost
  metadata or checksums) is reported as a one-line WARNING naming its directory, renamed to
  ``<step>.corrupt`` with its files untouched (never deleted), and the previous checkpoint
  (here in the other directory) is restored intact. orbax's failed reads print nothing more:
  no 'Event loop is closed' traceback for each read still running when one failed (the handlers'
  ``_ReadsEndTogether``), reported meanwhile or when collected."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    ckpt.save(3, states[1], periodic=False)
    bad = tmp_path / 'checkpoints-meta' / '3'
    corrupt(bad)
    files = sorted(str(p.relative_to(bad)) for p in bad.rglob('*'))
    reported = []
    with caplog.at_level(logging.WARNING), pytest.MonkeyPatch.context() as patch:
      patch.setattr(sys, 'unraisablehook', reported.append)
      restored, step = ckpt.restore_latest(abstract(states[0]))
      gc.collect()
    assert not reported, [str(r.exc_value) for r in reported]
    assert ckpt.preemption_steps() == []
  assert step == 2
  assert_same(restored, states[0])
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(str(bad) in w for w in warnings)
  assert all('\n' not in w and len(w) < 400 for w in warnings), warnings
  moved = tmp_path / 'checkpoints-meta' / '3.corrupt'
  assert not bad.exists()
  assert sorted(str(p.relative_to(moved)) for p in moved.rglob('*')) == files


def test_moved_aside_step_is_saved_again_and_frees_its_slot(tmp_path, states):
  """A damaged newest snapshot, in small: with max_to_keep=2, snapshots {2, 4} and 4 damaged, the
  fallback to 2 must let step 4 be saved again, and the next snapshot must delete only readable
  ones, leaving {4, 6} readable (not 4 damaged in its slot and 2 deleted)."""
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    ckpt.save(4, states[1], periodic=True)
  _flip_one_byte(tmp_path / 'checkpoints' / '4')
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2, async_save=False) as ckpt:
    _, step = ckpt.restore_latest(abstract(states[0]))
    assert step == 2
    assert ckpt.save(4, states[1], periodic=True)
    assert ckpt.save(6, states[2], periodic=True)
    assert ckpt.periodic_steps() == [4, 6]
    for s, seed in ((4, 1), (6, 2)):
      assert_same(ckpt.restore(s, abstract(states[0])), states[seed])
  assert (tmp_path / 'checkpoints' / '4.corrupt').is_dir()


def test_second_damage_of_the_same_step_gets_its_own_name(tmp_path, states):
  """A step damaged twice (the recomputed copy too) keeps both copies: 4.corrupt, 4.corrupt-2."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    for _ in range(2):
      ckpt.save(4, states[1], periodic=True)
      _truncate(tmp_path / 'checkpoints' / '4')
      assert ckpt.restore_latest(abstract(states[0]))[1] == 2
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == [
      '2', '4.corrupt', '4.corrupt-2']


def test_read_only_reader_skips_but_never_moves(tmp_path, states):
  """Evaluation (read_only) falls back past a damaged checkpoint but leaves it where it is:
  only the training job may rename in the run's directories."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    ckpt.save(4, states[1], periodic=True)
  _delete(tmp_path / 'checkpoints' / '4')
  with checkpoint.Checkpointer(tmp_path, read_only=True) as reader:
    assert reader.restore_latest(abstract(states[0]))[1] == 2
    with pytest.raises(checkpoint.CorruptCheckpointError, match='cannot read'):
      reader.restore(4, abstract(states[0]))
  assert (tmp_path / 'checkpoints' / '4').is_dir()


def test_all_checkpoints_bad_raises_and_keeps_them(tmp_path, states):
  """When every checkpoint is unreadable the run must stop (not restart and overwrite), with an
  error naming each bad directory and how to start fresh; nothing is deleted or renamed (were
  they moved aside, the next run would silently start from scratch)."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    ckpt.save(3, states[1], periodic=False)
    _junk(tmp_path / 'checkpoints' / '2')
    _delete(tmp_path / 'checkpoints-meta' / '3')
    with pytest.raises(checkpoint.CorruptCheckpointError) as err:
      ckpt.restore_latest(abstract(states[0]))
  message = str(err.value)
  assert isinstance(err.value, errors.UserError)
  assert str(tmp_path / 'checkpoints' / '2') in message
  assert str(tmp_path / 'checkpoints-meta' / '3') in message
  assert 'move both directories aside' in message
  assert (tmp_path / 'checkpoints' / '2').is_dir()
  assert (tmp_path / 'checkpoints-meta' / '3').is_dir()


class _RaisesWhenCollected:
  def __del__(self):
    raise ValueError('an error of the user\'s own')


def test_a_writer_drops_only_tensorstore_reports_of_abandoned_writes(tmp_path):
  """While a writer is open, ``sys.unraisablehook`` drops tensorstore's report of a write that a
  failed save abandoned (``RuntimeError('Event loop is closed')``, no object) and passes every
  other report (a ``__del__`` that raises) to the hook it replaced; closing the writer puts that
  hook back, and a reader leaves it alone."""
  reported = []
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sys, 'unraisablehook', reported.append)
    ckpt = checkpoint.Checkpointer(tmp_path)
    abandoned = RuntimeError('Event loop is closed')
    sys.unraisablehook(types.SimpleNamespace(exc_type=RuntimeError, exc_value=abandoned,
                                             exc_traceback=None, err_msg=None, object=None))
    _RaisesWhenCollected()
    ckpt.close()
    assert sys.unraisablehook == reported.append
    with checkpoint.Checkpointer(tmp_path, read_only=True):
      assert sys.unraisablehook == reported.append
  assert [str(r.exc_value) for r in reported] == ["an error of the user's own"]


def test_unfinished_write_is_ignored(tmp_path, states):
  """A save killed before its atomic rename leaves only a *.orbax-checkpoint-tmp-* directory:
  it is not a step, restore_latest skips it silently and does not delete it."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
  partial = tmp_path / 'checkpoints' / '5.orbax-checkpoint-tmp-1234'
  (partial / 'state').mkdir(parents=True)
  (partial / 'state' / '_METADATA').write_text('{"tree_metadata": {')
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.periodic_steps() == [2]
    restored, step = ckpt.restore_latest(abstract(states[0]))
  assert step == 2
  assert_same(restored, states[0])
  assert partial.is_dir()


def test_structure_mismatch_names_the_paths(tmp_path, states):
  """A checkpoint of another model (extra / missing parameters, other shapes) is refused with an
  error naming the offending paths, instead of a deep orbax error or a silent fallback."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    params = dict(states[0].params)
    params['Dense_0'] = {'kernel': jnp.zeros((32, 16)), 'bias': jnp.zeros((16,))}
    params['Dense_1'] = {'kernel': jnp.zeros((2, 2))}
    del params['Conv_0']
    other = create_train_state(params, TX)
    with pytest.raises(checkpoint.StructureMismatchError) as err:
      ckpt.restore_latest(abstract(other))
  message = str(err.value)
  assert 'params.Dense_1.kernel' in message  # Expected but not in the checkpoint.
  assert 'params.Conv_0.kernel' in message  # In the checkpoint only.
  assert 'params.Dense_0.kernel: checkpoint ((32, 64), \'float32\')' in message
  assert 'another config' in message


def test_restore_of_a_missing_step_lists_the_steps(tmp_path, states):
  """Asking for a step that is not on disk names the steps that are."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    with pytest.raises(KeyError, match=r'periodic steps: \[2\]'):
      ckpt.restore(5, abstract(states[0]))


def test_leaf_checksums_are_crc32_of_the_bytes_whatever_the_sharding():
  """A leaf split over the 8 devices is checksummed as the whole array: the CRC-32 of its
  C-order bytes (computed independently from the numpy array); one changed ulp changes it."""
  x = np.random.default_rng(1).standard_normal((8, 5)).astype(np.float32)
  mesh = parallel.make_mesh()
  tree = {'a': jax.device_put(x, parallel.data_sharding(mesh)), 'b': {'c': np.arange(3)}}
  sums = checkpoint.leaf_checksums(tree)
  assert sums == {'a': zlib.crc32(x.tobytes()), 'b.c': zlib.crc32(np.arange(3).tobytes())}
  y = x.copy()
  y[3, 2] = np.nextafter(y[3, 2], np.inf)
  assert checkpoint.leaf_checksums({'a': y})['a'] != sums['a']


def test_bad_arguments_are_refused(tmp_path):
  """Negative retention counts fail at construction with the fix in the message."""
  with pytest.raises(ValueError, match='use 0 to keep all'):
    checkpoint.Checkpointer(tmp_path, max_to_keep=-1)
  with pytest.raises(ValueError, match='>= 1'):
    checkpoint.Checkpointer(tmp_path, preemption_to_keep=0)


def test_small_replicated_leaves_are_saved_without_per_replica_slicing(tmp_path, caplog):
  """Protects the first save's cost (a leaf below MIN_REPLICA_PARALLEL_SLICE_BYTES per replica
  is written by one replica: orbax's default compiled a slicing program per leaf and replica,
  14 s for 40 small leaves on 8 devices) and that a large leaf, still written cooperatively by
  its replicas, and the small ones restore bit for bit on the 8-device mesh."""
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 8
  rep = parallel.replicated(mesh)
  rng = np.random.default_rng(0)
  big = (checkpoint.MIN_REPLICA_PARALLEL_SLICE_BYTES * 8) // 4 // 256  # 1 MiB per replica.
  # Small leaves whose first axis splits over 8 replicas, which is what orbax's slicing needs.
  tree = {**{f'bias_{i}': rng.normal(size=(8 * (i + 1), 3)).astype(np.float32)
             for i in range(12)},
          'kernel': rng.normal(size=(big, 256)).astype(np.float32)}
  tree = jax.device_put(tree, rep)
  jax.config.update('jax_log_compiles', True)
  try:
    with caplog.at_level(logging.WARNING), checkpoint.Checkpointer(str(tmp_path)) as ckpt:
      assert ckpt.save(1, tree, periodic=True)
      ckpt.wait_until_finished()
  finally:
    jax.config.update('jax_log_compiles', False)
  sliced = [r.getMessage() for r in caplog.records if 'Compiling jit(slice)' in r.getMessage()]
  # At most the large leaf's 8 replica slices; orbax's default slices the 12 small ones too
  # (104 in all).
  assert len(sliced) <= 8, sliced[:3]
  with checkpoint.Checkpointer(str(tmp_path), read_only=True) as ckpt:
    restored = ckpt.restore(1, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), tree))
  for name in tree:
    np.testing.assert_array_equal(np.asarray(restored[name]), np.asarray(tree[name]))


def test_ema_only_restore_reads_the_saved_ema_without_the_optimizer_state(tmp_path, states):
  """What sampling, score_sde.load and --mode eval read (restore_params_ema): the saved EMA
  weights bit for bit, replicated on the mesh, also from a checkpoint whose optimizer state is
  another optimizer's (SGD's: no arrays at all) that training's whole-state restore refuses, so
  neither Adam's moments nor the optimizer config are needed to sample."""
  mesh = parallel.make_mesh()
  sgd = states[1].replace(opt_state=optax.sgd(1e-2).init(states[1].params))
  assert not jax.tree.leaves(sgd.opt_state)
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
    ckpt.save(4, sgd, periodic=True)
    with pytest.raises(checkpoint.StructureMismatchError, match='opt_state.0.mu'):
      ckpt.restore(4, abstract(states[0], mesh))
  wanted = abstract(states[0], mesh).params_ema
  params, step = checkpoint.restore_params_ema(str(tmp_path), wanted, 'score model')
  assert step == 4
  assert_same(params, states[1].params_ema)
  assert all(leaf.sharding == parallel.replicated(mesh) for leaf in jax.tree.leaves(params))
  params, step = checkpoint.restore_params_ema(str(tmp_path), wanted, 'score model', step=2)
  assert step == 2
  assert_same(params, states[0].params_ema)


def test_ema_only_restore_checks_the_structure_and_checksums_of_what_it_reads(tmp_path, states):
  """The EMA-only read keeps the whole read's checks for the arrays it takes: a stored CRC-32
  that disagrees with an EMA array is damage (CorruptCheckpointError naming it), as is one of
  an Adam moment for the whole read, which the EMA-only read does not take; an EMA tree of
  another network is refused naming its paths, not the optimizer's."""
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(2, states[0], periodic=True)
  crc = tmp_path / checkpoint.PERIODIC_DIR / '2' / 'checksums' / 'crc32.json'
  saved = json.loads(crc.read_text())
  wanted = abstract(states[0]).params_ema

  def stored_crc_off_by_one(path):
    sums = json.loads(json.dumps(saved))
    sums['leaves'][path] ^= 1
    crc.write_text(json.dumps(sums))

  with checkpoint.Checkpointer(tmp_path, read_only=True) as ckpt:
    stored_crc_off_by_one('opt_state.0.mu.Dense_0.kernel')
    assert_same(ckpt.restore_params_ema(2, wanted), states[0].params_ema)
    with pytest.raises(checkpoint.CorruptCheckpointError, match='opt_state.0.mu.Dense_0.kernel'):
      ckpt.restore(2, abstract(states[0]))
    stored_crc_off_by_one('params_ema.Dense_0.kernel')
    with pytest.raises(checkpoint.CorruptCheckpointError, match='params_ema.Dense_0.kernel'):
      ckpt.restore_params_ema(2, wanted)
    crc.write_text(json.dumps(saved))
    other = dict(wanted, Dense_0={'kernel': jax.ShapeDtypeStruct((32, 16), jnp.float32),
                                  'bias': jax.ShapeDtypeStruct((16,), jnp.float32)})
    with pytest.raises(checkpoint.StructureMismatchError) as err:
      ckpt.restore_params_ema(2, other)
  message = str(err.value)
  assert "params_ema.Dense_0.kernel: checkpoint ((32, 64), 'float32')" in message
  assert 'opt_state' not in message and 'params.Dense_0' not in message
