"""Euler ancestral sampling in EDM's noise level, for any SDE of ``sde_lib``.

In ``x_hat = x / alpha`` (noise level ``sigma = std / alpha``, ``schedule``) a step from
``sigma`` to ``sigma'`` splits the target level into a deterministic part and fresh noise,

    sigma_up   = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)),
    sigma_down = sqrt(sigma'^2 - sigma_up^2),

takes an Euler step of the probability-flow ODE ``d x_hat / d sigma = (x_hat - D) / sigma``
(Karras et al. 2022, eq. 3 with ``s = 1``) down to ``sigma_down``, then adds
``sigma_up z``. With ``eta = 1`` that is exactly the posterior ``q(x_{sigma'} | x_sigma, x_0)``
of the Gaussian chain with ``x_0`` replaced by the denoiser ``D``: DDPM's ancestral step
(DDIM with ``eta = 1``, Song et al. 2021a, eq. 16); ``eta = 0`` is DDIM, the same map as
DPM-Solver++ of order 1. The last step, to ``sigma = 0`` with ``denoise``, returns ``D``.
One evaluation per step. Shapes: samples ``(B, ...)`` float32.
"""
import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base, edm, schedule


def ancestral_levels(sigma: jax.Array, sigma_next: jax.Array, eta: float):
  """``(sigma_down, sigma_up)`` of the module docstring (scalars; ``sigma_next = 0`` gives 0,
  0)."""
  up = jnp.minimum(sigma_next, eta * jnp.sqrt(
      jnp.maximum(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2), 0.) / sigma ** 2))
  return jnp.sqrt(jnp.maximum(sigma_next ** 2 - up ** 2, 0.)), up


def get_euler_ancestral_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler,
                                times, eta: float = 1., denoise: bool = True) -> base.Sampler:
  """Euler ancestral steps over ``times`` (module docstring).

  Args:
    sde: the forward SDE; ``sigma(t)`` must increase with ``t``.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    times: the levels, decreasing from ``T`` (or below it, from a given ``x_T``) to ``eps``;
      with ``denoise`` one more step goes to ``sigma = 0`` (``N`` levels, ``N`` steps), else
      the samples are of ``p_eps`` (``N + 1`` levels).
    eta: the share of fresh noise, 0 (DDIM) to 1 (ancestral).
    denoise: end with the step to ``sigma = 0``.
  Returns:
    ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe = N)``; the callback
    sees each level's state, time and ``D`` (``base``).
  """
  shape = base.check_shape(shape)
  times, starts_at_T = schedule.check_times(sde, times, f'Euler ancestral with denoise={denoise}')
  if not 0. <= eta <= 1.:
    raise ValueError(f'eta={eta} must lie in [0, 1] (0: DDIM, 1: ancestral sampling).')
  num_steps = METHOD.steps(times.shape[0], {'denoise': denoise})
  base.check_steps(num_steps, 'Euler ancestral steps (give 2 or more times without denoise)')

  def sampler(rng, score_fn, x_T=None, callback=None):
    grid = jnp.asarray(times)
    alphas, _ = sde.marginal_coeffs(grid)
    sigmas = schedule.sigma(sde, grid)
    if denoise:  # sigma = 0 itself, not sigma(t = 0), which is VE's sigma_min.
      sigmas = jnp.append(sigmas, 0.)
    x_hat = base.start(sde, rng, shape, x_T, starts_at_T) / alphas[0]
    step_keys = base.noise_key(rng)

    def step(i, x_hat):
      x = x_hat * alphas[i]
      d = schedule.data_prediction(sde, score_fn, x, base.batch_times(grid[i], shape[0]))
      base.notify(callback, i, x, grid[i], d)
      down, up = ancestral_levels(sigmas[i], sigmas[i + 1], eta)
      x_hat = x_hat + (down - sigmas[i]) * (x_hat - d) / sigmas[i]
      z = jax.random.normal(jax.random.fold_in(step_keys, i), shape, jnp.float32)
      return x_hat + up * z

    x_hat = jax.lax.fori_loop(0, num_steps, step, x_hat)
    # With denoise the last step returned D, the data itself (as Heun's); else x(eps) / alpha.
    return inverse_scaler(x_hat if denoise else x_hat * alphas[-1]), num_steps

  return sampler


# Family 'ode': it evaluates the score at any level of its grid, as the ODE solvers do.
METHOD = base.Method('euler_ancestral', get_euler_ancestral_sampler, family='ode',
                     settings=lambda s, sde: dict(eta=float(s.eta), denoise=s.noise_removal),
                     levels=edm.heun_levels, schedule='karras',
                     deterministic=lambda settings: dict(settings, eta=0.))
