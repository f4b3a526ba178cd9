"""Reads ``torch.save`` files without torch, trusting nothing in them.

``torch.save`` files are zip archives of a pickle (``data.pkl``) and one raw record per tensor
storage (``data/<key>``). ``read_pth`` reads them with numpy through an unpickler that builds
only plain containers and tensors (any other global in the pickle is refused, so a pickle runs
no code); files in torch's pre-1.6 non-zip format need torch (``pip install torch``) and say so.

``read_pickle`` reads a plain ``pickle.dump`` of tensors the same way. There each storage is
inline, the bytes that ``torch.storage._load_from_bytes`` receives: the storage alone in the
pre-1.6 layout (pickles of the format's magic number, version and byte order, of the storage's
persistent id and of its key, then its element count as a little-endian int64 and its values),
which ``_legacy_storage`` parses without torch. The caller adds the globals of its own format
(e.g. ``conversion.edm_checkpoints``' data-only stand-ins), and nothing else is built.

A file from elsewhere is read as untrusted:

* every record's stated size is checked before it is inflated: a storage's record must hold
  exactly its values, no more than its compressed bytes can inflate to, and all records
  together stay under a cap of what a checkpoint can hold (``max_bytes``); records are then
  read in bounded chunks, so a record that states a false size fails its CRC or its length
  without growing memory;
* every tensor view (size, stride, offset) must lie inside its storage, and the tensors built
  count against the same cap.

A file that breaks any of these is refused with ``CheckpointFileError``: one line naming the
file and what is wrong.
"""
import collections
import io
import math
import pickle
import zipfile
import zlib
from typing import Any, Mapping, Tuple

import numpy as np
from etils import epath

from score_sde.common import errors

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}
try:
  import ml_dtypes  # A jax dependency; bfloat16 storages are rare in score_sde checkpoints.
  _STORAGE_DTYPES['BFloat16Storage'] = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover
  pass

# ``data.pkl`` holds names, shapes and storage keys only, under 100 bytes a tensor: a paper
# network's checkpoint (a few thousand tensors) is under 1 MB. The cap bounds what a crafted
# pickle can build.
MAX_PICKLE_BYTES = 16 << 20
# Bytes ``read_pth`` reads and builds at most when no network bounds it: the checkpoint of the
# largest paper network (NCSN++ deep, 108M parameters, 4 float32 copies) read and built is
# 3.4 GB. ``pytorch_checkpoints.load_pytorch_checkpoint`` bounds it by the network it expects.
DEFAULT_MAX_BYTES = 4 << 30
_CHUNK_BYTES = 1 << 20  # Records are inflated this much at a time.
# The pre-1.6 layout's first two pickles.
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_MAX_DEFLATE_RATIO = 1032  # Deflate's most: 258 bytes from a 2-bit code; a larger claim is a lie.
_MAX_DIMS = 32


class CheckpointFileError(errors.UserError, ValueError):
  """A checkpoint file that cannot be read as one: not a checkpoint, damaged, or holding numbers
  that do not fit (a view outside its storage, a record larger than it states or than a
  checkpoint of the network holds). The message is one line naming the file."""


class CheckpointNotFoundError(errors.UserError, FileNotFoundError):
  """No checkpoint file where one was named."""


class _Storage:
  """A torch storage's numpy dtype; the bytes are read when a tensor is built on it."""

  def __init__(self, dtype):
    self.dtype = dtype


class _Refused(Exception):
  """What is wrong with the file; ``read_pth`` adds its name."""


class _Budget:
  """The bytes a file may still make the reader hold (records read, tensors built)."""

  def __init__(self, limit: int):
    self.limit, self.left = int(limit), int(limit)

  def take(self, nbytes: int, what: str) -> None:
    if nbytes > self.left:
      raise _Refused(f'{what} needs {nbytes:,} bytes, past the cap of {self.limit:,} bytes on '
                     'what a checkpoint holds')
    self.left -= nbytes


