"""End to end: the training loop on the smoke config, over 8 fake CPU devices and over one.

Protects the spine's promises: results do not depend on the device count; a run that stops and
is restarted on its workdir ends where the uninterrupted run ends; a non-finite loss stops
training, names the step and saves nothing past it; logs, checkpoints and sample grids appear.
"""
import glob
import os

import jax
import numpy as np
import pytest

import loop_config
from score_sde import data
from score_sde.common import parallel
from score_sde.io import checkpoint
from score_sde.training import train


@pytest.fixture
def config():
  return loop_config.get_config(n_iters=4)


def _params(state):
  return jax.tree.leaves(jax.device_get(state.params))


def _assert_trees_close(a, b, rtol):
  for x, y in zip(_params(a), _params(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-2)


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
  """Four uninterrupted steps on all 8 devices, with sampling at the final snapshot."""
  config = loop_config.get_config(n_iters=4, snapshot_sampling=True)
  workdir = str(tmp_path_factory.mktemp('straight'))
  return train.train_and_evaluate(config, workdir), workdir


def test_resumed_run_matches_the_uninterrupted_one(straight_run, config, tmp_path, monkeypatch):
  """2 steps, process ends, 2 more steps from the checkpoint == 4 straight steps (params, EMA,
  optimizer state and step), and the second process trains on the batches of steps 2 and 3 only:
  four deterministic steps from scratch also end at the straight run's state, so only the batches
  drawn tell a resumed run from one that silently started over."""
  state, _ = straight_run
  workdir = str(tmp_path)
  config.training.n_iters = 2
  train.train_and_evaluate(config, workdir)
  real = data.get_batch
  drawn = []

  def recording(source, step, *args, **kwargs):
    if kwargs.get('train', True):
      drawn.append(step)
    return real(source, step, *args, **kwargs)

  monkeypatch.setattr(data, 'get_batch', recording)
  monkeypatch.setattr(data.loader, 'get_batch', recording)
  config.training.n_iters = 4
  resumed = train.train_and_evaluate(config, workdir)
  assert sorted(drawn) == [2, 3]
  assert int(resumed.step) == int(state.step) == 4
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(state))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_one_device_matches_eight(straight_run, config, tmp_path):
  """The same 4 steps on a 1-device mesh give the 8-device parameters within float tolerance
  (only the order of the gradient all-reduce differs)."""
  state, _ = straight_run
  one = train.train_and_evaluate(config, str(tmp_path),
                                 mesh=parallel.make_mesh(jax.devices()[:1]))
  _assert_trees_close(one, state, rtol=1e-4)


def test_run_writes_checkpoints_tensorboard_and_samples(straight_run):
  """The workdir holds a kept snapshot at the last step, event files and a PNG sample grid."""
  _, workdir = straight_run
  assert checkpoint.Checkpointer(workdir, read_only=True).periodic_steps() == [4]
  assert glob.glob(os.path.join(workdir, 'tensorboard', '*tfevents*'))
  assert os.path.exists(os.path.join(workdir, 'samples', 'step_4.png'))


def test_non_finite_loss_stops_training_naming_the_step(config, tmp_path, monkeypatch):
  """A NaN batch at update 3 raises FloatingPointError naming step 3 and the last good
  checkpoint (2); nothing at or after step 3 is saved."""
  real = data.get_batch

  def poisoned(source, step, *args, **kwargs):
    batch = real(source, step, *args, **kwargs)
    if step == 2 and kwargs.get('train', True):  # The batch of update 3.
      batch['image'] = batch['image'] * np.nan
    return batch

  monkeypatch.setattr(data, 'get_batch', poisoned)
  monkeypatch.setattr(data.loader, 'get_batch', poisoned, raising=False)
  config.training.log_freq = 1
  with pytest.raises(FloatingPointError, match='at step 3.*last good checkpoint is step 2'):
    train.train_and_evaluate(config, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path), read_only=True)
  assert max(ckpt.periodic_steps() + ckpt.preemption_steps()) == 2


def test_batch_that_does_not_split_over_devices_fails_before_writing(config, tmp_path):
  """batch_size 12 on 8 devices: a ValueError naming the fix, and an empty workdir."""
  config.training.batch_size = 12
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match='batch_size'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists() or not any(workdir.iterdir())
