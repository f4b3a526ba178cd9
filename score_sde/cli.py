"""score_sde's command line: train, evaluate and sample from score-based generative models.

Usage: score-sde --config CONFIG --workdir DIR [--mode MODE] [--config.GROUP.FIELD=VALUE ...]
(in a checkout, python main.py takes the same flags)

Modes (--mode):
  train             train the score model (the default); the same command again resumes the run
                    or says it is finished
  eval              evaluate the run's checkpoints: loss, bits/dim, FID / KID / IS
  sample            draw --num_samples images (default: one round of sampling.batch_size) from
                    the newest checkpoint, or from --step, into DIR/generated
  train_classifier  train the noise-conditional classifier of classifier guidance into
                    DIR/classifier

CONFIG is a config file (Python, with a get_config() that returns an ml_collections ConfigDict),
e.g. configs/embedded.py; a relative path under configs/ that does not exist from the current
directory is read from the installed package's configs, so the shipped experiments run from
anywhere. Every config field can be overridden, e.g. --config.training.batch_size=64; --help
lists the fields with their values (those of --config CONFIG when it is given).

Compiled programs are kept in a persistent cache, so a resumed run, eval and sample do not
compile them again: $JAX_COMPILATION_CACHE_DIR if set, else $XDG_CACHE_HOME/score_sde/jax or
~/.cache/score_sde/jax; --compilation_cache=DIR moves it, --compilation_cache= turns it off.

On a TPU pod or a multi-node GPU cluster, start one process per host with --distributed (and,
where the cluster is not detected, --coordinator_address, --num_processes and --process_id);
each host then loads only its share of every batch, and only process 0 writes logs, samples and
reports. When a host is lost (no heartbeat for config.distributed.heartbeat_timeout_s), the
others stop with one line naming it (status 2).

Exit status: 0 when done. 2 for a problem the user can fix (a bad config file, value or
override, missing or damaged data, an unusable workdir, unreadable checkpoints, a non-finite
loss), printed as one message without a traceback; anything else is a bug and keeps its
traceback (status 1). SIGTERM (a cluster's preemption notice) stops every mode with status 143
and one message saying how to go on: training after the step in flight, which it saves as a
preemption checkpoint (and at once while starting or compiling, with nothing to save); eval and
sample at once (the hosts of a multi-host run: together, at a batch or round's end), eval keeping
what it finished. Ctrl-C interrupts at once (status 130;
the newest complete checkpoint is kept; a write in flight is abandoned, never half-counted).
"""
import importlib.util
import os
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from score_sde.common import logs, stopping, supervise

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/embedded.py; a relative path under configs/ '
    'that does not exist here is read from the installed package. --help lists its fields.',
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
_SEED = flags.DEFINE_integer('seed', None, '--mode sample: the seed of the samples\' random '
                             'stream (default: the config\'s seed, which reproduces the training '
                             'snapshot of the step).')
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
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', None, 'Directory of the persistent cache of compiled programs (default: '
    '$JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/score_sde/jax or ~/.cache/score_sde/jax); '
    '--compilation_cache= turns it off.')
flags.mark_flags_as_required(['config', 'workdir'])

USER_ERROR_STATUS = 2
STOPPED_STATUS = stopping.STOPPED_STATUS  # 143, what a process killed by SIGTERM reports.


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


class _ConfigFileError(Exception):
  """A config file that cannot be loaded. Not a ValueError, which absl would rewrap."""


def _resolve_config_path(path: str) -> str:
  """``path`` when it is a file; else, for a relative ``configs/<name>.py`` (or ``<name>.py``),
  the installed package's config of that name, so that the shipped experiments run from any
  directory (the configs are modules of the package, so every install carries them)."""
  if os.path.isfile(path) or os.path.isabs(path):
    return path
  from score_sde import configs  # pylint: disable=g-import-not-at-top
  name = os.path.normpath(path)
  if name.startswith('configs' + os.sep):
    name = name[len('configs' + os.sep):]
  packaged = os.path.join(os.path.dirname(configs.__file__), name)
  return packaged if os.path.isfile(packaged) else path


