"""orbax's own reports of what ``checkpoint`` already reports in one line, kept off the console.

orbax logs (through absl) a WARNING that a reader's directory is read only, twice per load, and,
when the disk fills, an ERROR with a traceback per write thread, to which asyncio adds an
'exception was never retrieved' per abandoned write. ``OrbaxReports``, on the loggers of
``_LOGGERS`` (for the length of a block with ``filtered``), drops those records and passes
everything else.

A failed write also leaves its sibling writes running on orbax's closed event loop, and
tensorstore reports each of them, when it ends, through ``sys.unraisablehook`` alone (no log
record, no warning): ``AbandonedWriteReports`` drops those reports for a writer's lifetime. (A
failed read leaves nothing running: ``checkpoint._ReadsEndTogether``.) The plumbing lives here
so that ``checkpoint`` reads as saving and restoring.
"""
import contextlib
import logging as std_logging
import os
import sys

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


class AbandonedWriteReports:
  """A ``sys.unraisablehook`` that drops tensorstore's report of each write that orbax abandoned
  and passes every other report to the hook it replaced.

  orbax runs a save's tensorstore writes with ``asyncio.gather`` on an event loop of its own, in
  a thread of its own, and closes that loop as soon as one write fails (a full disk), while the
  others still run; orbax's public API has no seam between the two. tensorstore hands each of
  those writes, when it ends, to the closed loop, which refuses it, and reports the refusal
  (``RuntimeError('Event loop is closed')``, with no object) through ``sys.unraisablehook``:
  one traceback per write, hundreds when the disk fills. They come from tensorstore's threads
  while training goes on, at any time after the failure, so this hook is installed for as long
  as the writer lives (``add`` / ``remove``), not for one call.
  """

  def __init__(self):
    self._replaced = None

  def __call__(self, unraisable):
    if not (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == 'Event loop is closed'):
      self._replaced(unraisable)

  def add(self) -> None:
    self._replaced, sys.unraisablehook = sys.unraisablehook, self

  def remove(self) -> None:
    """Puts the replaced hook back, unless another hook has replaced this one meanwhile (it may
    pass reports on to this one, which passes them on in turn)."""
    if sys.unraisablehook is self:
      sys.unraisablehook = self._replaced