def _read_record(archive: zipfile.ZipFile, name: str, nbytes: int, budget: _Budget) -> bytes:
  """Member ``name``, which must state exactly ``nbytes`` uncompressed, inflated in bounded
  chunks: a record that states a false size fails its CRC or its length, never grows memory."""
  info = archive.getinfo(name)
  if info.file_size != nbytes:
    raise _Refused(f'record {name} states {info.file_size:,} bytes where {nbytes:,} belong')
  if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
    raise _Refused(f'record {name} is compressed with zip method {info.compress_type}; '
                   'torch.save stores its records')
  most = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED
                               else _MAX_DEFLATE_RATIO)
  if nbytes > most:
    raise _Refused(f'record {name} states {nbytes:,} bytes, more than its '
                   f'{info.compress_size:,} stored bytes can hold')
  budget.take(nbytes, f'record {name}')
  out = bytearray(nbytes)
  view, done = memoryview(out), 0
  with archive.open(info) as f:
    while done < nbytes:
      chunk = f.read(min(_CHUNK_BYTES, nbytes - done))
      if not chunk:
        raise _Refused(f'record {name} ends after {done:,} of its {nbytes:,} bytes')
      view[done:done + len(chunk)] = chunk
      done += len(chunk)
  return out


def _is_index(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_view(storage: np.ndarray, key: str, offset, size, stride) -> Tuple[int, ...]:
  """The byte strides of a tensor view of ``storage``, after checking that every element it
  reaches lies inside the storage. Raises ``_Refused`` naming the numbers that do not fit."""
  what = (f'tensor on storage {key} (size {repr(size)[:80]}, stride {repr(stride)[:80]}, '
          f'offset {repr(offset)[:40]})')
  if not _is_index(offset):
    raise _Refused(f'{what}: the offset must be a non-negative integer')
  if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
          and len(size) <= _MAX_DIMS and all(map(_is_index, size + stride))):
    raise _Refused(f'{what}: size and stride must be tuples of as many non-negative integers '
                   f'(at most {_MAX_DIMS})')
  if 0 in size:
    if offset > storage.size:
      raise _Refused(f'{what}: the offset lies past the storage\'s {storage.size} values')
    return (0,) * len(size)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise _Refused(f'{what}: it reaches value {last:,} of a storage of {storage.size:,}')
  # A stride along a dimension of size 1 is never applied; 0 keeps it in numpy's range.
  return tuple(s * storage.dtype.itemsize if n > 1 else 0 for n, s in zip(size, stride))


def _rebuild_parameter(data, *unused):
  return data


def _numpy_scalar(dtype, data=None):
  """``numpy._core.multiarray.scalar`` for plain numeric dtypes only (the port's lr)."""
  if (not isinstance(dtype, np.dtype) or dtype.kind not in 'biufc' or dtype.fields is not None
      or dtype.subdtype is not None or not isinstance(data, bytes)
      or len(data) != dtype.itemsize):
    raise _Refused(f'a numpy scalar of dtype {dtype!r} is not a plain number')
  return np.frombuffer(data, dtype)[0]


