"""DEIS and iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
Integrator"): multistep Adams-Bashforth on the noise prediction in ``sigma``, for any SDE of
``sde_lib``.

With ``y = x / alpha`` and ``sigma = std / alpha`` (``schedule``), the probability-flow ODE is
``dy / d sigma = eps(y, sigma)`` with the noise prediction ``eps = (y - D) / sigma`` (EDM eq. 3
with ``s = 1``; ``D`` the data prediction): the exponential integrator in ``sigma``, whose
linear part has been integrated away (DEIS's ``rho``, their sec. 4). A step from ``sigma_i`` to
``sigma_{i+1}`` integrates the polynomial through the last ``p`` noise predictions:

    y_{i+1} = y_i + sum_{j<p} eps_{i-j} int_{sigma_i}^{sigma_{i+1}} L_j(sigma) d sigma

(``L_j`` the Lagrange basis on ``sigma_i, ..., sigma_{i-p+1}``): DEIS's rhoAB, exact for the
actual, uneven grid. iPNDM (``variable_step=False``) instead uses the constant-step
Adams-Bashforth weights ``(sigma_{i+1} - sigma_i) * (1), (3, -1)/2, (23, -16, 5)/12,
(55, -59, 37, -9)/24``, as its authors do. Order 1 of either is DDIM. The step to
``sigma = 0`` (``multistep``) is the same formula with ``sigma_{i+1} = 0``.
Shapes: samples ``(B, ...)`` float32.
"""
from typing import Optional

import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base, multistep

_IPNDM = jnp.asarray([[1., 0., 0., 0.], [3. / 2, -1. / 2, 0., 0.],
                      [23. / 12, -16. / 12, 5. / 12, 0.],
                      [55. / 24, -59. / 24, 37. / 24, -9. / 24]], jnp.float32)


def method(variable_step: bool) -> multistep.Method:
  """DEIS's (``variable_step``) or iPNDM's steps for ``multistep``: it stores noise
  predictions ``eps = (y - D) / sigma``."""
  def store(grid, i, x, x0):
    return (x / grid.alphas[i] - x0) / grid.sigmas[i]

  def advance(grid, i, x, history, order, sigma_next):
    y = x / grid.alphas[i]
    if variable_step:
      nodes = grid.back(grid.sigmas, i, history.shape[0])
      weights = multistep.lagrange_integrals(nodes, order, grid.sigmas[i], sigma_next)
    else:
      weights = (sigma_next - grid.sigmas[i]) * _IPNDM[order - 1]
    return y + multistep.combine(weights, history)

  def step(grid, i, x, x_prev, history, order, prev_order):
    del x_prev, prev_order
    return x, grid.alphas[i + 1] * advance(grid, i, x, history, order, grid.sigmas[i + 1])

  def to_zero(grid, i, x, history, order):
    return advance(grid, i, x, history, order, jnp.float32(0.))

  return multistep.Method(max_order=4, depth=4, store=store, step=step, to_zero=to_zero)


def get_deis_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler, times,
                     order: int = 4, variable_step: bool = True, denoise: bool = True,
                     lower_order_final: bool = False, final: Optional[str] = None
                     ) -> base.Sampler:
  """DEIS-rhoAB (``variable_step``) or iPNDM of ``order`` over the grid ``times``.

  Args:
    sde: the forward SDE.
    shape: ``(B, ...)`` of the samples.
    inverse_scaler: model space -> data space.
    times: the grid (``multistep.levels`` of the step count; evaluations = steps, one more with
      ``final='tweedie'``); EDM's ``'karras'`` spacing is the solvers' own.
    order: 1 to 4; warm-up and ``lower_order_final`` as ``multistep.step_orders``.
    variable_step: exact weights on the grid (DEIS) or iPNDM's constant-step ones.
    denoise, final: the end (``multistep``).
  Returns:
    ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe = multistep.nfe(N,
    denoise, final))`` (``base``).
  """
  return multistep.get_sampler(method(variable_step), 'DEIS / iPNDM', sde, shape,
                               inverse_scaler, times, order, lower_order_final, denoise, final)


def _settings(variable_step: bool, default_order: int):
  def settings(s, sde):
    return dict(multistep.config_settings(s, sde, default_order), variable_step=variable_step)
  return settings


METHOD = base.Method('deis', get_deis_sampler, family='ode', settings=_settings(True, 4),
                     levels=multistep.levels, defaults=multistep.defaults, schedule='karras',
                     max_order=method(True).max_order)
IPNDM_METHOD = base.Method('ipndm', get_deis_sampler, family='ode', settings=_settings(False, 3),
                           levels=multistep.levels, defaults=multistep.defaults, schedule='karras',
                           max_order=method(False).max_order)
