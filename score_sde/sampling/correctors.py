"""Correctors of the PC samplers (Song et al. 2021, sec. 4.2, Algorithms 4 and 5): Langevin MCMC
at a fixed time ``t`` that pulls ``x`` towards ``p_t``.

Each of the ``n_steps`` steps is unadjusted Langevin dynamics with step size ``eps_i``:

    x <- x + eps_i s(x, t) + sqrt(2 eps_i) z.

Shapes: ``x`` is ``(B, ...)`` float32, ``t`` is ``(B,)``; ``update_fn`` returns ``(x, x_mean)``,
``x_mean`` being the last step without its noise. Registered names: ``langevin``, ``ald``,
``none``.
"""
import abc
from typing import Tuple

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.common.registry import Registry
from score_sde.sde_lib import batch_mul

CORRECTORS = Registry('corrector')


def langevin_alpha(sde: sde_lib.SDE, t: jax.Array) -> jax.Array:
  """The ``alpha_i`` factor of Algorithm 5: ``1 - beta_i`` of the DDPM chain for VP, 1 otherwise.

  sub-VP has no discrete chain (the released code crashed here looking up VP's table), and VE's
  Algorithm 4 has no such factor; 1 is the continuum limit of ``1 - beta_i`` as ``N`` grows.

  Returns:
    ``(B,)`` float32.
  """
  if isinstance(sde, sde_lib.VPSDE) and not isinstance(sde, sde_lib.subVPSDE):
    return sde.alphas[sde._timestep(t)]
  return jnp.ones_like(t)


def _norm(v: jax.Array) -> jax.Array:
  """Euclidean norm of each example, ``(B,)``."""
  return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=-1))


class Corrector(abc.ABC):
  """``n_steps`` MCMC steps at fixed ``t``.

  Attributes:
    nfe: score evaluations per ``update_fn`` call (``n_steps``).
  """

  def __init__(self, sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, snr: float, n_steps: int):
    if int(n_steps) < 0:
      raise ValueError(f'Corrector n_steps={n_steps} must be >= 0.')
    self.sde = sde
    self.score_fn = score_fn
    self.snr = snr
    self.n_steps = int(n_steps)

  @property
  def nfe(self) -> int:
    return self.n_steps

  @abc.abstractmethod
  def step_size(self, score: jax.Array, z: jax.Array, t: jax.Array) -> jax.Array:
    """The Langevin step ``eps`` of each example, ``(B,)``."""

  def update_fn(self, rng: jax.Array, x: jax.Array,
                t: jax.Array) -> Tuple[jax.Array, jax.Array]:
    def step(i, carry):
      x, _ = carry
      score = self.score_fn(x, t)
      z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
      eps = self.step_size(score, z, t)
      x_mean = x + batch_mul(eps, score)
      return x_mean + batch_mul(jnp.sqrt(2. * eps), z), x_mean

    return jax.lax.fori_loop(0, self.n_steps, step, (x, x))


@CORRECTORS.register('langevin')
class LangevinCorrector(Corrector):
  """The reference's Langevin corrector (Algorithms 4, 5) with the step set by a target
  signal-to-noise ratio ``r``:

      eps = 2 alpha_i (r mean||z|| / mean||s(x, t)||)^2,

  both norms averaged over the whole (global) batch, one step size for all examples, as the
  released code does (its ``pmean`` over devices). The paper configs select it, so their
  samples (and FIDs) are the reference's computation.

  Its step hardly depends on any one ``x``, so the chain keeps ``p_t`` stationary up to the usual
  ``O(eps)`` bias in any dimension; the price is that a sample depends on its batch mates. The
  mean is over the global batch inside jit (no ``pmean``), so it does not depend on the devices.
  """

  def step_size(self, score, z, t):
    ratio = self.snr * jnp.mean(_norm(z)) / jnp.mean(_norm(score))
    return 2. * langevin_alpha(self.sde, t) * ratio ** 2


@CORRECTORS.register('langevin_per_example')
class PerExampleLangevinCorrector(Corrector):
  """Langevin with the norms of ``LangevinCorrector`` taken per example, as the paper's
  algorithm is written for one ``x``: ``eps = 2 alpha_i (r ||z|| / ||s(x, t)||)^2``. Each sample
  then depends on its own noise only, whatever the batch.

  The price is a bias that does not vanish with ``r``: the step depends on ``x`` through
  ``||s(x)||`` and on the noise through ``||z||``, so in the small-step limit the chain samples
  ``p^(D/(D+2)) ||s||^2`` (normalised) instead of ``p``, for ``D`` dimensions per example. For
  ``p = N(mu, v I)`` its variance is ``v ((D + 2) / D)^2``: +0.13% for 32x32x3 images, +56% at
  ``D = 8`` and an infinite-variance law at ``D = 2``. Use ``langevin`` or ``ald`` on
  low-dimensional data.
  """

  def step_size(self, score, z, t):
    ratio = self.snr * _norm(z) / jnp.maximum(_norm(score), jnp.finfo(score.dtype).tiny)
    return 2. * langevin_alpha(self.sde, t) * ratio ** 2


@CORRECTORS.register('ald')
class AnnealedLangevinDynamics(Corrector):
  """SMLD's annealed Langevin dynamics (Song & Ermon 2019): ``eps = 2 alpha_i (r std(t))^2``,
  a step proportional to the kernel variance, independent of ``x``."""

  def step_size(self, score, z, t):
    _, std = self.sde.marginal_coeffs(t)
    return 2. * langevin_alpha(self.sde, t) * (self.snr * std) ** 2


@CORRECTORS.register('none')
class NoneCorrector(Corrector):
  """No corrector (predictor-only samplers); no score evaluation."""

  def __init__(self, sde, score_fn, snr=0., n_steps=0):
    super().__init__(sde, score_fn, snr, 0)

  def step_size(self, score, z, t):
    return jnp.zeros_like(t)
