"""Metric writers beside TensorBoard and the profiler trace, on the loop tests' network.

Protects: Weights & Biases (offline: no network) receives exactly the scalars TensorBoard does,
from the writer interface and from a training run, and a resumed run continues the same W&B run;
without wandb installed, turning it on fails before anything is written and names the install
command; ``training.profile_steps`` leaves a ``jax.profiler`` trace where TensorBoard's profile
plugin looks for it; both settings are validated.
"""
import json
import struct
import sys

import jax
import numpy as np
import pytest

import loop_config
from event_files import read_events, tensorboard_view
from score_sde.common import errors, parallel
from score_sde.configs import validation
from score_sde.io import summary
from score_sde.training import train


def _one_device():
  return parallel.make_mesh(jax.devices()[:1])


@pytest.fixture(scope='module')
def wandb_env(tmp_path_factory):
  """wandb offline, every file of it in a temporary directory."""
  pytest.importorskip('wandb')
  home = tmp_path_factory.mktemp('wandb_home')
  with pytest.MonkeyPatch.context() as patch:
    for name in ('WANDB_DIR', 'WANDB_CONFIG_DIR', 'WANDB_CACHE_DIR', 'WANDB_DATA_DIR'):
      patch.setenv(name, str(home))
    patch.setenv('WANDB_MODE', 'offline')
    patch.setenv('WANDB_SILENT', 'true')
    yield home


# ------------------------------------------------------------------------------ reading W&B back
_BLOCK, _HEADER = 32768, 7  # wandb's LevelDB-style log: 32 KiB blocks, 7-byte record headers.


def _records(path):
  """The payloads of a .wandb file: a 7-byte file header (':W&B', magic, version), then LevelDB
  log records (uint32 crc, uint16 length, uint8 type: 1 full, 2 first, 3 middle, 4 last)."""
  data = path.read_bytes()
  assert data[:4] == b':W&B'
  pos, parts = _HEADER, []
  while pos + _HEADER <= len(data):
    left = _BLOCK - pos % _BLOCK
    if left < _HEADER:  # A block's tail too short for a header is padding.
      pos += left
      continue
    _, length, kind = struct.unpack('<IHB', data[pos:pos + _HEADER])
    if kind == 0:
      break
    parts.append(data[pos + _HEADER:pos + _HEADER + length])
    pos += _HEADER + length
    if kind in (1, 4):
      yield b''.join(parts)
      parts = []


def wandb_history(home, run_id):
  """``{key: [(step, value), ...]}`` of the offline run ``run_id`` under ``home``, every
  history row of every offline directory of that run (a resumed run writes a new one); an
  image's fields appear as ``'<tag>/<field>'``."""
  from wandb.proto import wandb_internal_pb2
  history = {}
  for path in sorted(home.glob(f'wandb/offline-run-*-{run_id}/run-{run_id}.wandb')):
    for payload in _records(path):
      record = wandb_internal_pb2.Record.FromString(payload)
      if record.WhichOneof('record_type') != 'history':
        continue
      row = {item.key or '/'.join(item.nested_key): json.loads(item.value_json)
             for item in record.history.item}
      for key, value in row.items():
        if not key.startswith('_'):
          history.setdefault(key, []).append((row['_step'], value))
  return history


def _run_id(workdir):
  return json.loads((workdir / summary.WANDB_RUN_FILE).read_text())['id']


# ------------------------------------------------------------------------------ the interface
def test_multi_writer_gives_wandb_what_tensorboard_gets(wandb_env, tmp_path):
  """Scalars, a grey image grid and text through one MultiWriter: W&B's history holds every
  scalar at its step with TensorBoard's value (float32), and the image at its step."""
  grid = summary.image_grid(np.linspace(0, 1, 4 * 8 * 8).reshape(4, 8, 8, 1))
  values = {1: {'loss': 0.5, 'grad_norm': 2.25}, 2: {'loss': 0.25}, 3: {'loss': 1 / 3}}
  with summary.MultiWriter([summary.SummaryWriter(tmp_path / 'tb'),
                            summary.WandbWriter(tmp_path, mode='offline')]) as writer:
    for step, scalars in values.items():
      writer.scalars(step, scalars)
    writer.image('samples', grid, 3)
    writer.text('config', 'lr: 2e-4')
  tensorboard = tensorboard_view(read_events(tmp_path / 'tb'))
  history = wandb_history(wandb_env, _run_id(tmp_path))
  assert sorted(k for k in history if '/' not in k) == ['grad_norm', 'loss']
  for tag in ('loss', 'grad_norm'):
    assert [(s, np.float32(v)) for s, v in history[tag]] == tensorboard[tag]
  assert history['samples/_type'] == [(3, 'image-file')]  # An image's fields, nested.


