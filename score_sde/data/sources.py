"""Random-access image sources, the dataset registry and ``get_dataset``.

A source is a finite, indexable set of examples: ``len(source)`` and
``source.get(indices) -> {'image': uint8 (n, H, W, C), 'label': int32 (n,)}``, with images already
cropped and resized to ``(data.image_size, data.image_size, data.num_channels)``. Order, shuffling,
sharding over hosts and augmentation belong to ``pipeline.py``, so that a batch is a pure function
of ``(seed, step)`` and training resumes exactly. Unlabelled sources give label ``-1``.

Each dataset module registers a factory ``factory(data_config, split) -> Source`` under the name
that ``config.data.dataset`` uses (``register_dataset``), with what the dataset asks of the config
(its images' channel count, and other fields); importing ``score_sde.data`` fills ``DATASETS``
with ``Dataset`` entries. A factory raises ``errors.DataNotFoundError`` for a dataset that is not
there, and a source raises ``errors.BadDataError`` naming the file of an example it cannot decode.
"""
import abc
import collections
import concurrent.futures
import dataclasses
import os
import pathlib
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np
from PIL import Image

from score_sde.common import errors, registry
from score_sde.data import images

DATASETS = registry.Registry('dataset')
SPLITS = ('train', 'test')
NO_LABEL = -1
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp')
_MAX_LISTED = 8  # Files named in one message.
_PIL_ERRORS = (OSError, SyntaxError, ValueError)  # What PIL raises for a damaged file.
_MAX_DEFAULT_WORKERS = 8  # Beyond this a host batch of 64 images gains little from more threads.


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A registered dataset: how to open it and what it asks of the config.

  Attributes:
    factory: ``factory(data_config, split) -> Source``.
    num_channels: the channels of its images, which ``data.num_channels`` must be; 0 where the
      config chooses (``images.NUM_CHANNELS``: 1 grey, 3 RGB).
    problems: ``problems(config) -> [(field, fix)]``: its other requirements of the config.
  """
  factory: Callable[[ml_collections.ConfigDict, str], 'Source']
  num_channels: int = 0
  problems: Optional[Callable[[ml_collections.ConfigDict], List[Tuple[str, str]]]] = None

  def config_problems(self, config: ml_collections.ConfigDict) -> List[Tuple[str, str]]:
    """What ``config`` (whose ``data.dataset`` names this entry) asks of the dataset that it
    does not have, as ``(field, fix)`` pairs (``configs.validation`` words each pair)."""
    d, problems = config.data, []
    if self.num_channels and d.num_channels != self.num_channels:
      problems.append(('data.num_channels', f'{d.dataset} images have {self.num_channels} '
                                            f'channel(s); set it to {self.num_channels}'))
    elif not self.num_channels and d.num_channels not in images.NUM_CHANNELS:
      problems.append(('data.num_channels', 'use 1 (grey) or 3 (RGB)'))
    return problems + (self.problems(config) if self.problems else [])


def register_dataset(name: str, num_channels: int = 0,
                     problems: Optional[Callable[[ml_collections.ConfigDict],
                                                 List[Tuple[str, str]]]] = None):
  """A decorator registering ``factory(data_config, split) -> Source`` in ``DATASETS`` as the
  ``Dataset`` named ``name`` (``config.data.dataset``, any case); returns the factory."""
  def decorator(factory):
    DATASETS.register(name)(Dataset(factory, num_channels, problems))
    return factory
  return decorator


def default_num_workers() -> int:
  """Decoding threads when none are asked for: ``min(8, os.cpu_count())``."""
  return min(_MAX_DEFAULT_WORKERS, os.cpu_count() or 1)


class Source(abc.ABC):
  """A finite, random-access set of ``uint8`` images of one shape, with ``int32`` labels."""

  notes: Tuple[str, ...] = ()  # What a user should know of this source (see ``probe``).

  @property
  @abc.abstractmethod
  def image_shape(self) -> Tuple[int, int, int]:
    """``(H, W, C)`` of every image."""

  @abc.abstractmethod
  def __len__(self) -> int:
    """Number of examples."""

  @abc.abstractmethod
  def _load(self, indices: np.ndarray) -> Dict[str, np.ndarray]:
    """``get`` without the argument checks."""

  def get(self, indices: Sequence[int]) -> Dict[str, np.ndarray]:
    """Examples at ``indices``, in that order (repeats allowed).

    Args:
      indices: integers in ``[0, len(self))``, any 1-D sequence.
    Returns:
      ``{'image': uint8 (n, H, W, C), 'label': int32 (n,)}``.
    Raises:
      IndexError: when an index is out of range.
    """
    indices = np.asarray(indices)
    if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
      raise ValueError(f'indices must be a 1-D integer array, got {indices.dtype} {indices.shape}.')
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f'Indices must lie in [0, {len(self)}); got [{indices.min()}, '
                       f'{indices.max()}].')
    if not indices.size:
      return {'image': np.zeros((0,) + self.image_shape, np.uint8),
              'label': np.zeros((0,), np.int32)}
    return self._load(indices.astype(np.int64))

  def probe(self) -> List[str]:
    """Cheap checks of every example, run once at start-up (``data.checks``).

    Returns:
      One-line warnings: things that work but that the user may not expect (images resized,
      an evaluation split that is the training set). The base class returns ``notes``.
    Raises:
      errors.BadDataError: an example can not be used; the message names it.
    """
    return list(self.notes)


class ArraySource(Source):
  """Examples held in memory: ``images`` uint8 ``(N, H, W, C)``, ``labels`` int ``(N,)``."""

  def __init__(self, image_array: np.ndarray, labels: np.ndarray):
    if image_array.ndim != 4 or image_array.dtype != np.uint8:
      raise ValueError(f'images must be uint8 (N, H, W, C), got {image_array.dtype} '
                       f'{image_array.shape}.')
    if labels.shape != image_array.shape[:1]:
      raise ValueError(f'labels must have shape ({len(image_array)},), got {labels.shape}.')
    self._images = image_array
    self._labels = labels.astype(np.int32)

  @property
  def image_shape(self):
    return tuple(self._images.shape[1:])

  def __len__(self):
    return len(self._images)

  def _load(self, indices):
    return {'image': self._images[indices], 'label': self._labels[indices]}


def _check_num_workers(num_workers: Optional[int]) -> int:
  """``num_workers`` as an int >= 0, ``default_num_workers()`` for ``None``."""
  if num_workers is None:
    return default_num_workers()
  if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or (
      num_workers < 0):
    raise errors.ConfigError(f'data.num_workers must be a non-negative integer (0 or 1: decode '
                             f'in the calling thread), got {num_workers!r}.')
  return int(num_workers)


def list_images(folder: pathlib.Path) -> Tuple[pathlib.Path, ...]:
  """Every png / jpg / jpeg / webp file under ``folder`` (recursively), sorted by path."""
  return tuple(sorted(p for p in folder.rglob('*')
                      if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))


class DecodedSource(Source):
  """Examples decoded one at a time from ``items`` (files, archive members, database keys).

  ``get`` decodes the examples of one call on a pool of ``num_workers`` threads (PIL and zlib
  release the GIL while they decode), created at the first call that needs it; the result is
  the serial one, bit for bit and in index order, and a damaged example raises the same error
  (the first such example in index order). Subclasses say how one item is read (``_read``).

  Args:
    items: what ``_read`` takes, one per example, in index order.
    image_size, num_channels: every image comes out ``uint8 (image_size, image_size,
      num_channels)``.
    notes: warnings for ``probe`` to return.
    num_workers: decoding threads; ``None`` for ``default_num_workers()``, 0 or 1 to decode in
      the calling thread.
  """

  _thread_name_prefix = 'decode'

  def __init__(self, items: Sequence, image_size: int, num_channels: int,
               notes: Sequence[str] = (), num_workers: Optional[int] = None):
    if not len(items):
      raise ValueError(f'A {type(self).__name__} needs at least one example.')
    self._items = items
    self._shape = images.image_shape(image_size, num_channels)
    self.notes = tuple(notes)
    self._num_workers = _check_num_workers(num_workers)
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
    # The prefetch thread and the caller's thread (start-up checks) may both call ``get``.
    self._pool_lock = threading.Lock()

  @property
  def image_shape(self):
    return self._shape

  @property
  def num_workers(self) -> int:
    """Decoding threads (0 or 1: serial, in the calling thread)."""
    return self._num_workers

  def __len__(self):
    return len(self._items)

  @abc.abstractmethod
  def _read(self, item) -> np.ndarray:
    """One item -> ``uint8 (H, W, C)`` of ``image_shape``; ``errors.BadDataError`` naming it."""

  def _label(self, index: int) -> int:  # pylint: disable=unused-argument
    """The class of example ``index``; ``NO_LABEL`` unless a subclass knows it."""
    return NO_LABEL

  def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
    with self._pool_lock:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._num_workers, thread_name_prefix=self._thread_name_prefix)
      return self._pool

  def _load(self, indices):
    items = [self._items[i] for i in indices]
    if self._num_workers <= 1 or len(items) == 1:
      decoded = [self._read(item) for item in items]
    else:
      # ``map`` yields in submission order and re-raises a failed call's error when its turn
      # comes, so the result and the first error are those of the serial loop; leaving the
      # generator early (on that error) cancels the calls not yet started.
      decoded = list(self._executor().map(self._read, items))
    return {'image': np.stack(decoded),
            'label': np.asarray([self._label(int(i)) for i in indices], np.int32)}

  def __getstate__(self):
    # Threads and locks do not pickle or deep-copy; a copy makes its own pool when it needs one.
    state = dict(self.__dict__)
    state['_pool'], state['_pool_lock'] = None, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._pool_lock = threading.Lock()


class ImageFolderSource(DecodedSource):
  """Image files decoded lazily with PIL, centre-cropped to a square and resized (bicubic).

  The order is that of the sorted paths, so indices mean the same files on every host and run.
  Files are decoded on ``num_workers`` threads (``DecodedSource``); a damaged file raises an
  ``errors.BadDataError`` naming it.

  Args:
    paths: the image files, in index order.
    image_size, num_channels: every image comes out ``uint8 (image_size, image_size,
      num_channels)``.
    notes: warnings for ``probe`` to return.
    num_workers: decoding threads; ``None`` for ``default_num_workers()``, 0 or 1 to decode in
      the calling thread.
  """

  _thread_name_prefix = 'image_folder'

  def __init__(self, paths: Sequence[pathlib.Path], image_size: int, num_channels: int,
               notes: Sequence[str] = (), num_workers: Optional[int] = None):
    if not paths:
      raise ValueError('An image folder source needs at least one image file.')
    super().__init__(tuple(paths), image_size, num_channels, notes, num_workers)

  @property
  def paths(self) -> Tuple[pathlib.Path, ...]:
    return self._items

  def _read(self, item: pathlib.Path) -> np.ndarray:
    """One file -> ``uint8 (H, W, C)``; ``errors.BadDataError`` naming it if PIL cannot."""
    try:
      with Image.open(item) as image:
        array = images.from_pil(image, self._shape[-1])
    except _PIL_ERRORS as e:
      raise errors.BadDataError(f'IMAGE_FOLDER: cannot decode {item} ({type(e).__name__}: {e}). '
                                'Remove or re-encode the file.') from e
    return images.crop_resize(array, self._shape[0], 'bicubic')

  def probe(self) -> List[str]:
    """Opens every file's header (no pixel decoding): size and colour mode, or the error.

    Raises:
      errors.BadDataError: naming every file PIL cannot identify.
    """
    size, _, channels = self._shape
    mode = 'L' if channels == 1 else 'RGB'
    bad, resized, converted = [], 0, collections.Counter()
    for path in self._items:
      try:
        with Image.open(path) as image:
          resized += image.size != (size, size)
          if image.mode != mode:
            converted[image.mode] += 1
      except _PIL_ERRORS as e:
        bad.append(f'{path} ({type(e).__name__})')
    if bad:
      raise errors.BadDataError(
          f'IMAGE_FOLDER: {len(bad)} of {len(self._items)} files cannot be read as images: '
          f'{", ".join(bad[:_MAX_LISTED])}{" ..." if len(bad) > _MAX_LISTED else ""}. '
          'Remove or re-encode them.')
    folder = os.path.commonpath([p.parent for p in self._items])
    warnings = list(self.notes)
    if resized:
      warnings.append(f'IMAGE_FOLDER: {resized} of {len(self._items)} images under {folder} are '
                      f'not {size}x{size}; they are centre-cropped to a square and resized '
                      f'(bicubic) to data.image_size={size}.')
    if converted:
      modes = ', '.join(f'{m}: {n}' for m, n in sorted(converted.items()))
      warnings.append(f'IMAGE_FOLDER: {sum(converted.values())} images under {folder} are not '
                      f'{mode} ({modes}); they are converted to {mode} for '
                      f'data.num_channels={channels}.')
    return warnings


@register_dataset('IMAGE_FOLDER')
def image_folder(data_config: ml_collections.ConfigDict, split: str) -> ImageFolderSource:
  """Images under ``data.data_dir``; ``data_dir/train`` and ``data_dir/test`` if both exist.

  Without split subfolders both splits are the whole folder, as the reference does for FFHQ;
  the 'test' source then says so in its ``notes`` (a warning at start-up). Files are decoded on
  ``data.num_workers`` threads (absent or ``None``: ``default_num_workers()``).
  """
  root = pathlib.Path(data_config.data_dir).expanduser()
  if not str(data_config.data_dir) or not root.is_dir():
    raise errors.DataNotFoundError(
        f'IMAGE_FOLDER: data.data_dir={str(data_config.data_dir)!r} is not a directory. Point '
        '--config.data.data_dir at a folder of .png/.jpg/.jpeg/.webp images.')
  split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
  if split_dirs and len(split_dirs) != len(SPLITS):
    raise errors.DataNotFoundError(
        f'IMAGE_FOLDER: {root} has {split_dirs[0].name}/ but not the other split; add both '
        f'{"/ and ".join(SPLITS)}/ subfolders, or neither.')
  folder = root / split if split_dirs else root
  paths = list_images(folder)
  if not paths:
    raise errors.DataNotFoundError(
        f'IMAGE_FOLDER: no {"/".join(IMAGE_SUFFIXES)} files under {folder}. Point '
        '--config.data.data_dir at a folder of images.')
  notes = ()
  if split == 'test' and not split_dirs:
    notes = (f'IMAGE_FOLDER: {root} has no train/ and test/ subfolders, so evaluation (\'test\') '
             'uses the training images; add both subfolders for a held-out split.',)
  return ImageFolderSource(paths, data_config.image_size, data_config.num_channels, notes,
                           num_workers=data_config.get('num_workers', None))


def get_dataset(data_config: ml_collections.ConfigDict, split: str) -> Source:
  """The source that ``data_config.dataset`` names, for ``split`` in ``('train', 'test')``.

  Args:
    data_config: ``config.data`` (``dataset``, ``image_size``, ``num_channels``, ``data_dir``
      and per-dataset fields such as ``category`` or ``tfrecords_path``).
    split: ``'train'`` or ``'test'`` (held-out data; the dataset's validation split where the
      reference evaluates on it).
  Raises:
    KeyError: for an unknown dataset name (the message lists the known ones).
    ValueError: for a bad split, image size or channel count.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  images.image_shape(data_config.image_size, data_config.num_channels)
  return DATASETS.get(data_config.dataset).factory(data_config, split)
