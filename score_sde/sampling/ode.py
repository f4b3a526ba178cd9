"""Probability-flow ODE sampling and encoding (Song et al. 2021, sec. 4.3, eq. 13), on device.

    dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)

is solved with diffrax inside jit, from ``T`` to ``eps`` (sampling) or ``eps`` to ``T``
(encoding data into latents), with an adaptive embedded Runge-Kutta method and a PID step-size
controller. The released code called scipy's RK45 on the host, one device round-trip per
evaluation; here the whole solve is one XLA while loop (``score_sde.sampling.ode_solve``). As in
scipy, the error norm is the RMS over the whole batch, so the batch is solved as one system: step
sizes are shared by its examples.
"""
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.sampling import base, ode_solve, schedule

def _method(method: str):
  """Fails early, listing the known methods, on an unknown name."""
  return ode_solve.get_solver(method)


def probability_flow_drift(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x: jax.Array,
                           t: jax.Array) -> jax.Array:
  """``f(x, t) - g(t)^2 score(x, t) / 2`` (eq. 13), the shape of ``x``; ``t`` is ``(B,)``."""
  drift, _ = sde.reverse(score_fn, probability_flow=True).sde(x, t)
  return drift


def solve_probability_flow(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x: jax.Array,
                           t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
                           method: str = 'RK45', max_steps: int = 4096,
                           callback: Optional[base.Callback] = None
                           ) -> Tuple[jax.Array, jax.Array]:
  """Integrates eq. (13) from ``x(t0) = x`` to ``t1`` (either direction).

  Args:
    sde: the forward SDE.
    score_fn: ``score_fn(x, t)`` with ``x: (B, ...)`` and ``t: (B,)``.
    x: ``(B, ...)`` float32 state at ``t0``.
    t0, t1: start and end times in ``[0, T]``.
    rtol, atol: tolerances of the PID controller (RMS norm over the whole batch).
    method: ``'RK45'`` (= ``'Dopri5'``), ``'Tsit5'``, ``'Bosh3'`` or ``'Dopri8'``.
    max_steps: the solve fails (diffrax raises at run time) beyond this many steps.
    callback: ``base.Callback``, given ``(-1, x, t, None)`` at the end of every accepted step.
  Returns:
    ``(x(t1), nfe)``: the shape of ``x``, and the exact number of score evaluations as an int32
    scalar array.
  """
  batch = x.shape[0]

  def vector_field(t, y, args):
    return probability_flow_drift(sde, score_fn, y, base.batch_times(t, batch))

  def on_step(t, y):
    base.notify(callback, jnp.int32(-1), y, t)
  solution = ode_solve.solve(vector_field, method, t0, t1, x, rtol=rtol, atol=atol,
                             max_steps=max_steps,
                             on_step=None if callback is None else on_step)
  return solution.y1, solution.nfe


def get_ode_sampler(sde: sde_lib.SDE, shape, inverse_scaler: base.InverseScaler, times,
                    denoise: bool = True, rtol: float = 1e-5, atol: float = 1e-5,
                    method: str = 'RK45', max_steps: int = 4096) -> base.Sampler:
  """Samples by solving the probability-flow ODE from ``times[0]`` (``T``, or below it from a
  given ``x_T``) to ``times[1] = eps``.

  Args:
    shape: ``(B, ...)`` of the samples.
    times: ``(t_start, eps)``; the steps between are the solver's own.
    denoise: finish with Tweedie's denoiser at ``eps``, ``(x + std^2 score) / alpha`` (one more
      evaluation). The released code took a noise-free reverse-diffusion step instead, which is
      the same map for VE and its first-order approximation for VP. On by default, as in every
      sampler here: without it a VP sample keeps the noise of ``p_eps`` (KL of the fitted
      Gaussian 0.85 instead of 0.62 on ``benchmarks/sampler_error.py``'s 64-D Gaussian).
    Others: as ``solve_probability_flow``.
  Returns:
    ``sampler(rng, score_fn, x_T=None, callback=None) -> (samples (B, ...), nfe int32
    scalar)`` (``base``; the callback runs at every accepted step with ``i = -1``).
  """
  shape = base.check_shape(shape)
  times, starts_at_T = schedule.check_times(sde, times, 'the ODE sampler', num_levels=2)
  t0, eps = (float(t) for t in times)
  _method(method)

  def sampler(rng, score_fn, x_T=None, callback=None):
    x = base.start(sde, rng, shape, x_T, starts_at_T)
    x, nfe = solve_probability_flow(sde, score_fn, x, t0, eps, rtol, atol, method, max_steps,
                                    callback)
    if denoise:
      x = schedule.data_prediction(sde, score_fn, x, base.batch_times(eps, shape[0]))
      nfe = nfe + 1
    return inverse_scaler(x), nfe

  return sampler


METHOD = base.Method('ode', get_ode_sampler, family='ode',
                     settings=lambda s, sde: dict(denoise=s.noise_removal, rtol=s.rtol,
                                                  atol=s.atol),
                     levels=base.interval_levels, steps_field='')


def get_ode_encoder(sde: sde_lib.SDE, rtol: float = 1e-5, atol: float = 1e-5,
                    method: str = 'RK45', eps: Optional[float] = None, max_steps: int = 4096):
  """Maps data to latents: the probability-flow ODE from ``eps`` to ``T`` (sec. 4.3,
  "manipulating latent representations"); the exact inverse of the ODE sampler without denoise.

  Returns:
    ``encoder(score_fn, x) -> (latents, nfe)`` for ``x: (B, ...)`` in model space at ``t = eps``.
  """
  eps = base.check_eps(sde, eps)
  _method(method)

  def encoder(score_fn, x):
    return solve_probability_flow(sde, score_fn, x, eps, sde.T, rtol, atol, method, max_steps)

  return encoder
