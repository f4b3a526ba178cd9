"""``get_sampler(config, ...)``: the sampler ``config.sampling`` names, built from its fields
through the method's registry entry (``methods.METHODS``)."""
import ml_collections
import numpy as np

from score_sde import sde_lib
from score_sde.sampling import base, methods, schedule_fit
from score_sde.sampling.base import InverseScaler, Sampler


def schedule_name(sampling_config: ml_collections.ConfigDict, entry: base.Method) -> str:
  """The grid formula a method's config asks for: ``sampling.schedule`` for the fixed-step
  solvers ('' leaves it to the method), the method's own for the others."""
  chosen = str(sampling_config.schedule) if entry.steps_field == 'num_steps' else ''
  return chosen or entry.schedule


def config_times(config: ml_collections.ConfigDict, sde: sde_lib.SDE, eps: float) -> np.ndarray:
  """The grid ``config.sampling`` gives its method: ``sampling.times`` when set, else the levels
  of its step count (``sampling.num_steps`` or ``pc_num_steps``, 0: ``sde.N``; ``[T, eps]``
  for the adaptive samplers) spaced by ``sampling.schedule`` ('': the method's own) and
  ``rho``, or fitted to the sampler (``'fitted'``, ``schedule_fit``).

  Returns:
    float32 ``(L,)``, decreasing from ``T`` to ``eps``.
  """
  s = config.sampling
  entry = methods.get(s.method)
  times = tuple(float(t) for t in s.times)
  if times:
    return np.asarray(times, np.float32)
  settings = entry.settings(s, sde)
  num_steps = (int(s[entry.steps_field]) if entry.steps_field else 0) or sde.N
  name = schedule_name(s, entry)
  if name == 'fitted':
    return schedule_fit.fit_grid(entry, sde, entry.levels(num_steps, settings), eps, settings)
  return methods.get_times(sde, s.method, num_steps, name, float(s.rho), eps, **settings)


def get_sampler(config: ml_collections.ConfigDict, sde: sde_lib.SDE, shape,
                inverse_scaler: InverseScaler, eps: float) -> Sampler:
  """The sampler named by ``config.sampling.method``, configured from ``config.sampling``: its
  registry entry reads the method's own settings (``base.Method.settings``: for PC
  ``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``probability_flow``; for the ODE
  ``rtol``, ``atol``; for the adaptive SDE sampler ``adaptive_rtol``, ``adaptive_atol``; for the
  fixed-step solvers ``order`` (0: the method's default), ``final_step``, ``unipc_variant``, and
  ``s_churn`` for Heun; ``noise_removal`` for all) and ``config_times`` the grid.

  Args:
    config: the full experiment config.
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    eps: the smallest time (``sde.sampling_eps`` in the released code, 1e-3 / 1e-5).
  Returns:
    ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe)`` (``base``).
  Raises:
    KeyError: for an unknown method, predictor or corrector, listing the known ones.
  """
  entry = methods.get(config.sampling.method)
  return entry.build(sde, shape, inverse_scaler, config_times(config, sde, eps),
                     **entry.settings(config.sampling, sde))
