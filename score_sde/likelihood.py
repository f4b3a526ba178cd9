"""Exact likelihoods, in bits per dimension, through the probability-flow ODE (Song et al. 2021,
sec. 4.3 and app. D.2).

The probability-flow ODE (eq. 13) ``dx/dt = f~(x, t) = f(x, t) - 1/2 g(t)^2 score(x, t)`` carries
``p_t`` to ``p_s`` deterministically, so the instantaneous change of variables (Chen et al. 2018)
gives the log-density of a point ``x`` put at time ``eps``:

    log p_eps(x) = log p_T(z) + int_eps^T div f~(x(t), t) dt,   x(eps) = x, z = x(T),

because ``d log p_t(x(t)) / dt = -div f~(x(t), t)`` along a trajectory. ``(x, delta_logp)`` is
integrated together, forward from ``eps`` to ``T``, by an adaptive Runge-Kutta solver (diffrax,
inside ``jit``). The divergence is exact (a full Jacobian trace; small dimensions only) or the
Hutchinson-Skilling estimate ``v^T (d f~ / dx) v`` with ``E[v v^T] = I``, one Jacobian-vector
product per probe ``v``; ``v`` stays fixed during a solve, which makes the integral an unbiased
estimate of ``int div f~ dt`` (the quadratic form ``v^T M v`` of ``M = int d f~/dx dt``).

With one probe the estimate of a single point's bits/dim is noisy (about 0.3 bits/dim on a 64-D
Gaussian; only a dataset mean is accurate). ``num_nodes > 0`` trades the augmented solve for a
trajectory quadrature whose probes are independent from node to node (``flow_with_quadrature``):
the same integral, with its probe noise averaged over the nodes.

Bits per dimension of 8-bit images (how ``bits_per_dim`` converts, derived in its docstring):

    bpd = -log p_y(y) / (D ln 2) - log2 |dy/dx| / D + 8    (+7 for centered data, +8 otherwise).
"""
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from score_sde import sde_lib
from score_sde.common import parallel
from score_sde.sampling import base, ode as sampling_ode, ode_solve, schedule

HUTCHINSON_TYPES = ('rademacher', 'gaussian', 'exact')
UNITS = ('bpd', 'nats')

# The estimator for one example's likelihood (``Pipeline.bits_per_dim``): the control variate
# (``flow_with_control_variate``) with 96 nodes of 4 probes: ``benchmarks/likelihood_error.py``
# measures its error per point and its bias against the plain quadrature and one fixed probe
# (docs/likelihood.md, "Per-example likelihoods").
PER_EXAMPLE_NODES, PER_EXAMPLE_PROBES = 96, 4

# The reference evaluates on uniformly dequantized data, going 5 times over the test split (fresh
# dequantization and probe noise each time) and once over the training split.
NUM_REPEATS = {'test': 5, 'train': 1}


class FlowResult(NamedTuple):
  """What ``flow_to_prior`` returns.

  Attributes:
    z: ``x(T)``, the latent code, shape and dtype of the data.
    delta_logp: ``(P, B)`` float32, ``int_eps^T div f~ dt`` per probe and example (``P = 1`` for
      the exact divergence).
    nfe: int32 scalar, the number of score-function evaluations (batched calls) of the solve.
  """
  z: jax.Array
  delta_logp: jax.Array
  nfe: jax.Array