def _encode(text, encoding='latin1'):
  """``_codecs.encode`` as pickle uses it for bytes: latin-1 only."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise _Refused(f'_codecs.encode with {encoding!r} is not how pickle stores bytes')
  return text.encode('latin1')


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles ``data.pkl`` of a ``torch.save`` zip; tensors become numpy arrays, each checked
  against its storage and the ``budget``."""

  def __init__(self, data: bytes, read_storage, byteorder: str, budget: _Budget):
    super().__init__(io.BytesIO(data))
    self._read_storage = read_storage  # (key, nbytes) -> bytes
    self._byteorder = '<' if byteorder == 'little' else '>'
    self._budget = budget
    self._storages, self._keys, self._specs = {}, {}, {}
    self._globals = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('torch._utils', '_rebuild_tensor_v2'): self._rebuild_tensor,
        ('torch._utils', '_rebuild_tensor'): self._rebuild_tensor,
        ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
        # numpy scalars (the port's optimizer stores its warmed-up lr as np.float64).
        ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
        ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
        ('numpy', 'dtype'): np.dtype,
        ('_codecs', 'encode'): _encode,
    }

  # What a refused global's message ends with: how to get a file this reader takes.
  refusal_hint = 'load the file with torch.load and save its state dicts'

  def find_class(self, module, name):
    if (module, name) in self._globals:
      return self._globals[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _Storage(_STORAGE_DTYPES[name])
    if module == 'torch' and name == 'device':
      return str
    raise pickle.UnpicklingError(
        f'{module}.{name} in the checkpoint is neither a tensor nor a plain container; this '
        f'reader builds only those ({self.refusal_hint}).')

  def persistent_load(self, pid):
    # ('storage', storage type, key, location, numel): the tensor bytes are data/<key>.
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
            and isinstance(pid[1], _Storage) and isinstance(pid[2], str) and _is_index(pid[4])):
      raise _Refused(f'persistent record {str(pid)[:80]} is not a torch storage')
    _, storage_type, key, _, numel = pid
    dtype = np.dtype(storage_type.dtype).newbyteorder(self._byteorder)
    if key in self._storages:
      if self._storages[key].dtype != dtype.newbyteorder('=') or self._storages[key].size != numel:
        raise _Refused(f'storage {key} is named with two types or sizes')
      return self._storages[key]
    array = np.frombuffer(self._read_storage(key, numel * dtype.itemsize), dtype=dtype)
    return self._register(key, array)

  def _register(self, key: str, array: np.ndarray) -> np.ndarray:
    """``array`` (flat) as storage ``key``, the only thing ``_rebuild_tensor`` views."""
    self._storages[key] = array.astype(array.dtype.newbyteorder('='), copy=False)
    self._keys[id(self._storages[key])] = key
    self._specs[key] = (self._storages[key].dtype, array.size)
    return self._storages[key]

  def _rebuild_tensor(self, storage, offset, size, stride, *unused):
    """``torch._utils._rebuild_tensor_v2`` on a numpy storage: a strided view, checked, copied."""
    key = self._keys.get(id(storage))
    # The pickle can hand any array here, or reshape a storage with BUILD (ndarray.__setstate__):
    # only a storage of the file, still flat and of its type and size, is viewed.
    if (key is None or self._storages[key] is not storage or storage.ndim != 1
        or not storage.flags.c_contiguous or (storage.dtype, storage.size) != self._specs[key]):
      raise _Refused('a tensor is built on something other than a storage of the file as read')
    size, stride = tuple(size), tuple(stride)
    byte_strides = _check_view(storage, key, offset, size, stride)
    self._budget.take(math.prod(size) * storage.dtype.itemsize, f'tensor of size {size}')
    if 0 in size:
      return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=byte_strides)
    return np.array(view, copy=True)


class _LegacyRecordUnpickler(pickle.Unpickler):
  """One pickle of a storage's pre-1.6 record: plain values, storage types and the storage's
  persistent id (returned as it is, for ``_legacy_storage`` to check)."""

  def find_class(self, module, name):
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _Storage(_STORAGE_DTYPES[name])
    raise _Refused(f'{module}.{name} in a tensor storage record is not a storage type')

  def persistent_load(self, pid):
    return pid


