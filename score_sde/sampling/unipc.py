"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), data prediction,
multistep, for any SDE of ``sde_lib``.

In DPM-Solver++'s variables (``lambda = log(alpha / std)``, data prediction ``x0``;
``dpm_solver``), a step from ``s`` to ``t`` with ``h = lambda_t - lambda_s`` is

    x_t = (std_t / std_s) x_s - alpha_t phi1 x0_s - alpha_t B(h) sum_k rho_k D_k,

with ``phi1 = expm1(-h)`` (DDIM without the sum), ``D_k = (x0_{s_k} - x0_s) / r_k`` the scaled
differences to earlier evaluations at ``lambda_{s_k} = lambda_s + r_k h``, and ``rho`` solving
the order conditions ``sum_k rho_k r_k^(m-1) = m! g_m(h) / B(h)``, ``m = 1..``, with
``g_m(h) = sum_{n>=1} (-h)^n / (n + m)!`` (their Theorem 3.1). ``B(h) = -h`` (``'bh1'``) or
``expm1(-h)`` (``'bh2'``): equal to first order, they change the error constant.

* UniP (predictor) of order ``p`` uses the ``p - 1`` earlier evaluations (``rho = 1/2`` at
  ``p = 2``, as the authors set it).
* UniC (corrector) adds the evaluation at the new point ``x_t`` itself (``r = 1``) and raises the
  order to ``p + 1``. That evaluation is the next step's anyway, so the corrector costs no extra
  evaluation: the next step starts from the corrected state with the prediction's ``x0_t``.
  The last step is never corrected (it would need another evaluation).

The loop, grid and final step are ``multistep``'s. Shapes: samples ``(B, ...)`` float32.
"""
from typing import Optional

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base, multistep

VARIANTS = ('bh1', 'bh2')


def _g(minus_h: jax.Array, m: int) -> jax.Array:
  """``g_m(h) = (e^{-h} - sum_{n<=m} (-h)^n / n!) / (-h)^m``, by its series below 0.1 (the
  closed form cancels in float32 there)."""
  small = jnp.abs(minus_h) < 0.1
  series = 0.
  fact = 1.
  for n in range(1, m + 7):
    fact *= n
    if n > m:
      series = series + minus_h ** (n - m) / fact
  safe = jnp.where(small, 1., minus_h)
  closed = jnp.expm1(safe)
  fact = 1.
  for n in range(1, m + 1):
    fact *= n
    closed = closed - safe ** n / fact
  return jnp.where(small, series, closed / safe ** m)


def unipc_update(x: jax.Array, x0_hist, lam_hist, std: jax.Array, std_next: jax.Array,
                 alpha_next: jax.Array, order: jax.Array, variant: str,
                 x0_next=None) -> jax.Array:
  """One UniP step of ``order`` from ``s`` to ``t`` or, given ``x0_next``, its UniC correction.

  Args:
    x: ``(B, ...)`` state at ``lambda_s``.
    x0_hist: ``(x0_s, x0_{s-1}, x0_{s-2})`` (newest first; unused entries finite).
    lam_hist: ``(lambda_s, lambda_{s-1}, lambda_{s-2}, lambda_t)`` scalars.
    std, std_next, alpha_next: ``std_s``, ``std_t``, ``alpha_t`` scalars.
    order: int32 scalar in 1..3: the predictor's order (the corrected step's is one more).
    variant: ``'bh1'`` or ``'bh2'``.
    x0_next: the data prediction at the predicted ``x_t``; ``None`` for the predictor.
  Returns:
    ``x_t``.
  """
  x0, x0_prev, x0_prev2 = x0_hist
  lam, lam_prev, lam_prev2, lam_next = lam_hist
  h = lam_next - lam
  minus_h = -h
  b_h = minus_h if variant == 'bh1' else jnp.expm1(minus_h)
  b1, b2, b3 = (_g(minus_h, m) * f / b_h for m, f in ((1, 1.), (2, 2.), (3, 6.)))
  r1 = jnp.where(order >= 2, (lam_prev - lam) / h, -1.)
  r2 = jnp.where(order >= 3, (lam_prev2 - lam) / h, -2.)
  d1, d2 = (x0_prev - x0) / r1, (x0_prev2 - x0) / r2
  if x0_next is None:
    def third():
      rho2 = (b2 - r1 * b1) / (r2 - r1)
      return (b1 - rho2) * d1 + rho2 * d2

    branches = [lambda: jnp.zeros_like(x), lambda: 0.5 * d1, third]
  else:
    dt = x0_next - x0

    def second():
      rho1 = (b2 - b1) / (r1 - 1.)
      return rho1 * d1 + (b1 - rho1) * dt

    def third():
      vandermonde = jnp.stack([jnp.ones(3), jnp.stack([r1, r2, 1.]),
                               jnp.stack([r1 ** 2, r2 ** 2, 1.])])
      rho = jnp.linalg.solve(vandermonde, jnp.stack([b1, b2, b3]))
      return rho[0] * d1 + rho[1] * d2 + rho[2] * dt

    branches = [lambda: 0.5 * dt, second, third]
  residual = jax.lax.switch(order - 1, branches)
  return std_next / std * x - alpha_next * (jnp.expm1(minus_h) * x0 + b_h * residual)


def method(variant: str, corrector: bool) -> multistep.Method:
  """UniPC's steps for ``multistep`` (UniP, then UniC at the next level when ``corrector``)."""
  def update(grid, s, x, history, order, x0_next=None):
    lam_hist = tuple(grid.back(grid.lams, s, 3)) + (grid.lams[s + 1],)
    return unipc_update(x, tuple(history[:3]), lam_hist, grid.stds[s], grid.stds[s + 1],
                        grid.alphas[s + 1], order, variant, x0_next)

  def step(grid, i, x, x_prev, history, order, prev_order):
    if corrector:
      x = jax.lax.cond(i > 0, lambda: update(grid, i - 1, x_prev, history[1:], prev_order,
                                             history[0]), lambda: x)
    return x, update(grid, i, x, history, order)

  return multistep.Method(max_order=3, depth=4, store=multistep.store_data,
                          step=step, to_zero=multistep.data_to_zero)