def bits_per_dim(logp: jax.Array, dim: int, centered: bool = False) -> jax.Array:
  """Bits/dim of 8-bit data from the model's log-density in model space (the paper's metric).

  Derivation. Let ``k in {0, ..., 255}^D`` be the pixels and ``u ~ U[0, 1)^D``. The pipeline
  dequantizes ``x = (k + u) / 256 in [0, 1)^D`` and the model sees ``y = scaler(x)``: ``y = x``,
  or ``y = 2 x - 1`` when ``centered``. Write ``s = 256 x = k + u in [0, 256)^D`` (the 8-bit
  scale, where a pixel bin has width one). Changes of variables give
  ``p_x(x) = p_y(y) |dy/dx|`` and ``p_s(s) = p_x(x) 256^-D``. The discrete model the density
  defines, ``P(k) = int_[0,1)^D p_s(k + u) du``, is bounded by Jensen's inequality:

      -log2 P(k) <= E_u[-log2 p_s(k + u)] = E_u[-log2 p_y(y) - log2 |dy/dx|] + 8 D,

  so per dimension ``bpd = -log p_y(y) / (D ln 2) - log2|dy/dx| / D + 8`` is, in expectation over
  ``u``, an upper bound on the discrete negative log-likelihood in bits. With ``y = 2 x - 1``,
  ``log2 |dy/dx| = D``: ``bpd = -log p_y / (D ln 2) + 7`` (the reference's ``+ 7``, written there
  as ``log2(d inverse_scaler / dy) + 8``); with ``y = x`` it is ``+ 8``.

  Without dequantization the data sit on the 256^D grid points, and a continuous density can pile
  up mass around them: ``p_s`` there grows without bound, and so ``-log2 p_s`` (and bpd) can go
  below zero. It is then no bound on ``-log2 P(k) >= 0``. With dequantization ``E_u[bpd] >= 0``,
  though a single draw of ``u`` (or of the Hutchinson probe) may still land below zero.

  Args:
    logp: ``log p_y(y)`` in nats, any shape (typically ``(B,)``), the density of model space.
    dim: ``D``, the number of dimensions of one example (``H W C``).
    centered: whether model space is ``[-1, 1]`` (``y = 2 x - 1``) rather than ``[0, 1]``.
  Returns:
    bits/dim, float of the shape of ``logp``.
  """
  if int(dim) < 1:
    raise ValueError(f'dim={dim} must be the positive number of dimensions of one example.')
  log2_jacobian_per_dim = 1. if centered else 0.  # log2 |dy/dx| / D.
  return -logp / (dim * np.log(2.)) - log2_jacobian_per_dim + 8.


def inverse_scaler_log_det(inverse_scaler: Callable, y: jax.Array) -> jax.Array:
  """``log |det dx/dy|`` per example, ``(B,)``, for an elementwise ``x = inverse_scaler(y)``.

  The Jacobian of an elementwise map is diagonal, and one JVP with a tangent of ones returns that
  diagonal; this is the reference's "gradient of the inverse data normalizer", at every pixel.
  """
  _, diag = jax.jvp(inverse_scaler, (y,), (jnp.ones_like(y),))
  return jnp.sum(jnp.log(jnp.abs(diag)).reshape(y.shape[0], -1), axis=-1)


def sample_probes(rng: jax.Array, shape: Tuple[int, ...], hutchinson_type: str,
                  num_probes: int = 1, dtype=jnp.float32) -> Optional[jax.Array]:
  """Hutchinson probes ``v`` with ``E[v v^T] = I``: ``(num_probes, *shape)``, or ``None`` for
  ``'exact'``. Drawn at the global batch shape, so they do not depend on the device count."""
  kind = _check_hutchinson_type(hutchinson_type)
  if kind == 'exact':
    return None
  full_shape = (int(num_probes),) + tuple(shape)
  if kind == 'gaussian':
    return jax.random.normal(rng, full_shape, dtype)
  return jax.random.rademacher(rng, full_shape, dtype)


def _check_hutchinson_type(hutchinson_type: str) -> str:
  kind = str(hutchinson_type).lower()
  if kind not in HUTCHINSON_TYPES:
    raise ValueError(f'Unknown hutchinson_type {hutchinson_type!r}; use one of {HUTCHINSON_TYPES}.')
  return kind


def _sum_event(x: jax.Array) -> jax.Array:
  """Sums all but the two leading (probe, batch) axes."""
  return jnp.sum(x.reshape(x.shape[:2] + (-1,)), axis=-1)


