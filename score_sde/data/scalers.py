"""Maps between the pipeline's pixel range [0, 1] and the range the model sees.

The pipeline yields images in [0, 1]; with ``data.centered`` the model works in [-1, 1] (the DDPM
convention, used by the VP / sub-VP experiments), otherwise in [0, 1] (NCSN, VE experiments).
Names follow the reference's ``datasets.get_data_scaler`` / ``get_data_inverse_scaler``.
"""
from typing import Callable

Scaler = Callable[[object], object]  # An array (numpy or jax) -> an array of the same shape.


def _check(centered) -> bool:
  # A truthy ConfigDict passed by mistake would otherwise silently select centring.
  if not isinstance(centered, bool) and type(centered).__name__ != 'bool_':
    raise TypeError(f'centered must be a bool (config.data.centered), got {type(centered)}.')
  return bool(centered)


def get_data_scaler(centered: bool) -> Scaler:
  """``x -> 2 x - 1`` ([0, 1] -> [-1, 1]) when ``centered``, else the identity."""
  if _check(centered):
    return lambda x: x * 2. - 1.
  return lambda x: x


def get_data_inverse_scaler(centered: bool) -> Scaler:
  """The inverse of ``get_data_scaler(centered)``: ``x -> (x + 1) / 2`` or the identity."""
  if _check(centered):
    return lambda x: (x + 1.) / 2.
  return lambda x: x
