"""EDM's network pickles (NVlabs/edm ``network-snapshot-*.pkl``) read as data, running nothing
from the file.

Each of EDM's objects is pickled by its ``torch_utils.persistence`` as a call of
``_reconstruct_persistent_obj(meta)``, ``meta`` holding the source code of the object's module
(which EDM's own reader executes), the class name and the object's state (a torch module's
``_modules``, ``_parameters``, ``_buffers``, and ``_init_kwargs``, its constructor's keywords).
``read_snapshot`` unpickles with ``torch_files.read_pickle``: that call becomes a data-only
``PersistentObject`` (class name and state; the source is dropped unread), torch's
``ModuleDict`` a ``PersistentObject`` too, ``dnnlib``'s ``EasyDict`` a dict, tensors numpy
arrays; any other global is refused, naming it, before anything is built.
``conversion.edm_checkpoints`` maps what it reads onto ``ncsnpp``.
"""
from typing import Any, Dict, Mapping

import numpy as np

from score_sde.conversion import torch_files


class PersistentObject:
  """One of EDM's pickled objects as data: ``class_name`` and ``state``, the ``__dict__`` it
  had (for a torch module ``_modules``, ``_parameters``, ``_buffers``, ``_init_kwargs`` and its
  attributes). Nothing of its class is imported or run."""

  def __init__(self, class_name: str, state: Mapping[str, Any]):
    if not isinstance(class_name, str) or not isinstance(state, Mapping):
      raise TypeError(f'a pickled object needs a class name and a state dict; got '
                      f'{type(class_name).__name__} and {type(state).__name__}')
    self.class_name, self.state = class_name, dict(state)

  @property
  def modules(self) -> Dict[str, Any]:
    return dict(self.state.get('_modules') or {})

  @property
  def tensors(self) -> Dict[str, np.ndarray]:
    """Parameters and buffers, those set to None left out."""
    both = {**(self.state.get('_parameters') or {}), **(self.state.get('_buffers') or {})}
    return {k: v for k, v in both.items() if v is not None}

  @property
  def init_kwargs(self) -> Dict[str, Any]:
    return dict(self.state.get('_init_kwargs') or {})

  def __repr__(self):
    return f'PersistentObject({self.class_name!r})'


def _reconstruct_persistent_obj(meta) -> PersistentObject:
  """``torch_utils.persistence._reconstruct_persistent_obj`` without its ``exec`` of
  ``meta['module_src']``: the class name and state only."""
  if not (isinstance(meta, Mapping) and meta.get('type') == 'class'
          and isinstance(meta.get('class_name'), str) and isinstance(meta.get('state'), Mapping)):
    raise TypeError(f'a persistent object\'s meta is not a class\'s: {str(meta)[:80]}')
  return PersistentObject(meta['class_name'], meta['state'])


class _ModuleDict(PersistentObject):
  """torch's ``ModuleDict`` as pickled (``__new__``, then ``__setstate__`` of its state)."""
  class_name, state = 'ModuleDict', {}

  def __init__(self):
    super().__init__('ModuleDict', {})

  def __setstate__(self, state):
    if not isinstance(state, Mapping):
      raise TypeError(f'a ModuleDict\'s state is a {type(state).__name__}, not a dict')
    self.state = dict(state)


# The globals an EDM snapshot holds besides containers and tensors (torch_files).
GLOBALS = {
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): _reconstruct_persistent_obj,
    ('torch.nn.modules.container', 'ModuleDict'): _ModuleDict,
    ('dnnlib.util', 'EasyDict'): dict,
    ('builtins', 'set'): set,  # A module's _non_persistent_buffers_set, pickle protocol < 4.
}


def read_snapshot(path) -> Dict[str, Any]:
  """An EDM network pickle as data: ``{'ema': PersistentObject, ...}``, no code from it run.

  Raises:
    torch_files.CheckpointNotFoundError: nothing at ``path``.
    torch_files.CheckpointFileError: any global but containers, tensors and EDM's persistent
      objects (naming it: a pickle that would run code is refused before anything is built),
      a damaged tensor, or not a dict holding an 'ema' network.
  """
  raw = torch_files.read_pickle(
      path, GLOBALS, 'an EDM network pickle holds only those and EDM\'s persistent objects')
  if not isinstance(raw, Mapping) or not isinstance(raw.get('ema'), PersistentObject):
    what = sorted(map(str, raw)) if isinstance(raw, Mapping) else type(raw).__name__
    raise torch_files.CheckpointFileError(
        f'{path} is not an EDM network pickle: expected a dict with the network under \'ema\' '
        f'(EDM\'s network-snapshot-*.pkl); got {what}.')
  return dict(raw)


__all__ = ['GLOBALS', 'PersistentObject', 'read_snapshot']
