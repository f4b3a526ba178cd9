"""JAX's persistent compilation cache for the command line: programs compiled once, then read.

A run compiles its train step, evaluation and sampler anew in every process (minutes each on a
loaded CPU); with this cache a resumed run, ``--mode eval`` and ``--mode sample`` read them back
from disk instead. The cache changes no result: an entry is keyed by the program, the compile
options, the devices and the jax / XLA versions, and a changed one is compiled again.

Where it lives, first that applies: the directory given to ``enable`` (``--compilation_cache``;
``''`` turns the cache off), ``$JAX_COMPILATION_CACHE_DIR``, ``$XDG_CACHE_HOME/score_sde/jax``,
``~/.cache/score_sde/jax``. Deleting the directory at any time is safe. JAX's own
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``, ``..._MIN_ENTRY_SIZE_BYTES`` and
``JAX_COMPILATION_CACHE_MAX_SIZE`` settings win over the defaults below.
"""
import os
import tempfile

from absl import logging

# Programs that compile faster than this are not written: reading an entry back costs a few
# milliseconds, and the many tiny programs of a run (random keys, reshapes) would crowd the
# directory for nothing. The train step, evaluation and the samplers take seconds to minutes.
MIN_COMPILE_TIME_SECS = 0.5
# Any size is worth keeping once the compile time qualifies: what is saved is time, not bytes.
MIN_ENTRY_SIZE_BYTES = -1
# Least recently used entries are dropped past this size (when `filelock`, which JAX's eviction
# needs, is installed; otherwise the directory is unbounded).
MAX_SIZE_BYTES = 4 << 30

_ENV_DIR = 'JAX_COMPILATION_CACHE_DIR'


def default_dir() -> str:
  """``$JAX_COMPILATION_CACHE_DIR`` if set, else the user's cache directory for score_sde."""
  if os.environ.get(_ENV_DIR):
    return os.environ[_ENV_DIR]
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'score_sde', 'jax')


def _unwritable(directory: str) -> str | None:
  """Why ``directory`` cannot hold cache entries, or None when it can (it is created if need
  be; a probe file is written and removed)."""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix='.probe-'):
      pass
  except OSError as e:
    return e.strerror or str(e)
  return None


def enable(directory: str | None = None) -> str | None:
  """Turns the persistent compilation cache on (or off) for this process.

  Call before anything is compiled: JAX opens the cache at the first compilation.

  Args:
    directory: where entries go; ``None`` for ``default_dir()``; ``''`` turns the cache off.

  Returns:
    The directory in use, or None when the cache is off. A directory that cannot be created or
    written turns the cache off with a one-line warning: a run never fails for its cache.
  """
  import jax  # pylint: disable=g-import-not-at-top  (the caller sets the environment first)
  if directory is None:
    if not jax.config.jax_enable_compilation_cache:  # JAX_ENABLE_COMPILATION_CACHE=false
      return None
    directory = default_dir()
  if not directory:
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  problem = _unwritable(directory)
  if problem:
    logging.warning('Compilation cache off: %s is not writable (%s); every program will be '
                    'compiled. Pass --compilation_cache=DIR to move it.', directory, problem)
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', directory)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_TIME_SECS)
  if 'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES' not in os.environ:
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', MIN_ENTRY_SIZE_BYTES)
  if 'JAX_COMPILATION_CACHE_MAX_SIZE' not in os.environ and _has_filelock():
    jax.config.update('jax_compilation_cache_max_size', MAX_SIZE_BYTES)
  logging.info('Compiled programs are cached in %s (--compilation_cache= turns this off).',
               directory)
  return directory


def _has_filelock() -> bool:
  try:
    import filelock  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True
