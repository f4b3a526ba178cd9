"""Files a run writes whole or not at all: a reader (or a resumed run) sees the old file or the
whole new one, never a part. Local paths and remote ones (``gs://...``, through ``etils.epath``)
alike."""
import io
from typing import Dict

import numpy as np
from etils import epath


def write_bytes(path, payload: bytes) -> None:
  """Writes ``payload`` to a hidden temporary name next to ``path``, then renames it over
  ``path``: a reader (or a resumed run) sees the old file or the whole new one, never a part."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.tmp'
  tmp.write_bytes(payload)
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
