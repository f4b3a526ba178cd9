"""``torch.save``-format files written without torch, with any numbers in them: the layout of
the files score_sde_pytorch writes (a zip of ``<name>/data.pkl``, ``<name>/byteorder`` and one
raw record ``<name>/data/<key>`` per storage, the pickle at protocol 2 naming
``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage``), so tests can hand the reader
the files a stranger could: views past their storage, huge strides, records that lie about
their size.
"""
import collections
import io
import pickle
import zipfile
from typing import Dict, Optional


class Global:
  """``module.name`` written as a pickle GLOBAL opcode, without importing ``module``."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle wants the callable of a reduce tuple to be callable.
    raise TypeError('a stand-in for pickling only')


class Storage:
  """A torch storage: record ``data/<key>`` holding ``numel`` values of ``kind``
  (``'FloatStorage'``, ...)."""

  def __init__(self, key: str, numel: int, kind: str = 'FloatStorage'):
    self.key, self.numel, self.kind = key, numel, kind


class Tensor:
  """A strided view of a ``Storage``, pickled as torch pickles a tensor."""

  def __init__(self, storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def __reduce__(self):
    return (Global('torch._utils', '_rebuild_tensor_v2'),
            (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
             collections.OrderedDict()))


class Call:
  """``function(*args)`` when unpickled: what a code-running pickle does."""

  def __init__(self, function: Global, args: tuple):
    self.function, self.args = function, args

  def __reduce__(self):
    return self.function, self.args


class Rebuilt:
  """``storage`` with ``state`` applied by the pickle's BUILD opcode (``ndarray.__setstate__``
  on the array the reader makes of it), pickled in place of the storage."""

  def __init__(self, storage: Storage, state):
    self.storage, self.state = storage, state


class _Pickler(pickle._Pickler):  # The Python pickler: its dispatch table can take Global.
  dispatch = dict(pickle._Pickler.dispatch)

  def _save_global(self, obj):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())

  dispatch[Global] = _save_global

  def _save_rebuilt(self, obj):
    self.save(obj.storage)
    self.save(obj.state)
    self.write(pickle.BUILD)

  dispatch[Rebuilt] = _save_rebuilt

  def persistent_id(self, obj):
    if isinstance(obj, Storage):
      return ('storage', Global('torch', obj.kind), obj.key, 'cpu', obj.numel)
    return None


def pickle_bytes(obj) -> bytes:
  out = io.BytesIO()
  _Pickler(out, protocol=2).dump(obj)
  return out.getvalue()


def write_pth(path, obj, records: Dict[str, bytes], *, compress: bool = False,
              declared: Optional[Dict[str, int]] = None, declared_pickle: Optional[int] = None,
              name: str = 'archive'):
  """Writes ``obj`` (with ``Tensor`` / ``Storage`` leaves) and the storages' raw ``records``
  (key -> bytes) as ``torch.save`` lays them out.

  Args:
    compress: deflate the storage records (torch stores them; a zip bomb deflates).
    declared: key -> the uncompressed size the zip's central directory states for that
      record, in place of its true size (a lying header).
    declared_pickle: the same for ``data.pkl``.
  """
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr(f'{name}/data.pkl', pickle_bytes(obj))
    archive.writestr(f'{name}/byteorder', 'little')
    for key, data in records.items():
      archive.writestr(f'{name}/data/{key}', data,
                       compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    # The central directory, which readers trust, is written from these at close.
    for key, size in (declared or {}).items():
      archive.getinfo(f'{name}/data/{key}').file_size = size
    if declared_pickle is not None:
      archive.getinfo(f'{name}/data.pkl').file_size = declared_pickle
  return path
