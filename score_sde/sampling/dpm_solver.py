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
inverted by bisection (``schedule``). Shapes: samples ``(B, ...)`` float32.
"""
import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base, schedule

SKIP_TYPES = ('logSNR', 'time_uniform')


def time_grid(sde: sde_lib.SDE, num_steps: int, eps: float, skip_type: str) -> jax.Array:
  """``num_steps + 1`` float32 times from ``T`` down to ``eps``.

  ``'logSNR'``: uniform in ``lambda`` (DPM-Solver's recommendation); ``'time_uniform'``: uniform
  in ``t``.
  """
  if skip_type == 'logSNR':
    lam = jnp.linspace(schedule.half_log_snr(sde, jnp.float32(sde.T)),
                       schedule.half_log_snr(sde, jnp.float32(eps)), num_steps + 1)
    times = schedule.t_of_half_log_snr(sde, lam)
  elif skip_type == 'time_uniform':
    times = jnp.linspace(sde.T, eps, num_steps + 1)
  else:
    raise ValueError(f'Unknown skip_type {skip_type!r}; use one of {SKIP_TYPES}.')
  return times.astype(jnp.float32).at[0].set(sde.T).at[-1].set(eps)


def step_orders(num_steps: int, order: int, lower_order_final: bool) -> jax.Array:
  """The order of each step: warm-up ``1, 2, ...`` (no history yet), then ``order``; with
  ``lower_order_final`` and fewer than 10 steps the last steps drop back to ``1, 2, ...`` too,
  because large final steps in ``lambda`` make high-order extrapolation unstable there."""
  orders = [min(order, i + 1) for i in range(num_steps)]
  if lower_order_final and num_steps < 10:
    orders = [min(o, num_steps - i) for i, o in enumerate(orders)]
  return jnp.asarray(orders, jnp.int32)


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


def dpm_solver_nfe(num_steps: int, denoise: bool = True) -> int:
  """Score evaluations of ``get_dpm_solver_sampler``: one a step, plus one to denoise."""
  return num_steps + int(denoise)


def get_dpm_solver_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler,
                           num_steps: int, order: int = 2, skip_type: str = 'logSNR',
                           denoise: bool = True, eps: float = 1e-3,
                           lower_order_final: bool = True) -> base.Sampler:
  """DPM-Solver++(``order``M) from ``T`` to ``eps`` in ``num_steps`` steps.

  Orders as in ``multistep_update``. The first steps lack history and use orders 1, 2, ...;
  their local errors keep the global order at 2 for ``order = 3`` too, whose gain is a smaller
  error constant.

  Args:
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    num_steps: steps (= evaluations before denoising), >= 1.
    order: 1, 2 or 3.
    skip_type: ``'logSNR'`` or ``'time_uniform'`` (``time_grid``).
    denoise: finish with the data prediction at ``eps`` (Tweedie, one more evaluation) instead
      of returning ``x(eps)``.
    eps: the last time.
    lower_order_final: see ``step_orders``.
  Returns:
    ``sampler(rng, score_fn) -> (samples, nfe = dpm_solver_nfe(num_steps, denoise))``.
  """
  shape = base.check_shape(shape)
  eps = base.check_eps(sde, eps)
  num_steps = base.check_steps(num_steps)
  if order not in (1, 2, 3):
    raise ValueError(f'DPM-Solver++ order={order} must be 1, 2 or 3.')
  if skip_type not in SKIP_TYPES:
    raise ValueError(f'Unknown skip_type {skip_type!r}; use one of {SKIP_TYPES}.')
  orders = step_orders(num_steps, order, lower_order_final)
  batch = shape[0]

  def sampler(rng, score_fn):
    times = time_grid(sde, num_steps, eps, skip_type)
    alphas, stds = sde.marginal_coeffs(times)
    lams = jnp.log(alphas) - jnp.log(stds)
    x = sde.prior_sampling(base.prior_key(rng), shape)

    def step(i, carry):
      x, x0_prev, x0_prev2 = carry
      x0 = schedule.data_prediction(sde, score_fn, x, base.batch_times(times[i], batch))
      # Clipped indices: history only enters through the orders that have it.
      lam_hist = lams[jnp.maximum(i - 2, 0)], lams[jnp.maximum(i - 1, 0)], lams[i], lams[i + 1]
      x = multistep_update(x, (x0_prev2, x0_prev, x0), lam_hist, stds[i], stds[i + 1],
                           alphas[i + 1], orders[i])
      return x, x0, x0_prev

    zeros = jnp.zeros(shape, jnp.float32)
    x, _, _ = jax.lax.fori_loop(0, num_steps, step, (x, zeros, zeros))
    if denoise:
      x = schedule.data_prediction(sde, score_fn, x, base.batch_times(eps, batch))
    return inverse_scaler(x), dpm_solver_nfe(num_steps, denoise)

  return sampler
