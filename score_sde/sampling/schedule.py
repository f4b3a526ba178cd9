"""Noise levels of a linear SDE as functions of time, their inverse, and the denoiser.

Every SDE of ``sde_lib`` has the kernel ``p_0t = N(alpha(t) x0, std(t)^2 I)``. Two reparameter-
isations of its time make the fast solvers SDE-agnostic:

* ``sigma(t) = std(t) / alpha(t)``: the noise level of ``x / alpha``, EDM's sigma with scale
  ``s(t) = alpha(t)`` (Karras et al. 2022, eq. 4 / Table 1);
* ``lambda(t) = log(alpha(t) / std(t)) = -log sigma(t)``: half the log signal-to-noise ratio,
  DPM-Solver's time variable (Lu et al. 2022, sec. 3.1).

Both are monotone in ``t`` for VP, sub-VP and VE, so ``t`` is recovered from either by bisection
inside jit; no SDE needs a hand-written inverse. ``time_steps`` spaces a sampler's grid by one
of the ``FORMULAS``, the same choice for every sampler; ``'fitted'`` (``schedule_fit``) fits the
grid to the sampler, and ``check_times`` vets the grid a sampler is built on.
Times, sigmas and lambdas are float32 arrays of any shape; ``x`` is ``(B, ...)``.
"""
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib

# 2^-64 of [0, T] is below float32 spacing at any t >= 1e-12, so the bisection is exact to the
# last bit for every eps the samplers use.
_BISECTION_STEPS = 64


def sigma(sde: sde_lib.SDE, t: jax.Array) -> jax.Array:
  """``std(t) / alpha(t)``, the shape of ``t``."""
  alpha, std = sde.marginal_coeffs(jnp.asarray(t, jnp.float32))
  return std / alpha


def half_log_snr(sde: sde_lib.SDE, t: jax.Array) -> jax.Array:
  """``lambda(t) = log(alpha(t) / std(t))``, the shape of ``t``."""
  return -jnp.log(sigma(sde, t))


def t_of_sigma(sde: sde_lib.SDE, target: jax.Array, t_max: Optional[float] = None) -> jax.Array:
  """The time at which ``sigma(t) = target``, elementwise, by bisection on ``[0, t_max]``.

  Args:
    sde: the SDE whose ``sigma(t)`` is increasing.
    target: float32 array of noise levels.
    t_max: upper end of the bracket (default ``sde.T``); targets beyond ``sigma(t_max)`` return
      ``t_max`` and targets below ``sigma(0)`` return 0.
  Returns:
    float32 times, the shape of ``target``.
  """
  target = jnp.asarray(target, jnp.float32)
  t_max = sde.T if t_max is None else t_max
  log_target = jnp.log(target)

  def halve(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    below = jnp.log(sigma(sde, mid)) < log_target
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo = jnp.zeros_like(target)
  hi = jnp.full_like(target, t_max)
  lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, halve, (lo, hi))
  return 0.5 * (lo + hi)


def t_of_half_log_snr(sde: sde_lib.SDE, lam: jax.Array) -> jax.Array:
  """Inverse of ``half_log_snr``: the time at which ``lambda(t) = lam`` (elementwise)."""
  return t_of_sigma(sde, jnp.exp(-jnp.asarray(lam, jnp.float32)))


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.) -> jax.Array:
  """EDM's ``n`` noise levels from ``sigma_max`` down to ``sigma_min`` (Karras et al. eq. 5):

      sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.

  Returns:
    float32 ``(n,)``, decreasing; ``n = 1`` gives ``[sigma_max]``.
  """
  if n < 1:
    raise ValueError(f'karras_sigmas needs n >= 1 noise levels; got n={n}.')
  frac = jnp.linspace(0., 1., n) if n > 1 else jnp.zeros((1,))
  lo, hi = sigma_min ** (1. / rho), sigma_max ** (1. / rho)
  return jnp.asarray((hi + frac * (lo - hi)) ** rho, jnp.float32)


def data_prediction(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x: jax.Array,
                    t: jax.Array) -> jax.Array:
  """Tweedie's denoiser ``E[x(0) | x(t)] = (x + std(t)^2 score(x, t)) / alpha(t)``.

  This is EDM's ``D(x / alpha; sigma)`` and DPM-Solver++'s data prediction ``x_theta`` (with
  ``eps_theta = -std * score``). One score evaluation.

  Args:
    x: ``(B, ...)`` float32.
    t: ``(B,)`` float32.
  Returns:
    The shape of ``x``.
  """
  alpha, std = sde.marginal_coeffs(t)
  return sde_lib.batch_mul(1. / alpha, x + sde_lib.batch_mul(std ** 2, score_fn(x, t)))


# config.sampling.schedule: how a fixed-step sampler spaces its levels between T and eps:
# by a formula (``time_steps``), or 'fitted' to the sampler itself (``schedule_fit``).
FORMULAS = ('logSNR', 'karras', 'time_uniform', 'time_quadratic')
SCHEDULES = FORMULAS + ('fitted',)