def drift_and_divergence(drift_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                         probes: Optional[jax.Array]) -> Tuple[jax.Array, jax.Array]:
  """``f(x)`` and its divergence per example, for a batch-separable ``f``, with one primal call.

  ``jax.linearize`` evaluates ``f`` once and returns its Jacobian-vector product, which is then
  mapped over the probes (``div ~ v^T J v``, the Hutchinson-Skilling estimator) or over the ``D``
  coordinate directions (``div = sum_i e_i^T J e_i``, exact; ``D`` JVPs, for small ``D``).

  Args:
    drift_fn: ``(B, ...) -> (B, ...)``; example ``b`` of the output depends on example ``b`` only.
    x: ``(B, ...)``.
    probes: ``(P, B, ...)`` or ``None`` for the exact divergence.
  Returns:
    ``f(x)`` of the shape of ``x``, and the divergence ``(P, B)`` (``(1, B)`` when exact).
  """
  drift, jvp_fn = jax.linearize(drift_fn, x)
  if probes is not None:
    return drift, _sum_event(probes * jax.vmap(jvp_fn)(probes))
  batch, dim = x.shape[0], int(np.prod(x.shape[1:]))
  basis = jnp.broadcast_to(jnp.eye(dim, dtype=x.dtype)[:, None], (dim, batch, dim))
  columns = jax.vmap(jvp_fn)(basis.reshape((dim,) + x.shape))  # columns[i] = J e_i.
  trace = jnp.einsum('ibi->b', columns.reshape(dim, batch, dim))
  return drift, trace[None]


def flow_to_prior(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x: jax.Array,
                  probes: Optional[jax.Array] = None, *, rtol: float = 1e-5, atol: float = 1e-5,
                  method: str = 'rk45', eps: float = 1e-5, max_steps: int = 4096) -> FlowResult:
  """Solves the probability-flow ODE (eq. 13) from ``x`` at ``t = eps`` to ``T``, with the change
  in log-density ``int_eps^T div f~(x(t), t) dt`` (so ``log p_eps(x) = log p_T(z) + delta_logp``).

  Steps are controlled on the RMS error, relative to ``atol + rtol |y|``, of the whole augmented
  state ``(x, delta_logp)`` of the batch, like the reference's single scipy solve; a result thus
  depends on the rest of its batch, within the tolerance. Jittable, and shardable along the batch.

  Args:
    sde: the forward SDE of ``sde_lib``.
    score_fn: ``score_fn(x (B, ...), t (B,)) -> (B, ...)``.
    x: ``(B, ...)`` float32, data in model space.
    probes: ``(P, B, ...)`` Hutchinson probes (``sample_probes``), or ``None`` for the exact
      divergence.
    rtol, atol: tolerances of the PID step-size controller.
    method: an ``ode_solve.SOLVERS`` name: ``'rk45'`` (= ``'dopri5'``, the reference's and
      the ODE sampler's; at 1e-5 it takes 10-15% fewer evaluations than ``'tsit5'`` and errs
      by < 6e-5 bits/dim, ``benchmarks/likelihood_error.py``), ``'tsit5'``, ...
    eps: the start time, in ``(0, T)``.
    max_steps: a solve needing more steps fails: its ``z`` and ``delta_logp`` are NaN.
  """
  _check_solve_args(sde, method, rtol, atol, eps)
  if probes is not None and probes.shape[1:] != x.shape:
    raise ValueError(f'probes of shape {probes.shape} do not match data {x.shape}; '
                     'expected (num_probes, *data.shape).')
  solution = _augmented_solve(sde, score_fn, x, probes, rtol=rtol, atol=atol, method=method,
                              eps=eps, max_steps=max_steps)
  # NaN marks a failed solve (see ode_solve.solve on why it does not raise).
  z, delta_logp = jax.tree.map(lambda leaf: jnp.where(solution.ok, leaf, jnp.nan), solution.y1)
  return FlowResult(z, delta_logp, solution.nfe)


def _augmented_solve(sde, score_fn, x, probes, *, rtol, atol, method, eps, max_steps,
                     save_at=None) -> ode_solve.Solution:
  """The solve of ``(x, delta_logp)`` from ``eps`` to ``T``, probes fixed along it."""
  def vector_field(t, state, probes):
    return drift_and_divergence(lambda y: _drift(sde, score_fn, t, y), state[0], probes)

  num_probes = 1 if probes is None else probes.shape[0]
  y0 = (x, jnp.zeros((num_probes, x.shape[0]), jnp.float32))
  return ode_solve.solve(vector_field, method, eps, sde.T, y0, probes, rtol=rtol, atol=atol,
                         max_steps=max_steps, throw=False, save_at=save_at)


def _drift(sde, score_fn, t, y):
  """The probability-flow drift (eq. 13) at a scalar time ``t`` for the batch ``y``."""
  return sampling_ode.probability_flow_drift(sde, score_fn, y, base.batch_times(t, y.shape[0]))


