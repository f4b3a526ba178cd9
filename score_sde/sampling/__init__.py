"""Samplers on a plain ``score_fn(x, t)``: PC, probability-flow ODE, adaptive reverse SDE, EDM
Heun, and the multistep DPM-Solver++, UniPC, DEIS and iPNDM.

Every sampler is built once from an SDE and a sample shape and called as
``sampler(rng, score_fn) -> (samples, nfe)`` (see ``sampling.base`` for the contract and how to
jit it once); ``get_sampler(config, ...)`` picks one from ``config.sampling``. Class-conditional
sampling is a score like any other (``guidance``: classifier-free and classifier guidance).
Importing the package fills ``PREDICTORS`` and ``CORRECTORS``.
"""
import ml_collections

from score_sde import sde_lib
from score_sde.sampling import deis, dpm_solver, unipc
from score_sde.sampling.adaptive import get_adaptive_sampler
from score_sde.sampling.base import InverseScaler, Sampler, identity
from score_sde.sampling.controllable import (get_conditional_score_fn, get_pc_colorizer,
                                             get_pc_inpainter)
from score_sde.sampling.correctors import (CORRECTORS, AnnealedLangevinDynamics, Corrector,
                                           LangevinCorrector, NoneCorrector,
                                           PerExampleLangevinCorrector)
from score_sde.sampling.deis import get_deis_sampler
from score_sde.sampling.dpm_solver import get_dpm_solver_sampler
from score_sde.sampling.edm import get_heun_sampler
from score_sde.sampling.ode import (get_ode_encoder, get_ode_sampler, probability_flow_drift,
                                    solve_probability_flow)
from score_sde.sampling.guidance import get_cfg_score_fn, get_guided_score_fn, sample_labels
from score_sde.sampling.methods import (DEFAULT_FINALS, DEFAULT_ORDERS, DEFAULT_SCHEDULES,
                                        FIXED_STEP_METHODS, METHODS, MULTISTEP_METHODS,
                                        ODE_METHODS, default_final, grid_levels, grid_steps)
from score_sde.sampling.pc import get_pc_sampler
from score_sde.sampling.predictors import (PREDICTORS, AncestralSamplingPredictor,
                                           EulerMaruyamaPredictor, NonePredictor, Predictor,
                                           ReverseDiffusionPredictor)
from score_sde.sampling.shard import get_sharded_sampler
from score_sde.sampling.snapshot import get_snapshot_sampler, snapshot_labels
from score_sde.sampling.unipc import get_unipc_sampler

# The largest order of each multistep solver, read off the solvers themselves.
MAX_ORDERS = {'dpm_solver': dpm_solver.method().max_order,
              'unipc': unipc.method('bh2', True).max_order,
              'deis': deis.method(True).max_order, 'ipndm': deis.method(False).max_order}


