"""Tests for score_sde.conversion.released_checkpoints on files written in the released score_sde
layout."""
import re

import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import serialization

from score_sde import models, optim
from score_sde.common import parallel
from score_sde.conversion import released_checkpoints as rc
from score_sde.io import checkpoint

import child_env


def random_like(template, seed):
  """numpy float32 arrays with the template's tree and shapes."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda t: rng.standard_normal(t.shape).astype(np.float32), template)


def write_released(path, params, ema, mu, nu, step, opt_step):
  """Bytes laid out as flax.training.checkpoints.save_checkpoint wrote the reference's
  State(step, optimizer, lr, model_state, ema_rate, params_ema, rng), flax.optim.Adam inside."""
  param_states = jax.tree.map(lambda m, v: {'grad_ema': m, 'grad_sq_ema': v}, mu, nu)
  state = {'step': np.asarray(step, np.int32),
           'optimizer': {'target': params, 'state': {'step': np.asarray(opt_step, np.int32),
                                                     'param_states': param_states}},
           'lr': np.asarray(2e-4, np.float32), 'model_state': {},
           'ema_rate': np.asarray(.999, np.float32), 'params_ema': ema,
           'rng': np.asarray([0, 42], np.uint32)}
  path.write_bytes(serialization.msgpack_serialize(state))
  return path


TOY = {'Dense_0': {'kernel': np.zeros((3, 4), np.float32), 'bias': np.zeros((4,), np.float32)},
       'Conv_0': {'kernel': np.zeros((3, 3, 1, 2), np.float32)}}


def toy_file(tmp_path, name='checkpoint_3', step=155, opt_step=155):
  trees = [random_like(TOY, s) for s in range(4)]
  trees[3] = jax.tree.map(np.abs, trees[3])  # Second moments are non-negative.
  return write_released(tmp_path / name, *trees, step=step, opt_step=opt_step), trees


def test_load_reads_every_field(tmp_path):
  """step, params (optimizer.target), params_ema, Adam moments and scalars come back exactly."""
  path, (params, ema, mu, nu) = toy_file(tmp_path)
  loaded = rc.load_released_checkpoint(path)
  assert loaded['step'] == 155 and loaded['snapshot'] == 3
  assert loaded['adam']['count'] == 155
  for got, want in [(loaded['params'], params), (loaded['params_ema'], ema),
                    (loaded['adam']['mu'], mu), (loaded['adam']['nu'], nu)]:
    jax.tree.map(np.testing.assert_array_equal, got, want)
  assert loaded['ema_rate'] == pytest.approx(.999) and loaded['lr'] == pytest.approx(2e-4)
  np.testing.assert_array_equal(loaded['rng'], [0, 42])


def test_directory_resolves_to_the_newest_snapshot(tmp_path):
  """Like flax's restore_checkpoint, a directory means its checkpoint_<N> of largest N
  (numerically: 12 after 3)."""
  toy_file(tmp_path, 'checkpoint_3')
  toy_file(tmp_path, 'checkpoint_12', step=605)
  assert rc.load_released_checkpoint(tmp_path)['step'] == 605
  with pytest.raises(FileNotFoundError, match='No released checkpoint'):
    rc.load_released_checkpoint(tmp_path / 'checkpoint_99')


def test_not_a_state_file_is_refused(tmp_path):
  """A msgpack file of something else is named as such, not a KeyError deep inside."""
  path = tmp_path / 'checkpoint_1'
  path.write_bytes(serialization.msgpack_serialize({'params': TOY}))
  with pytest.raises(ValueError, match='not a score_sde State checkpoint'):
    rc.load_released_checkpoint(path)


def test_adam_moments_continue_the_flax_update(tmp_path):
  """After conversion, one optax update of the config's optimizer (clip + Adam + warmup)
  equals flax.optim.Adam's next update written out in numpy:
  m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2, p' = p - lr_k m'/(1 - b1^(k+1)) /
  (sqrt(v'/(1 - b2^(k+1))) + eps), with the reference's warmup lr_k = lr min(k / warmup, 1).
  Checks that moments, Adam's count and the schedule's count all carry over."""
  k = 3
  path, (params, ema, mu, nu) = toy_file(tmp_path, step=k, opt_step=k)
  optim_config = ml_collections.ConfigDict(dict(
      optimizer='Adam', lr=1e-2, beta1=.9, beta2=.999, eps=1e-8, weight_decay=0., warmup=8,
      grad_clip=1e6))
  tx = optim.get_optimizer(optim_config)
  state = rc.to_train_state(rc.load_released_checkpoint(path), TOY, tx)
  assert int(state.step) == k
  grads = random_like(TOY, 9)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  got = optax.apply_updates(state.params, updates)

  def flax_adam(p, m, v, g):
    b1, b2, eps = .9, .999, 1e-8
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    lr = 1e-2 * min(k / 8, 1.)
    return p - lr * (m / (1 - b1 ** (k + 1))) / (np.sqrt(v / (1 - b2 ** (k + 1))) + eps)

  want = jax.tree.map(flax_adam, params, mu, nu, grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, want)
  fresh = rc.to_train_state(rc.load_released_checkpoint(path), TOY, tx, map_adam=False)
  jax.tree.map(np.testing.assert_array_equal, fresh.opt_state, tx.init(fresh.params))


def test_smoke_ncsnpp_converts_exactly_into_an_orbax_checkpoint(tmp_path, smoke_config):
  """With the smoke config's NCSN++ parameter tree: file -> convert -> orbax restore on the
  mesh gives the released params and EMA bit for bit, filed under the training step the file
  holds (its name and its state's step agree)."""
  template = models.abstract_params(smoke_config)
  params, ema, mu = (random_like(template, s) for s in range(3))
  nu = jax.tree.map(np.abs, random_like(template, 3))
  path = write_released(tmp_path / 'checkpoint_2', params, ema, mu, nu, step=13, opt_step=13)
  step = rc.convert(smoke_config, path, tmp_path / 'run')
  assert step == 13
  tx = optim.get_optimizer(smoke_config.optim)
  mesh_sharding = parallel.replicated(parallel.make_mesh())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=mesh_sharding),
                          jax.eval_shape(lambda p: rc.TrainState(
                              step=np.int32(0), params=p, params_ema=p, opt_state=tx.init(p)),
                              template))
  with checkpoint.Checkpointer(tmp_path / 'run', read_only=True) as ckpt:
    assert ckpt.periodic_steps() == [step]
    restored = ckpt.restore(step, abstract)
  assert int(restored.step) == 13
  jax.tree.map(np.testing.assert_array_equal, restored.params, params)
  jax.tree.map(np.testing.assert_array_equal, restored.params_ema, ema)


def test_mismatched_network_names_paths_and_both_networks(tmp_path, smoke_config):
  """A released tree of another architecture fails with the differing paths and a summary of
  both networks, so the user can tell which config is needed."""
  path, _ = toy_file(tmp_path)
  template = models.abstract_params(smoke_config)
  with pytest.raises(checkpoint.StructureMismatchError) as err:
    rc.to_train_state(rc.load_released_checkpoint(path), template, optax.adam(1e-3))
  message = str(err.value)
  assert 'params.Dense_0.kernel: checkpoint ((3, 4)' in message
  assert re.search(r'missing from the checkpoint \(\d+\): params\.AttnBlockpp_0\.', message)
  assert 'released network: 2 modules' in message
  assert 'ResnetBlockBigGANpp' in message.split("this config's network:")[1]


def test_structure_hint_describes_the_ddpmpp_networks_truly():
  """The hint printed for a mismatched released checkpoint names what the networks are: the
  CIFAR-10 DDPM++ networks use BigGAN blocks (not ResnetBlockDDPMpp) and differ from NCSN++ in
  FIR resampling and progressive input. Checked on the configs' abstract parameter trees."""
  from score_sde.configs.vp import cifar10_ddpmpp_continuous, cifar10_ncsnpp_continuous
  ddpmpp = models.utils.abstract_params(cifar10_ddpmpp_continuous.get_config())
  ncsnpp = models.utils.abstract_params(cifar10_ncsnpp_continuous.get_config())
  modules = {k.split('_')[0] for k in ddpmpp}
  assert 'ResnetBlockBigGANpp' in modules and 'ResnetBlockDDPMpp' not in modules
  # NCSN++'s progressive input: the image pyramid's Downsample layers, absent from DDPM++.
  assert set(ncsnpp) - set(ddpmpp) == {'Downsample_0', 'Downsample_1', 'Downsample_2'}
  with pytest.raises(checkpoint.StructureMismatchError) as err:
    rc.check_params(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), ddpmpp), ncsnpp)
  message = str(err.value)
  assert 'ResnetBlockDDPMpp' not in message
  assert 'BigGAN residual blocks' in message and 'FIR' in message


