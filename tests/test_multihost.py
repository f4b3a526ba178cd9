"""Multi-host runs, on one machine: 2 processes x 4 CPU devices each, started through
``main.py --distributed`` with a localhost coordinator and gloo collectives, exactly as the
pod instructions of README and docs/multihost.md say, against 1 process with 8 devices.

Protects: a SIGTERM to one host stops every host at the same step, saved; the resumed run and
its evaluation (held-out loss and bits/dim) give the parameters and metrics of the
single-process run; only process 0 writes event files, config and reports; the checkpoints are
one set that restores; a host killed mid-run is named by the other in one line.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

import child_env
import loop_config
from event_files import read_events, tensorboard_view
from score_sde import data, optim
from score_sde.common import parallel
from score_sde.io import checkpoint
from score_sde.models import utils as mutils
from score_sde.training import train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_PROCESSES, DEVICES_PER_PROCESS = 2, 4
N_ITERS = 6
TIMEOUT_S = 300

pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def _overrides(data_dir):
  """The smoke config with the loop tests' network: every code path that crosses hosts
  (sharded batches, checkpoints, evaluation) kept."""
  return loop_config.main_overrides() + [
      '--config.data.dataset=IMAGE_FOLDER', f'--config.data.data_dir={data_dir}',
      f'--config.training.n_iters={N_ITERS}', '--config.eval.enable_bpd=True',
      '--config.eval.bpd_dataset=train', '--config.eval.begin_ckpt=1', '--config.eval.end_ckpt=1']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(workdir, mode, data_dir, log_dir, *, processes, tag='', extra=()):
  """``main.py`` as ``processes`` hosts (1: a plain single-process run of 8 devices), with the
  flags ``extra`` too; their stderr goes to ``log_dir/<mode><tag>_<i>.log``."""
  command = [sys.executable, 'main.py', '--config', 'configs/smoke.py', '--workdir',
             str(workdir), '--mode', mode] + _overrides(data_dir) + list(extra)
  if processes == 1:
    commands, devices = [command], NUM_PROCESSES * DEVICES_PER_PROCESS
  else:
    port = _free_port()
    commands = [command + ['--distributed', f'--coordinator_address=localhost:{port}',
                           f'--num_processes={processes}', f'--process_id={i}']
                for i in range(processes)]
    devices = DEVICES_PER_PROCESS
  runs = []
  for i, c in enumerate(commands):
    log = open(log_dir / f'{mode}{tag}_{i}.log', 'w')
    process = subprocess.Popen(c, cwd=ROOT, stderr=log, stdout=log,
                               env=child_env.xla_env(devices))
    runs.append((process, log))
  return runs


def _finish(runs):
  """Waits for every process; returns ``[(returncode, log text)]``."""
  out = []
  for process, log in runs:
    try:
      process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      for p, _ in runs:
        p.kill()
      raise
    log.close()
    out.append((process.returncode, pathlib.Path(log.name).read_text()))
  return out


def _wait_for_line(path: pathlib.Path, text: str):
  deadline = time.time() + TIMEOUT_S
  while time.time() < deadline:
    if path.exists() and text in path.read_text():
      return
    time.sleep(0.1)
  raise AssertionError(f'{path} never said {text!r}:\n{path.read_text()[-3000:]}')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The two-host run (SIGTERM to host 1 before its first step, resumed, evaluated) and the
  single-process run of the same config (trained, evaluated), in their workdirs."""
  root = tmp_path_factory.mktemp('multihost')
  data_dir = _image_folder(root)
  multi, single = root / 'two_hosts', root / 'one_host'
  logs = {}
  for name in ('multi', 'single'):
    (root / f'logs_{name}').mkdir()

  started = _start(multi, 'train', data_dir, root / 'logs_multi', processes=NUM_PROCESSES,
                   tag='_stopped')
  # Host 1 alone is told to stop, before its first step: all hosts must stop at the first
  # logging step (2), together, each saving its shard of that step.
  _wait_for_line(root / 'logs_multi' / 'train_stopped_1.log', 'JAX process 1 of 2')
  started[1][0].send_signal(signal.SIGTERM)
  logs['stopped'] = _finish(started)
  for mode in ('train', 'eval'):
    logs[f'multi_{mode}'] = _finish(_start(multi, mode, data_dir, root / 'logs_multi',
                                           processes=NUM_PROCESSES))
    logs[f'single_{mode}'] = _finish(_start(single, mode, data_dir, root / 'logs_single',
                                            processes=1))
  return dict(root=root, multi=multi, single=single, logs=logs, data_dir=data_dir)


