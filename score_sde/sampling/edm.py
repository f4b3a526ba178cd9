"""EDM's Heun sampler (Karras et al. 2022, Algorithms 1 and 2) for any SDE of ``sde_lib``.

In EDM's general form ``x = s(t) x_hat`` with ``x_hat ~ p_data * N(0, sigma^2 I)``. Taking
``s = alpha(t)`` and ``sigma = std(t) / alpha(t)`` (``schedule.sigma``), the probability-flow
ODE of VP, sub-VP and VE alike becomes

    d x_hat / d sigma = (x_hat - D(x_hat; sigma)) / sigma,                (EDM eq. 3 with s = 1)

with the denoiser ``D = E[x(0) | x(t)] = (x + std^2 score(x, t)) / alpha``
(``schedule.data_prediction``). The sampler steps in ``sigma`` on EDM's ``rho``-spaced grid
(eq. 5; or another of ``schedule.SCHEDULES``) between ``sigma(T)`` and ``sigma(eps)`` with Heun's
second-order method, each grid ``sigma`` mapped back to the SDE's time for the score.
Shapes: samples ``(B, ...)`` float32.
"""
from typing import Optional, Sequence

import math

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base, methods, schedule as schedule_lib


def heun_nfe(num_steps: int, denoise: bool = True) -> int:
  """Score evaluations of ``get_heun_sampler``: ``2 N - 1`` (last step Euler) or ``2 N``."""
  return 2 * num_steps - 1 if denoise else 2 * num_steps


def get_heun_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler,
                     num_steps: int, rho: float = 7., denoise: bool = True,
                     eps: Optional[float] = None, s_churn: float = 0., s_min: float = 0.,
                     s_max: float = math.inf, s_noise: float = 1.,
                     schedule: str = 'karras',
                     times: Optional[Sequence[float]] = None) -> base.Sampler:
  """EDM's deterministic (``s_churn = 0``, Algorithm 1) or stochastic (Algorithm 2) sampler.

  Grids, for ``N = num_steps``:
    * ``denoise=True`` (EDM's own): ``N`` noise levels from ``sigma(T)`` to ``sigma(eps)`` then
      ``sigma_N = 0``; the last step, to 0, is Euler and returns ``D(x; sigma(eps))``, the
      Tweedie-denoised sample. ``2 N - 1`` evaluations.
    * ``denoise=False``: ``N + 1`` levels from ``sigma(T)`` to ``sigma(eps)``, ``N`` Heun steps,
      a sample of ``p_eps``. ``2 N`` evaluations.

  Args:
    sde: the forward SDE; ``sigma(t)`` must increase with ``t`` (true for VP, sub-VP, VE).
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    num_steps: ``N`` above, >= 1 (>= 2 with ``denoise``).
    rho: grid exponent (EDM: 7).
    eps: the SDE time of the smallest positive noise level (``None``: ``sde.sampling_eps``).
    s_churn, s_min, s_max, s_noise: Algorithm 2's stochasticity: at levels in ``[s_min, s_max]``
      the noise is raised by ``gamma = min(s_churn / N, sqrt(2) - 1)`` with fresh noise scaled by
      ``s_noise``. The raised level is capped at ``sigma(T)``, the largest time the score knows.
    schedule: the grid's spacing (``schedule.time_steps``); EDM's is ``'karras'``.
    times: the grid itself, the levels above as times decreasing from ``T`` to ``eps``
      (``schedule.check_times``; noise levels convert with ``schedule.t_of_sigma``), instead of
      ``schedule``, ``rho`` and ``eps``.
  Returns:
    ``sampler(rng, score_fn) -> (samples, nfe = heun_nfe(num_steps, denoise))``.
  """
  shape = base.check_shape(shape)
  num_steps = base.check_steps(num_steps)
  if denoise and num_steps < 2:
    raise ValueError('With denoise=True the Heun sampler needs num_steps >= 2 (the last step '
                     'only denoises); use num_steps >= 2 or denoise=False.')
  n_levels = methods.grid_levels('heun', num_steps, denoise, 'tweedie')
  given, eps = schedule_lib.resolve_grid(
      sde, n_levels, eps, schedule, rho, times,
      f'Heun with num_steps={num_steps} and denoise={denoise}')
  gamma = min(s_churn / num_steps, math.sqrt(2.) - 1.)
  batch = shape[0]

  def denoiser(score_fn, x_hat, t):
    alpha, _ = sde.marginal_coeffs(t)
    x = x_hat * alpha
    return schedule_lib.data_prediction(sde, score_fn, x, base.batch_times(t, batch))

  def sampler(rng, score_fn):
    times = (schedule_lib.time_steps(sde, n_levels, eps, schedule, rho) if given is None
             else jnp.asarray(given))
    sigmas = schedule_lib.sigma(sde, times)
    sigma_max = sigmas[0]
    if denoise:
      sigmas = jnp.append(sigmas, 0.)
      times = jnp.append(times, 0.)

    alpha_T, _ = sde.marginal_coeffs(jnp.float32(sde.T))
    x_hat = sde.prior_sampling(base.prior_key(rng), shape) / alpha_T
    step_keys = base.noise_key(rng)

    def churn(i, x_hat):
      """Algorithm 2, lines 4-6: raise the noise level from sigma_i to sigma_hat."""
      sigma = sigmas[i]
      in_range = (sigma >= s_min) & (sigma <= s_max)
      sigma_hat = jnp.where(in_range, jnp.minimum(sigma * (1. + gamma), sigma_max), sigma)
      z = jax.random.normal(jax.random.fold_in(step_keys, i), shape, jnp.float32)
      # Clipped: at the cap sigma_hat = sigma and rounding may make the difference negative.
      x_hat = x_hat + jnp.sqrt(jnp.maximum(sigma_hat ** 2 - sigma ** 2, 0.)) * s_noise * z
      return x_hat, sigma_hat, jnp.where(in_range, schedule_lib.t_of_sigma(sde, sigma_hat),
                                         times[i])

    def heun_step(i, x_hat):
      if gamma > 0:
        x_hat, sigma, t = churn(i, x_hat)
      else:
        sigma, t = sigmas[i], times[i]
      sigma_next = sigmas[i + 1]
      d = (x_hat - denoiser(score_fn, x_hat, t)) / sigma
      x_euler = x_hat + (sigma_next - sigma) * d
      d_next = (x_euler - denoiser(score_fn, x_euler, times[i + 1])) / sigma_next
      return x_hat + (sigma_next - sigma) * 0.5 * (d + d_next)

    n_heun = num_steps - 1 if denoise else num_steps
    x_hat = jax.lax.fori_loop(0, n_heun, heun_step, x_hat)
    if denoise:
      # Euler to sigma = 0: x_hat + (0 - sigma) (x_hat - D) / sigma = D.
      if gamma > 0:
        x_hat, _, t = churn(n_heun, x_hat)
      else:
        t = times[n_heun]
      x = denoiser(score_fn, x_hat, t)
    else:
      alpha_eps, _ = sde.marginal_coeffs(jnp.float32(eps))
      x = x_hat * alpha_eps
    return inverse_scaler(x), heun_nfe(num_steps, denoise)

  return sampler
