"""The loop every multistep probability-flow solver shares (DPM-Solver++, UniPC, DEIS / iPNDM).

A multistep solver evaluates the score once per level of a fixed grid ``T = t_0 > ... > t_{n-1}``
(spaced by ``schedule.time_steps``), keeps the last few model outputs, and extrapolates them with
a polynomial over the step. The methods differ only in what they store and in the step formula
(``Method``); this module owns the grid, the history, the warm-up orders and the end of the
trajectory, which is one of (``FINALS``):

* ``'extrapolate'`` (the default for VP and VE, ``DEFAULT_FINALS``): one more step, from
  ``sigma_{n-1} = sigma(eps)`` to ``sigma = 0``, at the method's full order and without another
  evaluation. Writing ``y = x / alpha`` and ``sigma = std / alpha`` (``schedule``), the
  probability-flow ODE has the exact solution (EDM eq. 3 with ``s = 1``, integrated with the
  factor ``1 / sigma``)

      y(sigma_t) = (sigma_t / sigma_s) y(sigma_s) + sigma_t int_{sigma_t}^{sigma_s} D / sigma^2,

  whose limit ``sigma_t -> 0`` is ``D(y(0); 0) = y(0)``: the final step evaluates at 0 the
  polynomial in ``sigma`` through the last data predictions (``Method.to_zero``). A polynomial in
  ``lambda = -log sigma``, the variable of the other steps, cannot be used here: ``lambda(0)`` is
  infinite. The result is a sample of the data distribution ``p_0`` for VP and sub-VP
  (``sigma(0) = 0``) and for VE too, whose ``sigma(0) = sigma_min > 0``: the score of
  ``p_data * N(0, sigma^2)`` is extrapolated below ``sigma_min``, which is what the released
  code's final Tweedie step targets as well.
* ``'tweedie'`` (the default for sub-VP): the released samplers' end: the grid reaches ``eps``
  in ``n`` steps and one more evaluation returns ``E[x(0) | x(eps)]``, a first-order step to
  ``sigma = 0``.
* with ``denoise=False``: ``x(eps)``, a sample of ``p_eps``, after ``n`` steps.

Shapes: ``x`` is ``(B, ...)`` float32; the history is ``(K, B, ...)``, newest first.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib
from score_sde.sampling import base, schedule

FINALS = ('extrapolate', 'tweedie')

# Four Gauss-Legendre points integrate the Lagrange basis of up to 8 nodes exactly.
_GL_NODES, _GL_WEIGHTS = (np.asarray(a, np.float32) for a in np.polynomial.legendre.leggauss(4))


def check_final(final: str) -> str:
  if final not in FINALS:
    raise ValueError(f'Unknown final step {final!r}; use one of {", ".join(FINALS)}.')
  return final


def nfe(num_steps: int, denoise: bool = True, final: str = 'extrapolate') -> int:
  """Score evaluations of a multistep sampler: one a level, plus one for ``'tweedie'``."""
  return num_steps + int(denoise and final == 'tweedie')


def step_orders(num_steps: int, order: int, lower_order_final: bool) -> jax.Array:
  """The order of each step: warm-up ``1, 2, ...`` (no history yet), then ``order``; with
  ``lower_order_final`` and fewer than 10 steps the last steps drop back to ``1, 2, ...`` too,
  because large final steps in ``lambda`` make high-order extrapolation unstable there."""
  orders = [min(order, i + 1) for i in range(num_steps)]
  if lower_order_final and num_steps < 10:
    orders = [min(o, num_steps - i) for i, o in enumerate(orders)]
  return jnp.asarray(orders, jnp.int32)


def lagrange_weights(nodes: jax.Array, count: jax.Array, at: jax.Array) -> jax.Array:
  """Weights ``w_j = L_j(at)`` of the Lagrange basis through the first ``count`` of ``nodes``.

  ``sum_j w_j f(nodes_j)`` is the value at ``at`` of the polynomial of degree ``count - 1``
  through those points; entries ``j >= count`` are 0, so padded histories contribute nothing.

  Args:
    nodes: ``(K,)`` float32, distinct in their first ``count`` entries.
    count: int32 scalar in ``[1, K]`` (may be traced).
    at: float32 scalar or ``(Q,)``.
  Returns:
    ``(K,)`` or ``(Q, K)`` float32.
  """
  k = nodes.shape[0]
  idx = jnp.arange(k)
  valid = idx < count
  # (j, m): the factors of L_j. Rows j >= count are masked too, not only zeroed at the end:
  # their nodes may repeat valid ones (clipped histories), and a zero denominator there would
  # make the gradient NaN (schedule_fit differentiates through these weights).
  use = valid[:, None] & valid[None, :] & (idx[:, None] != idx[None, :])
  denominators = jnp.where(use, nodes[:, None] - nodes[None, :], 1.)
  at = jnp.asarray(at, jnp.float32)[..., None, None]
  weights = jnp.prod(jnp.where(use, (at - nodes[None, :]) / denominators, 1.), axis=-1)
  return jnp.where(valid, weights, 0.)


def lagrange_integrals(nodes: jax.Array, count: jax.Array, lo: jax.Array,
                       hi: jax.Array) -> jax.Array:
  """``(K,)`` weights ``int_lo^hi L_j(s) ds`` (``lagrange_weights``'s basis), exact by
  Gauss-Legendre quadrature for up to 8 nodes; ``hi < lo`` integrates backwards."""
  half = 0.5 * (hi - lo)
  points = 0.5 * (hi + lo) + half * _GL_NODES
  return half * jnp.einsum('q,qk->k', _GL_WEIGHTS, lagrange_weights(nodes, count, points))


def combine(weights: jax.Array, history: jax.Array) -> jax.Array:
  """``sum_j weights_j history_j`` for ``history`` of shape ``(K, B, ...)``."""
  return jnp.tensordot(weights, history, axes=1)


@dataclasses.dataclass(frozen=True)
class Grid:
  """The levels of one solve, all ``(L,)`` float32: ``times``, ``alphas``, ``stds``,
  ``sigmas = std / alpha`` and ``lams = log(alpha / std)``."""
  times: jax.Array
  alphas: jax.Array
  stds: jax.Array
  sigmas: jax.Array
  lams: jax.Array

  @classmethod
  def of(cls, sde: sde_lib.SDE, times: jax.Array) -> 'Grid':
    alphas, stds = sde.marginal_coeffs(times)
    return cls(times, alphas, stds, stds / alphas, jnp.log(alphas) - jnp.log(stds))

  def back(self, values: jax.Array, i: jax.Array, k: int) -> jax.Array:
    """``(values[i], values[i-1], ..., values[i-k+1])``, indices clipped at 0: the grid
    values of a newest-first history of depth ``k``."""
    return values[jnp.maximum(i - jnp.arange(k), 0)]


@dataclasses.dataclass(frozen=True)
class Method:
  """What distinguishes one multistep solver.

  Attributes:
    max_order: the largest order it implements.
    depth: how many past model outputs the steps use.
    store: ``store(grid, i, x, x0) -> output`` kept in the history for level ``i``, given the
      state ``x`` and its data prediction ``x0`` (both ``(B, ...)``).
    step: ``step(grid, i, x, x_prev, history, order, prev_order) -> (x, x_next)``: the state at
      level ``i`` (a corrector may revise it now that ``history[0]`` is known; ``x_prev`` is the
      state at ``i - 1`` and ``prev_order`` the order of the step that reached ``i``) and the
      step of ``order`` to level ``i + 1``.
    to_zero: ``to_zero(grid, i, x, history, order) -> y(0)``: the step of ``order`` from level
      ``i`` (the last) to ``sigma = 0``, in ``y = x / alpha``.
  """
  max_order: int
  depth: int
  store: Callable
  step: Callable
  to_zero: Callable


def cap_third_order(orders: jax.Array, lams: jax.Array, max_step: Optional[float]) -> jax.Array:
  """``orders`` with 3 and above lowered to 2 on steps longer than ``max_step`` in ``lambda``.

  A third-order multistep step extrapolates a parabola over the previous two steps; when those
  steps are long (about 1 in ``lambda`` at 10 steps) the extrapolation overshoots and 3M is worse
  than 2M (``benchmarks/sampler_error.py``; docs/samplers.md, the exact-score tables).

  Args:
    orders: ``(S,)`` int32, one per step.
    lams: ``(S + 1,)`` ``lambda`` of the grid levels, or ``(S,)`` when the last step goes to
      ``sigma = 0`` (that step, without a level to end on, is not capped).
    max_step: the longest step that keeps order 3; ``None`` caps nothing.
  """
  if max_step is None:
    return orders
  steps = jnp.diff(lams)[:orders.shape[0]]
  steps = jnp.pad(steps, (0, orders.shape[0] - steps.shape[0]))
  return jnp.where((orders >= 3) & (steps > max_step), 2, orders)


def levels(num_steps: int, settings) -> int:
  """Grid levels of ``num_steps`` steps: ``N`` when the last step goes to ``sigma = 0``
  (``denoise`` with ``final='extrapolate'``), else ``N + 1``. ``settings``: the builder's
  keywords (``denoise``, ``final``; absent means the defaults, True and 'extrapolate')."""
  to_zero = settings.get('denoise', True) and settings.get('final') in (None, '', 'extrapolate')
  return num_steps if to_zero else num_steps + 1


# The end (``FINALS``) per SDE where none is given. Measured by benchmarks/final_step.py
# (docs/final_step.md): extrapolating to sigma = 0 wins on VP and VE; on sub-VP, whose std at
# eps = 1e-3 is 1e-4, the two agree from 20 evaluations and the Tweedie step wins at 10.
DEFAULT_FINALS = {'VPSDE': 'extrapolate', 'subVPSDE': 'tweedie', 'VESDE': 'extrapolate'}


def default_final(sde) -> str:
  """``DEFAULT_FINALS`` for ``sde`` (by class; 'extrapolate' for an SDE it does not list)."""
  return DEFAULT_FINALS.get(type(sde).__name__, 'extrapolate')


def get_sampler(method: Method, name: str, sde: sde_lib.SDE, shape,
                inverse_scaler: base.InverseScaler, times, order: int,
                lower_order_final: bool, denoise: bool, final: Optional[str],
                order3_max_step: Optional[float] = None) -> base.Sampler:
  """``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe(N, denoise, final))``
  running ``method`` (called ``name`` in errors) over the grid ``times``
  (``schedule.check_times``; ``N`` steps, ``levels``): orders from ``step_orders``, lowered by
  ``cap_third_order`` on the grid, and ``order`` for the step to ``sigma = 0`` (module
  docstring for the grid and the end). ``final`` None or '': the SDE's (``default_final``).
  The callback sees each level's state, time and data prediction (``base``)."""
  if order not in range(1, method.max_order + 1):
    allowed = ', '.join(str(o) for o in range(1, method.max_order))
    raise ValueError(f'{name} order={order} must be {allowed} or {method.max_order}.')
  shape = base.check_shape(shape)
  final = check_final(final or default_final(sde))
  end = ('the step to sigma = 0' if denoise and final == 'extrapolate' else
         'a final Tweedie step' if denoise else 'no denoising')
  times, starts_at_T = schedule.check_times(sde, times, f'{name} with {end}')
  num_levels = times.shape[0]
  num_steps = num_levels - (levels(1, {'denoise': denoise, 'final': final}) - 1)
  num_steps = base.check_steps(num_steps, f'{name} steps (levels of times, less one without '
                                          'the step to sigma = 0)')
  orders = step_orders(num_steps, order, lower_order_final)
  to_zero = num_levels == num_steps  # The last step goes to sigma = 0.
  batch = shape[0]

  def sampler(rng, score_fn, x_T=None, callback=None):
    grid = Grid.of(sde, jnp.asarray(times))
    capped = cap_third_order(orders, grid.lams, order3_max_step)
    x = base.start(sde, rng, shape, x_T, starts_at_T)

    def evaluate(i, x, history):
      x0 = schedule.data_prediction(sde, score_fn, x, base.batch_times(grid.times[i], batch))
      base.notify(callback, i, x, grid.times[i], x0)
      new = method.store(grid, i, x, x0)
      return jnp.concatenate([new[None], history[:-1]])

    def body(i, carry):
      x, x_prev, history = carry
      history = evaluate(i, x, history)
      x, x_next = method.step(grid, i, x, x_prev, history, capped[i],
                              capped[jnp.maximum(i - 1, 0)])
      return x_next, x, history

    history = jnp.zeros((method.depth,) + shape, jnp.float32)
    x, x_prev, history = jax.lax.fori_loop(0, num_levels - 1, body, (x, x, history))
    last = num_levels - 1
    if to_zero:
      history = evaluate(last, x, history)
      count = min(order, num_levels)
      alpha0, _ = sde.marginal_coeffs(jnp.float32(0.))
      x = alpha0 * method.to_zero(grid, last, x, history, jnp.int32(count))
    elif denoise:
      x0 = schedule.data_prediction(sde, score_fn, x, base.batch_times(grid.times[last], batch))
      base.notify(callback, last, x, grid.times[last], x0)
      x = x0
    return inverse_scaler(x), nfe(num_steps, denoise, final)

  return sampler


def defaults(sde) -> dict:
  """``base.Method.defaults`` of every multistep solver: the SDE's ``final``."""
  return {'final': default_final(sde)}


def config_settings(s, sde, default_order: int) -> dict:
  """The settings every multistep solver reads from ``config.sampling``: ``order`` (0:
  ``default_order``), ``final`` ('': ``default_final``) and ``denoise``."""
  return dict(order=int(s.order) or default_order, final=str(s.final_step) or default_final(sde),
              denoise=s.noise_removal)


def store_data(grid: Grid, i: jax.Array, x: jax.Array, x0: jax.Array) -> jax.Array:
  """``store`` for methods that extrapolate the data prediction: ``x0`` itself."""
  del grid, i, x
  return x0


def data_to_zero(grid: Grid, i: jax.Array, x: jax.Array, history: jax.Array,
                 order: jax.Array) -> jax.Array:
  """``to_zero`` for methods that store data predictions: the polynomial in ``sigma`` through the
  last ``order`` of them, at ``sigma = 0`` (module docstring); order 1 is Tweedie's ``x0``."""
  del x
  nodes = grid.back(grid.sigmas, i, history.shape[0])
  return combine(lagrange_weights(nodes, order, jnp.float32(0.)), history)
