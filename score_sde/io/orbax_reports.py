"""orbax's own reports of what ``checkpoint`` already reports in one line, kept off the console.

orbax logs (through absl) a WARNING that a reader's directory is read only, twice per load, and,
when the disk fills, an ERROR with a traceback per write thread, to which asyncio adds an
'exception was never retrieved' per abandoned write (``OrbaxReports``, on the loggers of
``_LOGGERS``, for the length of a block with ``filtered``). Its failed reads and abandoned writes
also report through ``sys.unraisablehook``: a ``RuntimeError('Event loop is closed')`` per read
still in flight when a restore fails, hundreds per damaged checkpoint, and the errors of its
abandoned coroutines when they are collected (``ClosedLoopReports``,
``quiet_closed_loop_callbacks``). Each filter drops only those records and passes everything
else; the log and hook plumbing lives here so that ``checkpoint`` reads as saving and restoring.
"""
import contextlib
import gc
import logging as std_logging
import os
import sys
import time

from absl import logging

from score_sde.io import files

_READ_ONLY_NOTICE = 'Given directory is read only=%s'


# orbax logs through absl; asyncio reports the failures of orbax's abandoned writes.
_LOGGERS = ('absl', 'asyncio')


class OrbaxReports(std_logging.Filter):
  """Drops the log records of orbax's that ``checkpoint`` reports itself: with
  ``read_only_notice``, the WARNING that a reader's directory is read only (logged once per
  manager, twice per load); with ``disk_full``, the ERRORs (each with a traceback) that orbax's
  write threads log when the disk is full, and asyncio's 'exception was never retrieved' for
  each of their abandoned writes, which ``save`` / ``close`` report as one
  ``files.DiskFullError``. Every other record passes. Goes on the loggers of ``_LOGGERS``."""

  def __init__(self, *, read_only_notice: bool = False, disk_full: bool = False):
    super().__init__()
    self._read_only_notice = read_only_notice
    self._disk_full = disk_full

  def filter(self, record):
    if record.name != 'asyncio' and '/orbax/' not in record.pathname.replace(os.sep, '/'):
      return True
    if self._read_only_notice and record.msg == _READ_ONLY_NOTICE:
      return False
    if self._disk_full and record.levelno >= std_logging.ERROR and record.exc_info:
      return not files.is_disk_full(record.exc_info[1])
    return True

  def add(self) -> None:
    for name in _LOGGERS:
      std_logging.getLogger(name).addFilter(self)

  def remove(self) -> None:
    for name in _LOGGERS:
      std_logging.getLogger(name).removeFilter(self)


@contextlib.contextmanager
def filtered(reports: OrbaxReports):
  """``reports`` filters the loggers within the block."""
  reports.add()
  try:
    yield
  finally:
    reports.remove()


def _is_orbax_coroutine(obj) -> bool:
  code = getattr(obj, 'cr_code', None)
  return code is not None and '/orbax/' in code.co_filename.replace(os.sep, '/')


class ClosedLoopReports:
  """A ``sys.unraisablehook`` that counts, instead of printing, orbax's ``RuntimeError('Event
  loop is closed')`` reports (see ``quiet_closed_loop_callbacks``) and the errors of orbax's
  coroutines that a failed write abandoned, met when they are collected (at exit, an
  ``ImportError`` each); anything else goes to the hook it replaced. Installed on construction;
  ``remove`` puts the replaced hook back."""

  def __init__(self):
    self.silenced = 0
    self._previous = sys.unraisablehook
    sys.unraisablehook = self

  def __call__(self, unraisable):
    if ((isinstance(unraisable.exc_value, RuntimeError)
         and str(unraisable.exc_value) == 'Event loop is closed')
        or _is_orbax_coroutine(unraisable.object)):
      self.silenced += 1
    else:
      self._previous(unraisable)

  def remove(self) -> None:
    if sys.unraisablehook is self:
      sys.unraisablehook = self._previous
    if self.silenced:
      logging.debug('Silenced %d "Event loop is closed" reports of failed I/O.', self.silenced)


@contextlib.contextmanager
def quiet_closed_loop_callbacks():
  """Silences one harmless report of orbax reading a damaged checkpoint.

  orbax runs the tensorstore reads of a restore on an asyncio loop that it closes as soon as one
  read fails; the reads still in flight then report ``RuntimeError('Event loop is closed')``
  through ``sys.unraisablehook``: one traceback each, hundreds per damaged checkpoint, after
  the one-line warning that says what happened. Within this block those, and only those, are
  counted (debug log) instead of printed; anything else goes to the previous hook. The hook is
  the process's, so the block is kept short: one checkpoint read.
  """
  reports = ClosedLoopReports()
  failed = False
  try:
    yield
  except BaseException:
    failed = True
    raise
  finally:
    gc.collect()  # Reports still pending are made while the hook filters them.
    if failed or reports.silenced:
      # Reads still in flight on tensorstore's threads report when they end, later on a loaded
      # machine: keep filtering until none has come for 0.2 s (2 s at most, failed reads only).
      last, quiet_since, deadline = reports.silenced, time.monotonic(), time.monotonic() + 2.
      while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.2:
        time.sleep(0.02)
        gc.collect()
        if reports.silenced != last:
          last, quiet_since = reports.silenced, time.monotonic()
    reports.remove()
