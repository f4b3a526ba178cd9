"""A time grid fitted to the sampler that steps on it: ``schedule='fitted'``.

In the spirit of "Align Your Steps" (Sabour et al. 2024), the grid is chosen to minimise the
sampler's own error, not by a formula. What is minimised is the error of the very sampler
(method, order, end) on a proxy distribution whose probability-flow map is nonlinear and
computed to high accuracy, by gradient descent through the sampler:

* **Proxy.** Independent coordinates, each a two-mode mixture ``N(-m, c^2) / 2 + N(m, c^2) / 2``,
  with offsets ``m`` in ``MODE_OFFSETS`` (0 is a Gaussian) and widths ``c`` geometric from 0.01
  to 0.5 (``WIDTHS``). Those are the scales of data in ``[-1, 1]``, from 8-bit detail to modes
  a few units apart. The score is closed-form. A Gaussian proxy alone, whose flow is linear, was
  tried first: it put nearly every level at small noise, and it tripled DPM-Solver++ 2M's
  error on the 32-D mixture at 10 steps (``benchmarks/sampler_error.py``). Mode separation is
  what calls for levels at large noise.
* **Reference.** The same ``x(T)`` draws are carried to the same end (``denoise``, ``final``) by
  DPM-Solver++ 3M on 400 logSNR steps, accurate far below the errors fitted here except on
  the basins' boundaries (below).
* **Loss.** The mean of ``log(1 + ((x - x_ref) / c)^2)`` over draws and coordinates: each
  coordinate's error relative to its own width, the scale that a KL of the samples sees, and
  robust to the draws that end in the other mode. Those lie on the basins' boundary, where the
  flow is chaotic: even the 400- and 8000-step references disagree there, by a mean squared
  relative error of 14. With the plain square they dominated the loss.
* **Grid.** ``lambda = log(alpha / std)`` from ``lambda(T)`` to ``lambda(eps)``; the steps are a
  softmax of free logits times the whole range, so every iterate is a decreasing grid with its
  ends fixed. It starts from logSNR (logits 0) and takes 300 Adam steps. The draws come from a
  fixed key, so the fit is deterministic.

Cost: one compilation of the sampler's gradient, then the steps. On a 2-core CPU that is
3-20 s at 10-20 steps and 10-42 s at 100, once per sampler build (``get_sampler``); the sampling
itself costs the same as on any grid. ``benchmarks/sampler_error.py`` measures what it buys
(docs/samplers.md): most at 10-15 evaluations; from 35 on it can be worse than the formulas.
"""
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde import sde_lib
from score_sde.sampling import base, dpm_solver, schedule

MODE_OFFSETS = (0., 0.5, 1., 2., 4.)
WIDTHS = tuple(float(c) for c in np.geomspace(0.01, 0.5, 8))
NUM_DRAWS = 512
ITERATIONS = 300
LEARNING_RATE = 0.05
REFERENCE_STEPS = 400

# build(shape, times) -> sampler(rng, score_fn) -> (samples, nfe): the sampler being fitted, on
# a given (possibly traced) grid, in model space.
Builder = Callable[..., base.Sampler]


def proxy_scales():
  """``(m, c)``: float32 ``(K,)`` offsets and widths of the proxy's coordinates."""
  m, c = np.meshgrid(MODE_OFFSETS, WIDTHS, indexing='ij')
  return jnp.asarray(m.ravel(), jnp.float32), jnp.asarray(c.ravel(), jnp.float32)


def proxy_score_fn(sde: sde_lib.SDE) -> sde_lib.ScoreFn:
  """The exact score of the proxy perturbed by ``sde``: ``(B, K), (B,) -> (B, K)``. Each mode
  ``N(+-m, c^2)`` becomes ``N(+-alpha m, alpha^2 c^2 + std^2)``."""
  m, c = proxy_scales()

  def score_fn(x, t):
    alpha, std = sde.marginal_coeffs(t)
    alpha, std = alpha[:, None], std[:, None]
    var = alpha ** 2 * c ** 2 + std ** 2
    # Responsibility of the +m mode: the sigmoid of the two modes' log-density difference.
    plus = jax.nn.sigmoid(2. * alpha * m * x / var)
    return (alpha * m * (2. * plus - 1.) - x) / var

  return score_fn


def _times_of_lams(sde: sde_lib.SDE, lams: jax.Array) -> jax.Array:
  """``t(lambda)`` with its exact derivative: the bisection's value, then one Newton step whose
  value change is nil and whose gradient is the implicit function's, ``1 / lambda'(t)``."""
  t = jax.lax.stop_gradient(schedule.t_of_half_log_snr(sde, lams))
  slope = jax.vmap(jax.grad(lambda u: schedule.half_log_snr(sde, u)))(t)
  return t + (lams - schedule.half_log_snr(sde, t)) / jax.lax.stop_gradient(slope)


