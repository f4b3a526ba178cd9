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

``torch.save`` files are read without torch, as untrusted input, by ``torch_files.read_pth``;
``load_pytorch_checkpoint`` caps what a file may make it hold at what a checkpoint of the
config's network holds (``checkpoint_bytes``).

Command line::

  python -m score_sde.conversion.released_checkpoints \\
      --config configs/vp/cifar10_ddpmpp_continuous.py \\
      --checkpoint exp/vp/cifar10_ddpmpp_continuous/checkpoints/checkpoint_8.pth --workdir DIR
"""
import collections
import math
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import jax
import numpy as np

from score_sde.common import errors
from score_sde.conversion import torch_files
from score_sde.io import checkpoint

# The network families whose port keeps its blocks in ``all_modules`` (config.model.name).
SUPPORTED_MODELS = ('ncsnpp', 'ddpm')
# requires_grad=False in the port: no EMA, no Adam.
_FROZEN_MODULES = ('GaussianFourierProjection',)


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
        raise checkpoint.StructureMismatchError(
            f'{where}.{key}: this config\'s network has no module {name!r} there (it has '
            f'{sorted(node) if isinstance(node, Mapping) else "a leaf"}).')
      node, out_node = node[name], out_node.setdefault(name, {})
    name, array = _convert_leaf(leaf, value, node)
    if name not in node:
      raise checkpoint.StructureMismatchError(
          f'{where}.{key}: this config\'s network has no parameter {name!r} there (it has '
          f'{sorted(node)}).')
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
    checkpoint.StructureMismatchError: the state dict is not an ``all_modules`` network, or its
      blocks do not line up with this config's modules (naming the first that does not).
  """
  blocks = _blocks(_strip_prefix(state_dict))
  if not blocks:
    raise checkpoint.StructureMismatchError(
        'The state dict has no all_modules.<i> entries: only the port\'s NCSN++, DDPM++ and '
        f'DDPM networks (model.name in {SUPPORTED_MODELS}) convert.')
  if len(blocks) != len(module_order):
    raise checkpoint.StructureMismatchError(
        f'The checkpoint\'s network has {len(blocks)} blocks with parameters, this config\'s has '
        f'{len(module_order)}: use the config it was trained with.')
  return {name: _convert_block(leaves, template[name], f'all_modules.{index} (-> {name})')
          for (index, leaves), name in zip(blocks, module_order)}


def _frozen(names: Sequence[str], module_order: Sequence[str]) -> set:
  """The names among ``names`` (``all_modules.<i>...``) of parameters the port does not train."""
  indices = sorted({int(n.split('.')[1]) for n in names})
  block_name = dict(zip(indices, module_order))
  return {n for n in names if block_name[int(n.split('.')[1])].startswith(_FROZEN_MODULES)}


def checkpoint_bytes(template: Mapping[str, Any]) -> int:
  """The most bytes a port checkpoint of ``template``'s network makes ``read_pth`` hold: the
  weights, the EMA and Adam's two moments in float32 (what the port trains in), each read as a
  storage and built as a tensor, plus the pickle and room for buffers and step counters."""
  n = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(template))
  return 2 * 4 * 4 * n + 2 * torch_files.MAX_PICKLE_BYTES


def load_pytorch_checkpoint(path, template: Mapping[str, Any],
                            module_order: Sequence[str]) -> Dict[str, Any]:
  """A port checkpoint as ``released_checkpoints.to_train_state`` takes it.

  Args:
    path: a ``checkpoint_<N>.pth`` file written by the port's ``save_checkpoint``.
    template, module_order: as for ``convert_state_dict``.
  Returns:
    dict with ``step`` (int, the updates done), ``params`` and ``params_ema`` (linen trees of
    numpy arrays; the EMA is what the port samples and evaluates with), ``adam``
    (``{'count', 'mu', 'nu'}``, or None when the file holds no Adam moments), ``ema_rate``
    (float or None), ``path``.
  Raises:
    torch_files.CheckpointNotFoundError, torch_files.CheckpointFileError: as
      ``torch_files.read_pth`` (which may hold at most ``checkpoint_bytes(template)``), or the
      file does not hold the port's ``{'model', 'ema', 'optimizer', 'step'}`` layout.
    checkpoint.StructureMismatchError: it does not fit this config's network.
  """
  raw = torch_files.read_pth(path, checkpoint_bytes(template))
  try:
    return _from_port_layout(raw, path, template, module_order)
  except errors.UserError:
    raise
  except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
    message = ' '.join(str(e).split())
    raise torch_files.CheckpointFileError(
        f'{path} does not hold a score_sde_pytorch checkpoint\'s layout ({type(e).__name__}: '
        f'{message}).') from None


def _from_port_layout(raw, path, template, module_order) -> Dict[str, Any]:
  if not isinstance(raw, Mapping) or 'model' not in raw:
    keys = sorted(map(str, raw)) if isinstance(raw, Mapping) else type(raw).__name__
    raise torch_files.CheckpointFileError(
        f'{path} is not a score_sde_pytorch checkpoint: expected a dict with \'model\', '
        f"'ema', 'optimizer' and 'step'; got {keys}.")
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
      raise checkpoint.StructureMismatchError(
          f'{path}: the EMA holds {len(shadow)} tensors but the network has {len(trainable)} '
          'trainable parameters.')
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
    raise checkpoint.StructureMismatchError(
        f'The optimizer holds {len(indices)} parameters, the network {len(names)}.')
  mu, nu, counts = {}, {}, set()
  for index, name in zip(indices, names):
    entry = state.get(index)
    if entry is None:  # A frozen parameter has no state; optax keeps zeros for it.
      mu[name] = nu[name] = np.zeros_like(model[name])
      continue
    mu[name], nu[name] = entry['exp_avg'], entry['exp_avg_sq']
    counts.add(int(np.asarray(entry['step'])))
  if len(counts) != 1:
    raise torch_files.CheckpointFileError(
        f'Adam step counts differ across parameters: {sorted(counts)}.')
  return {'count': counts.pop(), 'mu': convert_state_dict(mu, template, module_order),
          'nu': convert_state_dict(nu, template, module_order)}
