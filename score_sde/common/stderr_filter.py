"""Keeps XLA's "Very slow compile? ... file a bug" alarm off the command line's stderr.

XLA logs that alarm (``LOG(ERROR)`` in ``xla/service/slow_operation_alarm.cc``, a fixed two
minutes into any one compilation, no flag to turn it off) whenever a program compiles slowly,
which on a loaded CPU is most large programs; the run itself already says when it compiles and
how long that took. The only switch XLA has is ``TF_CPP_MIN_LOG_LEVEL=3``, which would hide
every other C++ error too. So ``install`` passes the process's stderr (file descriptor 2, where
C++ writes) through a small separate process that drops exactly that record, the alarm's
header line through its closing row of stars, and forwards everything else byte for byte.

Being a separate process, the filter outlives a crash of the run (a C++ check failure or a
faulthandler dump still reaches the terminal), ignores the terminal's Ctrl-C (it sits in its own
session) and exits when the last writer of the pipe is gone. A record that turns out not to be
that alarm, or that stays incomplete for ``HOLD_SECS``, is forwarded as it came.
"""
import atexit
import os
import re
import select
import subprocess
import sys

# The alarm as XLA logs it (absl's prefix, then the message that begins with a newline):
#   E1207 05:15:54.103941   15609 slow_operation_alarm.cc:73]
#   ********************************
#   [Compiling module jit_f for CPU] Very slow compile? If you want to file a bug, run with ...
#   ********************************
# and, when that compilation ends, the same message after "...] The operation took 2m7.5s".
_HEADER = re.compile(rb'^[IWEF]\d{4} [\d:.]+ +\d+ slow_operation_alarm\.cc:\d+\] ')
# The start of any C++ log line (a partial one may be the alarm's header, split across reads).
_LOG_LINE_START = re.compile(rb'^[IWEF](\d{0,3}$|\d{4}( |$))')
_STARS = b'********************************'
_ALARM = b'Very slow compile?'
_MAX_RECORD_LINES = 6  # Header, an empty line, stars, message, stars; one spare.
HOLD_SECS = 1.0  # Longest a held record or a partial line waits before it is forwarded as is.


class AlarmFilter:
  """Bytes in, bytes out, without the slow-compilation alarm's records.

  ``feed`` takes what was read and returns what to write now; ``flush`` returns what is still
  held (a partial last line, an undecided record), to be written after an idle spell or at EOF.
  """

  def __init__(self):
    self._partial = b''  # Bytes after the last newline.
    self._held = []  # Complete lines of a record that may be the alarm.

  @property
  def holding(self) -> bool:
    return bool(self._partial or self._held)

  def feed(self, data: bytes) -> bytes:
    out = []
    lines = (self._partial + data).split(b'\n')
    self._partial = lines.pop()
    for line in lines:
      out.append(self._line(line + b'\n'))
    if self._partial and not self._held and not _LOG_LINE_START.match(self._partial):
      out.append(self._partial)  # A progress line or a prompt: shown at once.
      self._partial = b''
    return b''.join(out)

  def _line(self, line: bytes) -> bytes:
    if not self._held:
      if _HEADER.match(line):
        self._held = [line]
        return b''
      return line
    self._held.append(line)
    record = b''.join(self._held)
    if line.startswith(_STARS) and record.count(_STARS) == 2:  # The record is complete.
      self._held = []
      return b'' if _ALARM in record else record
    if len(self._held) >= _MAX_RECORD_LINES or _HEADER.match(line):
      return self.flush()  # Not the alarm's shape: never swallow what it is not.
    return b''

  def flush(self) -> bytes:
    out = b''.join(self._held) + self._partial
    self._held, self._partial = [], b''
    return out


def _write_all(fd: int, data: bytes) -> None:
  while data:
    data = data[os.write(fd, data):]


def run(in_fd: int = 0, out_fd: int = 1) -> None:
  """Copies ``in_fd`` to ``out_fd`` through an ``AlarmFilter`` until EOF (the filter process)."""
  alarm_filter = AlarmFilter()
  while True:
    ready, _, _ = select.select([in_fd], [], [], HOLD_SECS if alarm_filter.holding else None)
    if not ready:  # Idle with something held: it was not the alarm after all.
      _write_all(out_fd, alarm_filter.flush())
      continue
    data = os.read(in_fd, 1 << 16)
    if not data:
      break
    _write_all(out_fd, alarm_filter.feed(data))
  _write_all(out_fd, alarm_filter.flush())


_installed = []  # (the filter process, the original stderr's descriptor) once installed.


def install() -> bool:
  """Routes this process's stderr (fd 2) through the filter process; returns whether it did.

  Nothing is done where the user asked for XLA's diagnostics (``TF_CPP_MIN_LOG_LEVEL=0``, or an
  ``--xla_dump_to`` in ``XLA_FLAGS``: the alarm's own advice), off POSIX, or a second time. At
  exit ``drain`` runs, so that the filter's last lines come before the shell's prompt.
  """
  if (_installed or os.name != 'posix' or os.environ.get('TF_CPP_MIN_LOG_LEVEL') == '0' or
      '--xla_dump_to' in os.environ.get('XLA_FLAGS', '')):
    return False
  try:
    read_end, write_end = os.pipe()
    # -I -S: stdlib only, no site or user paths: a few milliseconds to start.
    proc = subprocess.Popen([sys.executable, '-I', '-S', os.path.abspath(__file__)],
                            stdin=read_end, stdout=2, stderr=2, start_new_session=True)
  except OSError:
    return False  # No usable stderr or no process to spare: the alarm stays, nothing else.
  os.close(read_end)
  sys.stderr.flush()
  _installed.append((proc, os.dup(2)))
  os.dup2(write_end, 2)
  os.close(write_end)
  atexit.register(drain)
  return True


def drain(timeout: float = 5.) -> None:
  """Gives fd 2 back to the original stderr and waits (up to ``timeout`` s, longer only if a
  child process still holds the pipe) until the filter has written all it was given. For a
  process about to end without ``atexit`` (``os._exit``); a no-op when not installed."""
  if not _installed:
    return
  proc, original = _installed.pop()
  try:
    sys.stderr.flush()
  except (OSError, ValueError):
    pass
  os.dup2(original, 2)  # Closes this process's end of the pipe: the filter sees EOF.
  os.close(original)
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    pass


if __name__ == '__main__':
  try:
    run()
  except (BrokenPipeError, KeyboardInterrupt):
    pass  # Nobody reads the terminal any more, or the user interrupted this process alone.
