"""Predictor-Corrector sampling (Song et al. 2021, sec. 4.2, Algorithm 1), on device.

The grid is the released code's, ``t_i = linspace(T, eps, N)``, so the discrete-chain
predictors (reverse diffusion, ancestral) and correctors land on the chain's indices
``N - 1, ..., 0``. ``N = sde.N`` is the released sampler, bit for bit; any other count runs on
``sde.with_steps(N)``, the same SDE rediscretised with
that many chain steps (for VP below 21 steps the exponential chain, since DDPM's would have
``beta_i > 1``; see ``sde_lib.VPSDE``). Step ``i`` runs the corrector at ``t_i``, then the
predictor from ``t_i`` to ``t_{i+1}``, with ``t_N = 0``: the last predictor step is the chain's
step to clean data. With ``denoise`` the sampler returns that last step without its noise (the
paper's noise removal).
"""
from typing import Optional, Tuple, Type, Union

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib
from score_sde.sampling import base, schedule
from score_sde.sampling.correctors import Corrector, CORRECTORS
from score_sde.sampling.predictors import Predictor, PREDICTORS

PredictorLike = Union[str, Type[Predictor]]
CorrectorLike = Union[str, Type[Corrector]]


def resolve_predictor(predictor: PredictorLike) -> Type[Predictor]:
  """A predictor class from a class or a registry name."""
  return PREDICTORS.get(predictor) if isinstance(predictor, str) else predictor


def resolve_corrector(corrector: CorrectorLike) -> Type[Corrector]:
  """A corrector class from a class or a registry name."""
  return CORRECTORS.get(corrector) if isinstance(corrector, str) else corrector


def chain_steps(sde: sde_lib.SDE, times: np.ndarray) -> int:
  """The chain length ``N`` whose uniform grid ``linspace(T, eps, N)`` ends in ``times``: the
  whole grid (a sampler from ``T``) or its last levels (one started below ``T``, SDEdit).

  Raises:
    ValueError: for a grid that is no such tail, naming ``schedule='time_uniform'``.
  """
  if times.shape[0] == 1:
    return 1
  eps = float(times[-1])
  n = int(round((sde.T - eps) / float(times[0] - times[1]))) + 1
  if n < times.shape[0] or not np.allclose(times, np.linspace(sde.T, eps, n)[-times.shape[0]:],
                                           rtol=1e-5, atol=1e-7):
    raise ValueError('PC sampling walks a chain whose steps are equal in time: its grid must be '
                     "linspace(T, eps, N) (schedule.time_steps(..., 'time_uniform')) or the "
                     f'last levels of one; got {times}.')
  return n


def sampler_sde(sde: sde_lib.SDE, num_steps: Optional[int]) -> sde_lib.SDE:
  """The SDE whose chain a ``num_steps``-step PC sampler walks: ``sde`` itself for ``None`` or
  ``sde.N``, else ``sde.with_steps(num_steps)``."""
  if num_steps is None or int(num_steps) == sde.N:
    return sde
  return sde.with_steps(base.check_steps(num_steps))


def get_pc_step(sde: sde_lib.SDE, predictor: PredictorLike, corrector: CorrectorLike, snr: float,
                n_steps: int = 1, probability_flow: bool = False):
  """One corrector + predictor update of the PC loop, shared by the samplers and the inpainters.

  Returns:
    ``(pc_step, nfe_per_step)`` where ``pc_step(score_fn, rng, x, t, dt) -> (x, x_mean)`` with
    ``x: (B, ...)``, ``t: (B,)`` and scalar ``dt < 0``.
  """
  predictor_cls = resolve_predictor(predictor)
  corrector_cls = resolve_corrector(corrector)
  # Instantiated on a dummy score only to validate arguments and count evaluations up front.
  probe_p = predictor_cls(sde, None, probability_flow)
  probe_c = corrector_cls(sde, None, snr, n_steps)

  def pc_step(score_fn, rng, x, t, dt):
    c_rng, p_rng = jax.random.split(rng)
    x, _ = corrector_cls(sde, score_fn, snr, n_steps).update_fn(c_rng, x, t)
    return predictor_cls(sde, score_fn, probability_flow).update_fn(p_rng, x, t, dt)

  return pc_step, probe_p.nfe + probe_c.nfe


