"""Nothing lost, nothing late, end to end on the loop tests' network (one device: see
``_one_device``; the subprocess runs use all 8 fake devices).

Protects: a damaged newest snapshot costs no good checkpoint (it is moved aside, its step is
saved again, ``max_to_keep`` counts readable ones only) and evaluation skips it and goes on;
bad data, a bad workdir and a bad config fail before anything is written, as one message
without a traceback; a killed run's TensorBoard history has no hole once resumed; SIGTERM saves
the step in flight, and the resumed run logs the values of an uninterrupted one; a finished run
says so without compiling.
"""
import logging
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from PIL import Image

import child_env
import loop_config
from event_files import read_events, tensorboard_view
from test_checkpoint import _flip_one_byte
from score_sde import optim
from score_sde.common import errors, parallel
from score_sde.evaluation import evaluate
from score_sde.io import checkpoint
from score_sde.models import utils as mutils
from score_sde.training import train, train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _one_device():
  """What is tested here does not depend on the device count (sharding is tested in
  test_train.py), and orbax saves a state replicated over 8 fake CPU devices ~20x slower."""
  return parallel.make_mesh(jax.devices()[:1])


def _config(n_iters):
  config = loop_config.get_config(n_iters=n_iters, snapshot_freq=4,
                                  snapshot_freq_for_preemption=2, max_to_keep=3, log_freq=1,
                                  eval_freq=3)
  config.eval.update(batch_size=64, begin_ckpt=1, end_ckpt=4, enable_loss=True)
  return config


def _abstract(config, mesh):
  model = mutils.get_model(config)
  init = train_state.state_factory(config, model, optim.get_optimizer(config.optim))
  return train_state.abstract_state(init, mesh)


@pytest.fixture(scope='module')
def eight_steps(tmp_path_factory):
  """Steps 0..8: snapshots {4, 8}, preemption checkpoints {2, 6}."""
  workdir = tmp_path_factory.mktemp('eight')
  train.train_and_evaluate(_config(8), str(workdir), mesh=_one_device())
  return workdir


def test_damaged_newest_snapshot_loses_no_good_checkpoint(eight_steps, tmp_path, caplog):
  """Snapshot 8 damaged (a flipped byte in its EMA weights, which evaluation reads as training
  does; truncated and deleted files fail the same read, which test_checkpoint.py checks for
  each damage, so the whole run is done once). Evaluation skips
  it with a one-line warning and reports 4. Training
  falls back to preemption checkpoint 6, moves 8 aside to 8.corrupt, saves 8 again (bit for
  bit the original: its checksums equal the damaged copy's), then 12 and 16: with
  max_to_keep=3 the kept snapshots are {8, 12, 16}, all readable, and evaluation reports each
  (not: 8 damaged in its slot, 4 deleted, evaluation stopping at 8)."""
  workdir = tmp_path / 'run'
  shutil.copytree(eight_steps, workdir)
  bad = workdir / 'checkpoints' / '8'
  _flip_one_byte(bad, checkpoint.PARAMS_EMA)

  with caplog.at_level(logging.WARNING):
    result = evaluate.evaluate(_config(16), str(workdir), mesh=_one_device())
  assert result.corrupt_steps == [8]
  assert [row['step'] for row in result.rows] == [4]
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert any(str(bad) in w for w in warnings)
  assert all('\n' not in w for w in warnings if str(bad) in w)
  assert bad.is_dir()  # Evaluation only reads.

  train.train_and_evaluate(_config(16), str(workdir), mesh=_one_device())
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True)
  assert ckpt.periodic_steps() == [8, 12, 16]
  abstract = _abstract(_config(16), _one_device())
  for step in ckpt.periodic_steps():
    assert int(ckpt.restore(step, abstract).step) == step
  ckpt.close()
  moved = workdir / 'checkpoints' / '8.corrupt'
  assert moved.is_dir()
  sums = 'checksums/crc32.json'
  assert (bad / sums).read_text() == (moved / sums).read_text()

  result = evaluate.evaluate(_config(16), str(workdir), mesh=_one_device())
  assert result.corrupt_steps == []
  assert {8, 12, 16} <= {row['step'] for row in result.rows}
  assert all(row['loss'] is not None for row in result.rows)


def _image_folder_config(data_dir):
  config = _config(8)
  config.data.update(dataset='IMAGE_FOLDER', data_dir=str(data_dir))
  return config


def _corrupt_folder(root):
  for i in range(3):
    root.mkdir(parents=True, exist_ok=True)
    Image.new('L', (16, 16), color=40 * i).save(root / f'{i}.png')
  (root / '9_broken.png').write_bytes(b'\x89PNG but then nothing')
  return root


