"""Predictor-Corrector sampling (Song et al. 2021, sec. 4.2, Algorithm 1), on device.

The grid is the released code's, ``t_i = linspace(T, eps, N)``, so the discrete-chain
predictors (reverse diffusion, ancestral) and correctors land on the chain's indices
``N - 1, ..., 0``. ``N`` is ``num_steps``, by default ``sde.N`` (the released sampler, bit for
bit); any other count runs on ``sde.with_steps(num_steps)``, the same SDE rediscretised with
that many chain steps (for VP below 21 steps the exponential chain, since DDPM's would have
``beta_i > 1``; see ``sde_lib.VPSDE``). Step ``i`` runs the corrector at ``t_i``, then the
predictor from ``t_i`` to ``t_{i+1}``, with ``t_N = 0``: the last predictor step is the chain's
step to clean data. With ``denoise`` the sampler returns that last step without its noise (the
paper's noise removal).
"""
from typing import Optional, Tuple, Type, Union

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base
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


def pc_time_grid(sde: sde_lib.SDE, eps: float) -> jax.Array:
  """``N + 1`` float32 times: ``linspace(T, eps, N)`` followed by 0."""
  return jnp.append(jnp.linspace(sde.T, eps, sde.N), 0.).astype(jnp.float32)


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


def get_pc_sampler(sde: sde_lib.SDE, shape, predictor: PredictorLike, corrector: CorrectorLike,
                   inverse_scaler: base.InverseScaler, snr: float = 0.16, n_steps: int = 1,
                   probability_flow: bool = False, denoise: bool = True,
                   eps: Optional[float] = None, num_steps: Optional[int] = None) -> base.Sampler:
  """The PC sampler of Algorithm 1 (and of Algorithms 2-5 for the registered pairs).

  Args:
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    predictor, corrector: classes or registry names (``'reverse_diffusion'``, ``'langevin'``,
      ``'none'``, ...).
    inverse_scaler: maps model space back to data space (e.g. ``[-1, 1] -> [0, 1]``).
    snr: signal-to-noise ratio of the corrector (the paper's 0.16 by default; unused without
      one).
    n_steps: corrector steps per predictor step.
    probability_flow: predict with the probability-flow ODE instead of the reverse SDE.
    denoise: return the last predictor step's mean (no noise on the final step).
    eps: the smallest grid time.
    num_steps: predictor steps ``N``; ``None`` (default): ``sde.N``.
  Returns:
    ``sampler(rng, score_fn) -> (samples (B, ...) float32, nfe = N (predictor + n_steps))``;
    'none' predictors and correctors count zero evaluations.
  """
  shape = base.check_shape(shape)
  eps = base.check_eps(sde, eps)
  sde = sampler_sde(sde, num_steps)
  pc_step, nfe_per_step = get_pc_step(sde, predictor, corrector, snr, n_steps, probability_flow)

  def sampler(rng: jax.Array, score_fn: sde_lib.ScoreFn) -> Tuple[jax.Array, int]:
    x = sde.prior_sampling(base.prior_key(rng), shape)
    times = pc_time_grid(sde, eps)
    step_keys = base.noise_key(rng)

    def body(i, carry):
      x, _ = carry
      t = base.batch_times(times[i], shape[0])
      return pc_step(score_fn, jax.random.fold_in(step_keys, i), x, t, times[i + 1] - times[i])

    x, x_mean = jax.lax.fori_loop(0, sde.N, body, (x, x))
    return inverse_scaler(x_mean if denoise else x), sde.N * nfe_per_step

  return sampler
