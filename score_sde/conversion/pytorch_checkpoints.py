"""Reads score_sde_pytorch checkpoints (``checkpoint_<N>.pth``) into this project's layout.

The PyTorch port (github.com/yang-song/score_sde_pytorch) saves, with ``torch.save``,

  {'model': model.state_dict(), 'ema': ema.state_dict(), 'optimizer': adam.state_dict(),
   'step': int}

from a ``torch.nn.DataParallel`` model, so parameter names carry a ``module.`` prefix. Its
NCSN++ / DDPM++ / DDPM networks keep their blocks in one ``ModuleList`` named ``all_modules``, in
the order ``forward`` calls them, and each block names its layers as the released JAX code does
(``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0``, ...). So block ``all_modules.<i>`` (counting
only blocks that hold parameters) is the ``i``-th top-level module that the linen network creates,
and the names inside carry over. Leaves convert as

  ``weight`` (O, I, kh, kw) -> ``kernel`` (kh, kw, I, O)      (``weight`` in FIR ``Conv2d``)
  ``weight`` (O, I)         -> ``kernel`` (I, O)              (``nn.Linear``)
  ``weight`` (C,)           -> ``scale``                      (``nn.GroupNorm``)
  ``bias``, ``W``, ``b``    -> unchanged                      (``NIN``, Fourier features)

The EMA's ``shadow_params`` list the trainable parameters in ``model.parameters()`` order (the
Fourier projection's ``W`` is frozen and has none), and torch Adam's ``state[k]`` holds
``exp_avg`` / ``exp_avg_sq`` of the ``k``-th parameter: the moments ``mu`` / ``nu`` of
``optax.scale_by_adam``, which uses the same update and bias correction.

``torch.save`` files are zip archives of a pickle (``data.pkl``) and one raw file per tensor
storage. ``read_pth`` reads them with numpy through an unpickler that builds only plain
containers and tensors (any other global in the pickle is refused), so torch is not needed;
files in torch's pre-1.6 non-zip format need torch (``pip install torch``) and say so.

Command line::

  python -m score_sde.conversion.released_checkpoints \\
      --config configs/vp/cifar10_ddpmpp_continuous.py \\
      --checkpoint exp/vp/cifar10_ddpmpp_continuous/checkpoints/checkpoint_8.pth --workdir DIR
"""
import codecs
import collections
import io
import pickle
import zipfile
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
from etils import epath

# The network families whose port keeps its blocks in ``all_modules`` (config.model.name).
SUPPORTED_MODELS = ('ncsnpp', 'ddpm')
_FROZEN_MODULES = ('GaussianFourierProjection',)  # requires_grad=False in the port: no EMA, no Adam.

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


class _Storage:
  """A torch storage's numpy dtype; the bytes are read when a tensor is built on it."""

  def __init__(self, dtype):
    self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """``torch._utils._rebuild_tensor_v2`` on a numpy storage: a strided view, copied."""
  flat = storage
  itemsize = flat.dtype.itemsize
  if not size:
    return np.array(flat[offset], copy=True)
  view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view, copy=True)


