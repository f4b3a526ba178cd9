"""LSUN scenes from their official LMDB databases in ``data.data_dir``, without TensorFlow.

Get them with ``python -m score_sde.data.download lsun --category church_outdoor --data_dir
DIR`` (``data.download``: it fetches and unpacks ``<category>_train_lmdb.zip`` and
``<category>_val_lmdb.zip``), then pass ``--config.data.data_dir=DIR
--config.data.category=church_outdoor``. The folders ``<category>_train_lmdb/`` ('train') and
``<category>_val_lmdb/`` ('test': the 300 validation images, the reference's held-out split)
each hold an LMDB database (``data.mdb``) mapping an image id to its encoded image. Reading
needs the small ``lmdb`` package (``pip install lmdb``); the keys are listed once when a split
is opened (a few seconds and about 120 MB for bedroom's 3 million images), and each image is
then one lookup, decoded with PIL on ``data.num_workers`` threads.

Preprocessing is the reference's: at ``data.image_size`` 128 the shorter side is resized to 128
(antialiased bilinear) and the centre cropped; at other sizes the central square is resized
(bicubic). There are no class labels (label -1).
"""
import io
import pathlib
import threading
from typing import List, Optional, Tuple

import ml_collections
import numpy as np
from PIL import Image

from score_sde.common import errors
from score_sde.data import archives, images, remote, sources

FOLDERS = {'train': '{}_train_lmdb', 'test': '{}_val_lmdb'}
_MAX_RECORD_BYTES = 1 << 26  # LSUN images are about 50 kB; a larger record is not one.
_PIL_ERRORS = (OSError, SyntaxError, ValueError)


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
  """The reference's LSUN preprocessing (module docstring)."""
  if size == 128:
    return images.center_crop(images.resize_short_side(image, size, 'bilinear'), size, size)
  return images.crop_resize(image, size, 'bicubic')


def _import_lmdb():
  try:
    import lmdb  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.MissingDependencyError(
        'LSUN reads LMDB databases through the lmdb package, which is not installed. '
        'Run: pip install lmdb') from e
  return lmdb


def _open_env(folder: pathlib.Path):
  lmdb = _import_lmdb()
  return lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False,
                   max_readers=256)


def list_keys(folder: pathlib.Path) -> np.ndarray:
  """Every key of the database in ``folder``, in LMDB's (sorted) order: a ``bytes`` array."""
  env = _open_env(folder)
  try:
    with env.begin() as txn:
      keys = list(txn.cursor().iternext(keys=True, values=False))
  finally:
    env.close()
  # A fixed-width bytes array takes a fraction of a list's memory, but drops trailing NULs.
  if keys and not any(k.endswith(b'\0') for k in keys):
    return np.array(keys)
  return np.array(keys, dtype=object)


class LsunSource(sources.DecodedSource):
  """The images of one LSUN LMDB database, looked up by key and decoded with PIL.

  Args:
    folder: the database's folder (``data.mdb`` inside).
    keys: its keys, in index order.
    image_size, num_channels: every image comes out ``uint8 (image_size, image_size,
      num_channels)``.
    num_workers: decoding threads (``sources.DecodedSource``).
  """

  _thread_name_prefix = 'lsun'

  def __init__(self, folder: pathlib.Path, keys: np.ndarray, image_size: int,
               num_channels: int, num_workers: Optional[int] = None):
    super().__init__(keys, image_size, num_channels, num_workers=num_workers)
    self._folder = folder
    self._env = None
    self._env_lock = threading.Lock()

  def _database(self):
    with self._env_lock:
      if self._env is None:
        self._env = _open_env(self._folder)
      return self._env

  def _read(self, item: bytes) -> np.ndarray:
    """One key -> ``uint8 (S, S, C)``; ``errors.BadDataError`` naming it if it cannot."""
    key = bytes(item)
    with self._database().begin() as txn:
      value = txn.get(key)
    if value is None or len(value) > _MAX_RECORD_BYTES:
      raise errors.BadDataError(f'LSUN: record {key!r} of {self._folder} is '
                                f'{"missing" if value is None else "too large"}. '
                                'Download the database again.')
    try:
      with Image.open(io.BytesIO(value)) as image:
        array = images.from_pil(image, 3)
    except _PIL_ERRORS as e:
      raise errors.BadDataError(f'LSUN: cannot decode record {key!r} of {self._folder} '
                                f'({type(e).__name__}: {e}). Download the database again.') from e
    return images.to_channels(preprocess(array, self._shape[0]), self._shape[-1])

  def __getstate__(self):
    state = super().__getstate__()
    state['_env'], state['_env_lock'] = None, None
    return state

  def __setstate__(self, state):
    super().__setstate__(state)
    self._env_lock = threading.Lock()


def _config_problems(config: ml_collections.ConfigDict) -> List[Tuple[str, str]]:
  """LSUN's files are those of one scene category (``data.category``)."""
  scenes = sorted(remote.LSUN_SCENES)
  if config.data.category in scenes:
    return []
  return [('data.category', f'LSUN needs a scene category, one of {", ".join(scenes)}')]


@sources.register_dataset('LSUN', num_channels=3, problems=_config_problems)
def lsun(data_config: ml_collections.ConfigDict, split: str) -> LsunSource:
  """LSUN ``data.category`` from ``data.data_dir`` (module docstring)."""
  category = str(data_config.get('category', '') or '')
  if not category:
    raise errors.ConfigError('LSUN needs data.category, e.g. --config.data.category=bedroom '
                             '(or church_outdoor).')
  remote.lsun_files(category)  # A ConfigError for a name that is not a scene category.
  root = archives.data_root('LSUN', data_config)
  folder = root / FOLDERS[split].format(category)
  if not (folder / 'data.mdb').is_file():
    raise archives.not_found('LSUN', f'{folder.name}/data.mdb', root, category)
  keys = list_keys(folder)
  if not len(keys):
    raise errors.DataNotFoundError(f'LSUN: the database {folder} is empty. Download it again: '
                                   f'{remote.command("LSUN", str(root), category)}')
  return LsunSource(folder, keys, data_config.image_size, data_config.num_channels,
                    data_config.get('num_workers', None))