def test_evaluation_visits_a_converted_checkpoint_as_its_snapshot():
  """A released checkpoint_<N> is filed under its training step, a few updates past
  N * snapshot_freq (+5 from the reference, +1 from the port): evaluation's range
  begin_ckpt..end_ckpt = N visits it in place of the absent N * snapshot_freq, and a run
  trained here (snapshots on the grid, the final step n_iters) is visited as before."""
  from score_sde.evaluation import evaluate
  steps = evaluate.checkpoint_steps(26, 26, 50000, 1300001)
  assert evaluate.with_converted(steps, [1300005], 26, 26, 50000, 1300001) == [1300005]
  assert evaluate.with_converted(steps, [1300001], 26, 26, 50000, 1300001) == [1300000]
  steps = evaluate.checkpoint_steps(1, 3, 50000, 1300001)
  assert evaluate.with_converted(steps, [50001, 100000, 400001], 1, 3, 50000, 1300001) == [
      50001, 100000, 150000]
  native = evaluate.checkpoint_steps(1, 26, 4, 6)
  assert evaluate.with_converted(native, [2, 4, 6], 1, 26, 4, 6) == native == [4, 6]


def test_converter_command_says_only_what_it_did(tmp_path):
  """The command line converts a released file and prints its own lines only (no orbax INFO
  lines): where it wrote the checkpoint, at the training step the file holds, and the snapshot
  --mode eval evaluates it as."""
  from score_sde.configs import smoke
  template = models.abstract_params(smoke.get_config())
  trees = [random_like(template, s) for s in range(4)]
  trees[3] = jax.tree.map(np.abs, trees[3])
  path = write_released(tmp_path / 'checkpoint_3', *trees, step=13, opt_step=13)
  result = child_env.run_converter(path, tmp_path / 'run')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stderr.splitlines()
  assert all(' released_checkpoints.py:' in line for line in lines), lines  # Its own, only.
  wrote = [line for line in lines if ' Wrote ' in line]
  assert len(wrote) == 1 and len(lines) <= 2, lines  # And the ema_rate warning.
  assert f'training step 13) to {tmp_path}/run/checkpoints/13' in wrote[0]
  assert 'evaluates it as snapshot 3' in wrote[0]  # 13 // snapshot_freq 4.