def _rebuild_parameter(data, *unused):
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles ``data.pkl`` of a ``torch.save`` zip; tensors become numpy arrays."""

  _GLOBALS = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
      ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
      # numpy scalars (the port's optimizer stores its warmed-up lr as np.float64).
      ('numpy._core.multiarray', 'scalar'): np._core.multiarray.scalar,
      ('numpy.core.multiarray', 'scalar'): np._core.multiarray.scalar,
      ('numpy', 'dtype'): np.dtype,
      ('_codecs', 'encode'): codecs.encode,
  }

  def __init__(self, data: bytes, read_record, byteorder: str):
    super().__init__(io.BytesIO(data))
    self._read_record = read_record
    self._byteorder = '<' if byteorder == 'little' else '>'
    self._storages = {}

  def find_class(self, module, name):
    if (module, name) in self._GLOBALS:
      return self._GLOBALS[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _Storage(_STORAGE_DTYPES[name])
    if module == 'torch' and name == 'device':
      return str
    raise pickle.UnpicklingError(
        f'{module}.{name} in the checkpoint is neither a tensor nor a plain container; this '
        'reader builds only those (load the file with torch.load and save its state dicts).')

  def persistent_load(self, pid):
    # ('storage', storage type, key, location, numel): the tensor bytes are data/<key>.
    kind, storage_type, key, _, numel = pid
    if kind != 'storage' or not isinstance(storage_type, _Storage):
      raise pickle.UnpicklingError(f'Unknown persistent record {pid[:2]} in the checkpoint.')
    if key not in self._storages:
      dtype = np.dtype(storage_type.dtype).newbyteorder(self._byteorder)
      array = np.frombuffer(self._read_record(key), dtype=dtype)
      if array.size != numel:
        raise pickle.UnpicklingError(f'Storage {key} holds {array.size} values, not {numel}: '
                                     'the checkpoint is truncated or corrupt.')
      self._storages[key] = array.astype(array.dtype.newbyteorder('='))
    return self._storages[key]


def is_torch_file(path) -> bool:
  """Whether ``path`` looks like a ``torch.save`` file: a zip archive or a pickle stream."""
  with epath.Path(path).open('rb') as f:
    head = f.read(4)
  return head[:4] == b'PK\x03\x04' or head[:1] == b'\x80'


def read_pth(path) -> Any:
  """The object ``torch.save`` wrote to ``path``, with tensors as numpy arrays (no torch).

  Raises:
    FileNotFoundError: nothing at ``path``.
    ValueError: not a ``torch.save`` file, a corrupt one, or one in the pre-1.6 format
      without torch installed.
  """
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'No PyTorch checkpoint at {path}.')
  raw = path.read_bytes()
  if not zipfile.is_zipfile(io.BytesIO(raw)):
    return _read_legacy(path)
  try:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
      names = archive.namelist()
      pickles = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
      if len(pickles) != 1:
        raise ValueError(f'{path} is a zip file but not a torch.save archive (no data.pkl).')
      prefix = pickles[0][:-len('data.pkl')]
      byteorder = (archive.read(prefix + 'byteorder').decode().strip()
                   if prefix + 'byteorder' in names else 'little')
      return _TorchUnpickler(archive.read(pickles[0]),
                             lambda key: archive.read(f'{prefix}data/{key}'), byteorder).load()
  except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, EOFError, ValueError) as e:
    raise ValueError(f'{path}: cannot read the PyTorch checkpoint ({type(e).__name__}: {e}).')


def _read_legacy(path: epath.Path) -> Any:
  """Pre-1.6 ``torch.save`` files are a pickle stream with torch's own framing: torch reads them."""
  try:
    import torch
  except ImportError:
    raise ValueError(f'{path} is not a zip-format torch.save file. If it was saved by torch older '
                     'than 1.6, install torch (pip install torch) to read it, or re-save it with '
                     'a newer torch.') from None
  try:
    obj = torch.load(str(path), map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises many types for a file that is not a checkpoint.
    raise ValueError(f'{path} is not a PyTorch checkpoint ({type(e).__name__}: {e}).')

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


def _strip_prefix(state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Removes DataParallel's ``module.`` prefix (present on every key or on none)."""
  if all(k.startswith('module.') for k in state_dict):
    return {k[len('module.'):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def _blocks(state_dict: Mapping[str, np.ndarray]) -> List[Tuple[int, Dict[str, np.ndarray]]]:
  """``all_modules.<i>.<rest>`` entries grouped by ``i``, ascending; other keys are buffers."""
  blocks = collections.defaultdict(dict)
  for key, value in state_dict.items():
    parts = key.split('.')
    if parts[0] == 'all_modules':
      blocks[int(parts[1])]['.'.join(parts[2:])] = value
  return sorted(blocks.items())


def _convert_leaf(torch_name: str, value: np.ndarray, module: Mapping[str, Any]):
  """One torch leaf -> (linen leaf name, array) for a linen module with leaves ``module``."""
  value = np.asarray(value)
  if torch_name != 'weight':
    return torch_name, value
  if 'kernel' in module or (value.ndim == 4 and 'weight' in module):
    name = 'kernel' if 'kernel' in module else 'weight'
    axes = (2, 3, 1, 0) if value.ndim == 4 else (1, 0)
    return name, np.ascontiguousarray(value.transpose(axes))
  if 'scale' in module:
    return 'scale', value
  return torch_name, value


def _convert_block(torch_leaves: Mapping[str, np.ndarray], template: Mapping[str, Any],
                   where: str) -> Dict[str, Any]:
  """A block's torch leaves (``'GroupNorm_0.weight'``, ``'weight'``...) -> its linen subtree."""
  out = {}
  for key, value in torch_leaves.items():
    *path, leaf = key.split('.')
    node, out_node = template, out
    for name in path:
      if not isinstance(node, Mapping) or name not in node:
        raise ValueError(f'{where}.{key}: this config\'s network has no module {name!r} there '
                         f'(it has {sorted(node) if isinstance(node, Mapping) else "a leaf"}).')
      node, out_node = node[name], out_node.setdefault(name, {})
    name, array = _convert_leaf(leaf, value, node)
    if name not in node:
      raise ValueError(f'{where}.{key}: this config\'s network has no parameter {name!r} there '
                       f'(it has {sorted(node)}).')
    out_node[name] = array
  return out


def convert_state_dict(state_dict: Mapping[str, np.ndarray], template: Mapping[str, Any],
                       module_order: Sequence[str]) -> Dict[str, Any]:
  """A port ``model.state_dict()`` -> the linen ``params`` tree of this config's network.

  Args:
    state_dict: name -> array (numpy or anything ``np.asarray`` takes), ``module.``-prefixed
      or not; buffers outside ``all_modules`` (the ``sigmas`` ladder) are ignored.
    template: the linen ``params`` tree (arrays or ``ShapeDtypeStruct``s), e.g.
      ``models.abstract_params(config)``.
    module_order: the template's top-level module names in creation order
      (``models.module_order(config)``).
  Returns:
    Nested dicts of numpy arrays with the template's structure (shapes are checked by the
    caller, ``released_checkpoints.check_params``).
  Raises:
    ValueError: the state dict is not an ``all_modules`` network, or its blocks do not line up
      with this config's modules (naming the first that does not).
  """
  blocks = _blocks(_strip_prefix(state_dict))
  if not blocks:
    raise ValueError('The state dict has no all_modules.<i> entries: only the port\'s NCSN++, '
                     'DDPM++ and DDPM networks (model.name in '
                     f'{SUPPORTED_MODELS}) convert.')
  if len(blocks) != len(module_order):
    raise ValueError(f'The checkpoint\'s network has {len(blocks)} blocks with parameters, this '
                     f'config\'s has {len(module_order)}: use the config it was trained with.')
  return {name: _convert_block(leaves, template[name], f'all_modules.{index} (-> {name})')
          for (index, leaves), name in zip(blocks, module_order)}


def _frozen(names: Sequence[str], module_order: Sequence[str]) -> set:
  """The names among ``names`` (``all_modules.<i>...``) of parameters the port does not train."""
  indices = sorted({int(n.split('.')[1]) for n in names})
  block_name = dict(zip(indices, module_order))
  return {n for n in names if block_name[int(n.split('.')[1])].startswith(_FROZEN_MODULES)}


def load_pytorch_checkpoint(path, template: Mapping[str, Any],
                            module_order: Sequence[str]) -> Dict[str, Any]:
  """A port checkpoint as ``released_checkpoints.to_train_state`` takes it.

  Args:
    path: a ``checkpoint_<N>.pth`` file written by the port's ``save_checkpoint``.
    template, module_order: as for ``convert_state_dict``.
  Returns:
    dict with ``step`` (int), ``params`` and ``params_ema`` (linen trees of numpy arrays; the
    EMA is what the port samples and evaluates with), ``adam`` (``{'count', 'mu', 'nu'}``, or
    None when the file holds no Adam moments), ``ema_rate`` (float or None), ``path``.
  Raises:
    ValueError: the file is not a port checkpoint, or does not fit this config's network.
  """
  raw = read_pth(path)
  if not isinstance(raw, Mapping) or 'model' not in raw:
    keys = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
    raise ValueError(f'{path} is not a score_sde_pytorch checkpoint: expected a dict with '
                     f"'model', 'ema', 'optimizer' and 'step'; got {keys}.")
  model = _strip_prefix(raw['model'])
  params = convert_state_dict(model, template, module_order)
  # model.parameters() order: the all_modules keys as saved (the sigmas buffer dropped).
  names = [k for k in model if k.startswith('all_modules.')]
  frozen = _frozen(names, module_order)
  trainable = [n for n in names if n not in frozen]
  ema = raw.get('ema') or {}
  params_ema = params
  if ema.get('shadow_params') is not None:
    shadow = ema['shadow_params']
    if len(shadow) != len(trainable):
      raise ValueError(f'{path}: the EMA holds {len(shadow)} tensors but the network has '
                       f'{len(trainable)} trainable parameters.')
    params_ema = convert_state_dict({**model, **dict(zip(trainable, shadow))}, template,
                                    module_order)
  adam = _adam_moments(raw.get('optimizer'), model, names, template, module_order)
  return {'step': int(np.asarray(raw.get('step', 0))), 'params': params,
          'params_ema': params_ema, 'adam': adam,
          'ema_rate': float(ema['decay']) if 'decay' in ema else None, 'path': str(path)}


def _adam_moments(optimizer, model, names, template, module_order):
  """torch Adam's per-parameter state -> ``{'count', 'mu', 'nu'}`` linen trees, or None."""
  state = (optimizer or {}).get('state')
  if not state:
    return None
  indices = [i for group in optimizer['param_groups'] for i in group['params']]
  if len(indices) != len(names):
    raise ValueError(f'The optimizer holds {len(indices)} parameters, the network {len(names)}.')
  mu, nu, counts = {}, {}, set()
  for index, name in zip(indices, names):
    entry = state.get(index)
    if entry is None:  # A frozen parameter has no state; optax keeps zeros for it.
      mu[name] = nu[name] = np.zeros_like(model[name])
      continue
    mu[name], nu[name] = entry['exp_avg'], entry['exp_avg_sq']
    counts.add(int(np.asarray(entry['step'])))
  if len(counts) != 1:
    raise ValueError(f'Adam step counts differ across parameters: {sorted(counts)}.')
  return {'count': counts.pop(), 'mu': convert_state_dict(mu, template, module_order),
          'nu': convert_state_dict(nu, template, module_order)}
