"""SIGTERM (a cluster's preemption notice) as a request to stop, heard by every mode.

``install()`` (``score_sde.cli`` calls it first) makes SIGTERM set a flag, ``requested()``, that
each mode polls at its safe points: training after the step in flight, which it saves; evaluation
after each metric and bits/dim batch; sampling between rounds. A mode also declares the stretches
of its run where stopping loses nothing (``nothing_unsaved``): start-up and compilation before a
first training step, an evaluation (its progress is on disk batch by batch and round by round), a
sampling run (nothing is written before the end). A SIGTERM in such a stretch, or one pending when
it begins, ends the process at once with ``STOPPED_STATUS`` and the stretch's message, even while
the main thread is inside a minutes-long XLA compilation, where Python's handler cannot run until
it returns: CPython's C-level handler writes the signal's number to a pipe
(``signal.set_wakeup_fd``) whose reading thread acts on it. Inside such a stretch,
``unsaved_work`` marks what must run to its next poll instead (a training loop, a report being
written); leaving it does not act on a pending request, the code's next poll does.

In a multi-host run (``install(exit_at_once=False)``) no process leaves on its own: the others
would then stop as at a lost process. Every request waits for the polls, which the processes
agree on together (``any_process``).

Without ``install`` (the Python API, tests in one process) SIGTERM keeps its default action and
the markers do nothing.

Example:
  @stopping.nothing_unsaved('Stopped on request before writing anything; run it again.')
  def run(stop_requested):
    for r in range(rounds):
      if r and stopping.any_process(stop_requested):
        raise errors.StopRequested(...)
      ...
    with stopping.unsaved_work():
      write_results()
"""
import contextlib
import os
import signal
import sys
import threading
from typing import Callable, List, Optional

STOPPED_STATUS = 128 + signal.SIGTERM  # What a process killed by SIGTERM reports.


class _State:
  """The process's one SIGTERM disposition (signals are per process)."""

  def __init__(self):
    self.lock = threading.RLock()  # Re-entered by the handler if it interrupts a holder.
    self.requested = threading.Event()
    # Innermost last: a stretch's message (exit at once) or None (unsaved work: wait for a poll).
    self.stretches: List[Optional[str]] = []
    self.exit_at_once = False
    self.watching = False


_STATE = _State()


def install(exit_at_once: bool = True) -> None:
  """Makes SIGTERM a request to stop. Call it from the main thread, and again after anything that
  takes SIGTERM over (``jax.distributed.initialize`` installs a preemption notifier).

  Args:
    exit_at_once: whether a request in a ``nothing_unsaved`` stretch ends the process at once
      (one process); False: every request waits for the polls (a multi-host run).
  """
  signal.signal(signal.SIGTERM, lambda signum, frame: _request())
  with _STATE.lock:
    _STATE.exit_at_once = exit_at_once
    if _STATE.watching:
      return
    _STATE.watching = True
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  threading.Thread(target=_watch, args=(read_fd,), name='sigterm_watch', daemon=True).start()


def requested() -> bool:
  """Whether this process was asked to stop (a SIGTERM since ``install``)."""
  return _STATE.requested.is_set()


def any_process(stop_requested: Callable[[], bool]) -> bool:
  """Whether this process or any other of the run asked to stop. In a multi-host run this is a
  collective: every process must call it at the same point of the same loop."""
  import jax  # Here: the command line imports this module before JAX, to keep --help fast.
  if jax.process_count() == 1:
    return bool(stop_requested())
  import numpy as np
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.asarray(bool(stop_requested())))
  return bool(np.any(flags))


@contextlib.contextmanager
def nothing_unsaved(message: str):
  """A stretch whose end loses nothing: a stop request in it (or pending when it begins) writes
  ``message`` to stderr and ends the process with ``STOPPED_STATUS`` (once installed with
  ``exit_at_once``). Also a decorator."""
  with _STATE.lock:
    _STATE.stretches.append(message)
  _exit_if_nothing_unsaved()
  try:
    yield
  finally:
    with _STATE.lock:
      _STATE.stretches.pop()


@contextlib.contextmanager
def unsaved_work():
  """Inside a ``nothing_unsaved`` stretch, work that must reach the code's next poll (or finish)
  before the process may stop: a request waits for that poll. Also a decorator."""
  with _STATE.lock:
    _STATE.stretches.append(None)
  try:
    yield
  finally:
    with _STATE.lock:
      _STATE.stretches.pop()


def _watch(read_fd: int) -> None:
  """Wakes on every signal that has a Python handler (SIGINT's too) and acts on SIGTERM, before
  the main thread's handler runs (which waits while the main thread is in C++)."""
  while True:
    if int(signal.SIGTERM) in os.read(read_fd, 64):
      _request()


def _request() -> None:
  """Records a stop request (from the watching thread or the handler, whichever comes first). A
  later one changes nothing: the stop it asks for is under way."""
  with _STATE.lock:
    if not _STATE.requested.is_set():
      _STATE.requested.set()
      _exit_if_nothing_unsaved()


def _exit_if_nothing_unsaved() -> None:
  with _STATE.lock:  # Held to the end: the main thread cannot leave the stretch meanwhile.
    if not (_STATE.requested.is_set() and _STATE.exit_at_once and _STATE.stretches
            and _STATE.stretches[-1] is not None):
      return
    try:
      sys.stdout.flush()
    except (OSError, RuntimeError, ValueError):  # Closed, or a write this handler interrupted.
      pass
    os.write(sys.stderr.fileno(), f'\n{_STATE.stretches[-1]}\n'.encode())
    os._exit(STOPPED_STATUS)  # pylint: disable=protected-access