def _legacy_storage(data: bytes) -> np.ndarray:
  """The values of one storage that torch's pre-1.6 ``torch.save`` wrote alone: what a plain
  pickle of a tensor hands ``torch.storage._load_from_bytes``. A flat read-only array on
  ``data`` (little-endian), after checking every part of the record; ``_Refused`` names what
  does not fit (not such a record, another byte order, a count that disagrees with the values
  present)."""
  if not isinstance(data, (bytes, bytearray)):
    raise _Refused(f'a storage record is {type(data).__name__}, not bytes')
  stream = io.BytesIO(data)

  def load():  # The record's pickles, one after another.
    return _LegacyRecordUnpickler(stream).load()
  if load() != _LEGACY_MAGIC or load() != _LEGACY_PROTOCOL:
    raise _Refused('a storage record does not start as torch.save\'s pre-1.6 layout')
  info = load()
  if not isinstance(info, dict) or info.get('little_endian') is not True:
    raise _Refused(f'a storage record is not little-endian (sys_info {str(info)[:80]})')
  pid = load()
  if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == 'storage'
          and isinstance(pid[1], _Storage) and isinstance(pid[2], str) and _is_index(pid[4])
          and pid[5] is None):
    raise _Refused(f'a storage record holds {str(pid)[:80]}, not one whole storage')
  _, storage_type, key, _, numel, _ = pid
  if load() != [key]:
    raise _Refused(f'a storage record does not list its one storage {key[:40]}')
  dtype = np.dtype(storage_type.dtype).newbyteorder('<')
  start = stream.tell() + 8
  count = int.from_bytes(data[start - 8:start], 'little')
  if count != numel or len(data) - start != numel * dtype.itemsize:
    raise _Refused(f'a storage record states {numel:,} values and {count:,}, and holds '
                   f'{len(data) - start:,} bytes of {dtype.itemsize}-byte values')
  return np.frombuffer(memoryview(data)[start:], dtype=dtype)


class _PickleUnpickler(_TorchUnpickler):
  """A plain pickle of tensors: storages inline (``torch.storage._load_from_bytes``), the
  globals of ``_TorchUnpickler`` and the caller's ``extra_globals``, nothing else."""

  def __init__(self, data: bytes, budget: _Budget, extra_globals, refusal_hint: str):
    super().__init__(data, self._no_record, 'little', budget)
    self._globals.update(extra_globals)
    self._globals[('torch.storage', '_load_from_bytes')] = self._load_from_bytes
    self.refusal_hint = refusal_hint

  @staticmethod
  def _no_record(key, nbytes):
    raise _Refused(f'a plain pickle names storage record {key[:40]} outside itself')

  def persistent_load(self, pid):
    raise _Refused(f'persistent record {str(pid)[:80]} in a plain pickle')

  def _load_from_bytes(self, data):
    # The record's bytes are already held (the unpickler made them): count them once more.
    self._budget.take(len(data) if isinstance(data, (bytes, bytearray)) else 0,
                      'a storage record')
    return self._register(f'inline/{len(self._storages)}', _legacy_storage(data))


def read_pickle(path, extra_globals: Mapping[Tuple[str, str], Any], refusal_hint: str,
                max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
  """The object a plain ``pickle.dump`` wrote to ``path``, with tensors as numpy arrays (no
  torch), building only containers, tensors and ``extra_globals``.

  Args:
    path: the pickle file.
    extra_globals: ``(module, name) -> callable`` the format adds to the containers and tensors
      (data-only stand-ins: nothing from the file is imported or run).
    refusal_hint: what the message for any other global ends with (how to get a file this
      reader takes).
    max_bytes: the most bytes the file may make the reader hold: the file, its storage
      records and the tensors built on them.
  Raises:
    CheckpointNotFoundError: nothing at ``path``.
    CheckpointFileError: a global outside those (naming it), a damaged or crafted storage
      record or tensor view, or more than ``max_bytes``; one line naming ``path``.
  """
  path = epath.Path(path)
  if not path.exists():
    raise CheckpointNotFoundError(f'No pickle file at {path}.')
  budget = _Budget(max_bytes)
  try:
    budget.take(path.stat().length, 'the file')
    return _PickleUnpickler(path.read_bytes(), budget, extra_globals, refusal_hint).load()
  except _Refused as e:
    raise CheckpointFileError(f'{path} is refused: {e}.') from None
  except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError,
          IndexError, OverflowError, MemoryError, RecursionError, RuntimeError,
          NotImplementedError) as e:  # What a malformed file makes the unpickler raise.
    message = ' '.join(str(e).split())
    raise CheckpointFileError(f'{path}: cannot read the pickle ({type(e).__name__}: '
                              f'{message}).') from None


def is_torch_file(path) -> bool:
  """Whether ``path`` looks like a ``torch.save`` file: a zip archive or a pickle stream."""
  with epath.Path(path).open('rb') as f:
    head = f.read(4)
  return head[:4] == b'PK\x03\x04' or head[:1] == b'\x80'


