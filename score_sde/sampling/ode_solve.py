"""Adaptive ODE solves on device (diffrax) with an exact count of vector-field evaluations.

The probability-flow sampler, the encoder and the likelihood all integrate eq. (13) with an
embedded Runge-Kutta pair and a PID step-size controller inside jit; this module is that one
solve. Every solver here is FSAL (its last stage is the next step's first), and diffrax would
re-evaluate the first stage on each rejected try of the first step without reporting it; handing
it that evaluation makes the cost exactly ``1 + (stages - 1) * steps``.
"""
from typing import Any, Callable, NamedTuple, Optional

import diffrax
import jax
import jax.numpy as jnp

from score_sde.common.registry import Registry

SOLVERS = Registry('ODE method')
SOLVERS.register('rk45')(diffrax.Dopri5)  # scipy's RK45 (the released code's) is Dormand-Prince.
SOLVERS.register('dopri5')(diffrax.Dopri5)
SOLVERS.register('tsit5')(diffrax.Tsit5)
SOLVERS.register('bosh3')(diffrax.Bosh3)
SOLVERS.register('dopri8')(diffrax.Dopri8)


class Solution(NamedTuple):
  """``y1``: the state at ``t1`` (a pytree like ``y0``); ``ok``: bool scalar, whether the solve
  succeeded; ``nfe``: int32 scalar, the exact number of vector-field evaluations; ``ys``: the
  states at ``solve``'s ``save_at`` times, stacked on a new leading axis (None without them)."""
  y1: Any
  ok: jax.Array
  nfe: jax.Array
  ys: Any = None


def get_solver(method: str) -> diffrax.AbstractSolver:
  """The solver named ``method`` (case-insensitive); an unknown name lists the known ones."""
  solver = SOLVERS.get(method)()
  assert solver.tableau.fsal, 'The evaluation count assumes an FSAL solver.'
  return solver


def solve(vector_field: Callable[[Any, Any, Any], Any], method: str, t0: float, t1: float, y0,
          args=None, *, rtol: float, atol: float, max_steps: int,
          throw: bool = True, save_at: Optional[jax.Array] = None,
          step_to_saves: bool = False,
          on_step: Optional[Callable[[Any, Any], Any]] = None) -> Solution:
  """Integrates ``dy/dt = vector_field(t, y, args)`` from ``(t0, y0)`` to ``t1`` (either direction).

  The first step is 1% of the interval (the controller adapts it); the error norm is the RMS over
  the whole state, so a batch is solved as one system. With ``throw=False`` a failed solve is
  reported through ``ok`` instead of diffrax's raising host callback (which the SPMD partitioner
  cannot shard). ``save_at``: increasing times inside ``[t0, t1]`` (for ``t0 < t1``) at which the
  state is also returned, read from the solver's dense interpolant (of the solver's order minus
  one), so they do not change the steps taken. That interpolant can be far less accurate than
  the steps' ends: on a trained network it put the state 4e-3 off at t = 2e-4, where the score
  varies on the scale of sigma(t) ~ 5e-3. ``step_to_saves=True`` makes steps end on the
  ``save_at`` times instead (more steps, each saved state as accurate as a step's end).
  ``on_step(t, y)``: called (traced) at the end of every accepted step, for its side effects
  (``jax.debug.callback``); what it returns is dropped.
  """
  solver = get_solver(method)
  f0 = vector_field(t0, y0, args)
  controller = diffrax.PIDController(rtol=rtol, atol=atol)
  if step_to_saves and save_at is not None:
    controller = diffrax.ClipStepSizeController(controller, step_ts=save_at)
  saveat = diffrax.SaveAt(t1=True, ts=save_at)
  if on_step is not None:
    # A scalar per step is stored; the step's state only reaches on_step.
    observe = diffrax.SubSaveAt(steps=True,
                                fn=lambda t, y, args: (on_step(t, y), jnp.zeros(()))[1])
    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(t1=True, ts=save_at), observe])
  solution = diffrax.diffeqsolve(
      diffrax.ODETerm(vector_field), solver, t0, t1, 0.01 * (t1 - t0), y0, args=args,
      stepsize_controller=controller, saveat=saveat, max_steps=max_steps,
      solver_state=(jnp.array(False), f0), throw=throw)
  nfe = 1 + (solver.tableau.num_stages - 1) * solution.stats['num_steps']
  saved = solution.ys if on_step is None else solution.ys[0]
  y1 = jax.tree.map(lambda leaf: leaf[-1], saved)
  ys = None if save_at is None else jax.tree.map(lambda leaf: leaf[:-1], saved)
  return Solution(y1, solution.result == diffrax.RESULTS.successful, jnp.asarray(nfe, jnp.int32),
                  ys)