def get_unipc_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler, times,
                      order: int = 2, variant: str = 'bh2', corrector: bool = True,
                      denoise: bool = True, lower_order_final: bool = True,
                      final: Optional[str] = None,
                      order3_max_step: Optional[float] = 0.75) -> base.Sampler:
  """UniPC-``order`` (UniP-``order`` with UniC, order ``order + 1``) over the grid ``times``.

  Args:
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    times: the grid (``multistep.levels`` of the step count; evaluations = steps, one more with
      ``final='tweedie'``); uniform in ``lambda`` (``'logSNR'``) is the solver's own.
    order: the predictor's order, 1, 2 or 3; warm-up and ``lower_order_final`` as
      ``multistep.step_orders``.
    variant: ``'bh1'`` or ``'bh2'`` (module docstring).
    corrector: apply UniC (free); ``False`` leaves UniP alone (order 1: DDIM).
    denoise, final: the end (``multistep``).
    order3_max_step: steps longer than this in ``lambda`` take order 2 instead of 3
      (``multistep.cap_third_order``); ``None`` keeps the orders as given.
  Returns:
    ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe = multistep.nfe(N,
    denoise, final))`` (``base``).
  """
  if variant not in VARIANTS:
    raise ValueError(f'Unknown UniPC variant {variant!r}; use one of {", ".join(VARIANTS)}.')
  return multistep.get_sampler(method(variant, corrector), 'UniPC', sde, shape, inverse_scaler,
                               times, order, lower_order_final, denoise, final, order3_max_step)


METHOD = base.Method(
    'unipc', get_unipc_sampler, family='ode',
    settings=lambda s, sde: dict(multistep.config_settings(s, sde, 2),
                                 variant=str(s.unipc_variant)),
    levels=multistep.levels, defaults=multistep.defaults,
    schedule='logSNR', max_order=method('bh2', True).max_order)
