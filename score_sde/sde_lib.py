"""The forward SDEs of Song et al. (2021), their discretisations, reverse-time SDEs and ODEs.

Every SDE here is linear, ``dx = f(t) x dt + g(t) dw`` (eq. 5 with an affine drift), so its
transition kernel from clean data is Gaussian:

    p_0t(x(t) | x(0)) = N(x(t); alpha(t) x(0), std(t)^2 I).

``marginal_coeffs(t)`` returns ``(alpha(t), std(t))``; everything else (``marginal_prob``,
score-function adapters, samplers, likelihoods, the closed-form targets of ``analytic``) builds on
it. Shapes: ``x`` is ``(B, ...)``, ``t`` is ``(B,)``; drifts have the shape of ``x``, diffusion
coefficients, ``alpha`` and ``std`` have shape ``(B,)``. All methods are pure and jit/vmap-safe.
"""
import abc
from typing import Callable, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.common.registry import Registry

SDES = Registry('SDE')

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def batch_mul(v: jax.Array, x: jax.Array) -> jax.Array:
  """``v[b] * x[b, ...]`` for a per-example ``v`` of shape ``(B,)`` (or a scalar)."""
  v = jnp.asarray(v)
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim)) * x


def _sum_except_batch(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


class SDE(abc.ABC):
  """A linear SDE ``dx = f(x, t) dt + g(t) dw`` on ``t in [0, T]`` with ``N`` discretisation steps.

  Attributes:
    N: number of discretisation steps of the discrete models (SMLD / DDPM) and default sampler
      step count.
    sampling_eps: the smallest time the samplers and likelihood integrate to (the paper's
      epsilon; the score is ill-conditioned at t = 0).
    discrete_model: the discrete-time model whose loss trains the SDE with
      ``training.continuous=False`` (``'SMLD'``, eq. 8; ``'DDPM'``, eq. 10); '' where it has none.
  """
  sampling_eps: float = 1e-3
  discrete_model: str = ''

  def __init__(self, N: int):
    if int(N) < 1:
      raise ValueError(f'The number of discretisation steps N={N} must be >= 1.')
    self.N = int(N)

  @property
  def T(self) -> float:
    """End time of the forward process."""
    return 1.

  @classmethod
  def config_problems(cls, config) -> List[Tuple[str, str]]:
    """What ``config`` (whose ``training.sde`` names this class) asks of the SDE that it does not
    have, as ``(field, fix)`` pairs: here a discrete-time loss without a discrete model;
    subclasses add their parameters' problems (``configs.validation`` words each pair)."""
    if config.training.continuous or cls.discrete_model:
      return []
    with_loss = ' and '.join(f'{name} ({SDES.get(name).discrete_model})' for name in SDES
                             if SDES.get(name).discrete_model)
    return [('training.continuous',
             f'discrete-time losses exist only for {with_loss}, not '
             f'{str(config.training.sde).lower()!r}; set training.continuous=True')]

  @abc.abstractmethod
  def sde(self, x: jax.Array, t: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Drift ``f(x, t)`` (shape of ``x``) and diffusion ``g(t)`` (shape ``(B,)``) of eq. (5)."""

  @abc.abstractmethod
  def marginal_coeffs(self, t: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """``(alpha(t), std(t))`` of the Gaussian kernel ``p_0t``, each of the shape of ``t``."""

  def marginal_prob(self, x: jax.Array, t: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Mean (shape of ``x``) and std (shape ``(B,)``) of ``p_0t(x(t) | x(0) = x)``."""
    alpha, std = self.marginal_coeffs(t)
    return batch_mul(alpha, x), std

  @abc.abstractmethod
  def prior_sampling(self, rng: jax.Array, shape) -> jax.Array:
    """A draw of ``x(T)`` from the prior ``p_T``, float32 of the given shape."""

  @abc.abstractmethod
  def prior_logp(self, z: jax.Array) -> jax.Array:
    """``log p_T(z)`` per example, shape ``(B,)``."""

  @property
  @abc.abstractmethod
  def prior_std(self) -> float:
    """The std ``s`` of the prior ``p_T = N(0, s^2 I)`` (the variational bound's prior term)."""

  def discretize(self, x: jax.Array, t: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """One step of the discrete forward chain, ``x_{i+1} = x_i + f_i(x_i) + G_i z_i``.

    The default is Euler-Maruyama with step ``T / N``: ``f = f(x, t) dt``,
    ``G = g(t) sqrt(dt)``. VE and VP override it with the SMLD and DDPM chains (the paper's
    eqs. 8 and 10), whose continuum limits they are.

    Returns:
      ``f`` (shape of ``x``) and ``G`` (shape ``(B,)``).
    """
    dt = 1. / self.N
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * jnp.sqrt(dt)

  @abc.abstractmethod
  def with_steps(self, N: int) -> 'SDE':
    """The same SDE with ``N`` discretisation steps: what a sampler of ``N`` steps uses for the
    discrete-chain predictors and correctors (``sde.N`` itself stays the model's)."""

  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> 'ReverseSDE':
    """The reverse-time SDE (eq. 6) or, with ``probability_flow``, the probability-flow ODE
    (eq. 13) driven by ``score_fn(x, t) ~ grad_x log p_t(x)``."""
    return ReverseSDE(self, score_fn, probability_flow)

  def _timestep(self, t: jax.Array) -> jax.Array:
    """Index ``i`` of the discrete chain that time ``t`` falls on: ``floor(t (N - 1) / T)``.

    Truncation, as in the released code, so that the sampler grid ``linspace(T, eps, N)`` maps
    onto ``N - 1, ..., 0`` for any ``eps < 1 / (N - 1)``; rounding would shift half of it up.
    """
    return (t * (self.N - 1) / self.T).astype(jnp.int32)


class ReverseSDE:
  """A reverse-time SDE (eq. 6) or probability-flow ODE (eq. 13), with the forward interface.

  ``sde(x, t)`` returns the drift ``f - c g^2 score`` and diffusion (``c = 1``, or ``c = 1/2`` and
  zero diffusion for the ODE). The drift is written for time running forward, so a reverse step
  from ``t`` to ``t - dt`` is ``x - drift dt + diffusion sqrt(dt) z``.
  """

  def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
    self.forward = forward
    self.score_fn = score_fn
    self.probability_flow = probability_flow
    self.N = forward.N
    self.T = forward.T

  def _reverse(self, f, g, x, t):
    score = self.score_fn(x, t)
    weight = 0.5 if self.probability_flow else 1.
    drift = f - batch_mul(weight * g ** 2, score)
    diffusion = jnp.zeros_like(g) if self.probability_flow else g
    return drift, diffusion

  def sde(self, x: jax.Array, t: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Reverse drift (shape of ``x``) and diffusion (``(B,)``) at ``(x, t)``."""
    return self._reverse(*self.forward.sde(x, t), x, t)

  def discretize(self, x: jax.Array, t: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """The reverse of the forward chain's step at ``t`` (the paper's reverse diffusion
    predictor, eq. 46 of its appendix): ``x_i = x_{i+1} - f + G^2 score + G z``."""
    return self._reverse(*self.forward.discretize(x, t), x, t)


@SDES.register('vpsde')
class VPSDE(SDE):
  """Variance-preserving SDE (the continuum limit of DDPM), eq. (11):

      dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,   beta(t) = beta_0 + t (beta_1 - beta_0).

  Kernel: ``alpha(t) = exp(m(t))`` with ``m(t) = -t^2 (beta_1 - beta_0) / 4 - t beta_0 / 2`` and
  ``std(t) = sqrt(1 - exp(2 m(t)))``; prior ``N(0, I)``.

  Its discrete chain ``x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z`` (``chain``):

  * ``'ddpm'``: DDPM's, eq. (10), ``beta_i = beta(i / (N - 1)) / N``, the released code's and the
    one discrete-time DDPM models are trained on. A probability only while ``beta_max < N``.
  * ``'exponential'``: ``beta_i = 1 - exp(-beta(i / (N - 1)) / N)``, the exact kernel of a step
    of length ``1 / N`` at the rate ``beta`` frozen at the chain's time; DDPM's ``beta_i`` is its
    first-order expansion. A probability at any ``N``.
  * ``'auto'`` (default): ``'ddpm'`` where it is valid, else ``'exponential'``; so few-step
    samplers on VP (``N = 10``) work, and the released configurations keep DDPM's chain.

  Measured with the exact score of a Gaussian mixture (PC reverse diffusion and ancestral
  sampling, 8-D): at 21-25 steps the two chains are equally good, at 40-80 DDPM's is slightly
  better, and at 10-15 the exponential chain has half the error of the chain whose steps follow
  the SDE's kernel between grid times exactly (which loses at every step count).
  """
  CHAINS = ('auto', 'ddpm', 'exponential')
  discrete_model = 'DDPM'

  def __init__(self, beta_min: float = 0.1, beta_max: float = 20., N: int = 1000,
               chain: str = 'auto'):
    super().__init__(N)
    if not 0 < beta_min < beta_max:
      raise ValueError(f'{type(self).__name__} needs 0 < beta_min < beta_max; got {beta_min}, '
                       f'{beta_max}.')
    if chain not in self.CHAINS:
      raise ValueError(f'chain={chain!r}; choose one of {", ".join(self.CHAINS)}.')
    self.beta_0 = float(beta_min)
    self.beta_1 = float(beta_max)
    self.chain = chain if chain != 'auto' else ('ddpm' if beta_max < N else 'exponential')
    self._make_chain(beta_min, beta_max, N)

  def with_steps(self, N: int) -> 'VPSDE':
    """``N`` steps, on DDPM's chain where it is valid, else the exponential one."""
    return type(self)(self.beta_0, self.beta_1, N)

  def _make_chain(self, beta_min: float, beta_max: float, N: int) -> None:
    if self.chain == 'ddpm':
      if beta_max >= N:
        raise ValueError(f'The DDPM chain needs beta_max / N < 1, got beta_max={beta_max}, '
                         f'N={N}: raise N (model.num_scales) above {int(beta_max)}, or use '
                         "chain='exponential'.")
    # The DDPM chain (eq. 10): beta_i = beta(i / (N - 1)) / N.
    betas = np.linspace(beta_min / N, beta_max / N, N, dtype=np.float64)
    if self.chain == 'exponential':
      betas = -np.expm1(-betas)
    # float64, for closed forms that need the chain to more digits than the float32 tables.
    self.chain_betas = betas
    alphas = 1. - betas
    alphas_cumprod = np.cumprod(alphas)
    self.discrete_betas = jnp.asarray(betas, jnp.float32)
    self.alphas = jnp.asarray(alphas, jnp.float32)
    self.alphas_cumprod = jnp.asarray(alphas_cumprod, jnp.float32)
    self.sqrt_alphas_cumprod = jnp.asarray(np.sqrt(alphas_cumprod), jnp.float32)
    self.sqrt_1m_alphas_cumprod = jnp.asarray(np.sqrt(1. - alphas_cumprod), jnp.float32)

  @classmethod
  def from_config(cls, model_config) -> 'VPSDE':
    return cls(model_config.beta_min, model_config.beta_max, model_config.num_scales)

  @classmethod
  def config_problems(cls, config) -> List[Tuple[str, str]]:
    """``SDE.config_problems``, and ``0 < beta_min < beta_max``; discrete-time training runs
    DDPM's chain, whose ``beta_i = beta(t_i) / N`` must be probabilities."""
    m, name = config.model, str(config.training.sde).lower()
    problems = super().config_problems(config)
    if not 0. < m.beta_min < m.beta_max:
      problems.append(('model.beta_max', f'{name} needs 0 < beta_min (={m.beta_min}) < beta_max, '
                                         'e.g. (0.1, 20)'))
    if cls.discrete_model and not config.training.continuous and not m.beta_max < m.num_scales:
      problems.append(('model.beta_max', f'discrete DDPM steps use beta_max / num_scales '
                                         f'(={m.num_scales}) < 1; raise model.num_scales or '
                                         'lower beta_max'))
    return problems

  def beta(self, t: jax.Array) -> jax.Array:
    return self.beta_0 + t * (self.beta_1 - self.beta_0)

  def log_mean_coeff(self, t: jax.Array) -> jax.Array:
    """``m(t) = log alpha(t) = -int_0^t beta(s) ds / 2``."""
    return -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

  def sde(self, x, t):
    beta_t = self.beta(t)
    return batch_mul(-0.5 * beta_t, x), jnp.sqrt(beta_t)

  def marginal_coeffs(self, t):
    m = self.log_mean_coeff(t)
    # 1 - exp(2m) through expm1: the naive form loses all digits as t -> 0 in float32.
    return jnp.exp(m), jnp.sqrt(-jnp.expm1(2. * m))

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape, jnp.float32)

  @property
  def prior_std(self) -> float:
    return 1.

  def prior_logp(self, z):
    dim = np.prod(z.shape[1:])
    return -0.5 * dim * np.log(2 * np.pi) - 0.5 * _sum_except_batch(z ** 2)

  def discretize(self, x, t):
    """The DDPM chain: ``x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z``."""
    i = self._timestep(t)
    beta = self.discrete_betas[i]
    f = batch_mul(jnp.sqrt(self.alphas[i]), x) - x
    return f, jnp.sqrt(beta)


@SDES.register('subvpsde')
class subVPSDE(VPSDE):
  """The sub-VP SDE (Song et al. 2021, sec. 3.4), whose variance stays below the VP SDE's:

      dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta(s) ds))) dw.

  Kernel: ``alpha(t) = exp(m(t))`` as for VP, ``std(t) = 1 - exp(2 m(t))`` (not its square
  root); prior ``N(0, I)``. Its discretisation is Euler-Maruyama (there is no discrete model),
  so it has no DDPM tables and no lower bound on ``N``.
  """
  discrete_model = ''

  def __init__(self, beta_min: float = 0.1, beta_max: float = 20., N: int = 1000,
               chain: str = 'auto'):
    del chain  # No discrete chain to choose.
    super().__init__(beta_min, beta_max, N, chain='exponential')
    self.chain = None

  def _make_chain(self, beta_min: float, beta_max: float, N: int) -> None:
    del beta_min, beta_max, N

  def sde(self, x, t):
    beta_t = self.beta(t)
    discount = -jnp.expm1(4. * self.log_mean_coeff(t))  # 1 - exp(-2 int_0^t beta).
    return batch_mul(-0.5 * beta_t, x), jnp.sqrt(beta_t * discount)

  def marginal_coeffs(self, t):
    m = self.log_mean_coeff(t)
    return jnp.exp(m), -jnp.expm1(2. * m)

  def discretize(self, x, t):
    return SDE.discretize(self, x, t)


@SDES.register('vesde')
class VESDE(SDE):
  """Variance-exploding SDE (the continuum limit of SMLD), eq. (9):

      dx = sqrt(d[sigma^2(t)]/dt) dw,   sigma(t) = sigma_min (sigma_max / sigma_min)^t.

  ``std(t) = sigma(t)`` and ``alpha(t) = 1``. Exactly, the kernel from ``x(0)`` has variance
  ``sigma(t)^2 - sigma_min^2``; like the released models we take ``x(0)`` to be the data already
  perturbed by ``N(0, sigma_min^2 I)``, which makes ``sigma(t)`` the exact std from the clean
  data, the noise level the network is conditioned on. Prior ``N(0, sigma_max^2 I)``.
  """
  sampling_eps = 1e-5
  discrete_model = 'SMLD'

  def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50., N: int = 1000):
    super().__init__(N)
    if not 0 < sigma_min < sigma_max:
      raise ValueError(f'VESDE needs 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}.')
    self.sigma_min = float(sigma_min)
    self.sigma_max = float(sigma_max)
    self.discrete_sigmas = jnp.asarray(
        np.exp(np.linspace(np.log(sigma_min), np.log(sigma_max), N)), jnp.float32)

  def with_steps(self, N: int) -> 'VESDE':
    """``N`` geometric noise levels: SMLD's chain samples ``sigma(t)`` exactly at any ``N``."""
    return VESDE(self.sigma_min, self.sigma_max, N)

  @classmethod
  def from_config(cls, model_config) -> 'VESDE':
    return cls(model_config.sigma_min, model_config.sigma_max, model_config.num_scales)

  @classmethod
  def config_problems(cls, config) -> List[Tuple[str, str]]:
    """``SDE.config_problems``, and ``0 < sigma_min < sigma_max``; SMLD's chain has no
    variational bound to train on (``training.weighting='elbo'``)."""
    m, t = config.model, config.training
    problems = super().config_problems(config)
    if not 0. < m.sigma_min < m.sigma_max:
      problems.append(('model.sigma_max', f'VE needs 0 < sigma_min (={m.sigma_min}) < sigma_max; '
                                          'sigma_max is usually the largest pairwise distance '
                                          'between training images'))
    if t.weighting == 'elbo' and not t.continuous:
      problems.append(('training.weighting', "the discrete SMLD loss has no variational bound; "
                                             "use 'dsm' or training.continuous=True (the "
                                             'continuous bound exists for vesde)'))
    return problems

  def sigma(self, t: jax.Array) -> jax.Array:
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def sde(self, x, t):
    diffusion = self.sigma(t) * np.sqrt(2 * (np.log(self.sigma_max) - np.log(self.sigma_min)))
    return jnp.zeros_like(x), diffusion

  def marginal_coeffs(self, t):
    return jnp.ones_like(t), self.sigma(t)

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape, jnp.float32) * self.sigma_max

  @property
  def prior_std(self) -> float:
    return self.sigma_max

  def prior_logp(self, z):
    dim = np.prod(z.shape[1:])
    return (-0.5 * dim * np.log(2 * np.pi * self.sigma_max ** 2)
            - 0.5 * _sum_except_batch(z ** 2) / self.sigma_max ** 2)

  def discretize(self, x, t):
    """The SMLD chain: ``x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z``."""
    i = self._timestep(t)
    sigma = self.discrete_sigmas[i]
    adjacent = jnp.where(i == 0, 0., self.discrete_sigmas[jnp.maximum(i - 1, 0)])
    return jnp.zeros_like(x), jnp.sqrt(sigma ** 2 - adjacent ** 2)


def get_sde(config) -> SDE:
  """The SDE named by ``config.training.sde``, with hyper-parameters from ``config.model``."""
  return SDES.get(config.training.sde).from_config(config.model)