@pytest.fixture(scope='module')
def logged_run(wandb_env, tmp_path_factory):
  """Four steps logging every step and evaluating every second one, with W&B on (offline) and
  steps 3 and 4 profiled; stopped after step 2 and resumed, as a preempted run is."""
  config = loop_config.get_config(n_iters=4, log_freq=1, eval_freq=2, snapshot_freq=4,
                                  snapshot_freq_for_preemption=4, profile_steps=(3, 2))
  config.logging.update(wandb=True, wandb_mode='offline')
  workdir = tmp_path_factory.mktemp('logged')
  polls = []

  def stop_after_step_2():
    polls.append(None)
    return len(polls) == 2

  with pytest.raises(errors.StopRequested):
    train.train_and_evaluate(config, str(workdir), mesh=_one_device(),
                             stop_requested=stop_after_step_2)
  first_id = _run_id(workdir)
  train.train_and_evaluate(config, str(workdir), mesh=_one_device())
  return workdir, first_id


def test_training_logs_the_same_scalars_to_wandb_and_tensorboard(wandb_env, logged_run):
  """training_loss, grad_norm and eval_loss: W&B has each at the steps and with the values
  TensorBoard has (a preempted and resumed run continues the W&B run it started)."""
  workdir, first_id = logged_run
  assert _run_id(workdir) == first_id
  tensorboard = tensorboard_view(read_events(workdir / 'tensorboard'))
  history = wandb_history(wandb_env, first_id)
  assert sorted(history) == sorted(tensorboard) == ['eval_loss', 'grad_norm', 'training_loss']
  assert [s for s, _ in tensorboard['training_loss']] == [1, 2, 3, 4]
  for tag, values in tensorboard.items():
    assert [(s, np.float32(v)) for s, v in history[tag]] == values, tag


def test_profile_steps_write_a_trace_for_tensorboards_profile_plugin(logged_run):
  """profile_steps=(3, 2): one trace, of steps 3 and 4 (run by the resumed process), where the
  profile plugin reads it: tensorboard/plugins/profile/<run>/<host>.xplane.pb, not empty."""
  workdir, _ = logged_run
  traces = list((workdir / 'tensorboard' / 'plugins' / 'profile').glob('*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0, traces


def test_wandb_without_wandb_installed_fails_before_anything_is_written(tmp_path, monkeypatch):
  """logging.wandb on without the package: MissingDependencyError naming pip install
  ".[wandb]", and no workdir created."""
  monkeypatch.setitem(sys.modules, 'wandb', None)  # What an absent package looks like.
  config = loop_config.get_config(n_iters=2)
  config.logging.wandb = True
  workdir = tmp_path / 'run'
  with pytest.raises(errors.MissingDependencyError, match=r'pip install "\.\[wandb\]"'):
    train.train_and_evaluate(config, str(workdir), mesh=_one_device())
  assert not workdir.exists()


@pytest.mark.parametrize('field, value', [('training.profile_steps', (0, 2)),
                                          ('training.profile_steps', (5,)),
                                          ('logging.wandb_mode', 'offine')])
def test_logging_fields_are_validated(field, value):
  """A profile window not of the form (first >= 1, count >= 1) and an unknown W&B mode are
  named with the fix."""
  config = loop_config.get_config()
  section, name = field.split('.')
  config[section][name] = value
  problems = validation.config_problems(config, num_devices=8)
  assert any(p.startswith(f'config.{field}=') for p in problems), problems
