"""One process of a multi-host run, watched by a parent that reports a lost peer in one line.

When a process of a multi-host run dies (killed, preempted, crashed), JAX's coordination service
misses its heartbeats, and the C++ runtime of every other process aborts it: SIGABRT, a
check-failure stack and Python's fault-handler dump, often after a traceback from the collective
or barrier that failed first. No Python code runs at that abort, and none can intercept it
through ``jax.distributed.initialize``. So ``score_sde.cli`` runs the work of each host in a child
(``supervise``): the same command, with ``CHILD_ENV`` set. The parent passes the child's stderr
through line by line. From the first sign of a lost peer or a Python traceback, it holds the
lines back until the runtime's verdict (its "Terminating process" line), the child's exit, or
``heartbeat timeout + HOLD_MARGIN_S`` later; with a verdict, what was held and what follows give
way to one line naming the lost process (``lost_message``), and the status is ``LOST_STATUS``.
Otherwise the held lines are passed on and the child's status is the parent's (``128 + n`` for a
child ended by signal ``n``).

SIGTERM and SIGINT reach the child through the parent, once: the child runs in a process group
of its own. A child whose parent dies gets SIGTERM (Linux), the preemption notice it saves on.
"""
import os
import re
import select
import signal
import subprocess
import sys
import time
from typing import List, Optional

CHILD_ENV = 'SCORE_SDE_SUPERVISED'
LOST_STATUS = 2
HOLD_MARGIN_S = 30.  # Beyond the heartbeat timeout, for the verdict to follow a failed collective.
_VERDICT = 'Terminating process because the JAX distributed service detected fatal errors'
# What the coordination service's client and server log (only) when a process is in trouble.
_LOST_SIGNS = ('stopped sending heartbeats', 'heartbeat timeout', 'coordination service',
               'coordination_service', 'preemption_sync_manager', _VERDICT)
_TRACEBACK = 'Traceback (most recent call last):'
_KEPT_AFTER_VERDICT = 200  # Lines read after the verdict, for the ids of the lost processes.


def is_child() -> bool:
  """Whether this process is the supervised child (it then does the work itself)."""
  return os.environ.get(CHILD_ENV) == '1'


def supervise(workdir: str, heartbeat_timeout_s: float) -> int:
  """Runs this command again as a child and relays its stderr and signals (module docstring).

  Args:
    workdir: the run's directory, named in the message about a lost process.
    heartbeat_timeout_s: the run's ``jax.distributed`` heartbeat timeout.
  Returns:
    The status to exit with: the child's, or ``LOST_STATUS`` when another process was lost.
  """
  child = subprocess.Popen([sys.executable] + sys.orig_argv[1:],
                           env=dict(os.environ, **{CHILD_ENV: '1'}), stderr=subprocess.PIPE,
                           process_group=0, preexec_fn=_terminate_with_parent)
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda signum, frame: child.send_signal(signum))
  relay = _Relay(sys.stderr.buffer, heartbeat_timeout_s + HOLD_MARGIN_S)
  fd, pending = child.stderr.fileno(), b''
  while True:
    if not select.select([fd], [], [], relay.seconds_left())[0]:
      relay.release()  # No verdict in time: what was held is the child's own output.
      continue
    chunk = os.read(fd, 1 << 16)
    if not chunk:
      break
    *lines, pending = (pending + chunk).split(b'\n')
    for line in lines:
      relay.line(line + b'\n')
  if pending:
    relay.line(pending)
  status = child.wait()
  if relay.verdict or (status == -signal.SIGABRT and relay.lost_signs):
    sys.stderr.write(f'\nError: {lost_message(relay.text(), workdir, heartbeat_timeout_s)}\n')
    sys.stderr.flush()
    return LOST_STATUS
  relay.release()
  return status if status >= 0 else 128 - status


def lost_processes(text: str) -> List[int]:
  """The ids of the processes that JAX's coordination service reports lost in ``text`` (its
  log lines), ascending; process 0 when this one could no longer reach it (the coordinator)."""
  ids = {int(m) for m in re.findall(r'[Tt]ask:? ?(\d+) heartbeat timeout', text)}
  for group in re.findall(r'stopped sending heartbeats\):\s*([\d,\s]+)', text):
    ids.update(int(m) for m in re.findall(r'\d+', group))
  if 'Failed to send RPC to coordination service' in text:
    ids.add(0)
  return sorted(ids)


def lost_message(text: str, workdir: str, heartbeat_timeout_s: float) -> str:
  """The one line about a lost process, from the child's log ``text`` (``lost_processes``)."""
  lost = lost_processes(text)
  if lost == [0]:
    who = ('process 0, the coordinator, is gone (killed, preempted or crashed: its own log '
           'says which)')
  elif lost:
    names = ', '.join(str(i) for i in lost)
    who = (f'process {names} sent no heartbeat for {heartbeat_timeout_s:g} s '
           '(config.distributed.heartbeat_timeout_s): killed, preempted or crashed, as its own '
           'log says')
  else:
    who = 'another process of the run was lost (its own log says why)'
  return (f'{who}; this process stopped too. What the run saved in {workdir} is intact '
          '(checkpoints and evaluation results are written whole or not at all): start every '
          'process again with the same command to go on from the newest checkpoint.')


class _Relay:
  """The child's stderr lines, passed on or held back (module docstring)."""

  def __init__(self, out, hold_s: float):
    self.out, self.hold_s = out, hold_s
    self.held: List[bytes] = []
    self.held_since: Optional[float] = None
    self.verdict = False
    self.lost_signs = False
    self.after_verdict = 0

  def line(self, line: bytes) -> None:
    text = line.decode('utf-8', 'replace')
    if self.verdict:
      if self.after_verdict < _KEPT_AFTER_VERDICT:
        self.held.append(line)
        self.after_verdict += 1
      return
    lost_sign = any(sign in text for sign in _LOST_SIGNS)
    self.lost_signs |= lost_sign
    self.verdict = _VERDICT in text
    if self.held_since is None and (lost_sign or _TRACEBACK in text):
      self.held_since = time.monotonic()
    if self.held_since is None:
      self.out.write(line)
      self.out.flush()
    else:
      self.held.append(line)

  def seconds_left(self) -> Optional[float]:
    """Until the held lines are released; None when none are held or the verdict is in."""
    if self.held_since is None or self.verdict:
      return None
    return max(0., self.held_since + self.hold_s - time.monotonic())

  def release(self) -> None:
    self.out.write(b''.join(self.held))
    self.out.flush()
    self.held, self.held_since = [], None

  def text(self) -> str:
    return b''.join(self.held).decode('utf-8', 'replace')


def _terminate_with_parent() -> None:
  """In the child before it starts: SIGTERM when the parent dies (Linux; elsewhere nothing)."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
  except (OSError, AttributeError):
    pass