def _image_folder(root):
  """An image folder of 8 train and 8 test digits under ``root``; its path."""
  data_dir = root / 'images'
  digits = data.get_dataset(_config(root).data, 'test').get(np.arange(16))['image']
  for split, rows in (('train', digits[:8]), ('test', digits[8:])):
    (data_dir / split).mkdir(parents=True)
    for i, image in enumerate(rows):
      Image.fromarray(image[..., 0]).save(data_dir / split / f'{i}.png')
  return data_dir


def _config(root):
  config = loop_config.get_config()
  config.data.update(dataset='MNIST_EMBEDDED')
  return config


def test_sigterm_to_one_host_stops_every_host_at_the_same_saved_step(runs):
  """Both hosts exit 143 at step 2 (the first logging step), saying so; nothing crashed."""
  for returncode, log in runs['logs']['stopped']:
    assert returncode == 128 + signal.SIGTERM, log[-3000:]
    assert 'Stopped on request at step 2 of 6' in log, log[-3000:]
  for name in ('multi_train', 'multi_eval', 'single_train', 'single_eval'):
    for returncode, log in runs['logs'][name]:
      assert returncode == 0, (name, log[-3000:])
  assert 'Resumed from step 2.' in runs['logs']['multi_train'][1][1]


def _restore(workdir, step):
  config = _config(workdir)
  mesh = parallel.make_mesh(jax.devices()[:1])
  init = train_state.state_factory(config, mutils.get_model(config),
                                   optim.get_optimizer(config.optim))
  with checkpoint.Checkpointer(str(workdir), read_only=True) as ckpt:
    state, restored = ckpt.restore_latest(train_state.abstract_state(init, mesh))
  assert restored == step
  return jax.device_get(state)


def test_two_hosts_train_the_parameters_of_one(runs):
  """The whole final state (parameters, EMA, Adam moments, step) of the stopped, resumed
  two-host run equals the uninterrupted single-process run's: the same global batches, noise
  and all-reduced gradients, whatever the process layout."""
  multi, single = _restore(runs['multi'], N_ITERS), _restore(runs['single'], N_ITERS)
  leaves_m, tree_m = jax.tree.flatten(multi)
  leaves_s, tree_s = jax.tree.flatten(single)
  assert tree_m == tree_s
  for a, b in zip(leaves_m, leaves_s):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_two_hosts_evaluate_the_metrics_of_one(runs):
  """Held-out loss and bits/dim of checkpoint 4, each host loading its half of every batch,
  equal the single-process figures; the report exists once, written by process 0."""
  rows = {}
  for name in ('multi', 'single'):
    report = json.loads((runs[name] / 'eval' / 'report.json').read_text())
    rows[name] = {row['step']: row for row in report}
  assert sorted(rows['multi']) == sorted(rows['single']) == [4]
  for column in ('loss', 'bpd'):
    assert rows['multi'][4][column] == pytest.approx(rows['single'][4][column], rel=1e-5)
  assert rows['multi'][4]['bpd'] > 0


def _written_files(workdir):
  """Every file outside the checkpoint directories, event files by directory only (their names
  carry the host name, the time and the process id)."""
  files = []
  for path in workdir.rglob('*'):
    if path.is_file() and not path.relative_to(workdir).parts[0].startswith('checkpoints'):
      rel = path.relative_to(workdir)
      files.append(str(rel.parent / 'events') if 'tfevents' in rel.name else str(rel))
  return sorted(files)


def test_only_process_zero_writes(runs):
  """The two-host run wrote the files of the single-process run, plus one event file for its
  stopped segment: one per launch, none from host 1. Its TensorBoard history has every logged
  step once."""
  multi, single = _written_files(runs['multi']), _written_files(runs['single'])
  assert multi.count('tensorboard/events') == 2
  assert single.count('tensorboard/events') == 1
  assert sorted(set(multi)) == sorted(set(single))
  assert len(multi) == len(single) + 1
  view = tensorboard_view(read_events(runs['multi'] / 'tensorboard'))
  assert [s for s, _ in view['training_loss']] == [2, 4, 6]
  single_view = tensorboard_view(read_events(runs['single'] / 'tensorboard'))
  np.testing.assert_allclose([v for _, v in view['training_loss']],
                             [v for _, v in single_view['training_loss']], rtol=1e-5)