def _config_file_failure(path: str, resolved: str, e: BaseException) -> str:
  """``'--config <path>: line <n>: <Type>: <message>'`` for an exception that running the file
  (or its ``get_config``) raised, at the file's line it came from; a line of another file, where
  the error itself was raised, is named beside it."""
  def shown(filename):
    same = filename and os.path.abspath(filename) == os.path.abspath(resolved)
    return path if same else filename

  error = f'{type(e).__name__}: {e}'
  if isinstance(e, SyntaxError) and e.filename:  # This file, or one it imports, does not parse.
    error = f'{type(e).__name__}: {e.msg}' + (f'\n    {e.text.strip()}' if e.text else '')
    if shown(e.filename) == path:
      return f'--config {path}: line {e.lineno}: {error}'
    return f'--config {path}: {e.filename}, line {e.lineno}: {error}'
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if not f.filename.startswith('<') and f.filename != __file__]  # Not importlib's.
  own = [f for f in frames if shown(f.filename) == path]
  where = f'line {own[-1].lineno}' if own else 'in get_config()'
  if frames and frames[-1] not in own[-1:]:
    where += f' ({frames[-1].filename}, line {frames[-1].lineno})'
  return f'--config {path}: {where}: {error}'


def _run_config_file(argument: str) -> 'ml_collections.ConfigDict':
  """The ConfigDict of ``--config FILE[:ARG]``: FILE's ``get_config(ARG)``; one
  ``_ConfigFileError`` naming the file, the line and the error when that fails."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path, *arg = argument.split(':', 1)  # 'file.py:arg' passes an argument to get_config.
  resolved = _resolve_config_path(path)
  if not os.path.isfile(resolved):
    raise _ConfigFileError(
        f'--config {path}: no such file. Pass a config file, e.g. configs/embedded.py.')
  # The name ml_collections gives the module of --config, for code that looks it up.
  spec = importlib.util.spec_from_file_location('config_config', resolved)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not callable(getattr(module, 'get_config', None)):
      raise _ConfigFileError(f'--config {path} defines no get_config(); a config file defines '
                             'get_config() returning an ml_collections.ConfigDict.')
    config = module.get_config(*arg)
  except _ConfigFileError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (all of it is the file's to fix)
    raise _ConfigFileError(_config_file_failure(path, resolved, e)) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise _ConfigFileError(f'--config {path}: get_config() returned {type(config).__name__}, '
                           'not an ml_collections.ConfigDict.')
  return config


class _ConfigFileParser(flags.ArgumentParser):
  """The parser of ``--config`` (in place of ml_collections' own): ``_run_config_file``."""

  def parse(self, argument):
    config = _run_config_file(argument)
    config.lock()  # As lock_config=True: an override cannot add a field.
    return config

  def flag_type(self):
    return 'config file'


flags.FLAGS['config'].parser = _ConfigFileParser()

_HELP_FLAGS = ('-h', '-help', '--help', '-?', '-helpshort', '--helpshort')


def _config_argument(argv) -> str | None:
  """The value of ``--config`` in ``argv``, without parsing the other flags."""
  for i, arg in enumerate(argv):
    if arg in ('--config', '-config') and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith(('--config=', '-config=')):
      return arg.split('=', 1)[1]
  return None


def _default_fields() -> dict:
  """``{'training.batch_size': 'Global batch over all devices of all hosts.', ...}`` in the order
  of ``configs/default.py``, which sets every field: each field's end-of-line comment there, or
  ''."""
  from score_sde.configs import default  # pylint: disable=g-import-not-at-top
  with open(default.__file__, encoding='utf-8') as f:
    source = f.read()
  groups = {alias: group for group, alias in re.findall(r'config\.(\w+) = (\w+) = ', source)}
  groups['config'] = ''
  fields = {}
  for owner, field, comment in re.findall(r'(?m)^ *(\w+)\.(\w+) = [^#\n]*(?:#\s*(.*))?$',
                                          source):
    if owner in groups:
      fields['.'.join(filter(None, (groups[owner], field)))] = comment.strip()
  return fields


def _config_fields_help(config, source: str) -> str:
  """One line per field of ``config``, grouped by section, with its value and meaning."""
  documented = _default_fields()
  order = {name: i for i, name in enumerate(documented)}
  lines = [f'Config fields of {source}, with their values. Set one with',
           '--config.GROUP.FIELD=VALUE; score_sde/configs/default.py explains each of them.']

  def field_lines(prefix, node, indent):
    names = sorted(node.keys(), key=lambda n: (order.get(prefix + n, len(order)), n))
    rows = [(name, node[name]) for name in names if not hasattr(node[name], 'items')]
    width = min(max((len(f'{n} = {v!r}') for n, v in rows), default=0), 40)
    for name, value in rows:
      text = f'{indent}{f"{name} = {value!r}":<{width}}  {documented.get(prefix + name, "")}'
      text = text.rstrip()
      lines.append(text if len(text) <= 100 else text[:97] + '...')
    for name in names:
      if hasattr(node[name], 'items'):
        lines.append(f'{indent}{prefix + name}:')
        field_lines(f'{prefix}{name}.', node[name], indent + '  ')

  field_lines('', config, '  ')
  return '\n'.join(lines)


def _print_help(argv) -> None:
  """``--help``: this module's usage text, its flags, and the fields of the config (that of
  ``--config`` when given, else ``configs/default.py``) with their values, on stdout."""
  argument = _config_argument(argv)
  if argument:
    config = _run_config_file(argument)
  else:
    from score_sde.configs import default  # pylint: disable=g-import-not-at-top
    config, argument = default.get_config(), 'configs/default.py (the defaults)'
  module = flags.FLAGS.find_module_defining_flag('workdir')
  flag_help = '\n'.join(line for line in flags.FLAGS.module_help(module).splitlines()
                        if line.startswith(' '))  # Without the module's name.
  sys.stdout.write(f'{__doc__.strip()}\n\nFlags (--helpfull lists those of the libraries too):\n'
                   f'{flag_help}\n\n{_config_fields_help(config, argument)}\n')
  sys.stdout.flush()


def _parse_flags(argv):
  """absl's flag parsing, with ``--help`` (exit 0), and a config file that cannot be loaded or a
  bad ``--config.<field>=`` override as one message (exit 2)."""
  try:
    if any(arg in _HELP_FLAGS for arg in argv[1:argv.index('--') if '--' in argv else None]):
      _print_help(argv)
      sys.exit(0)
    return flags.FLAGS(argv)
  except _ConfigFileError as e:
    _fail(str(e))
  except flags.Error as e:
    _fail(f'{e}\nPass --help to see the flags and the config fields.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(f'a --config.<field>=<value> override cannot be applied: {_innermost_message(e)}')


def _load_config():
  """The config of ``--config``, with the overrides applied (loaded while parsing the flags)."""
  return _CONFIG.value


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_libraries()  # The run's own INFO lines stay; orbax's and jax's go.
  config = _load_config()
  if _DISTRIBUTED.value and not supervise.is_child():
    # The work runs in a child, so that a lost host ends it with one line, not a C++ abort.
    from score_sde.configs import validation
    for problem in validation.distributed_problems(config):
      _fail(problem)
    sys.exit(supervise.supervise(_WORKDIR.value, config.distributed.heartbeat_timeout_s))
  # From here SIGTERM is a request to stop; a single process stops at once while nothing is
  # unsaved, the hosts of a multi-host run stop together at a poll.
  stopping.install(exit_at_once=not _DISTRIBUTED.value)
  from score_sde.common import compile_cache, stderr_filter
  stderr_filter.install()  # Before XLA starts: its slow-compile alarm is written to fd 2.
  compile_cache.enable(_COMPILATION_CACHE.value)  # Before anything is compiled.
  import jax  # After flag parsing, so --help stays fast.
  from score_sde.common import errors
  if _DISTRIBUTED.value:
    # CPU processes need a collectives backend to all-reduce across hosts; accelerators have
    # their own (NCCL, ICI) and ignore this setting.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
        heartbeat_timeout_seconds=config.distributed.heartbeat_timeout_s)
    stopping.install(exit_at_once=False)  # Again: initialize()'s preemption notifier took it.
  logging.info('JAX process %d of %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    if _MODE.value == 'train':
      from score_sde.training import train
      train.train_and_evaluate(config, _WORKDIR.value, stop_requested=stopping.requested)
    elif _MODE.value == 'train_classifier':
      from score_sde.training import train
      train.train_classifier(config, _WORKDIR.value, stop_requested=stopping.requested)
    elif _MODE.value == 'sample':
      from score_sde import generate
      generate.generate(config, _WORKDIR.value, _SAMPLE_FOLDER.value, step=_STEP.value,
                        num_samples=_NUM_SAMPLES.value, seed=_SEED.value,
                        stop_requested=stopping.requested)
    else:
      from score_sde.evaluation import evaluate
      evaluate.evaluate(config, _WORKDIR.value, _EVAL_FOLDER.value,
                        stop_requested=stopping.requested)
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
