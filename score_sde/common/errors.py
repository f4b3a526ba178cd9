"""Errors a user can act on: a bad config, missing or damaged data, an unusable workdir.

Each is raised with a message that names the problem and its fix. ``main.py`` prints such a
message alone, as one block without a traceback, and exits with status 2; every other exception
is a bug and keeps its traceback. Each class also derives from the builtin that callers caught
before these existed (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` still
works.
"""


class UserError(Exception):
  """A problem in what the user gave (config, data, workdir, checkpoints), not in the code."""


class ConfigError(UserError, ValueError):
  """The config has invalid, missing or unknown fields; the message lists every one."""


class DataError(UserError):
  """The dataset cannot be used as configured."""


class DataNotFoundError(DataError, FileNotFoundError):
  """The dataset is missing, empty, or its optional reader is not installed."""


class BadDataError(DataError, ValueError):
  """The dataset is there but an example cannot be decoded, or has the wrong shape."""


class WorkdirError(UserError, NotADirectoryError):
  """``--workdir`` is not a directory this run can use (a file, not writable, missing)."""


class NonFiniteLossError(UserError, FloatingPointError):
  """Training met a NaN / inf loss; the message names the step and the checkpoint to resume."""


class MissingDependencyError(UserError, ImportError):
  """An optional package that the config needs is not installed; the message gives the command."""


class StopRequested(UserError):
  """A run stopped early on request (SIGTERM: a preemption notice), after saving what it must;
  the message says what was kept and how to go on."""
