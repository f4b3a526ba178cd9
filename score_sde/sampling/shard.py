"""Any sampler over a device mesh: batch split on the ``'data'`` axis, compiled once.

The sampler and the score function are traced together inside one ``jax.jit`` whose argument is
the score network's parameters, so new parameters (every snapshot of a training run) reuse the
compiled program. The state ``x`` is constrained to the data sharding at every score evaluation,
which pins the split through the solver's loop; every random draw is made at the global batch
shape (partitionable threefry), so the samples do not depend on the number of devices.
"""
from typing import Any, Callable, Tuple

import jax

from score_sde import sde_lib
from score_sde.common import parallel
from score_sde.sampling import base

ScoreFnFactory = Callable[[Any], sde_lib.ScoreFn]


def constrained(score_fn: sde_lib.ScoreFn, mesh: jax.sharding.Mesh) -> sde_lib.ScoreFn:
  """``score_fn`` with its ``x``, ``t`` and output pinned to the mesh's data sharding, which
  keeps a solver loop traced around it split over ``'data'``.

  Raises:
    ValueError: at trace time, when the batch does not split over the mesh.
  """
  data = parallel.data_sharding(mesh)

  def sharded_score_fn(x, t):
    parallel.check_divisible(x.shape[0], mesh, 'sample batch size')
    x = jax.lax.with_sharding_constraint(x, data)
    t = jax.lax.with_sharding_constraint(t, data)
    return jax.lax.with_sharding_constraint(score_fn(x, t), data)

  return sharded_score_fn


def get_sharded_sampler(sampler: base.Sampler, make_score_fn: ScoreFnFactory,
                        mesh: jax.sharding.Mesh) -> Callable[[Any, jax.Array],
                                                             Tuple[jax.Array, base.Nfe]]:
  """Jits ``sampler`` once for ``mesh``.

  Args:
    sampler: ``sampler(rng, score_fn) -> (samples, nfe)`` from this package.
    make_score_fn: ``params -> score_fn``, e.g.
      ``lambda p: models.utils.get_score_fn(sde, model, p, train=False, continuous=True)``;
      ``params`` may be any pytree (``None`` for an analytic score).
    mesh: a mesh from ``parallel.make_mesh``; the sample batch must split evenly over it.
  Returns:
    ``sample(params, rng) -> (samples, nfe)``: params and key replicated, samples
    ``(B, ...)`` split over ``'data'``, ``nfe`` a replicated int32 scalar.
  Raises:
    ValueError: at the first call, when the batch does not split over the mesh.
  """
  data = parallel.data_sharding(mesh)

  def sample(params, rng):
    samples, nfe = sampler(rng, constrained(make_score_fn(params), mesh))
    return jax.lax.with_sharding_constraint(samples, data), nfe

  replicated = parallel.replicated(mesh)
  return jax.jit(sample, in_shardings=(replicated, replicated),
                 out_shardings=(data, replicated))