@pytest.mark.parametrize('case', ['missing', 'empty', 'corrupt_file'])
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_bad_image_folder_fails_before_anything_is_written(tmp_path, case, mode):
  """A missing folder, an empty one and a corrupt file each raise a DataError naming the folder
  or the file, and the workdir is left exactly as it was (absent for training; for evaluation,
  the run's directory without an eval/ folder)."""
  data_dir = tmp_path / 'images'
  if case == 'empty':
    data_dir.mkdir()
  elif case == 'corrupt_file':
    _corrupt_folder(data_dir)
  config = _image_folder_config(data_dir)
  workdir = tmp_path / 'run'
  if mode == 'eval':
    (workdir / 'checkpoints').mkdir(parents=True)
  before = sorted(workdir.rglob('*')) if workdir.exists() else None
  with pytest.raises(errors.DataError) as err:
    if mode == 'train':
      train.train_and_evaluate(config, str(workdir), mesh=_one_device())
    else:
      evaluate.evaluate(config, str(workdir), mesh=_one_device())
  expected = str(data_dir / '9_broken.png') if case == 'corrupt_file' else str(data_dir)
  assert expected in str(err.value)
  after = sorted(workdir.rglob('*')) if workdir.exists() else None
  assert after == before


def test_missing_dataset_archive_fails_before_the_state_is_built(tmp_path, monkeypatch):
  """CIFAR10 without its archive in data.data_dir: the error names the file and the download
  command, before any parameter is initialised or directory created."""
  monkeypatch.setattr(mutils, 'init_params', lambda *a, **k: pytest.fail('state was built'))
  config = _config(8)
  config.data.update(dataset='CIFAR10', num_channels=3, data_dir=str(tmp_path))
  workdir = tmp_path / 'run'
  with pytest.raises(errors.DataNotFoundError, match='cifar-10-python.tar.gz.*'
                     'python -m score_sde.data.download cifar10'):
    train.train_and_evaluate(config, str(workdir), mesh=_one_device())
  assert not workdir.exists()


def test_unusable_workdirs_are_named_with_the_fix(tmp_path):
  """A workdir that is a file, lies under a file, or cannot be written: WorkdirError naming it,
  and nothing is created."""
  config = _config(8)
  a_file = tmp_path / 'file'
  a_file.write_text('')
  with pytest.raises(errors.WorkdirError, match='is a file, not a directory'):
    train.train_and_evaluate(config, str(a_file), mesh=_one_device())
  with pytest.raises(errors.WorkdirError, match=f'{a_file} is a file'):
    train.train_and_evaluate(config, str(a_file / 'run'), mesh=_one_device())
  with pytest.raises(errors.WorkdirError, match='does not exist'):
    evaluate.evaluate(config, str(tmp_path / 'never_trained'), mesh=_one_device())
  (tmp_path / 'empty').mkdir()
  with pytest.raises(errors.WorkdirError, match='holds no checkpoints/'):
    evaluate.evaluate(config, str(tmp_path / 'empty'), mesh=_one_device())
  assert not any((tmp_path / 'empty').iterdir())
  # /proc accepts no new files, even from root (a read-only disk behaves the same).
  with pytest.raises(errors.WorkdirError, match='not writable'):
    train.train_and_evaluate(config, '/proc/score_sde_run', mesh=_one_device())
  assert sorted(p.name for p in tmp_path.iterdir()) == ['empty', 'file']


def test_finished_run_says_so_and_compiles_nothing(eight_steps, tmp_path, caplog, monkeypatch):
  """Running a finished run again restores it, says it is finished, and returns its state
  without compiling (rather than minutes of compilation, then silence)."""
  workdir = tmp_path / 'run'
  shutil.copytree(eight_steps, workdir)
  monkeypatch.setattr(train, 'compile_logged', lambda *a: pytest.fail('compiled'))
  with caplog.at_level(logging.INFO):
    state = train.train_and_evaluate(_config(8), str(workdir), mesh=_one_device())
  assert int(state.step) == 8
  assert any('already finished' in r.getMessage() for r in caplog.records)