class Quadrature(NamedTuple):
  """Gauss-Legendre nodes for ``int_eps^T h(t) dt``, in ``lambda = log(alpha / std)``.

  Attributes:
    times: ``(M,)`` float32, increasing, inside ``(eps, T)``.
    weights: ``(M,)`` float32, ``w_m |dt / dlambda|(t_m)`` with ``w_m`` the Gauss-Legendre
      weights of the lambda interval, so that ``sum_m weights_m h(times_m)`` is the integral.
  """
  times: jax.Array
  weights: jax.Array


def divergence_quadrature(sde: sde_lib.SDE, eps: float, num_nodes: int) -> Quadrature:
  """``num_nodes``-point Gauss-Legendre rule on ``[eps, T]`` after the change of variable to the
  half log-SNR ``lambda(t)`` (``schedule.half_log_snr``).

  In ``lambda`` the divergence of the probability-flow drift is smooth over the whole interval:
  a direction of data variance ``s^2`` contributes about ``-sigma^2 / (s^2 + sigma^2) dlambda``
  with ``sigma = exp(-lambda)``, a sigmoid in ``lambda``, where in ``t`` it is concentrated near
  ``eps``. Evaluated eagerly (it is a constant of the likelihood function).
  """
  num_nodes = int(num_nodes)
  if num_nodes < 1:
    raise ValueError(f'num_nodes={num_nodes} must be >= 1.')
  with jax.ensure_compile_time_eval():  # Constants, even when built inside a jitted function.
    lam_start = float(schedule.half_log_snr(sde, jnp.float32(eps)))
    lam_end = float(schedule.half_log_snr(sde, jnp.float32(sde.T)))
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    lam = lam_end + (lam_start - lam_end) * (nodes + 1.) / 2.  # Increasing lambda: decreasing t.
    times = schedule.t_of_half_log_snr(sde, jnp.asarray(lam[::-1], jnp.float32))
    dlam_dt = jax.vmap(jax.grad(lambda t: schedule.half_log_snr(sde, t)))(times)
    weights = (weights[::-1] * (lam_start - lam_end) / 2.
               / np.abs(np.asarray(dlam_dt, np.float64)))
  return Quadrature(jnp.asarray(times, jnp.float32), jnp.asarray(weights, jnp.float32))


def flow_with_quadrature(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x: jax.Array,
                         rng: jax.Array, quadrature: Quadrature,
                         hutchinson_type: str = 'rademacher', num_probes: int = 1, *,
                         rtol: float = 1e-5, atol: float = 1e-5, method: str = 'rk45',
                         eps: float = 1e-5, max_steps: int = 4096) -> FlowResult:
  """``flow_to_prior``'s integral with less probe noise: the probability-flow ODE (eq. 13) is
  solved for ``x`` alone, and ``int_eps^T div f~(x(t), t) dt`` is the quadrature
  ``sum_m w_m div f~(x(t_m), t_m)``, each node with its own probes.

  Why. With probes fixed for the whole solve (the reference, ``flow_to_prior``) the estimate is
  ``v^T M v`` with ``M = int d f~/dx dt``: one quadratic form, whose noise does not shrink with
  the number of steps. Independent probes at every evaluation of an adaptive Runge-Kutta solve
  would not help either: its weights within a step are large and of both signs (Tsit5's sum of
  squares is about 18 times the square of their sum), and the noise would drive the step control.
  Here the solver steps onto every node, so ``x(t_m)`` is a step's end (deterministic given
  ``x``) and the quadrature with probes ``v_m`` drawn independently per node is an unbiased
  estimate of the exact-divergence quadrature, with variance ``sum_m w_m^2 Var_m`` in place of that of one
  quadratic form: on the benchmark's 32-D mixture (VP, ``benchmarks/likelihood_error.py``) a
  point's bits/dim spread goes from 0.31 (fixed probe) to 0.13 at ``M = 32`` and 0.09 at 64,
  about as ``1 / sqrt(M)``. The quadrature's own error falls quickly
  with ``M`` (``divergence_quadrature`` on why ``lambda`` is the variable).

  Stepping onto the nodes matters for networks: near the data the score varies on the scale of
  ``sigma(t)``, and the solver's dense interpolant, 4e-3 off at ``t = 2e-4`` on the embedded
  config's network (3000 steps), gave divergences 5% low there and bits/dim 0.27 too high per
  image at ``M = 96`` (0.23-0.25 at ``M`` = 32-96 at step 1000). Read off the steps' ends, the same exact-divergence quadrature came
  within 3 nats (0.016 bits/dim) of the adaptive solve at ``M = 32``. What is left is the
  quadrature's assumption that the divergence is smooth in ``lambda``; with a network, prefer
  ``flow_with_control_variate``, unbiased whatever the score.

  Cost: the solve evaluates the score only (no Jacobian-vector product), with a step ending on
  each node, then every node one score with ``P`` JVPs (``drift_and_divergence``); ``nfe``
  counts both.

  Args:
    sde, score_fn, x, rtol, atol, method, eps, max_steps: as for ``flow_to_prior`` (the step
      control reads ``x`` alone).
    rng: typed key; node ``m`` draws its probes from ``fold_in(rng, m)``, at the global batch
      shape (device-count independent).
    quadrature: ``divergence_quadrature(sde, eps, M)``.
    hutchinson_type: ``'rademacher'``, ``'gaussian'`` or ``'exact'`` (``D`` JVPs per node).
    num_probes: ``P`` probes per node, sharing the node's score evaluation.
  Returns:
    ``FlowResult`` with ``delta_logp`` of shape ``(P, B)`` (``(1, B)`` when exact).
  """
  _check_solve_args(sde, method, rtol, atol, eps)
  kind = _check_hutchinson_type(hutchinson_type)

  solution = ode_solve.solve(lambda t, y, args: _drift(sde, score_fn, t, y), method, eps, sde.T,
                             x, rtol=rtol, atol=atol, max_steps=max_steps, throw=False,
                             save_at=quadrature.times, step_to_saves=True)
  delta_logp = _node_quadrature(sde, score_fn, rng, quadrature, solution.ys, kind, num_probes)
  z, delta_logp = jax.tree.map(lambda leaf: jnp.where(solution.ok, leaf, jnp.nan),
                               (solution.y1, delta_logp))
  return FlowResult(z, delta_logp, solution.nfe + quadrature.times.shape[0])