def test_checkpoints_are_one_set(runs):
  """The periodic snapshots (4, 6) and the preemption checkpoints are the same steps as the
  single-process run's, each one directory that the hosts wrote together, all readable."""
  with checkpoint.Checkpointer(str(runs['multi']), read_only=True) as multi, \
       checkpoint.Checkpointer(str(runs['single']), read_only=True) as single:
    assert multi.periodic_steps() == single.periodic_steps() == [4, 6]
    assert multi.preemption_steps() == single.preemption_steps()
  shards = {p.name for p in (runs['multi'] / 'checkpoints' / '6' / 'state').iterdir()
            if p.name.startswith('ocdbt.process_')}
  # Every leaf of this state is replicated and under checkpoint.MIN_REPLICA_PARALLEL_SLICE_BYTES
  # per replica, so replica 0 (process 0) writes it all; no host writes a set of its own.
  assert shards == {'ocdbt.process_0'}


def test_a_lost_host_is_named_in_one_line(tmp_path):
  """kill -9 of host 1's process once both hosts train: host 0 (the coordinator) ends with status
  2 and one line naming process 1 and the heartbeat timeout, saying what was saved is intact and
  how to restart; not JAX's abort (a C++ check-failure stack, a fault-handler dump, a traceback
  from the collective that failed). Host 1's status is that of its killed process."""
  data_dir = _image_folder(tmp_path)
  started = _start(tmp_path / 'run', 'train', data_dir, tmp_path, processes=NUM_PROCESSES,
                   extra=['--config.training.n_iters=1000', '--config.training.log_freq=1',
                          '--config.distributed.heartbeat_timeout_s=5'])
  _wait_for_line(tmp_path / 'train_1.log', 'step 2,')  # Both hosts are past their first step.
  host = started[1][0].pid  # The process main.py started; the work runs in its child.
  worker = int(pathlib.Path(f'/proc/{host}/task/{host}/children').read_text().split()[0])
  os.kill(worker, signal.SIGKILL)
  (coordinator_status, log), (host_status, _) = _finish(started)
  assert host_status == 128 + signal.SIGKILL
  assert coordinator_status == 2, log[-3000:]
  message = log.rstrip().splitlines()[-1]
  assert message.startswith('Error: process 1 sent no heartbeat for 5 s'), log[-3000:]
  assert str(tmp_path / 'run') in message and 'same command' in message, message
  for noise in ('Traceback', 'Terminating process', 'Check failure', 'Fatal Python error'):
    assert noise not in log, log[-3000:]


_GATHER_SCRIPT = '''
import json, sys
import jax
import jax.numpy as jnp
import numpy as np
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=int(sys.argv[2]),
                           process_id=int(sys.argv[3]))
from score_sde.common import parallel
mesh = parallel.make_mesh()
rows = np.arange(32, dtype=np.float32).reshape(16, 2)
local = rows[parallel.host_batch_slice(16)]
split = parallel.to_global(local, mesh)
doubled = jax.jit(lambda x: 2. * x, out_shardings=parallel.data_sharding(mesh))(split)
out = {name: parallel.gather_rows(x).tolist() for name, x in (
    ('split', split), ('doubled', doubled), ('local', local), ('addressable', jnp.asarray(local)))}
print('GATHERED ' + json.dumps(out), flush=True)
'''


def test_gathered_rows_are_every_hosts_rows_in_order(tmp_path):
  """parallel.gather_rows on 2 hosts: an array split over both hosts' devices (as given, or out
  of a jit) and each host's local numpy rows come back on every host as all 16 rows in process
  order, the inverse of to_global; an array on one host's devices comes back as it is."""
  port = _free_port()
  runs = []
  for i in range(NUM_PROCESSES):
    out = open(tmp_path / f'gather_{i}.json', 'w')
    runs.append((subprocess.Popen(
        [sys.executable, '-c', _GATHER_SCRIPT, f'localhost:{port}', str(NUM_PROCESSES), str(i)],
        cwd=ROOT, stdout=out, stderr=open(tmp_path / f'gather_{i}.log', 'w'),
        env=child_env.xla_env(DEVICES_PER_PROCESS)), out))
  rows = np.arange(32, dtype=np.float32).reshape(16, 2)
  for i, (status, text) in enumerate(_finish(runs)):
    assert status == 0, (tmp_path / f'gather_{i}.log').read_text()[-3000:]
    # Gloo writes its own lines to stdout, before or after this one.
    (line,) = [l for l in text.splitlines() if l.startswith('GATHERED ')]
    out = json.loads(line[len('GATHERED '):])
    for name in ('split', 'local'):
      np.testing.assert_array_equal(out[name], rows, err_msg=name)
    np.testing.assert_array_equal(out['doubled'], 2. * rows)
    np.testing.assert_array_equal(out['addressable'], rows[8 * i:8 * (i + 1)])
