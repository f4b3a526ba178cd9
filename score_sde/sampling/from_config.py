"""``get_sampler(config, ...)``: the sampler ``config.sampling`` names, built from its fields."""
import ml_collections

from score_sde import sde_lib
from score_sde.sampling import schedule_fit
from score_sde.sampling.adaptive import get_adaptive_sampler
from score_sde.sampling.base import InverseScaler, Sampler
from score_sde.sampling.deis import get_deis_sampler
from score_sde.sampling.dpm_solver import get_dpm_solver_sampler
from score_sde.sampling.edm import get_heun_sampler
from score_sde.sampling.methods import (default_final, DEFAULT_ORDERS, DEFAULT_SCHEDULES,
                                        grid_steps, METHODS)
from score_sde.sampling.ode import get_ode_sampler
from score_sde.sampling.pc import get_pc_sampler
from score_sde.sampling.unipc import get_unipc_sampler

# The multistep solvers of ``sampling.method``.
MULTISTEP_BUILDERS = {'dpm_solver': get_dpm_solver_sampler, 'unipc': get_unipc_sampler,
                      'deis': get_deis_sampler, 'ipndm': get_deis_sampler}


def get_sampler(config: ml_collections.ConfigDict, sde: sde_lib.SDE, shape,
                inverse_scaler: InverseScaler, eps: float) -> Sampler:
  """The sampler named by ``config.sampling.method``, configured from ``config.sampling``.

  Reads ``method``; for PC ``predictor``, ``corrector``, ``snr``, ``n_steps_each``,
  ``probability_flow`` and ``pc_num_steps``; for the ODE ``rtol``, ``atol``; for the adaptive
  SDE sampler ``adaptive_rtol``, ``adaptive_atol``; for the fixed-step solvers (Heun,
  DPM-Solver++, UniPC, DEIS, iPNDM) ``num_steps`` (0: ``sde.N``,
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
  method = s.method
  if method not in METHODS:
    raise KeyError(f'Unknown sampling method {s.method!r}; known: {", ".join(METHODS)}.')
  if method == 'pc':
    return get_pc_sampler(sde, shape, s.predictor, s.corrector, inverse_scaler, s.snr,
                          n_steps=s.n_steps_each, probability_flow=s.probability_flow,
                          denoise=s.noise_removal, eps=eps,
                          num_steps=int(s.pc_num_steps) or sde.N)
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
    build, settings, kind, end = get_heun_sampler, {}, 'heun', 'tweedie'
  else:
    build, kind, end = MULTISTEP_BUILDERS[method], 'multistep', final
    settings = {'order': int(s.order) or DEFAULT_ORDERS[method]}
    if method == 'unipc':
      settings['variant'] = str(s.unipc_variant)
    elif method in ('deis', 'ipndm'):
      settings['variable_step'] = method == 'deis'
  if grid['schedule'] == 'fitted' and times is None:
    # Fitted to the deterministic sampler (Heun's churn would make the loss random).
    grid['times'] = tuple(schedule_fit.fit_grid(build, sde, num_steps, kind=kind,
                                                denoise=s.noise_removal, final=end, eps=eps,
                                                **settings))
    grid['eps'] = None
  if method == 'heun':
    settings['s_churn'] = s.s_churn
  else:
    settings['final'] = final
  return build(sde, shape, inverse_scaler, num_steps, **grid, **settings)