def _node_quadrature(sde, score_fn, rng, quadrature, xs, kind, num_probes, path_probes=None):
  """``sum_m w_m v_m^T J_m v_m`` over the nodes' states ``xs`` ``(M, B, ...)``, ``(P, B)``, with
  ``P`` fresh probes per node from ``fold_in(rng, m)`` (``(1, B)`` exact). With
  ``path_probes`` ``(1, B, ...)``, also ``sum_m w_m u^T J_m u`` for that one probe ``u``, from the
  same linearization: the pair ``(fresh (P, B), path (1, B))``."""
  shape = xs.shape[1:]

  def node_divergence(node):
    index, t, x_t = node
    probes = sample_probes(jax.random.fold_in(rng, index), shape, kind, num_probes, xs.dtype)
    if path_probes is not None:
      probes = jnp.concatenate([probes, path_probes])
    return drift_and_divergence(lambda y: _drift(sde, score_fn, t, y), x_t, probes)[1]

  num_nodes = quadrature.times.shape[0]
  divergences = jax.lax.map(node_divergence,
                            (jnp.arange(num_nodes), quadrature.times, xs))  # (M, P[+1], B)
  integrals = jnp.einsum('m,mpb->pb', quadrature.weights, divergences)
  return integrals if path_probes is None else (integrals[:-1], integrals[-1:])


