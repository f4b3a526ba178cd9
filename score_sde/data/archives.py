"""CIFAR10 and SVHN from their official files in ``data.data_dir``, read without TensorFlow.

Get the files with ``python -m score_sde.data.download cifar10 --data_dir DIR`` (or ``svhn``;
``data.download``), then pass ``--config.data.data_dir=DIR``.

* CIFAR10: ``cifar-10-python.tar.gz``, or the folder ``cifar-10-batches-py/`` it unpacks to.
  The batches ``data_batch_1`` .. ``data_batch_5`` ('train', 50,000 images) and ``test_batch``
  ('test', 10,000) are Python pickles of ``{b'data': uint8 (10000, 3072), b'labels': [int]}``,
  each row a 32x32 image stored channel-major (1024 red, then green, then blue values). They are
  read with an unpickler that builds dicts, lists, strings and uint8 arrays and refuses every
  other object, so a crafted file cannot run code.
* SVHN: ``train_32x32.mat`` ('train', 73,257 digits) and ``test_32x32.mat`` ('test', 26,032),
  MATLAB files of ``X: uint8 (32, 32, 3, N)`` and ``y: (N, 1)`` in 1..10, where 10 is the digit
  0; labels are ``y % 10``.

These are the images and splits of tfds' ``cifar10`` and ``svhn_cropped`` that the reference
trains and evaluates on, with its preprocessing: antialiased bilinear resize to
``data.image_size`` (a no-op at 32). The decoded arrays stay in memory (150 MB for CIFAR-10's
training set, 225 MB for SVHN's).
"""
import io
import pathlib
import pickle
import tarfile
from typing import Callable, Dict, Sequence, Tuple

import ml_collections
import numpy as np
import scipy.io

from score_sde.common import errors
from score_sde.data import images, remote, sources

CIFAR_ARCHIVE = 'cifar-10-python.tar.gz'
CIFAR_FOLDER = 'cifar-10-batches-py'
CIFAR_BATCHES = {'train': tuple(f'data_batch_{i}' for i in range(1, 6)), 'test': ('test_batch',)}
CIFAR_SIDE = 32
NUM_CLASSES = 10
SVHN_FILES = {'train': 'train_32x32.mat', 'test': 'test_32x32.mat'}
_MAX_BATCH_BYTES = 1 << 26  # A published batch pickle is 31 MB; refuse a bomb's members.


def data_root(dataset: str, data_config: ml_collections.ConfigDict) -> pathlib.Path:
  """``data.data_dir`` as a path; ``DataNotFoundError`` with the download command if empty."""
  data_dir = str(data_config.get('data_dir', '') or '')
  if not data_dir:
    raise errors.DataNotFoundError(
        f'{dataset}: data.data_dir is empty; it must name the folder holding the dataset\'s '
        f'files. Download them with: '
        f'{remote.command(dataset, "DIR", data_config.get("category", ""))} and pass '
        '--config.data.data_dir=DIR.')
  return pathlib.Path(data_dir).expanduser()


def not_found(dataset: str, expected: str, root: pathlib.Path,
              category: str = '') -> errors.DataNotFoundError:
  """The error for a missing file: what was expected, where, and the command that fetches it."""
  return errors.DataNotFoundError(
      f'{dataset}: {expected} not found in {root} (data.data_dir). Download it with: '
      f'{remote.command(dataset, str(root), category)}')


# ---------------------------------------------------------------------------- safe unpickling

_ARRAY = object()  # What the pickle's ``numpy.ndarray`` stands for: a token, never called.
_DTYPES = frozenset(('u1', 'i1', 'u2', 'i2', 'u4', 'i4', 'u8', 'i8', 'f4', 'f8'))


def _text(value) -> str:
  return value.decode('latin1') if isinstance(value, bytes) else value


def _reconstruct(cls, shape, typecode) -> np.ndarray:
  """``numpy.core.multiarray._reconstruct`` for ndarray only: an empty array that the pickle's
  next opcode (BUILD, ``ndarray.__setstate__``) fills with its own shape, dtype and bytes."""
  del typecode  # Replaced by the state's dtype.
  if cls is not _ARRAY or tuple(shape) != (0,):
    raise pickle.UnpicklingError('only plain numpy arrays may be rebuilt.')
  return np.empty((0,), np.uint8)


