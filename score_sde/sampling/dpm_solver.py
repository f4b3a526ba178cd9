"""DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", Algorithm 2) for any SDE of ``sde_lib``.

With ``lambda = log(alpha / std)`` and the data prediction ``x0(x, t) = (x + std^2 score) /
alpha`` (``schedule.data_prediction``; equivalently ``(x - std eps) / alpha`` with
``eps = -std score``), the probability-flow ODE has the exact solution (their eq. 8)

    x_t = (std_t / std_s) x_s + std_t int_{lambda_s}^{lambda_t} e^lambda x0(x_lambda) d lambda.

Expanding ``x0`` in ``lambda`` around the last evaluation and integrating the exponential exactly,
with ``h = lambda_t - lambda_s`` and ``phi1 = expm1(-h)``, ``phi2 = phi1 / h + 1``,
``phi3 = phi2 / h - 1/2``:

    x_t = (std_t / std_s) x_s + alpha_t (-phi1 x0 + h phi2 x0' - h^2 phi3 x0''),

with the derivatives estimated from the previous evaluations (multistep: one evaluation a step).
Only ``alpha(t)``, ``std(t)`` and the inverse of ``lambda`` are needed, so VP, sub-VP (whose
``alpha^2 + std^2 != 1``) and VE (``alpha = 1``) are all handled the same way; ``lambda`` is
inverted by bisection (``schedule``); the loop, the grid and the final step to ``sigma = 0`` are
``multistep``'s. Shapes: samples ``(B, ...)`` float32.
"""
from typing import Optional

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base, multistep


def _phis(h: jax.Array):
  """``phi1 = e^-h - 1``, ``phi2 = phi1 / h + 1``, ``phi3 = phi2 / h - 1/2`` (scalars).

  The last two cancel catastrophically in float32 for small ``h`` (many steps), so below 0.1
  they come from their series ``sum_{k>=2} (-h)^k / (k! h)`` and ``sum_{k>=3} (-h)^k / (k! h^2)``,
  exact to float32 there.
  """
  phi1 = jnp.expm1(-h)
  small = jnp.abs(h) < 0.1
  safe_h = jnp.where(small, 1., h)
  phi2 = jnp.where(small, h / 2 - h ** 2 / 6 + h ** 3 / 24 - h ** 4 / 120, phi1 / safe_h + 1.)
  phi3 = jnp.where(small, -h / 6 + h ** 2 / 24 - h ** 3 / 120 + h ** 4 / 720,
                   phi2 / safe_h - 0.5)
  return phi1, phi2, phi3


def multistep_update(x: jax.Array, x0_hist, lam_hist, std: jax.Array, std_next: jax.Array,
                     alpha_next: jax.Array, order: jax.Array) -> jax.Array:
  """One DPM-Solver++ step from ``lambda_i`` to ``lambda_{i+1}`` (module docstring's formula).

  With ``h = lambda_{i+1} - lambda_i``, ``h0, h1`` the two previous steps, ``r0 = h0 / h`` and
  ``r1 = h1 / h``, divided differences estimate ``d1 ~ h x0'`` and ``d2 ~ h^2 x0'' / 2``:

      x_{i+1} = (std_{i+1} / std_i) x_i + alpha_{i+1} (-phi1 x0_i + phi2 d1 - 2 phi3 d2).

  Order 1 (``d1 = d2 = 0``) is DDIM; order 2 (``d1 = (x0_i - x0_{i-1}) / r0``, ``d2 = 0``)
  integrates the linear term exactly, where the paper's Algorithm 2 replaces ``phi2`` by
  ``-phi1 / 2`` (same order); order 3 fits a parabola through three evaluations. A step of order
  ``k`` is exact when ``x0`` is a polynomial of degree ``< k`` in ``lambda``.

  Args:
    x: ``(B, ...)`` state at ``lambda_i``.
    x0_hist: ``(x0_{i-2}, x0_{i-1}, x0_i)``, data predictions, each the shape of ``x`` (unused
      entries may hold anything finite).
    lam_hist: ``(lambda_{i-2}, lambda_{i-1}, lambda_i, lambda_{i+1})`` scalars.
    std, std_next, alpha_next: ``std_i``, ``std_{i+1}``, ``alpha_{i+1}`` scalars.
    order: int32 scalar, 1, 2 or 3.
  Returns:
    ``x`` at ``lambda_{i+1}``.
  """
  x0_prev2, x0_prev, x0 = x0_hist
  lam_prev2, lam_prev, lam, lam_next = lam_hist
  h = lam_next - lam
  r0 = jnp.where(order >= 2, (lam - lam_prev) / h, 1.)
  r1 = jnp.where(order >= 3, (lam_prev - lam_prev2) / h, 1.)
  phi1, phi2, phi3 = _phis(h)
  d1_0 = (x0 - x0_prev) / r0  # h x0' - h h0 x0'' / 2 + ...
  d1_1 = (x0_prev - x0_prev2) / r1  # h x0' - h (2 h0 + h1) x0'' / 2 + ...
  correction = jax.lax.switch(order - 1, [
      lambda: jnp.zeros_like(x),
      lambda: phi2 * d1_0,
      lambda: (phi2 * (d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1))
               - 2. * phi3 * (d1_0 - d1_1) / (r0 + r1)),
  ])
  return std_next / std * x + alpha_next * (-phi1 * x0 + correction)


