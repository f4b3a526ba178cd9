"""CELEBA (64x64 faces) from CelebA's official files in ``data.data_dir``, without TensorFlow.

Get the files with ``python -m score_sde.data.download celeba --data_dir DIR``
(``data.download``) or by hand from the CelebA page (Align&Cropped Images, and Eval), then pass
``--config.data.data_dir=DIR``:

* ``img_align_celeba.zip``: the 202,599 aligned 178x218 JPEGs as ``img_align_celeba/NNNNNN.jpg``,
  decoded from the zip on demand (on ``data.num_workers`` threads), never extracted;
* ``list_eval_partition.txt``: one ``NNNNNN.jpg P`` line per image, ``P`` being 0 (train,
  162,770 images), 1 (validation, 19,867) or 2 (test, 19,962).

As in the reference (through tfds' ``celeb_a``), 'train' is partition 0 and the held-out 'test'
split is the validation partition 1; each image is cropped to its central 140x140 window, then
resized (antialiased bilinear) to ``data.image_size``. There are no class labels (label -1).
"""
import io
import pathlib
import threading
import zipfile
from typing import Dict, List, Optional, Sequence

import ml_collections
import numpy as np
from PIL import Image

from score_sde.common import errors
from score_sde.data import archives, images, remote, sources

ZIP = 'img_align_celeba.zip'
FOLDER = 'img_align_celeba'  # The folder inside the zip.
PARTITION_FILE = 'list_eval_partition.txt'
PARTITIONS = {'train': 0, 'test': 1}  # 'test' reads the validation partition, as the reference.
CROP = 140
_MAX_MEMBER_BYTES = 1 << 24  # An aligned CelebA JPEG is about 10 kB; refuse a bomb's members.
_PIL_ERRORS = (OSError, SyntaxError, ValueError)


def crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """The reference's CelebA preprocessing: central 140x140 crop, then resize to ``size``."""
  square = images.center_crop(image, CROP, CROP)
  return images.resize_short_side(square, size, 'bilinear')


def read_partition(path: pathlib.Path) -> Dict[int, List[str]]:
  """``{partition: [file name, ...]}`` from ``list_eval_partition.txt``, in file order.

  Raises:
    errors.BadDataError: naming the line that is not ``<name>.jpg <0|1|2>``.
  """
  partitions: Dict[int, List[str]] = {0: [], 1: [], 2: []}
  with open(path, encoding='ascii', errors='replace') as f:
    for number, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 2 or fields[1] not in ('0', '1', '2') or '/' in fields[0]:
        raise errors.BadDataError(f'CELEBA: line {number} of {path} is {line.strip()!r}, not '
                                  '"<image>.jpg <0|1|2>". Download the file again.')
      partitions[int(fields[1])].append(fields[0])
  return partitions


class CelebASource(sources.DecodedSource):
  """Members of ``img_align_celeba.zip``, decoded with PIL and cropped like the reference.

  Args:
    zip_path: the zip file.
    members: the member names of this split, in index order.
    image_size, num_channels: every image comes out ``uint8 (image_size, image_size,
      num_channels)``.
    num_workers: decoding threads (``sources.DecodedSource``).
  """

  _thread_name_prefix = 'celeba'

  def __init__(self, zip_path: pathlib.Path, members: Sequence[str], image_size: int,
               num_channels: int, num_workers: Optional[int] = None):
    super().__init__(tuple(members), image_size, num_channels, num_workers=num_workers)
    self._zip_path = zip_path
    self._zip: Optional[zipfile.ZipFile] = None
    self._zip_lock = threading.Lock()

  def _archive(self) -> zipfile.ZipFile:
    # Opened once; zipfile serialises the reads of several threads on the shared file.
    with self._zip_lock:
      if self._zip is None:
        self._zip = zipfile.ZipFile(self._zip_path)
      return self._zip

  def _read(self, item: str) -> np.ndarray:
    """One member -> ``uint8 (S, S, C)``; ``errors.BadDataError`` naming it if it cannot."""
    where = f'{item} in {self._zip_path}'
    try:
      info = self._archive().getinfo(item)
      if info.file_size > _MAX_MEMBER_BYTES:
        raise ValueError(f'{info.file_size} bytes, more than any CelebA image')
      with Image.open(io.BytesIO(self._archive().read(info))) as image:
        array = images.from_pil(image, 3)
      array = crop_resize(array, self._shape[0])
    except KeyError as e:
      raise errors.BadDataError(f'CELEBA: {item} is listed in {PARTITION_FILE} but is not in '
                                f'{self._zip_path}. Download both files again.') from e
    except (*_PIL_ERRORS, zipfile.BadZipFile, EOFError) as e:
      raise errors.BadDataError(f'CELEBA: cannot decode {where} ({type(e).__name__}: {e}). '
                                f'Download {ZIP} again.') from e
    return images.to_channels(array, self._shape[-1])

  def probe(self) -> List[str]:
    """Checks that every listed image is a member of the zip (no decoding).

    Raises:
      errors.BadDataError: naming the first missing members.
    """
    try:
      present = set(self._archive().namelist())
    except (zipfile.BadZipFile, OSError) as e:
      raise errors.BadDataError(f'CELEBA: {self._zip_path} is not a readable zip '
                                f'({type(e).__name__}: {e}). Download it again.') from e
    missing = [m for m in self._items if m not in present]
    if missing:
      raise errors.BadDataError(
          f'CELEBA: {len(missing)} of the {len(self._items)} images that {PARTITION_FILE} lists '
          f'are not in {self._zip_path}: {", ".join(missing[:8])}'
          f'{" ..." if len(missing) > 8 else ""}. Download both files again.')
    return list(self.notes)

  def __getstate__(self):
    state = super().__getstate__()
    state['_zip'], state['_zip_lock'] = None, None
    return state

  def __setstate__(self, state):
    super().__setstate__(state)
    self._zip_lock = threading.Lock()


@sources.register_dataset('CELEBA', num_channels=3)
def celeba(data_config: ml_collections.ConfigDict, split: str) -> CelebASource:
  """CelebA's aligned images of ``split`` from ``data.data_dir`` (module docstring)."""
  root = archives.data_root('CELEBA', data_config)
  for name in (ZIP, PARTITION_FILE):
    if not (root / name).is_file():
      raise archives.not_found('CELEBA', name, root)
  names = read_partition(root / PARTITION_FILE)[PARTITIONS[split]]
  if not names:
    raise errors.BadDataError(f'CELEBA: {root / PARTITION_FILE} lists no image of partition '
                              f'{PARTITIONS[split]} ({split}). Download it again: '
                              f'{remote.command("CELEBA", str(root))}')
  return CelebASource(root / ZIP, [f'{FOLDER}/{n}' for n in names], data_config.image_size,
                      data_config.num_channels, data_config.get('num_workers', None))