def _dtype(name, align=False, copy=True) -> np.dtype:
  """``numpy.dtype`` for plain numeric types only (no object or structured dtypes)."""
  del align, copy
  name = _text(name)
  if name not in _DTYPES:
    raise pickle.UnpicklingError(f'dtype {name!r} is not a plain numeric type.')
  return np.dtype(name)


_ALLOWED = {
    ('numpy.core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy', 'ndarray'): _ARRAY,
    ('numpy', 'dtype'): _dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Builds Python's plain containers and numeric numpy arrays; every other global is refused."""

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f'{module}.{name} is not allowed in a dataset file.') from None

  def persistent_load(self, pid):
    raise pickle.UnpicklingError('persistent ids are not allowed in a dataset file.')


def safe_unpickle(payload: bytes):
  """Unpickles ``payload`` (Python 2 strings as bytes) with ``_RestrictedUnpickler``.

  Raises:
    pickle.UnpicklingError: the pickle names any callable other than numpy's array and dtype
      constructors (``os.system``, ``builtins.eval``, ...), so nothing of it runs.
  """
  return _RestrictedUnpickler(io.BytesIO(payload), encoding='bytes').load()


# --------------------------------------------------------------------------- CIFAR-10


def _read_capped(file, size: int) -> bytes:
  """The bytes of a batch file (a path or an open member) of declared ``size``; a
  ``BadDataError`` for a size no CIFAR-10 batch has, before anything is read."""
  if size > _MAX_BATCH_BYTES:
    raise errors.BadDataError(f'CIFAR10: {getattr(file, "name", file)} declares {size} bytes, '
                              'more than any CIFAR-10 batch; it was not read.')
  if isinstance(file, pathlib.Path):
    return file.read_bytes()
  return file.read()


def _cifar_payloads(root: pathlib.Path, names: Sequence[str]) -> Dict[str, Tuple[str, bytes]]:
  """``{batch name: (where it was read, bytes)}`` from the folder, or else from the archive."""
  folder, archive = root / CIFAR_FOLDER, root / CIFAR_ARCHIVE
  if folder.is_dir():
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
      raise not_found('CIFAR10', f'{", ".join(missing)} (in {CIFAR_FOLDER}/)', root)
    return {n: (str(folder / n), _read_capped(folder / n, (folder / n).stat().st_size))
            for n in names}
  if not archive.is_file():
    raise not_found('CIFAR10', f'{CIFAR_ARCHIVE} (or its folder {CIFAR_FOLDER}/)', root)
  wanted = {f'{CIFAR_FOLDER}/{n}': n for n in names}
  found = {}
  try:
    with tarfile.open(archive, 'r:gz') as tar:
      for member in tar:  # One pass: a gzip stream does not seek back cheaply.
        if member.name in wanted and member.isfile():
          found[wanted[member.name]] = (f'{archive}:{member.name}',
                                        _read_capped(tar.extractfile(member), member.size))
  except (tarfile.TarError, OSError, EOFError) as e:
    raise errors.BadDataError(f'CIFAR10: {archive} cannot be read ({type(e).__name__}: {e}). '
                              f'Download it again: {remote.command("CIFAR10", str(root))}') from e
  missing = [n for n in names if n not in found]
  if missing:
    raise errors.BadDataError(f'CIFAR10: {archive} has no {", ".join(missing)} under '
                              f'{CIFAR_FOLDER}/; it is not the published archive. Download it '
                              f'again: {remote.command("CIFAR10", str(root))}')
  return found


def decode_cifar_batch(payload: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
  """One pickled batch -> ``(uint8 (n, 32, 32, 3), int32 (n,))``, rows turned from CHW to HWC.

  Raises:
    errors.BadDataError: naming ``where``, for a pickle that is refused or not a CIFAR batch.
  """
  try:
    batch = safe_unpickle(payload)
  except Exception as e:  # Any malformed or hostile pickle: refuse it with its name.
    raise errors.BadDataError(f'CIFAR10: {where} is not a safe CIFAR-10 batch pickle '
                              f'({type(e).__name__}: {e}); it was not loaded.') from e
  data = batch.get(b'data') if isinstance(batch, dict) else None
  labels = np.asarray(batch.get(b'labels', ()) if isinstance(batch, dict) else ())
  side = CIFAR_SIDE
  if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
      or data.shape[1] != 3 * side * side or labels.shape != data.shape[:1]
      or not np.issubdtype(labels.dtype, np.integer)
      or (labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES))):
    raise errors.BadDataError(
        f'CIFAR10: {where} is not a CIFAR-10 batch (a dict of b"data": uint8 (n, 3072) and '
        f'b"labels": n ints in 0..9). Download the archive again.')
  hwc = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(hwc), labels.astype(np.int32)