def flow_with_control_variate(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x: jax.Array,
                              rng: jax.Array, quadrature: Quadrature,
                              hutchinson_type: str = 'rademacher', num_probes: int = 1, *,
                              rtol: float = 1e-5, atol: float = 1e-5, method: str = 'rk45',
                              eps: float = 1e-5, max_steps: int = 4096) -> FlowResult:
  """``flow_to_prior``'s integral, unbiased for any score function, with the node quadrature's
  low noise wherever that quadrature is accurate:

      delta_logp = int u^T J(t) u dt  -  sum_m w_m u^T J_m u  +  sum_m w_m v_m^T J_m v_m

  with ``J = d f~/dx`` along the trajectory, ``u`` one probe held along the reference's adaptive
  solve (``flow_to_prior``, its first term) and ``v_m`` fresh probes per node
  (``flow_with_quadrature``, its last). The last two terms have the same expectation, so the
  estimate is unbiased whatever the quadrature's error; its noise is that of the fresh-probe
  quadrature plus that of ``u^T E u``, ``E`` the quadrature's error matrix, which vanishes as the
  quadrature becomes exact.

  Why. The plain quadrature is only as good as its node states and its smoothness assumption,
  and a network tests both. This reads the nodes' states off the solver's dense interpolant
  (their error only adds noise here, both node terms using the same states), keeps the
  reference's adaptive solve as the estimate's expectation, and costs one JVP per stage more
  than ``flow_with_quadrature``'s solve but no step onto each node, which on closed-form
  targets made that solve take 3-4 times the evaluations. Its error at ``M = 96``, ``P = 4``,
  on closed-form targets and a trained network, is in docs/likelihood.md ("Per-example
  likelihoods", ``benchmarks/likelihood_error.py``).

  Cost: the reference's solve with one probe (a score and a JVP per stage), then every node one
  score with ``P + 1`` JVPs; ``nfe`` counts the solve's evaluations and the nodes.

  Args:
    as ``flow_with_quadrature``; ``u`` is drawn from ``fold_in(rng, M)``. With
    ``'exact'`` divergences there is no noise to reduce and this is ``flow_to_prior``.
  Returns:
    ``FlowResult`` with ``delta_logp`` of shape ``(P, B)`` (``(1, B)`` when exact).
  """
  _check_solve_args(sde, method, rtol, atol, eps)
  kind = _check_hutchinson_type(hutchinson_type)
  num_nodes = quadrature.times.shape[0]
  if kind == 'exact':
    return flow_to_prior(sde, score_fn, x, None, rtol=rtol, atol=atol, method=method, eps=eps,
                         max_steps=max_steps)
  path_probes = sample_probes(jax.random.fold_in(rng, num_nodes), x.shape, kind, 1, x.dtype)
  solution = _augmented_solve(sde, score_fn, x, path_probes, rtol=rtol, atol=atol,
                              method=method, eps=eps, max_steps=max_steps,
                              save_at=quadrature.times)
  xs, _ = solution.ys
  fresh, path_at_nodes = _node_quadrature(sde, score_fn, rng, quadrature, xs, kind, num_probes,
                                          path_probes)
  z, path_integral = solution.y1
  delta_logp = path_integral - path_at_nodes + fresh
  z, delta_logp = jax.tree.map(lambda leaf: jnp.where(solution.ok, leaf, jnp.nan),
                               (z, delta_logp))
  return FlowResult(z, delta_logp, solution.nfe + num_nodes)


def _check_solve_args(sde, method, rtol, atol, eps) -> None:
  """Fails before tracing on bad solver settings."""
  if method not in ode_solve.SOLVERS:
    raise ValueError(f'Unknown ODE method {method!r}; use one of {ode_solve.SOLVERS.names()}.')
  if not 0. < eps < sde.T:
    raise ValueError(f'eps={eps} must lie in (0, T={sde.T}); the reference uses 1e-5.')
  if rtol <= 0 or atol <= 0:
    raise ValueError(f'rtol={rtol} and atol={atol} must be positive.')


