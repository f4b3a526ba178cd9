"""The registry of sampling methods: one ``base.Method`` entry per ``config.sampling.method``.

Each entry lives beside its sampler (``pc.METHOD``, ``edm.METHOD``, ...); this module only
gathers them, so validation, ``get_sampler``, the network sampler and the pipeline read one
table. A new method is a module with its builder and entry, and one line here.
"""
from typing import Optional

import numpy as np

from score_sde import sde_lib
from score_sde.common.registry import Registry
from score_sde.sampling import (adaptive, base, deis, dpm_solver, edm, euler_ancestral, ode, pc,
                                schedule, unipc)

METHODS: Registry[base.Method] = Registry('sampling method')
for _entry in (pc.METHOD, ode.METHOD, adaptive.METHOD, edm.METHOD, dpm_solver.METHOD,
               unipc.METHOD, deis.METHOD, deis.IPNDM_METHOD, euler_ancestral.METHOD):
  METHODS.register(_entry.name)(_entry)


def get(name: str) -> base.Method:
  """The entry of ``name``; a KeyError lists the known methods."""
  return METHODS.get(name)


def fixed_step_names() -> tuple:
  """The methods whose grid is ``sampling.schedule`` / ``times`` and whose steps any count of
  ``sampling.num_steps`` sets (``steps_field == 'num_steps'``)."""
  return tuple(name for name in METHODS if get(name).steps_field == 'num_steps')


def get_times(sde: sde_lib.SDE, method: str, num_steps: Optional[int] = None,
              schedule_name: str = '', rho: float = 7., eps: Optional[float] = None,
              **settings) -> np.ndarray:
  """The grid ``method``'s sampler takes for ``num_steps`` steps: the levels its entry counts
  (``levels``, with the builder's own ``settings`` such as ``denoise`` and ``final``), spaced
  by ``schedule_name`` ('': the method's own) from ``T`` down to ``eps``.

  Args:
    sde: the forward SDE.
    method: a name of ``METHODS``.
    num_steps: the steps (None: the SDE's ``N``); ignored by the adaptive samplers, whose grid
      is ``[T, eps]``.
    schedule_name: one of ``schedule.FORMULAS`` ('fitted' grids come from ``schedule_fit``).
    rho: the ``'karras'`` exponent.
    eps: the last time (None: ``sde.sampling_eps``).
    **settings: the builder's keywords that change the level count (``denoise``, ``final``);
      absent ones take the builder's defaults (``base.Method.defaults``).
  Returns:
    float32 ``(L,)``, decreasing from ``T`` to ``eps``.
  """
  entry = get(method)
  eps = base.check_eps(sde, eps)
  num_steps = base.check_steps(sde.N if num_steps is None else num_steps)
  num_levels = entry.levels(num_steps, dict(entry.defaults(sde), **settings))
  return np.asarray(schedule.time_steps(sde, num_levels, eps, schedule_name or entry.schedule,
                                        rho), np.float32)