def fit_times(build: Builder, sde: sde_lib.SDE, num_levels: int, eps: float, denoise: bool,
              final: str) -> np.ndarray:
  """The grid of ``num_levels`` times from ``sde.T`` to ``eps`` that minimises ``build``'s
  error on the proxy (module docstring).

  Args:
    build: ``build(shape, times) -> sampler``, the sampler being fitted on the grid ``times``
      (``(num_levels,)``, traced during the fit), in model space.
    sde: the forward SDE.
    num_levels: levels of the sampler's grid (``base.Method.levels``); 2 or fewer have nothing
      to fit and are returned as ``[T, eps]`` / ``[T]``.
    eps: the last time, in ``(0, T)``.
    denoise, final: the sampler's end, which the reference shares.
  Returns:
    float32 ``(num_levels,)``, decreasing from ``sde.T`` to ``eps``.
  """
  # Eagerly, even when the sampler is built inside a jit trace: the grid is a constant of it.
  with jax.ensure_compile_time_eval():
    return _fit(build, sde, num_levels, eps, denoise, final)


def _fit(build, sde, num_levels, eps, denoise, final):
  if num_levels <= 2:
    return np.asarray(schedule.time_steps(sde, num_levels, eps, 'logSNR'), np.float32)
  m, c = proxy_scales()
  shape = (NUM_DRAWS, m.shape[0])
  score_fn = proxy_score_fn(sde)
  rng = jax.random.key(0)
  reference_settings = dict(denoise=denoise, final=final)
  reference = dpm_solver.get_dpm_solver_sampler(
      sde, shape, base.identity, schedule.time_steps(
          sde, dpm_solver.METHOD.levels(REFERENCE_STEPS, reference_settings), eps, 'logSNR'),
      order=3, **reference_settings)
  x_ref = jax.jit(lambda: reference(rng, score_fn)[0])()
  lam_T, lam_eps = (schedule.half_log_snr(sde, jnp.float32(t)) for t in (sde.T, eps))

  def grid(logits):
    fractions = jnp.concatenate([jnp.zeros((1,)), jnp.cumsum(jax.nn.softmax(logits))])
    times = _times_of_lams(sde, lam_T + fractions * (lam_eps - lam_T))
    return times.at[0].set(sde.T).at[-1].set(eps)

  def loss(logits):
    x = build(shape, grid(logits))(rng, score_fn)[0]
    return jnp.mean(jnp.log1p(((x - x_ref) / c) ** 2))

  optimizer = optax.adam(LEARNING_RATE)

  @jax.jit
  def fit():
    def step(carry, _):
      logits, state = carry
      grads = jax.grad(loss)(logits)
      updates, state = optimizer.update(grads, state)
      return (optax.apply_updates(logits, updates), state), None

    logits = jnp.zeros((num_levels - 1,), jnp.float32)
    (logits, _), _ = jax.lax.scan(step, (logits, optimizer.init(logits)), None,
                                  length=ITERATIONS)
    return grid(logits)

  times = np.array(fit(), np.float32)
  # The ends exactly, as every named schedule has them.
  times[0], times[-1] = sde.T, eps
  return times


def fit_grid(method: base.Method, sde: sde_lib.SDE, num_levels: int, eps: Optional[float],
             settings: Dict[str, Any]) -> np.ndarray:
  """The fitted grid (``schedule='fitted'``) of a fixed-step sampler, to pass as its ``times``.

  Args:
    method: the sampler's registry entry (``methods.METHODS``); its builder is fitted in its
      ``deterministic`` form (Heun's churn would make the loss random).
    sde: the forward SDE.
    num_levels: the levels of its grid (``method.levels``).
    eps: the last time (None: the SDE's ``sampling_eps``).
    settings: the builder's keywords (``order``, ``final``, ``denoise``, ...); its end
      (``denoise``, ``final``: Tweedie's step for a sampler without one) is the reference's.
  Returns:
    float32 ``(num_levels,)``, decreasing from ``sde.T`` to ``eps``.
  """
  eps = base.check_eps(sde, eps)
  settings = method.deterministic(dict(settings))
  denoise = settings.get('denoise', True)

  def build(shape, times):
    return method.build(sde, shape, base.identity, times, **settings)

  return fit_times(build, sde, num_levels, eps, denoise, settings.get('final') or 'tweedie')
