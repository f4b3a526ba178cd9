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
import math

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base, schedule as schedule_lib


def heun_nfe(num_steps: int, denoise: bool = True) -> int:
  """Score evaluations of ``get_heun_sampler``: ``2 N - 1`` (last step Euler) or ``2 N``."""
  return 2 * num_steps - 1 if denoise else 2 * num_steps


def heun_levels(num_steps: int, settings) -> int:
  """Grid levels of ``num_steps`` Heun steps: ``N`` when the last step goes to ``sigma = 0``
  (``denoise``), else ``N + 1``."""
  return num_steps if settings.get('denoise', True) else num_steps + 1


def get_heun_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler, times,
                     denoise: bool = True, s_churn: float = 0., s_min: float = 0.,
                     s_max: float = math.inf, s_noise: float = 1.) -> base.Sampler:
  """EDM's deterministic (``s_churn = 0``, Algorithm 1) or stochastic (Algorithm 2) sampler.

  Grids (``times``, decreasing from ``T``, or below it for a given ``x_T``, to ``eps``), for
  ``N`` steps:
    * ``denoise=True`` (EDM's own): ``N`` levels (EDM's ``rho``-spaced ``'karras'`` grid by
      default) then ``sigma_N = 0``; the last step, to 0, is Euler and returns
      ``D(x; sigma(eps))``, the Tweedie-denoised sample. ``2 N - 1`` evaluations.
    * ``denoise=False``: ``N + 1`` levels, ``N`` Heun steps, a sample of ``p_eps``. ``2 N``
      evaluations.

  Args:
    sde: the forward SDE; ``sigma(t)`` must increase with ``t`` (true for VP, sub-VP, VE).
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    times: the levels above as times (``schedule.check_times``; noise levels convert with
      ``schedule.t_of_sigma``); at least 2 with ``denoise``.
    denoise: end with the Euler step to ``sigma = 0``.
    s_churn, s_min, s_max, s_noise: Algorithm 2's stochasticity: at levels in ``[s_min, s_max]``
      the noise is raised by ``gamma = min(s_churn / N, sqrt(2) - 1)`` with fresh noise scaled by
      ``s_noise``. The raised level is capped at ``sigma(T)``, the largest time the score knows.
  Returns:
    ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe = heun_nfe(N, denoise))``;
    the callback sees each step's state after the churn, its time and ``D`` there (``base``).
  """
  shape = base.check_shape(shape)
  times, starts_at_T = schedule_lib.check_times(sde, times, f'Heun with denoise={denoise}')
  num_steps = METHOD.steps(times.shape[0], {'denoise': denoise})
  if denoise and num_steps < 2:
    raise ValueError('With denoise=True the Heun sampler needs 2 or more levels (the last step '
                     'only denoises); give more times or use denoise=False.')
  gamma = min(s_churn / num_steps, math.sqrt(2.) - 1.)
  batch = shape[0]

  def denoiser(score_fn, x_hat, t):
    alpha, _ = sde.marginal_coeffs(t)
    x = x_hat * alpha
    return schedule_lib.data_prediction(sde, score_fn, x, base.batch_times(t, batch))

  def sampler(rng, score_fn, x_T=None, callback=None):
    grid = jnp.asarray(times)
    sigmas = schedule_lib.sigma(sde, grid)
    sigma_max = schedule_lib.sigma(sde, jnp.float32(sde.T))
    if denoise:
      sigmas = jnp.append(sigmas, 0.)
      grid = jnp.append(grid, 0.)

    alpha_start, _ = sde.marginal_coeffs(grid[0])
    x_hat = base.start(sde, rng, shape, x_T, starts_at_T) / alpha_start
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
                                         grid[i])

    def raised(i, x_hat):
      """The state, level and time step ``i`` starts from (after the churn, if any)."""
      if gamma > 0:
        return churn(i, x_hat)
      return x_hat, sigmas[i], grid[i]

    def observed_denoiser(i, x_hat, t):
      d = denoiser(score_fn, x_hat, t)
      if callback is not None:
        base.notify(callback, i, x_hat * sde.marginal_coeffs(t)[0], t, d)
      return d

    def heun_step(i, x_hat):
      x_hat, sigma, t = raised(i, x_hat)
      sigma_next = sigmas[i + 1]
      d = (x_hat - observed_denoiser(i, x_hat, t)) / sigma
      x_euler = x_hat + (sigma_next - sigma) * d
      d_next = (x_euler - denoiser(score_fn, x_euler, grid[i + 1])) / sigma_next
      return x_hat + (sigma_next - sigma) * 0.5 * (d + d_next)

    n_heun = num_steps - 1 if denoise else num_steps
    x_hat = jax.lax.fori_loop(0, n_heun, heun_step, x_hat)
    if denoise:
      # Euler to sigma = 0: x_hat + (0 - sigma) (x_hat - D) / sigma = D.
      x_hat, _, t = raised(n_heun, x_hat)
      x = observed_denoiser(n_heun, x_hat, t)
    else:
      alpha_eps, _ = sde.marginal_coeffs(grid[-1])
      x = x_hat * alpha_eps
    return inverse_scaler(x), heun_nfe(num_steps, denoise)

  return sampler


def _settings(s, sde) -> dict:
  del sde
  return dict(denoise=s.noise_removal, s_churn=s.s_churn, s_min=s.s_tmin, s_max=s.s_tmax,
              s_noise=s.s_noise)


METHOD = base.Method('heun', get_heun_sampler, family='ode', settings=_settings,
                     levels=heun_levels, schedule='karras',
                     deterministic=lambda settings: dict(settings, s_churn=0.))
