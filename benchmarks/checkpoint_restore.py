"""What restoring a checkpoint costs: the whole train state (training's resume) against the EMA
parameters alone (sampling, ``score_sde.load``, ``--mode eval``), in time and peak host memory.

    python benchmarks/checkpoint_restore.py                    # the paper's NCSN++ cont. state
    python benchmarks/checkpoint_restore.py --config configs/smoke.py --repeats 2

The step-0 state (parameters, EMA, Adam's two moments) of ``--config`` is initialised and saved
once through ``checkpoint.Checkpointer`` into a temporary directory (``--keep DIR`` keeps it and
reuses it on the next run). Each kind of restore then runs ``--repeats`` times, each in a fresh
process on the local devices, as a resumed run or a sampling job starts: after the imports, it
restores as training's resume or ``score_sde.load`` does, building the abstract tree to restore
onto (``jax.eval_shape``), then reading with the structure and checksum checks until every array
is on its device. The table gives, per kind, the median seconds of that restore, the process's
peak resident memory (the most over the repeats) and how much that peak rose during the
restore. The operating system's file cache holds the checkpoint (it was just written), so the
read is not the disk's speed.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from score_sde import optim
from score_sde.common import parallel
from score_sde.io import checkpoint
from score_sde.models import utils as mutils
from score_sde.training import restore, train_state

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/ve/cifar10_ncsnpp_continuous.py',
                                          'Config file.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Fresh processes per kind of restore.')
_KEEP = flags.DEFINE_string('keep', None, 'Save the checkpoint here (reused if present).')
_CHILD = flags.DEFINE_enum('child', None, ['state', 'ema'], 'Internal: one restore, in this '
                           'process, of the checkpoint in --keep; prints its figures as JSON.')

KINDS = {'state': 'whole train state (resume)', 'ema': 'EMA parameters (sampling, eval)'}


def _rss_mib() -> float:
  """This process's resident memory now, in MiB (Linux)."""
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def _peak_mib() -> float:
  """This process's peak resident memory so far, in MiB (``ru_maxrss`` is in KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10


def _restore_once(config, workdir: str, kind: str) -> dict:
  """One restore of ``kind`` from ``workdir``'s newest checkpoint, timed and measured."""
  mesh = parallel.make_mesh(jax.local_devices())
  model = mutils.get_model(config)
  before = _rss_mib()
  start = time.perf_counter()
  if kind == 'state':  # As training's resume (``train.restore_or_init``) reads.
    init = train_state.state_factory(config, model, optim.get_optimizer(config.optim))
    with checkpoint.Checkpointer(workdir, read_only=True) as ckpt:
      tree, _ = ckpt.restore_latest(train_state.abstract_state(init, mesh))
  else:  # As score_sde.load reads.
    tree, _ = restore.restore_network(config, model, workdir, mesh, 'score model')
  jax.block_until_ready(tree)
  seconds = time.perf_counter() - start
  restored = sum(x.nbytes for x in jax.tree.leaves(tree))
  return {'seconds': seconds, 'rss_before': before, 'peak': _peak_mib(),
          'restored_mib': restored / 2 ** 20}


def _save(config, workdir: str) -> None:
  mesh = parallel.make_mesh(jax.local_devices())
  init = train_state.state_factory(config, mutils.get_model(config),
                                   optim.get_optimizer(config.optim))
  state = jax.jit(init, out_shardings=parallel.replicated(mesh))()
  size = sum(x.nbytes for x in jax.tree.leaves(state))
  print(f'state: {mutils.count_params(state.params) / 1e6:.1f}M parameters, '
        f'{size / 2 ** 20:.0f} MiB with EMA and Adam; {mesh.devices.size} device(s)')
  with checkpoint.Checkpointer(workdir, async_save=False) as ckpt:
    ckpt.save(0, state, periodic=True)


def main(_):
  config = _CONFIG.value
  if _CHILD.value:
    print(json.dumps(_restore_once(config, _KEEP.value, _CHILD.value)))
    return
  workdir = _KEEP.value or tempfile.mkdtemp(prefix='checkpoint_restore_')
  try:
    if not os.path.isdir(os.path.join(workdir, checkpoint.PERIODIC_DIR)):
      _save(config, workdir)
    rows = []
    for kind, label in KINDS.items():
      runs = []
      for _ in range(_REPEATS.value):
        out = subprocess.run([sys.executable, os.path.abspath(__file__)] + sys.argv[1:] +
                             [f'--child={kind}', f'--keep={workdir}'],
                             capture_output=True, text=True, check=False)
        if out.returncode:
          sys.exit(f'The {kind} restore failed:\n{out.stderr[-3000:]}')
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
      seconds = np.median([r['seconds'] for r in runs])
      peak = max(r['peak'] for r in runs)
      rise = max(r['peak'] - r['rss_before'] for r in runs)
      rows.append(f'| {label} | {runs[0]["restored_mib"]:.0f} | {seconds:.2f} | {peak:.0f} '
                  f'| {rise:.0f} |')
    print(f'| restore | MiB restored | seconds (median of {_REPEATS.value}) | peak RSS MiB '
          '| rise during the restore MiB |')
    print('|---|---|---|---|---|')
    print('\n'.join(rows))
  finally:
    if not _KEEP.value:
      shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