def get_likelihood_fn(sde: sde_lib.SDE, inverse_scaler: Optional[Callable] = None,
                      hutchinson_type: str = 'rademacher', rtol: float = 1e-5,
                      atol: float = 1e-5, method: str = 'rk45', eps: float = 1e-5,
                      num_probes: int = 1, max_steps: int = 4096, units: str = 'bpd',
                      num_nodes: int = 0, control_variate: bool = True):
  """Builds ``likelihood_fn(rng, score_fn, data) -> (bpd, z, nfe)`` (the reference's interface,
  with the score function passed in rather than a model state), or ``(nll, z, nfe)`` in nats.

  ``bpd = bits(log p_T(z) + delta_logp - log|det d inverse_scaler / dy|)``, with the prior
  ``sde.prior_logp`` standing in for ``p_T`` and ``delta_logp`` the probe average of
  ``flow_to_prior``. ``likelihood_fn`` is pure and traceable: jit it with the score function
  closed over (``get_sharded_likelihood_fn`` does so on a mesh).

  Args:
    sde: the forward SDE.
    inverse_scaler: elementwise map from model space back to ``[0, 1]`` (``data`` package); None
      for the identity (uncentered data).
    hutchinson_type: ``'rademacher'`` (the reference's default), ``'gaussian'``, or ``'exact'``
      (the full divergence through ``D`` JVPs per evaluation: small data, or checking the noise
      of the estimator).
    rtol, atol, method, eps, max_steps: as for ``flow_to_prior``.
    num_probes: Hutchinson probes per example (per node with ``num_nodes``), averaged; the
      score is still evaluated once per stage (or node), each probe adding a JVP.
    num_nodes: 0: the reference's single solve of ``(x, delta_logp)`` with probes fixed along
      it (``flow_to_prior``): unbiased, the dataset mean's estimator, but about 0.3 bits/dim
      off for one example. ``M > 0``: the per-example estimator, an ``M``-node quadrature in
      log-SNR with ``num_probes`` fresh probes per node, as a control variate of that solve
      (``flow_with_control_variate``). ``M = 96`` with 4 probes (``PER_EXAMPLE_NODES``,
      ``PER_EXAMPLE_PROBES``) errs by at most 0.05 bits/dim per point on the benchmark's
      closed-form targets, unbiased.
    control_variate: with ``num_nodes > 0``: True (default) for the control variate above;
      False for the quadrature alone (``flow_with_quadrature``, its solve stepping onto every
      node): also low-noise, but exact only as far as the divergence is smooth in log-SNR.
      Ignored with ``num_nodes = 0``.
    units: ``'bpd'``: bits/dim of 8-bit data (``bits_per_dim``, the paper's metric);
      ``'nats'``: ``-log p(x)`` in nats per example, the continuous density of the data in
      ``[0, 1]`` space (``inverse_scaler``'s output), with no dequantization offset: what
      other libraries call the negative log-likelihood.
  Returns:
    ``likelihood_fn(rng, score_fn, data)`` with ``rng`` a typed key, ``data`` float32
    ``(B, ...)`` in model space (dequantized, then scaled), returning ``bpd (B,)`` float32
    (or nats), ``z`` of the shape of ``data`` and ``nfe`` an int32 scalar.
  """
  if units not in UNITS:
    raise ValueError(f'Unknown units {units!r}; use one of {", ".join(UNITS)}.')
  kind = _check_hutchinson_type(hutchinson_type)
  _check_solve_args(sde, method, rtol, atol, eps)
  if int(num_probes) < 1:
    raise ValueError(f'num_probes={num_probes} must be >= 1.')
  if int(num_nodes) < 0:
    raise ValueError(f'num_nodes={num_nodes} must be 0 (one augmented solve) or a number of '
                     'quadrature nodes >= 1.')
  quadrature = divergence_quadrature(sde, eps, num_nodes) if num_nodes else None
  inverse_scaler = (lambda y: y) if inverse_scaler is None else inverse_scaler

  def likelihood_fn(rng: jax.Array, score_fn: sde_lib.ScoreFn, data: jax.Array):
    if quadrature is not None:
      flow_fn = flow_with_control_variate if control_variate else flow_with_quadrature
      flow = flow_fn(sde, score_fn, data, rng, quadrature, kind, num_probes, rtol=rtol, atol=atol,
                     method=method, eps=eps, max_steps=max_steps)
    else:
      probes = sample_probes(rng, data.shape, kind, num_probes, data.dtype)
      flow = flow_to_prior(sde, score_fn, data, probes, rtol=rtol, atol=atol, method=method,
                           eps=eps, max_steps=max_steps)
    logp_model = sde.prior_logp(flow.z) + jnp.mean(flow.delta_logp, axis=0)
    logp_data = logp_model - inverse_scaler_log_det(inverse_scaler, data)
    if units == 'nats':
      return -logp_data, flow.z, flow.nfe
    dim = int(np.prod(data.shape[1:]))
    return bits_per_dim(logp_data, dim, centered=False), flow.z, flow.nfe

  return likelihood_fn


