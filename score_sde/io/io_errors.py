"""What a failed checkpoint read says about the storage, and how it is worded in a message.

A read that fails is either a fault that may pass (``is_transient``: an errno of
``TRANSIENT_ERRNOS`` such as EIO, EAGAIN, ETIMEDOUT or ESTALE, met by Python or written by
tensorstore into its message, or a remote store's unavailable / timed-out status; network file
systems and buckets have them) or damage, and ``checkpoint`` retries the first kind before it
concludes anything. ``reason`` puts either kind into one short line, since tensorstore's messages
run to 1,000 characters of store spec. Kept apart from ``checkpoint`` so that its manager reads as
saving and restoring, and these rules can be read and changed in one place.
"""
import errno
import re

from absl import logging

from score_sde.io import files

# I/O errors that a retry may cure (a network file system's or a bucket's hiccups).
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        'EIO', 'EAGAIN', 'EINTR', 'ETIMEDOUT', 'ESTALE', 'EBUSY', 'ECONNRESET', 'ECONNABORTED',
        'ENETDOWN', 'ENETUNREACH', 'EHOSTUNREACH', 'ENOLINK', 'EREMOTEIO', 'ECOMM')
    if hasattr(errno, name))
# tensorstore's statuses for remote storage that did not answer in time.
_TRANSIENT_STATUSES = ('UNAVAILABLE:', 'DEADLINE_EXCEEDED:')
_MAX_REASON_CHARS = 160  # Of one error in a message: tensorstore's run to 1,000 characters.
_TENSORSTORE_SPEC = re.compile(r"\s*\[tensorstore_spec='.*?'\]", re.DOTALL)


def is_transient(e: BaseException) -> bool:
  """Whether ``e`` is an I/O error that may pass: an errno of ``TRANSIENT_ERRNOS`` (from an
  ``OSError`` or in a tensorstore message), or a remote store's unavailable / timed-out status."""
  if files.error_codes(e) & TRANSIENT_ERRNOS:
    return True
  return isinstance(e, TimeoutError) or str(e).lstrip().startswith(_TRANSIENT_STATUSES)


def reason(e: BaseException) -> str:
  """``'TypeName: first line of the message'``, at most about ``_MAX_REASON_CHARS`` long.

  Without tensorstore's spec of the store (~1,000 characters); a longer line keeps its start
  and its end, where tensorstore names the file and the system's error. The full text goes to
  debug logging.
  """
  logging.debug('Checkpoint I/O error in full: %r', e)
  lines = _TENSORSTORE_SPEC.sub('', str(e)).strip().splitlines()
  first = lines[0] if lines else ''
  if len(first) > _MAX_REASON_CHARS:
    head = _MAX_REASON_CHARS // 3
    first = f'{first[:head]} ... {first[head - _MAX_REASON_CHARS:]}'
  return f'{type(e).__name__}: {first}'