def read_cifar10(root: pathlib.Path, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """CIFAR-10's ``split`` from ``root``: ``uint8 (N, 32, 32, 3)``, ``int32 (N,)`` in file order."""
  names = CIFAR_BATCHES[split]
  payloads = _cifar_payloads(root, names)
  parts = [decode_cifar_batch(payloads[n][1], payloads[n][0]) for n in names]
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ------------------------------------------------------------------------------------- SVHN


def read_svhn(root: pathlib.Path, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """SVHN's ``split`` from ``root``: ``uint8 (N, 32, 32, 3)``, ``int32 (N,)`` digits 0..9."""
  path = root / SVHN_FILES[split]
  if not path.is_file():
    raise not_found('SVHN', SVHN_FILES[split], root)
  try:
    mat = scipy.io.loadmat(path, variable_names=('X', 'y'))
  except Exception as e:  # scipy raises several types for a damaged or foreign file.
    raise errors.BadDataError(f'SVHN: {path} cannot be read as a MATLAB file '
                              f'({type(e).__name__}: {e}). Download it again: '
                              f'{remote.command("SVHN", str(root))}') from e
  x, y = mat.get('X'), np.asarray(mat.get('y', ()))
  if (not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape[:3] != (32, 32, 3)
      or y.size != x.shape[3] or not y.size or y.min() < 1 or y.max() > NUM_CLASSES):
    raise errors.BadDataError(f'SVHN: {path} does not hold X: uint8 (32, 32, 3, N) and y: N '
                              'labels in 1..10. Download it again: '
                              f'{remote.command("SVHN", str(root))}')
  hwc = np.ascontiguousarray(np.moveaxis(x, 3, 0))
  return hwc, (y.reshape(-1).astype(np.int64) % NUM_CLASSES).astype(np.int32)


# ---------------------------------------------------------------------------------- sources


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """The reference's CIFAR10 / SVHN preprocessing: antialiased bilinear resize to ``size``."""
  return images.resize(image, size, size, 'bilinear')


class PreprocessedArraySource(sources.Source):
  """Raw images held in memory, preprocessed per example when asked for.

  Args:
    raw: ``uint8 (N, H, W, C)`` as read from the files.
    labels: ``int32 (N,)``.
    preprocess: ``(uint8 (H, W, C), size) -> uint8 (size, size, C)``.
    image_size, num_channels: the shape ``get`` returns.
  """

  def __init__(self, raw: np.ndarray, labels: np.ndarray,
               preprocess: Callable[[np.ndarray, int], np.ndarray], image_size: int,
               num_channels: int):
    self._raw, self._labels = raw, labels
    self._preprocess = preprocess
    self._shape = images.image_shape(image_size, num_channels)

  @property
  def image_shape(self):
    return self._shape

  def __len__(self):
    return len(self._raw)

  def _load(self, indices):
    raw = self._raw[indices]
    if raw.shape[1:] != self._shape:
      size, _, channels = self._shape
      raw = np.stack([images.to_channels(self._preprocess(r, size), channels) for r in raw])
    return {'image': raw, 'label': self._labels[indices]}


_READERS: Dict[str, Callable[[pathlib.Path, str], Tuple[np.ndarray, np.ndarray]]] = {
    'CIFAR10': read_cifar10,
    'SVHN': read_svhn,
}


def _register(dataset: str) -> None:
  def factory(data_config: ml_collections.ConfigDict, split: str) -> PreprocessedArraySource:
    raw, labels = _READERS[dataset](data_root(dataset, data_config), split)
    return PreprocessedArraySource(raw, labels, resize, data_config.image_size,
                                   data_config.num_channels)

  factory.__doc__ = f'{dataset} from its official files in data.data_dir; see the module doc.'
  sources.register_dataset(dataset, num_channels=3)(factory)


for _name in _READERS:
  _register(_name)