def read_pth(path, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
  """The object ``torch.save`` wrote to ``path``, with tensors as numpy arrays (no torch).

  Args:
    path: a ``torch.save`` file.
    max_bytes: the most bytes the file may make the reader hold: its storage records plus the
      tensors built on them (``checkpoint_bytes`` of the network it should hold).
  Raises:
    CheckpointNotFoundError: nothing at ``path``.
    CheckpointFileError: not a ``torch.save`` file, a damaged or crafted one (a record whose
      size is not what it states or past ``max_bytes``, a tensor view outside its storage, a
      global other than a tensor or a container), or one in the pre-1.6 format without torch
      installed. One line naming ``path`` and what is wrong.
  """
  path = epath.Path(path)
  if not path.exists():
    raise CheckpointNotFoundError(f'No PyTorch checkpoint at {path}.')
  with path.open('rb') as f:
    if not zipfile.is_zipfile(f):
      return _read_legacy(path)
    try:
      with zipfile.ZipFile(f) as archive:
        return _read_archive(archive, _Budget(max_bytes))
    except _Refused as e:
      raise CheckpointFileError(f'{path} is refused: {e}; it is damaged or was not written by '
                                'torch.save.') from None
    except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, EOFError, ValueError,
            TypeError, AttributeError, IndexError, OverflowError, MemoryError, RuntimeError,
            NotImplementedError, zlib.error) as e:  # What a malformed file makes these raise.
      message = ' '.join(str(e).split())  # One line, whatever the library wrote.
      raise CheckpointFileError(f'{path}: cannot read the PyTorch checkpoint '
                                f'({type(e).__name__}: {message}).') from None


def _read_archive(archive: zipfile.ZipFile, budget: _Budget) -> Any:
  names = archive.namelist()
  pickles = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
  if len(pickles) != 1:
    raise _Refused('it is a zip file but not a torch.save archive (no single data.pkl)')
  prefix = pickles[0][:-len('data.pkl')]
  size = archive.getinfo(pickles[0]).file_size
  if size > MAX_PICKLE_BYTES:
    raise _Refused(f'its {pickles[0]} states {size:,} bytes; a checkpoint\'s holds at most '
                   f'{MAX_PICKLE_BYTES:,}')
  data = _read_record(archive, pickles[0], size, budget)
  byteorder = 'little'
  if prefix + 'byteorder' in names:
    byteorder = bytes(_read_record(archive, prefix + 'byteorder', min(
        archive.getinfo(prefix + 'byteorder').file_size, 16), budget)).decode().strip()
  if byteorder not in ('little', 'big'):
    raise _Refused(f'byteorder {byteorder[:16]!r} is neither little nor big')
  return _TorchUnpickler(
      bytes(data), lambda key, nbytes: _read_record(archive, f'{prefix}data/{key}', nbytes,
                                                    budget), byteorder, budget).load()


def _read_legacy(path: epath.Path) -> Any:
  """Pre-1.6 ``torch.save`` files are a pickle stream with torch's own framing: torch reads them."""
  try:
    import torch
  except ImportError:
    raise CheckpointFileError(
        f'{path} is not a zip-format torch.save file. If it was saved by torch older than 1.6, '
        'install torch (pip install torch) to read it, or re-save it with a newer torch.'
    ) from None
  try:
    obj = torch.load(str(path), map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises many types for a file that is not a checkpoint.
    message = ' '.join(str(e).split())
    raise CheckpointFileError(f'{path} is not a PyTorch checkpoint ({type(e).__name__}: '
                              f'{message}).') from None

  def to_numpy(x):
    if isinstance(x, torch.Tensor):
      return x.detach().cpu().numpy()
    if isinstance(x, Mapping):
      return type(x)((k, to_numpy(v)) for k, v in x.items()) if isinstance(
          x, collections.OrderedDict) else {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return type(x)(to_numpy(v) for v in x)
    return x
  return to_numpy(obj)