def check_schedule(name: str, rho: float = 7.) -> str:
  """Raises a ValueError naming the fix for an unknown schedule or ``rho <= 0``."""
  if name not in SCHEDULES:
    raise ValueError(f'Unknown schedule {name!r}; use one of {", ".join(SCHEDULES)}.')
  if not rho > 0:
    raise ValueError(f'The karras schedule needs rho > 0 (EDM uses 7); got rho={rho}.')
  return name


def check_times(sde: sde_lib.SDE, times: Sequence[float], what: str,
                num_levels: Optional[int] = None) -> Tuple[jax.Array, bool]:
  """A sampler's grid, checked when the sampler is built (before anything is traced).

  A grid of noise levels converts with ``t_of_sigma`` (EDM's sigma) or ``t_of_half_log_snr``.

  Args:
    sde: the SDE the grid is for.
    times: strictly decreasing from ``times[0] <= sde.T`` (``T`` when the prior is drawn there;
      below it for a sampler started at a given state) to the smallest time ``eps > 0``.
    what: the sampler and its settings, for the error message.
    num_levels: the levels the sampler needs, or None for any number (at least 1).
  Returns:
    ``(times float32 (L,), starts_at_T)``. Traced times (a grid being fitted by gradient,
    ``schedule_fit``) have only their shape checked, come back traced and are taken to start
    at ``T``.
  Raises:
    ValueError: naming what is wrong with ``times`` and the fix.
  """
  traced = isinstance(times, jax.core.Tracer)
  shape = times.shape if traced else np.shape(times)
  if len(shape) != 1 or shape[0] < 1 or (num_levels is not None and shape[0] != num_levels):
    need = f'{num_levels} levels' if num_levels else 'at least one level'
    raise ValueError(f'times has shape {shape}, but {what} uses {need}, from T={sde.T} down to '
                     'eps; give that many (methods.get_times builds them from a step count).')
  if traced:
    return jnp.asarray(times, jnp.float32), True
  t = np.asarray(times, np.float64)
  if not np.all(np.isfinite(t)) or np.any(np.diff(t) >= 0):
    raise ValueError(f'times must be finite and strictly decreasing (from T to eps); got {t}.')
  if t[0] > sde.T + 1e-6:
    raise ValueError(f'times must start at T={sde.T} (where the prior is drawn) or below it; '
                     f'got {t[0]}.')
  if not t[-1] > 0:
    raise ValueError(f'The last of times is eps and must be > 0 (the score is ill-conditioned at '
                     f'0; the step to sigma = 0 is the sampler\'s own); got {t[-1]}.')
  return t.astype(np.float32), bool(np.isclose(t[0], sde.T, rtol=0., atol=1e-6))


def time_steps(sde: sde_lib.SDE, num_levels: int, eps: float, name: str = 'logSNR',
               rho: float = 7.) -> jax.Array:
  """``num_levels`` float32 times, decreasing from ``T`` to ``eps`` (both exact), spaced by
  ``name``:

  * ``'logSNR'``: uniform in ``lambda(t)`` (DPM-Solver's and UniPC's choice, Lu et al. 2022);
  * ``'karras'``: EDM's ``rho``-spaced noise levels (``karras_sigmas``, Karras et al. eq. 5),
    dense at small ``sigma``; ``rho = 1`` is uniform in ``sigma``;
  * ``'time_uniform'``: uniform in ``t``;
  * ``'time_quadratic'``: ``t = eps + (T - eps) u^2`` for ``u`` uniform on ``[0, 1]`` (DDIM's
    quadratic skip, Song et al. 2021a), dense near ``eps``.

  ``'fitted'`` depends on the sampler: ``schedule_fit.fit_grid`` fits it, and the sampler takes
  it as ``times``.

  Args:
    sde: the SDE whose ``sigma(t)`` increases with ``t``.
    num_levels: >= 1; one level is ``[T]``.
    eps: the last time, in ``(0, T)``.
    name: one of ``SCHEDULES``.
    rho: the ``'karras'`` exponent (ignored by the others).
  Returns:
    ``(num_levels,)`` float32.
  Raises:
    ValueError: for an unknown name (listing the known ones) or ``rho <= 0``.
  """
  check_schedule(name, rho)
  if name == 'fitted':
    raise ValueError("The 'fitted' grid is fitted to its sampler, not computed by time_steps: "
                     'pass times=schedule_fit.fit_grid(...) to the sampler.')
  t_max = jnp.float32(sde.T)
  if num_levels == 1:
    return t_max[None]
  u = jnp.linspace(1., 0., num_levels)  # 1 at T, 0 at eps.
  if name == 'logSNR':
    lam_T, lam_eps = half_log_snr(sde, t_max), half_log_snr(sde, jnp.float32(eps))
    times = t_of_half_log_snr(sde, lam_eps + u * (lam_T - lam_eps))
  elif name == 'karras':
    times = t_of_sigma(sde, karras_sigmas(sigma(sde, jnp.float32(eps)), sigma(sde, t_max),
                                          num_levels, rho))
  elif name == 'time_uniform':
    times = jnp.linspace(sde.T, eps, num_levels)  # The released PC sampler's grid.
  else:
    times = eps + u ** 2 * (sde.T - eps)
  # The ends exactly, not through bisection.
  return jnp.asarray(times, jnp.float32).at[0].set(sde.T).at[-1].set(eps)