def get_sampler(config: ml_collections.ConfigDict, sde: sde_lib.SDE, shape,
                inverse_scaler: InverseScaler, eps: float) -> Sampler:
  """The sampler named by ``config.sampling.method``, configured from ``config.sampling``.

  Reads ``method``; for PC ``predictor``, ``corrector``, ``snr``, ``n_steps_each``,
  ``probability_flow``, ``pc_num_steps`` and ``config.training.continuous``; for the ODE
  ``rtol``, ``atol``; for the adaptive SDE sampler ``adaptive_rtol``, ``adaptive_atol``; for
  the fixed-step solvers (Heun, DPM-Solver++, UniPC, DEIS, iPNDM) ``num_steps`` (0: ``sde.N``,
  or the length of ``times`` when given), ``schedule`` and ``rho`` ('': ``DEFAULT_SCHEDULES``)
  or ``times`` (the grid itself, ``schedule.check_times``; its last time replaces ``eps``),
  ``order`` (0: ``DEFAULT_ORDERS``), ``final_step``, ``unipc_variant`` and ``s_churn`` (Heun);
  ``noise_removal`` (denoise) for all.

  Args:
    config: the full experiment config.
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    eps: the smallest time (``sde.sampling_eps`` in the released code, 1e-3 / 1e-5).
  Returns:
    ``sampler(rng, score_fn) -> (samples, nfe)``.
  Raises:
    KeyError: for an unknown method, predictor or corrector, listing the known ones.
  """
  s = config.sampling
  method = str(s.method).lower()
  if method not in METHODS:
    raise KeyError(f'Unknown sampling method {s.method!r}; known: {", ".join(METHODS)}.')
  if method == 'pc':
    return get_pc_sampler(sde, shape, s.predictor, s.corrector, inverse_scaler, s.snr,
                          n_steps=s.n_steps_each, probability_flow=s.probability_flow,
                          continuous=config.training.continuous, denoise=s.noise_removal,
                          eps=eps, num_steps=int(s.pc_num_steps) or sde.N)
  if method == 'ode':
    return get_ode_sampler(sde, shape, inverse_scaler, denoise=s.noise_removal, rtol=s.rtol,
                           atol=s.atol, eps=eps)
  if method == 'adaptive':
    return get_adaptive_sampler(sde, shape, inverse_scaler, rel_tol=s.adaptive_rtol,
                                abs_tol=s.adaptive_atol, denoise=s.noise_removal, eps=eps)
  times = tuple(float(t) for t in s.times) or None
  final = str(s.final_step) or default_final(sde)
  if int(s.num_steps):
    num_steps = int(s.num_steps)
  elif times:
    num_steps = grid_steps(method, len(times), s.noise_removal, final)
  else:
    num_steps = sde.N
  # A given grid carries its own eps (its last time).
  grid = dict(schedule=str(s.schedule) or DEFAULT_SCHEDULES[method], rho=float(s.rho),
              denoise=s.noise_removal, eps=None if times else eps, times=times)
  if method == 'heun':
    return get_heun_sampler(sde, shape, inverse_scaler, num_steps, s_churn=s.s_churn, **grid)
  order = int(s.order) or DEFAULT_ORDERS[method]
  grid['final'] = final
  if method == 'dpm_solver':
    return get_dpm_solver_sampler(sde, shape, inverse_scaler, num_steps, order=order, **grid)
  if method == 'unipc':
    return get_unipc_sampler(sde, shape, inverse_scaler, num_steps, order=order,
                             variant=str(s.unipc_variant), **grid)
  return get_deis_sampler(sde, shape, inverse_scaler, num_steps, order=order,
                          variable_step=method == 'deis', **grid)


# The released code's name.
get_sampling_fn = get_sampler

__all__ = [
    'AncestralSamplingPredictor', 'AnnealedLangevinDynamics', 'CORRECTORS', 'Corrector',
    'DEFAULT_FINALS', 'DEFAULT_ORDERS', 'DEFAULT_SCHEDULES', 'EulerMaruyamaPredictor',
    'FIXED_STEP_METHODS',
    'InverseScaler', 'LangevinCorrector', 'MAX_ORDERS', 'METHODS', 'MULTISTEP_METHODS',
    'NoneCorrector', 'NonePredictor', 'ODE_METHODS', 'PREDICTORS', 'PerExampleLangevinCorrector',
    'Predictor', 'ReverseDiffusionPredictor', 'Sampler', 'get_adaptive_sampler', 'get_cfg_score_fn',
    'get_conditional_score_fn', 'get_deis_sampler', 'get_dpm_solver_sampler', 'get_guided_score_fn',
    'get_heun_sampler', 'get_ode_encoder', 'get_ode_sampler', 'get_pc_colorizer',
    'get_pc_inpainter', 'get_pc_sampler', 'get_sampler', 'get_sampling_fn', 'get_sharded_sampler',
    'default_final', 'get_snapshot_sampler', 'get_unipc_sampler', 'grid_levels', 'grid_steps',
    'identity',
    'probability_flow_drift', 'sample_labels', 'snapshot_labels', 'solve_probability_flow',
]