def run_pc(pc_step, score_fn: sde_lib.ScoreFn, times: jax.Array, x: jax.Array, rng: jax.Array,
           callback: Optional[base.Callback] = None, project=None) -> Tuple[jax.Array, jax.Array]:
  """The PC loop: step ``i`` from ``times[i]`` to ``times[i + 1]``, the last to ``t = 0``.

  Args:
    pc_step: from ``get_pc_step``.
    times: ``(L,)`` float32, the grid without its final 0.
    x: ``(B, ...)`` state at ``times[0]``.
    rng: the sampler's key; step ``i`` draws with ``fold_in(noise_key(rng), i)``.
    callback: ``base.Callback``, given ``(i, x, times[i], None)`` before each step.
    project: ``project(rng, x, t) -> x`` applied after every step to the state at the time it
      arrived at (the inpainters' clamp); each step's key is then split between the step and it.
  Returns:
    ``(x, x_mean)`` after the step to 0: the sample and its mean without the last step's noise.
  """
  grid = jnp.append(times, 0.)
  step_keys = base.noise_key(rng)

  def body(i, carry):
    x, _ = carry
    base.notify(callback, i, x, grid[i])
    key = jax.random.fold_in(step_keys, i)
    if project is not None:
      key, project_key = jax.random.split(key)
    t = base.batch_times(grid[i], x.shape[0])
    x, x_mean = pc_step(score_fn, key, x, t, grid[i + 1] - grid[i])
    if project is not None:
      x = project(project_key, x, grid[i + 1])
    return x, x_mean

  return jax.lax.fori_loop(0, times.shape[0], body, (x, x))


def get_pc_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler, times,
                   predictor: PredictorLike, corrector: CorrectorLike, snr: float = 0.16,
                   n_steps: int = 1, probability_flow: bool = False,
                   denoise: bool = True) -> base.Sampler:
  """The PC sampler of Algorithm 1 (and of Algorithms 2-5 for the registered pairs).

  Args:
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: maps model space back to data space (e.g. ``[-1, 1] -> [0, 1]``).
    times: the ``N`` levels ``linspace(T, eps, N)`` (the released grid; ``N = sde.N`` is the
      released sampler bit for bit), or the last levels of such a grid for a sampler started at
      a given ``x_T`` (``chain_steps``). Other ``N`` run on ``sde.with_steps(N)``.
    predictor, corrector: classes or registry names (``'reverse_diffusion'``, ``'langevin'``,
      ``'none'``, ...).
    snr: signal-to-noise ratio of the corrector (the paper's 0.16 by default; unused without
      one).
    n_steps: corrector steps per predictor step.
    probability_flow: predict with the probability-flow ODE instead of the reverse SDE.
    denoise: return the last predictor step's mean (no noise on the final step).
  Returns:
    ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples (B, ...) float32,
    nfe = len(times) (predictor + n_steps))``; 'none' predictors and correctors count zero
    evaluations (``base`` for the contract).
  """
  shape = base.check_shape(shape)
  times, starts_at_T = schedule.check_times(sde, times, 'PC sampling')
  if isinstance(times, jax.core.Tracer):
    raise ValueError('PC sampling needs a concrete grid (its chain is read off the spacing).')
  sde = sampler_sde(sde, chain_steps(sde, times))
  pc_step, nfe_per_step = get_pc_step(sde, predictor, corrector, snr, n_steps, probability_flow)

  def sampler(rng: jax.Array, score_fn: sde_lib.ScoreFn, x_T: Optional[jax.Array] = None,
              callback: Optional[base.Callback] = None) -> Tuple[jax.Array, int]:
    x = base.start(sde, rng, shape, x_T, starts_at_T)
    x, x_mean = run_pc(pc_step, score_fn, jnp.asarray(times), x, rng, callback)
    return inverse_scaler(x_mean if denoise else x), times.shape[0] * nfe_per_step

  return sampler


def _settings(s, sde) -> dict:
  del sde
  return dict(predictor=s.predictor, corrector=s.corrector, snr=s.snr, n_steps=s.n_steps_each,
              probability_flow=s.probability_flow, denoise=s.noise_removal)


METHOD = base.Method('pc', get_pc_sampler, family='sde', settings=_settings,
                     levels=lambda num_steps, settings: num_steps, steps_field='pc_num_steps')
