"""Files a run writes whole or not at all: a reader (or a resumed run) sees the old file or the
whole new one, never a part. Local paths and remote ones (``gs://...``, through ``etils.epath``)
alike.

Also what a full disk is, wherever it is met (``error_codes``, ``is_disk_full``): a
``DiskFullError`` names the filesystem, the space the write needed and the space free, in one
message (``space_text``).
"""
import errno
import io
import os
import re
import shutil
from typing import Dict, Iterator, Optional, Set

import numpy as np
from etils import epath

from score_sde.common import errors

# tensorstore (and so orbax) reports the errno of a failed system call as text in a ValueError.
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='(\d+)'")
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(errors.UserError, OSError):
  """A write found no space left on its device (or the user's quota spent); the message names
  the filesystem, the space needed and free, and what was kept."""


def _chain(e: BaseException) -> Iterator[BaseException]:
  """``e`` and the exceptions it was raised from or while handling, at most 16 deep."""
  seen = set()
  while e is not None and id(e) not in seen and len(seen) < 16:
    seen.add(id(e))
    yield e
    e = e.__cause__ or e.__context__


def error_codes(e: BaseException) -> Set[int]:
  """The ``errno`` values ``e`` carries: of ``OSError``s in its chain, and those tensorstore
  writes into its messages (``[os_error_code='5']``), for errors raised by the C++ I/O under
  orbax."""
  codes = set()
  for link in _chain(e):
    if isinstance(link, OSError) and link.errno:
      codes.add(link.errno)
    codes.update(int(code) for code in _TENSORSTORE_ERRNO.findall(str(link)))
  return codes


def is_disk_full(e: BaseException) -> bool:
  """Whether ``e`` is a write that found no space (``ENOSPC``) or no quota (``EDQUOT``)."""
  return isinstance(e, DiskFullError) or bool(error_codes(e) & _FULL)


def size_text(n: float) -> str:
  """``n`` bytes for a message: ``'12 bytes'``, ``'812 KiB'``, ``'3.1 MiB'``, ``'1.2 GiB'``."""
  if n < 1024:
    return f'{n:.0f} bytes'
  if n < 1024**2:
    return f'{n / 1024:.0f} KiB'
  if n < 1024**3:
    return f'{n / 1024**2:.1f} MiB'
  return f'{n / 1024**3:.1f} GiB'


def directory_bytes(path) -> int:
  """The bytes of every file under ``path`` (local paths; 0 for a remote or missing one)."""
  total = 0
  for root, _, names in os.walk(os.fspath(path)):
    for name in names:
      try:
        total += os.lstat(os.path.join(root, name)).st_size
      except OSError:
        pass  # Removed meanwhile.
  return total


def _mount_of(path: str) -> Optional[str]:
  """``'<type> filesystem [<source>] mounted at <point>'`` of the mount holding ``path`` (from
  Linux's ``/proc/mounts``), or None where that is not known."""
  best = None
  try:
    with open('/proc/mounts') as mounts:
      for line in mounts:
        source, point, kind = (field.replace('\\040', ' ') for field in line.split()[:3])
        inside = path == point or path.startswith(point.rstrip('/') + '/')
        if inside and (best is None or len(point) >= len(best[1])):
          best = (source, point, kind)
  except OSError:
    return None
  if best is None:
    return None
  source, point, kind = best
  return f'{kind} filesystem{"" if source == kind else " " + source} mounted at {point}'


def space_text(path, needed: Optional[int] = None) -> str:
  """Where ``path`` lives and how much is free there, for a full-disk message, e.g.
  ``'on the tmpfs filesystem mounted at /mnt/run: 12 KiB free, about 790 KiB needed'``."""
  if '://' in os.fspath(path):  # A bucket: no filesystem to name, no free space to tell.
    return f'in {path}' + (f': about {size_text(needed)} needed' if needed else '')
  path = os.path.abspath(os.fspath(path))
  existing = path
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  where = _mount_of(os.path.realpath(existing)) or f'the device of {existing}'
  parts = []
  try:
    parts.append(f'{size_text(shutil.disk_usage(existing).free)} free')
  except OSError:
    pass
  if needed:
    parts.append(f'about {size_text(needed)} needed')
  return f'on the {where}' + (f': {", ".join(parts)}' if parts else '')


def write_bytes(path, payload: bytes) -> None:
  """Writes ``payload`` to a hidden temporary name next to ``path``, then renames it over
  ``path``: a reader (or a resumed run) sees the old file or the whole new one, never a part.

  Raises:
    DiskFullError: no space for ``payload``; ``path`` is left as it was.
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.tmp'
  try:
    tmp.write_bytes(payload)
  except OSError as e:
    if not is_disk_full(e):
      raise
    tmp.unlink(missing_ok=True)
    raise DiskFullError(
        f'No space left to write {path} ({space_text(path, len(payload))}). {path.name} is '
        'as it was before this write. Free some space, then run the same command again.'
    ) from None
  tmp.replace(path)


def save_npz(path, **arrays) -> None:
  """``np.savez`` of ``arrays`` to ``path``, atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_bytes(path, buffer.getvalue())


def load_npz(path) -> Dict[str, np.ndarray]:
  """Every array of an .npz file, read into memory (local or remote paths)."""
  with np.load(io.BytesIO(epath.Path(path).read_bytes())) as npz:
    return {k: npz[k] for k in npz.files}


def write_text(path, text: str) -> None:
  """``text`` to ``path`` as UTF-8, atomically."""
  write_bytes(path, text.encode('utf-8'))
