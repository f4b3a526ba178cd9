"""Predictors of the PC samplers (Song et al. 2021, sec. 4.2 and appendix): one reverse-time step.

A predictor advances ``x`` from time ``t`` to ``t + dt`` (``dt < 0``) with one numerical step of
the reverse-time SDE (eq. 6) or, with ``probability_flow``, of the probability-flow ODE (eq. 13).
It returns ``(x, x_mean)``: the new state and the same step without its final noise, which the
sampler outputs at the last step when it denoises.

Shapes: ``x`` is ``(B, ...)`` float32, ``t`` is ``(B,)``, ``dt`` a scalar; ``rng`` a typed key.
Registered names: ``euler_maruyama``, ``reverse_diffusion``, ``ancestral_sampling``, ``none``.
"""
import abc
from typing import Tuple

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.common.registry import Registry
from score_sde.sde_lib import batch_mul

PREDICTORS = Registry('predictor')


class Predictor(abc.ABC):
  """One step of a reverse-time solver.

  Attributes:
    nfe: score evaluations per ``update_fn`` call.
  """
  nfe = 1

  def __init__(self, sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn,
               probability_flow: bool = False):
    self.sde = sde
    self.score_fn = score_fn
    self.probability_flow = probability_flow
    self.rsde = sde.reverse(score_fn, probability_flow)

  @abc.abstractmethod
  def update_fn(self, rng: jax.Array, x: jax.Array, t: jax.Array,
                dt: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """``(x(t + dt), its noise-free mean)``, each the shape of ``x``."""


@PREDICTORS.register('euler_maruyama')
class EulerMaruyamaPredictor(Predictor):
  """Euler-Maruyama on the reverse SDE: ``x + drift dt + g sqrt(-dt) z``, drift ``f - g^2 s``.

  Unlike the released code (always ``dt = -1/N``), ``dt`` is the actual grid spacing, so a
  sampler with any grid integrates exactly from ``T`` to 0. With ``probability_flow`` this is
  the explicit Euler method on eq. (13), of global order 1.
  """

  def update_fn(self, rng, x, t, dt):
    drift, diffusion = self.rsde.sde(x, t)
    x_mean = x + drift * dt
    z = jax.random.normal(rng, x.shape, x.dtype)
    return x_mean + batch_mul(diffusion * jnp.sqrt(-dt), z), x_mean


@PREDICTORS.register('reverse_diffusion')
class ReverseDiffusionPredictor(Predictor):
  """The reverse of the SDE's own discretisation (appendix E, eq. 46):

      x_i = x_{i+1} - f_{i+1}(x_{i+1}) + G_{i+1}^2 s(x_{i+1}, t_{i+1}) + G_{i+1} z.

  ``f, G`` come from ``sde.discretize`` (the DDPM chain for VP, SMLD's for VE, Euler-Maruyama
  with step ``1/N`` for sub-VP), so the step size is the chain's, not ``dt``: the sampler's grid
  must have ``sde.N`` points, as the PC sampler's has.
  """

  def update_fn(self, rng, x, t, dt):
    f, g = self.rsde.discretize(x, t)
    x_mean = x - f
    z = jax.random.normal(rng, x.shape, x.dtype)
    return x_mean + batch_mul(g, z), x_mean


@PREDICTORS.register('ancestral_sampling')
class AncestralSamplingPredictor(Predictor):
  """Ancestral sampling of the discrete models (appendix F, eqs. 47 and 48).

  * VE: SMLD's chain, ``x_{i-1} = x_i + (s_i^2 - s_{i-1}^2) s + sqrt(s_{i-1}^2 (s_i^2 -
    s_{i-1}^2) / s_i^2) z`` with the discrete sigmas;
  * VP: DDPM's, ``x_{i-1} = (x_i + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z``;
  * sub-VP, which has no discrete model: the Gaussian posterior ``q(x_s | x_t, x0_hat)`` of its
    kernel between the grid times ``t`` and ``s = t + dt``, with Tweedie's ``x0_hat``. For VE
    this formula reduces exactly to SMLD's step, which is why it is the natural extension.
  """

  def __init__(self, sde, score_fn, probability_flow=False):
    if probability_flow:
      raise ValueError('Ancestral sampling is stochastic by construction; use '
                       'reverse_diffusion or euler_maruyama with probability_flow=True.')
    super().__init__(sde, score_fn, probability_flow)

  def update_fn(self, rng, x, t, dt):
    if isinstance(self.sde, sde_lib.VESDE):
      x_mean, std = self._smld(x, t)
    elif isinstance(self.sde, sde_lib.subVPSDE):  # Before VPSDE: it is a subclass.
      x_mean, std = self._gaussian_posterior(x, t, jnp.maximum(t + dt, 0.))
    elif isinstance(self.sde, sde_lib.VPSDE):
      x_mean, std = self._ddpm(x, t)
    else:
      raise ValueError(f'Ancestral sampling supports VESDE, VPSDE and subVPSDE, not '
                       f'{type(self.sde).__name__}; use reverse_diffusion or euler_maruyama.')
    z = jax.random.normal(rng, x.shape, x.dtype)
    return x_mean + batch_mul(std, z), x_mean

  def _smld(self, x, t):
    sde = self.sde
    i = sde._timestep(t)
    sigma = sde.discrete_sigmas[i]
    adjacent = jnp.where(i == 0, 0., sde.discrete_sigmas[jnp.maximum(i - 1, 0)])
    x_mean = x + batch_mul(sigma ** 2 - adjacent ** 2, self.score_fn(x, t))
    std = jnp.sqrt(adjacent ** 2 * (sigma ** 2 - adjacent ** 2) / sigma ** 2)
    return x_mean, std

  def _ddpm(self, x, t):
    beta = self.sde.discrete_betas[self.sde._timestep(t)]
    x_mean = batch_mul(1. / jnp.sqrt(1. - beta), x + batch_mul(beta, self.score_fn(x, t)))
    return x_mean, jnp.sqrt(beta)

  def _gaussian_posterior(self, x, t, s):
    """Mean and std of ``q(x_s | x_t, x_0 = x0_hat)`` for the kernel ``N(alpha x0, std^2)``:
    with ``a = alpha_t / alpha_s`` and ``v = std_t^2 - a^2 std_s^2`` (the variance of the
    ``s -> t`` transition), mean ``(a std_s^2 x_t + alpha_s v x0_hat) / std_t^2`` and variance
    ``v std_s^2 / std_t^2``."""
    alpha_t, std_t = self.sde.marginal_coeffs(t)
    alpha_s, std_s = self.sde.marginal_coeffs(s)
    score = self.score_fn(x, t)
    x0_hat = batch_mul(1. / alpha_t, x + batch_mul(std_t ** 2, score))
    a = alpha_t / alpha_s
    v = std_t ** 2 - a ** 2 * std_s ** 2
    x_mean = batch_mul(a * std_s ** 2 / std_t ** 2, x) + batch_mul(alpha_s * v / std_t ** 2, x0_hat)
    return x_mean, jnp.sqrt(jnp.maximum(v, 0.) * std_s ** 2) / std_t


@PREDICTORS.register('none')
class NonePredictor(Predictor):
  """No predictor (corrector-only samplers, the paper's "C2000"); no score evaluation."""
  nfe = 0

  def update_fn(self, rng, x, t, dt):
    return x, x