def test_main_prints_user_errors_as_one_message_without_a_traceback(tmp_path):
  """A misspelt override, an invalid config value, a missing config file and a workdir that is
  a file: exit status 2, 'Error: ' and the fix on stderr, no traceback, nothing written."""
  a_file = tmp_path / 'file'
  a_file.write_text('')
  workdir = str(tmp_path / 'run')
  cases = [
      (['--config', 'configs/smoke.py', '--config.training.batchsize=8'], 'batch_size'),
      (['--config', 'configs/smoke.py', '--config.sampling.method=pcc'], 'use one of adaptive'),
      (['--config', 'configs/nope.py'], 'no such file'),
      (['--config', 'configs/smoke.py', '--workdir', str(a_file)], 'is a file'),
  ]
  runs = []  # Started together: each is mostly Python's and JAX's start-up.
  for args, fix in cases:
    if '--workdir' not in args:
      args = args + ['--workdir', workdir]
    runs.append((args, fix, subprocess.Popen(
        [sys.executable, 'main.py'] + args, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=child_env.xla_env(8))))
  for args, fix, run in runs:
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2, (args, stderr[-2000:])
    assert 'Traceback' not in stderr, stderr[-2000:]
    assert 'Error: ' in stderr and fix in stderr, stderr[-2000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['file']


_KILLED_RUN = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from score_sde.training import train
    from score_sde.data import loader
    from test_recovery import _config, _one_device

    real = loader.get_batch

    def get_batch(source, step, *args, **kwargs):
      if step == {kill_at}:  # kill -9: no finally, no atexit, no flush.
        os.kill(os.getpid(), signal.SIGKILL)
      return real(source, step, *args, **kwargs)

    loader.get_batch = get_batch
    train.train_and_evaluate(_config({n_iters}), {workdir!r}, mesh=_one_device())
''')


def test_killed_runs_tensorboard_history_has_no_hole_after_resuming(tmp_path, caplog):
  """kill -9 while loading the batch of step 9 (checkpoints written at 4, 6 and maybe 8), then
  resume: as TensorBoard reads the directory, training_loss has every step 1..12 once and
  eval_loss every multiple of 3, and no event file is empty (the steps since the last
  60-second flush are not lost, and no 0-byte file is left). The resumed run announces and
  times its compilation (rather than minutes of silence)."""
  workdir = tmp_path / 'run'
  script = _KILLED_RUN.format(root=str(ROOT), tests=str(ROOT / 'tests'), kill_at=9, n_iters=12,
                              workdir=str(workdir))
  killed = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=child_env.xla_env(8))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(_config(12), str(workdir), mesh=_one_device())
  messages = [r.getMessage() for r in caplog.records]
  assert 'Compiling the train step...' in messages
  assert any(m.startswith('Compiled the train step in') for m in messages)
  logdir = workdir / 'tensorboard'
  assert all(p.stat().st_size > 0 for p in logdir.iterdir())
  view = tensorboard_view(read_events(logdir))
  assert [s for s, _ in view['training_loss']] == list(range(1, 13))
  assert [s for s, _ in view['eval_loss']] == [3, 6, 9, 12]


def test_sigterm_saves_the_current_step_and_says_how_to_resume(tmp_path):
  """SIGTERM (a cluster's preemption notice) once training runs: the step in flight is saved as
  a preemption checkpoint, status 143, one message without a traceback, and the TensorBoard
  events reach that step."""
  workdir = tmp_path / 'run'
  run = subprocess.Popen(
      [sys.executable, 'main.py', '--config', 'configs/smoke.py', '--workdir', str(workdir),
       '--config.training.n_iters=100000', '--config.training.log_freq=1'
       ] + loop_config.main_overrides(),
      cwd=ROOT, stderr=subprocess.PIPE, text=True, env=child_env.xla_env(1))
  deadline = time.time() + 240
  while not list(workdir.glob('tensorboard/events*')) and time.time() < deadline:
    time.sleep(0.2)  # The first event file: training has begun.
  run.send_signal(signal.SIGTERM)
  _, stderr = run.communicate(timeout=240)
  assert run.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert 'Traceback' not in stderr and 'run the same command again' in stderr, stderr[-3000:]
  step = int(stderr.split('Stopped on request at step ')[1].split()[0])
  saved = checkpoint.Checkpointer(str(workdir), read_only=True)
  assert max(saved.preemption_steps() + saved.periodic_steps()) == step
  saved.close()
  logged = [s for s, _ in tensorboard_view(read_events(workdir / 'tensorboard'))['training_loss']]
  assert logged[-1] == step



def test_run_stopped_between_logging_steps_logs_what_an_uninterrupted_run_logs(eight_steps,
                                                                                 tmp_path):
  """A stop request (what main.py's SIGTERM handler sets) after step 4 of a run logging every 3
  steps, then a resumption: its training_loss at step 6 is the mean of the uninterrupted run's
  losses at steps 4, 5 and 6 (``eight_steps`` logs every step), not of the 5 and 6 the resumed
  process computed; at step 3 that of steps 1 to 3; grad_norm and eval_loss are the
  uninterrupted run's."""
  config = _config(6)
  config.training.update(log_freq=3, snapshot_freq=6, snapshot_freq_for_preemption=6)
  polls = []

  def stop_after_step_4():
    polls.append(None)  # Polled once after every step of a single-process run.
    return len(polls) == 4

  workdir = str(tmp_path / 'run')
  with pytest.raises(errors.StopRequested, match='at step 4 of 6'):
    train.train_and_evaluate(config, workdir, mesh=_one_device(), stop_requested=stop_after_step_4)
  train.train_and_evaluate(config, workdir, mesh=_one_device())
  resumed = tensorboard_view(read_events(tmp_path / 'run' / 'tensorboard'))
  straight = {tag: dict(values)
              for tag, values in tensorboard_view(read_events(eight_steps / 'tensorboard')).items()}
  losses = np.array([straight['training_loss'][s] for s in range(1, 7)], np.float64)
  assert [s for s, _ in resumed['training_loss']] == [3, 6]
  np.testing.assert_allclose([v for _, v in resumed['training_loss']],
                             [losses[:3].mean(), losses[3:].mean()], rtol=1e-6)
  for tag in ('grad_norm', 'eval_loss'):
    assert [s for s, _ in resumed[tag]] == [3, 6], tag
    np.testing.assert_allclose([v for _, v in resumed[tag]],
                               [straight[tag][3], straight[tag][6]], rtol=1e-6, err_msg=tag)
