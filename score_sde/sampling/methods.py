"""The names ``config.sampling.method`` takes, which of them share a step count and a grid, and
each fixed-step solver's defaults: data only, read by ``get_sampler``, the snapshot sampler, the
pipeline and config validation, so the lists cannot drift apart."""

METHODS = ('pc', 'ode', 'adaptive', 'heun', 'dpm_solver', 'unipc', 'deis', 'ipndm')
# The samplers whose step count is sampling.num_steps and whose grid is sampling.schedule / times.
FIXED_STEP_METHODS = ('heun', 'dpm_solver', 'unipc', 'deis', 'ipndm')
MULTISTEP_METHODS = ('dpm_solver', 'unipc', 'deis', 'ipndm')
# Methods that integrate the probability-flow ODE (``models.utils.ode_score_continuous``).
ODE_METHODS = ('ode',) + FIXED_STEP_METHODS
# The fixed-step solvers' own order and grid, where config.sampling leaves them open (0, '').
DEFAULT_ORDERS = {'dpm_solver': 2, 'unipc': 2, 'deis': 4, 'ipndm': 3}
DEFAULT_SCHEDULES = {'heun': 'karras', 'dpm_solver': 'logSNR', 'unipc': 'logSNR',
                     'deis': 'karras', 'ipndm': 'karras'}
# The multistep solvers' end (multistep.FINALS) per SDE, where config.sampling.final_step is ''.
# Measured by benchmarks/final_step.py (docs/final_step.md): extrapolating to sigma = 0 wins on
# VP and VE; on sub-VP, whose std at eps = 1e-3 is 1e-4, the two agree from 20 evaluations and
# the Tweedie step wins at 10.
DEFAULT_FINALS = {'VPSDE': 'extrapolate', 'subVPSDE': 'tweedie', 'VESDE': 'extrapolate'}


def default_final(sde) -> str:
  """``DEFAULT_FINALS`` for ``sde`` (by class; 'extrapolate' for an SDE it does not list)."""
  return DEFAULT_FINALS.get(type(sde).__name__, 'extrapolate')


def grid_levels(method: str, num_steps: int, denoise: bool, final: str) -> int:
  """Levels ``T = t_0 > ... > t_{L-1} = eps`` of a fixed-step sampler's grid: ``num_steps``
  when its last step goes to ``sigma = 0`` (Heun with ``denoise``; a multistep solver with
  ``denoise`` and ``final='extrapolate'``), else ``num_steps + 1``. ``method``: ``'heun'``, or
  the name of any multistep solver (they share one rule)."""
  to_zero = denoise and (method == 'heun' or final == 'extrapolate')
  return num_steps if to_zero else num_steps + 1


def grid_steps(method: str, num_levels: int, denoise: bool, final: str) -> int:
  """The inverse of ``grid_levels``: the step count a grid of ``num_levels`` times gives."""
  return num_levels - (grid_levels(method, 1, denoise, final) - 1)
