"""Command line: ``python main.py --config configs/<file>.py --workdir DIR [--mode train|eval]``.

Every config field can be overridden, e.g. ``--config.training.batch_size=64``. On a TPU pod or a
multi-node GPU cluster, start one process per host with ``--distributed``; each host then loads
only its share of every batch.
"""
import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, samples and logs.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'Train, or evaluate checkpoints.')
_EVAL_FOLDER = flags.DEFINE_string('eval_folder', 'eval',
                                   'Sub-directory of --workdir for evaluation results.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() first (multi-host runs).')
flags.mark_flags_as_required(['config', 'workdir'])


class _OnlyWarningsFromLibraries(std_logging.Filter):
  """Keeps the run's own INFO lines readable: orbax and jax log every step of their work."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or '/score_sde/' in record.pathname or (
        record.pathname.endswith('main.py'))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_OnlyWarningsFromLibraries())
  import jax  # After flag parsing, so --help stays fast.
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info('JAX process %d of %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  if _MODE.value == 'train':
    from score_sde import train
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  else:
    from score_sde import evaluate
    evaluate.evaluate(_CONFIG.value, _WORKDIR.value, _EVAL_FOLDER.value)


if __name__ == '__main__':
  app.run(main)
