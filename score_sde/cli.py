"""Command line: ``python main.py --config configs/<file>.py --workdir DIR [--mode MODE]``
(``main.py`` in the checkout calls ``run``).

Modes: ``train`` (the score model, ``train.train_and_evaluate``), ``eval`` (its checkpoints,
``evaluate.evaluate``), ``sample`` (images from its newest checkpoint or ``--step``, as many as
``--num_samples``, ``generate.generate``)
and ``train_classifier`` (the noise-conditional classifier of classifier guidance, into
``DIR/classifier``, ``train.train_classifier``).

Every config field can be overridden, e.g. ``--config.training.batch_size=64``. On a TPU pod or a
multi-node GPU cluster, start one process per host with ``--distributed`` (and, where the cluster
is not detected, ``--coordinator_address``, ``--num_processes`` and ``--process_id``); each host
then loads only its share of every batch, and only process 0 writes logs, samples and reports.

A problem the user can fix (a bad config or override, missing or damaged data, an unusable
workdir, unreadable checkpoints, a non-finite loss) is printed as one message, without a
traceback, and the command exits with status 2; anything else is a bug and keeps its traceback.
SIGTERM (a cluster's preemption notice) stops training after the step in flight: its state is
saved as a preemption checkpoint, the TensorBoard events are flushed, and the command exits with
status 143 saying how to resume. Ctrl-C interrupts at once (the newest complete checkpoint is
kept; a write in flight is abandoned, never half-counted).
"""
import logging as std_logging
import os
import signal
import sys
import threading

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, samples and logs.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'sample', 'train_classifier'],
                          'Train the score model, evaluate its checkpoints, sample from the '
                          'newest one, or train the classifier of classifier guidance.')
_EVAL_FOLDER = flags.DEFINE_string('eval_folder', 'eval',
                                   'Sub-directory of --workdir for evaluation results.')
_SAMPLE_FOLDER = flags.DEFINE_string('sample_folder', 'generated',
                                     'Sub-directory of --workdir for --mode sample.')
_STEP = flags.DEFINE_integer('step', None, '--mode sample: the checkpoint step to sample from '
                             '(default: the newest readable one).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', None, '--mode sample: images to draw, in '
                                    'rounds of sampling.batch_size (default: one round).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() first (multi-host runs). On TPU '
    'pods, SLURM, Open MPI and Kubernetes the three flags below are detected; elsewhere pass '
    'them.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, '--distributed: host:port of process 0 (e.g. localhost:1234).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      '--distributed: the number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   '--distributed: this process, in [0, num_processes).')
flags.mark_flags_as_required(['config', 'workdir'])

USER_ERROR_STATUS = 2
STOPPED_STATUS = 128 + signal.SIGTERM  # What a process killed by SIGTERM reports.


class _OnlyWarningsFromLibraries(std_logging.Filter):
  """Keeps the run's own INFO lines readable: orbax and jax log every step of their work."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or '/score_sde/' in record.pathname or (
        record.pathname.endswith('main.py'))


def _fail(message: str) -> None:
  """Prints ``message`` as the one error of the run and exits with ``USER_ERROR_STATUS``."""
  sys.stderr.write(f'\nError: {message}\n')
  sys.stderr.flush()
  sys.exit(USER_ERROR_STATUS)


def _innermost_message(e: BaseException) -> str:
  """ml_collections wraps a misspelt field's KeyError in AttributeErrors; its text is inside."""
  while e.args and isinstance(e.args[0], BaseException):
    e = e.args[0]
  return str(e.args[0]) if e.args and isinstance(e.args[0], str) else str(e)


def _parse_flags(argv):
  """absl's flag parsing, with a bad ``--config.<field>=`` override as one message."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e}\nPass --helpshort or --helpfull to see help on flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(f'a --config.<field>=<value> override cannot be applied: {_innermost_message(e)}')


def _load_config():
  """The config, loaded now (ml_collections loads the file lazily) so a bad file fails here."""
  path = flags.FLAGS['config'].config_filename
  if not os.path.isfile(path.split(':', 1)[0]):  # 'file.py:arg' passes an argument to it.
    _fail(f'--config {path}: no such file. Pass a config file, e.g. configs/embedded.py.')
  try:
    config = _CONFIG.value
    config.keys()  # Forces the load.
    return config
  except (OSError, SyntaxError, AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(f'--config {path} cannot be loaded: {_innermost_message(e)}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_OnlyWarningsFromLibraries())
  config = _load_config()
  import jax  # After flag parsing, so --help stays fast.
  from score_sde.common import errors
  if _DISTRIBUTED.value:
    # CPU processes need a collectives backend to all-reduce across hosts; accelerators have
    # their own (NCCL, ICI) and ignore this setting.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  # After initialize(), whose preemption notifier would otherwise take SIGTERM over: training
  # polls this flag, and a multi-host run stops on every host at the same step.
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
  logging.info('JAX process %d of %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    if _MODE.value == 'train':
      from score_sde.training import train
      train.train_and_evaluate(config, _WORKDIR.value, stop_requested=stop.is_set)
    elif _MODE.value == 'train_classifier':
      from score_sde.training import train
      train.train_classifier(config, _WORKDIR.value, stop_requested=stop.is_set)
    elif _MODE.value == 'sample':
      from score_sde import generate
      generate.generate(config, _WORKDIR.value, _SAMPLE_FOLDER.value, step=_STEP.value,
                        num_samples=_NUM_SAMPLES.value)
    else:
      from score_sde.evaluation import evaluate
      evaluate.evaluate(config, _WORKDIR.value, _EVAL_FOLDER.value)
  except errors.StopRequested as e:
    sys.stderr.write(f'\n{e}\n')
    sys.exit(STOPPED_STATUS)
  except errors.UserError as e:
    _fail(str(e))
  except KeyboardInterrupt:
    sys.stderr.write('\nInterrupted. The newest complete checkpoint is kept; run the same '
                     'command again to resume from it.\n')
    sys.exit(130)


def run():
  """The command's entry point: parses the flags and runs ``main``."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