def get_sharded_likelihood_fn(likelihood_fn, make_score_fn: Callable, mesh: Mesh,
                              scaler: Optional[Callable] = None):
  """``likelihood_fn`` compiled once for a mesh: the batch split over ``'data'``, the rest
  replicated. The ODE's step control reads a norm over the global batch, so the results equal
  the one-device ones up to float32 reduction order.

  Args:
    likelihood_fn: from ``get_likelihood_fn``.
    make_score_fn: ``make_score_fn(params) -> score_fn``, e.g.
      ``lambda p: models.utils.get_score_fn(sde, model, p, train=False, continuous=True)``.
    mesh: from ``parallel.make_mesh``.
    scaler: elementwise ``[0, 1] -> model space`` applied on device first (None: identity).
  Returns:
    ``fn(rng, params, images) -> (bpd (B,), z, nfe)``; ``images`` ``(B, ...)`` in ``[0, 1]``
    (already dequantized), a global ``jax.Array`` or this host's rows as numpy.
  """
  scaler = (lambda x: x) if scaler is None else scaler

  def step(rng, params, images):
    return likelihood_fn(rng, make_score_fn(params), scaler(images))

  split, whole = parallel.data_sharding(mesh), parallel.replicated(mesh)
  return parallel.jit_over_examples(step, mesh, (split, split, whole), 'likelihood batch size')


class BpdRound(NamedTuple):
  """One batch of one pass: its ``(repeat, batch)`` index, the bits/dim of its real (unpadded)
  examples as float64 numpy, and the NFE of its solve."""
  repeat: int
  batch: int
  bpd: np.ndarray
  nfe: int


def dataset_bpd_rounds(bpd_fn: Callable, make_batches: Callable[[int], Iterable[dict]],
                       rng: jax.Array, num_repeats: int,
                       start: Tuple[int, int] = (0, 0)) -> Iterator[BpdRound]:
  """Bits/dim over a split, ``num_repeats`` times, one ``BpdRound`` per batch (resumable).

  Args:
    bpd_fn: ``bpd_fn(rng, images) -> (bpd (B,), z, nfe)``, e.g. ``get_sharded_likelihood_fn``'s
      function with the parameters bound.
    make_batches: ``make_batches(repeat)`` iterates one pass over the split: dicts with
      ``'image'`` (dequantized, in ``[0, 1]``, this host's rows) and optionally ``'mask'``
      (``False`` on padding rows), like ``data.epoch_batches(..., uniform_dequantization=True,
      seed=...)`` with a seed that changes with ``repeat`` so every pass draws fresh noise.
    rng: typed key; batch ``(r, b)`` uses ``fold_in(fold_in(rng, r), b)``, so a resumed run and
      any device count see the same probes.
    num_repeats: passes over the split (``NUM_REPEATS``: 5 for test, 1 for train).
    start: the first ``(repeat, batch)`` to compute; earlier batches are loaded and skipped.
  Raises:
    FloatingPointError: naming the round, when a bits/dim is NaN or infinite (a failed solve).
  """
  if int(num_repeats) < 1:
    raise ValueError(f'num_repeats={num_repeats} must be >= 1.')
  for repeat in range(start[0], int(num_repeats)):
    for index, batch in enumerate(make_batches(repeat)):
      if (repeat, index) < tuple(start):
        continue
      key = jax.random.fold_in(jax.random.fold_in(rng, repeat), index)
      bpd, _, nfe = bpd_fn(key, batch['image'])
      bpd = parallel.gather_rows(bpd)
      if 'mask' in batch:
        bpd = bpd[parallel.gather_rows(batch['mask']).astype(bool)]
      if not np.all(np.isfinite(bpd)):
        raise FloatingPointError(
            f'bits/dim is not finite in repeat {repeat}, batch {index}: the ODE solve failed '
            '(raise max_steps or loosen rtol/atol) or the score function returned NaN.')
      yield BpdRound(repeat, index, bpd.astype(np.float64), int(np.asarray(nfe)))


class BpdSummary(NamedTuple):
  """Mean bits/dim over every example of every repeat, its standard error, the number of
  estimates and the mean NFE per batch."""
  mean: float
  stderr: float
  count: int
  mean_nfe: float


def summarize_bpd(rounds: Iterable[BpdRound]) -> BpdSummary:
  """Consumes ``dataset_bpd_rounds`` and averages (the paper's reported bits/dim)."""
  rounds = list(rounds)
  if not rounds:
    raise ValueError('No batches were evaluated; check make_batches and start.')
  values = np.concatenate([r.bpd for r in rounds])
  stderr = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else float('nan')
  return BpdSummary(float(values.mean()), float(stderr), int(values.size),
                    float(np.mean([r.nfe for r in rounds])))
