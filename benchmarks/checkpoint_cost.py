"""How long saving a train state stalls training, with orbax's asynchronous save and without.

    python benchmarks/checkpoint_cost.py                       # the paper's NCSN++ cont. state
    python benchmarks/checkpoint_cost.py --config configs/embedded.py --repeats 5

The state (parameters, EMA, Adam moments) of ``--config`` is initialised on every local device
and saved ``--repeats`` times through ``checkpoint.Checkpointer`` (CRC-32 per array, atomic
rename) into a temporary directory. For each mode it prints the median time ``save`` blocks the
caller (what the training loop waits for) and the median time until the checkpoint is complete
on disk, and the state's size.
"""
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
from score_sde.training import train_state

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/ve/cifar10_ncsnpp_continuous.py',
                                          'Config file.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Saves per mode; the median is reported.')


def main(_):
  config = _CONFIG.value
  mesh = parallel.make_mesh(jax.local_devices())
  init = train_state.state_factory(config, mutils.get_model(config),
                                   optim.get_optimizer(config.optim))
  state = jax.jit(init, out_shardings=parallel.replicated(mesh))()
  jax.block_until_ready(state)
  size = sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, 'nbytes'))
  print(f'state: {mutils.count_params(state.params) / 1e6:.1f}M parameters, '
        f'{size / 2 ** 20:.0f} MiB with EMA and Adam; {mesh.devices.size} device(s)')
  for async_save in (True, False):
    blocked, total = [], []
    with tempfile.TemporaryDirectory() as workdir:
      with checkpoint.Checkpointer(workdir, max_to_keep=1, async_save=async_save) as ckpt:
        for step in range(1, _REPEATS.value + 1):
          start = time.perf_counter()
          ckpt.save(step, state, periodic=True)
          blocked.append(time.perf_counter() - start)
          ckpt.wait_until_finished()
          total.append(time.perf_counter() - start)
    print(f'async_save={async_save!s:<5}: save blocks {np.median(blocked):6.2f} s, complete on '
          f'disk after {np.median(total):6.2f} s (median of {_REPEATS.value}; '
          f'{size / 2 ** 20 / np.median(total):.0f} MiB/s)')


if __name__ == '__main__':
  app.run(main)