def method() -> multistep.Method:
  """DPM-Solver++'s steps for ``multistep``: it stores data predictions."""
  def step(grid, i, x, x_prev, history, order, prev_order):
    del x_prev, prev_order
    lam_hist = tuple(grid.back(grid.lams, i, 3)[::-1]) + (grid.lams[i + 1],)
    return x, multistep_update(x, tuple(history[::-1]), lam_hist, grid.stds[i],
                               grid.stds[i + 1], grid.alphas[i + 1], order)

  return multistep.Method(max_order=3, depth=3, store=multistep.store_data,
                          step=step, to_zero=multistep.data_to_zero)


def get_dpm_solver_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler, times,
                           order: int = 2, denoise: bool = True, lower_order_final: bool = True,
                           final: Optional[str] = None,
                           order3_max_step: Optional[float] = 0.75) -> base.Sampler:
  """DPM-Solver++(``order``M) over the grid ``times`` (``multistep`` for the grid and the end:
  with ``denoise`` the last step goes to ``sigma = 0``).

  Orders as in ``multistep_update``. The first steps lack history and use orders 1, 2, ...;
  their local errors keep the global order at 2 for ``order = 3`` too, whose gain is a smaller
  error constant.

  Args:
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    times: the grid (``multistep.levels`` of the step count; evaluations = steps, one more with
      ``final='tweedie'``); uniform in ``lambda`` (``'logSNR'``) is the solver's own.
    order: 1, 2 or 3.
    denoise: end at ``sigma = 0`` (a sample of the data) rather than at ``x(eps)``.
    lower_order_final: see ``multistep.step_orders``.
    final: with ``denoise``, how the last step reaches 0: ``'extrapolate'`` (at ``order``) or
      ``'tweedie'`` (the released code's extra evaluation at ``eps``); None: the SDE's default
      (``multistep.DEFAULT_FINALS``).
    order3_max_step: steps longer than this in ``lambda`` take order 2 instead of 3
      (``multistep.cap_third_order``); ``None`` keeps the orders as given.
  Returns:
    ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe = multistep.nfe(N,
    denoise, final))`` (``base``).
  """
  return multistep.get_sampler(method(), 'DPM-Solver++', sde, shape, inverse_scaler, times,
                               order, lower_order_final, denoise, final, order3_max_step)


METHOD = base.Method('dpm_solver', get_dpm_solver_sampler, family='ode',
                     settings=lambda s, sde: multistep.config_settings(s, sde, 2),
                     levels=multistep.levels, defaults=multistep.defaults,
                     schedule='logSNR', max_order=method().max_order)
