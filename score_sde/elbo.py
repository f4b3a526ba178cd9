"""The variational bound on the negative log-likelihood (ELBO), in bits/dim, with its three terms.

Every diffusion model here is a latent-variable model whose bound (Ho et al. 2020, eq. 5) is

    -log p(x_0) <= KL(q(x_T | x_0) || p(x_T))                          prior matching
                 + sum_t E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))  denoising matching
                 + E_q[-log p(x_0 | x_1)]                                reconstruction.

Two forms are computed, both from a plain ``score_fn(x, t)`` (so a closed-form score is checked
against the same code a network runs through):

* **The discrete chain** (DDPM; ``VPSDE``'s ``N``-step chain, ``sde.chain_betas``). With chain
  label ``i = t - 1`` (0-based, the label a DDPM network is trained on) and
  ``abar_i = prod_{j <= i} (1 - beta_j)``, the posterior is
  ``q(x_{i-1} | x_i, x_0) = N(mu~(x_0, x_i), beta~_i I)`` with
  ``mu~ = sqrt(abar_{i-1}) beta_i / (1 - abar_i) x_0 + sqrt(1 - beta_i) (1 - abar_{i-1}) /
  (1 - abar_i) x_i`` and ``beta~_i = (1 - abar_{i-1}) beta_i / (1 - abar_i)`` (Ho et al. eqs. 6-7).
  The model's kernel is the posterior at the network's clean-image estimate
  ``x_hat = (x_i + (1 - abar_i) score) / sqrt(abar_i)`` (Tweedie), with DDPM's two fixed reverse
  variances: ``'posterior'`` (``beta~``, the lower bound on the optimal variance) or ``'beta'``
  (``beta``, the upper one). Each ``L_{t-1}`` is a closed-form Gaussian KL; ``L_0`` is DDPM's
  discretized Gaussian decoder on the 8-bit grid (Ho et al. sec. 3.3), whose variance at the
  first step is ``beta~`` of the second (``beta~`` of the first is zero), as in DDPM's code. The
  result is a bound on the discrete probability of the 8-bit image: no dequantization, no offset.

* **Continuous time** (VP, sub-VP, VE). The generative model is the reverse SDE (eq. 6) with
  ``score_fn`` from ``x_T ~ pi`` down to ``eps``, then a Gaussian decoder
  ``p(x_0 | x_eps) = N(x_hat, (std / alpha)^2 I)`` at ``eps``. Girsanov's theorem on
  ``[eps, T]`` against the forward process started at ``x_0`` (whose reversal has the score
  ``grad log p_0t(x_t | x_0) = -z / std``) gives (Song et al. 2021, "Maximum Likelihood Training
  of Score-Based Diffusion Models", Thm. 1 in its denoising form; Huang et al. 2021; Kingma et
  al. 2021, eq. 17):

      -log p(x_0) <= KL(p_0T(. | x_0) || pi)
                   + 1/2 int_eps^T g(t)^2 E_z || score(x_t, t) + z / std(t) ||^2 dt
                   + E_z[-log p(x_0 | x_eps)].

  The constant of the denoising form (``-g^2 ||grad log p_0t||^2`` and the drift's divergence)
  is inside the prior KL here, so no divergence is needed. Since ``d lambda / dt = -g^2 /
  (2 std^2)`` for every linear SDE (``lambda = log(alpha / std)``, the half log-SNR), the
  diffusion term is ``int_{lambda(T)}^{lambda(eps)} E_z || std score + z ||^2 d lambda``: the
  noise-prediction error integrated over log-SNR (Kingma et al. 2021). ``time_sampling =
  'importance'`` draws ``lambda`` uniformly (proposal ``proportional to g^2 / std^2``, the
  integrand's weight; ScoreFlow's importance sampling), ``'uniform'`` draws ``t ~ U(eps, T)``;
  both stratified over each example's ``num_samples`` draws (VDM's low-discrepancy sampler),
  with a zero-mean control variate for the noise's own norm (``get_elbo_fn``). The chain's
  sampled sum draws labels in proportion to their log-SNR drop (``label_probabilities``).
  On 8-bit images the data are dequantized and scaled as for the probability-flow ODE's
  bits/dim (``likelihood.bits_per_dim``: the same offset), so the two numbers compare directly.

Units: per example, nats internally; the returned terms are bits/dim, summing to the bound
(the dequantization offset, for the continuous form, is part of ``reconstruction``).
"""
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from score_sde import data, likelihood, losses, sde_lib
from score_sde.common import parallel
from score_sde.models import utils as mutils
from score_sde.sampling import schedule
from score_sde.sde_lib import batch_mul

REVERSE_VARIANCES = losses.REVERSE_VARIANCES
TIME_SAMPLINGS = ('importance', 'uniform')
DECODER_CDFS = ('exact', 'tanh')


def _sum_except_batch(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


# ------------------------------------------------------------------------------ Gaussian pieces
def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
  """``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` elementwise, in nats."""
  return 0.5 * (-1. + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def _tanh_normal_cdf(x):
  """The tanh approximation of the standard normal CDF that DDPM's code uses."""
  return 0.5 * (1. + jnp.tanh(np.sqrt(2. / np.pi) * (x + 0.044715 * x ** 3)))


def _log_normal_mass(a, b):
  """``log(Phi(b) - Phi(a))`` for ``a < b``, accurate in both tails: computed on the side of
  zero where both CDFs are small (``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)``)."""
  flip = (a + b) > 0.
  lo, hi = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
  log_hi, log_lo = jax.scipy.special.log_ndtr(hi), jax.scipy.special.log_ndtr(lo)
  return log_hi + jnp.log1p(-jnp.exp(jnp.minimum(log_lo - log_hi, -1e-30)))


def discretized_gaussian_log_likelihood(x, mean, log_scale, low: float = -1., high: float = 1.,
                                        levels: int = 256, cdf: str = 'exact') -> jax.Array:
  """``log P(x)`` of the bin of ``x`` under ``N(mean, exp(log_scale)^2)``, elementwise, nats.

  DDPM's decoder (Ho et al. sec. 3.3): the data are ``levels`` evenly spaced values from ``low``
  to ``high`` (8-bit images in model space); each bin spans half a step either side of its
  value, and the two edge bins run out to ``-inf`` and ``+inf``, so the masses sum to one.

  Args:
    x: data on the grid; mean, log_scale: broadcastable to ``x``.
    low, high: the grid's end values (``-1, 1`` for centered data, ``0, 1`` otherwise).
    levels: grid points (256 for 8 bits).
    cdf: ``'exact'`` (the normal CDF, in log space in the tails) or ``'tanh'`` (the tanh
      approximation and the ``1e-12`` floors of DDPM's and improved-diffusion's code, to
      reproduce their figures).
  """
  if cdf not in DECODER_CDFS:
    raise ValueError(f'cdf={cdf!r}; choose one of {", ".join(DECODER_CDFS)}.')
  half_bin = (high - low) / (2. * (levels - 1))
  inv_scale = jnp.exp(-log_scale)
  upper = (x - mean + half_bin) * inv_scale
  lower = (x - mean - half_bin) * inv_scale
  at_low, at_high = x < low + half_bin, x > high - half_bin
  if cdf == 'tanh':
    cdf_plus, cdf_min = _tanh_normal_cdf(upper), _tanh_normal_cdf(lower)
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1. - cdf_min, 1e-12))
    log_mass = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  else:
    log_cdf_plus = jax.scipy.special.log_ndtr(upper)
    log_one_minus_cdf_min = jax.scipy.special.log_ndtr(-lower)
    log_mass = _log_normal_mass(lower, upper)
  return jnp.where(at_low, log_cdf_plus, jnp.where(at_high, log_one_minus_cdf_min, log_mass))


def gaussian_prior_kl(sde: sde_lib.SDE, x0: jax.Array) -> jax.Array:
  """``KL(p_0T(. | x0) || N(0, prior_std^2 I))`` per example, ``(B,)`` nats: the prior term of
  the continuous bound (``p_0T = N(alpha(T) x0, std(T)^2 I)``)."""
  t_end = jnp.full(x0.shape[:1], sde.T, jnp.float32)
  mean, std = sde.marginal_prob(x0, t_end)
  logvar = 2. * jnp.log(std)
  prior_logvar = 2. * np.log(sde.prior_std)
  return _sum_except_batch(normal_kl(mean, batch_mul(logvar, jnp.ones_like(x0)), 0.,
                                     prior_logvar))


# ------------------------------------------------------------------------------ discrete chain
class _Chain:
  """DDPM's tables for the chain of a ``VPSDE``, computed in float64 and stored as float32."""

  def __init__(self, sde: sde_lib.SDE):
    if type(sde) is not sde_lib.VPSDE:  # sub-VP and VE have no DDPM chain.
      raise ValueError(f'The discrete bound is that of the DDPM chain of a VPSDE; got '
                       f'{type(sde).__name__}. Use the continuous bound (discrete=False).')
    if sde.N < 2:
      raise ValueError(f'The discrete bound needs a chain of N >= 2 steps; got N={sde.N}.')
    betas = np.asarray(sde.chain_betas, np.float64)
    abar = np.cumprod(1. - betas)
    abar_prev = np.append(1., abar[:-1])
    posterior_var = betas * (1. - abar_prev) / (1. - abar)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    self.num_steps = sde.N
    self.sqrt_abar, self.sqrt_1m_abar = f32(np.sqrt(abar)), f32(np.sqrt(1. - abar))
    self.one_minus_abar = f32(1. - abar)
    self.prior_mean_coeff = float(np.sqrt(abar[-1]))
    self.prior_logvar = float(np.log1p(-abar[-1]))
    self.coef_x0 = f32(betas * np.sqrt(abar_prev) / (1. - abar))
    self.coef_xt = f32((1. - abar_prev) * np.sqrt(1. - betas) / (1. - abar))
    # beta~_0 = 0: the first step's variance is beta~_1, as in DDPM's code.
    posterior_logvar = np.log(np.append(posterior_var[1], posterior_var[1:]))
    self.logvar = {'posterior': f32(posterior_logvar),
                   'beta': f32(np.log(np.append(posterior_var[1], betas[1:])))}
    self.true_logvar = self.logvar['posterior']


def ddpm_label_times(sde: sde_lib.SDE) -> jax.Array:
  """``(N,)`` float32 times ``t_i`` at which the discrete bound calls ``score_fn`` for chain label
  ``i``: the float32 nearest ``i / (N - 1)`` whose ``t (N - 1)`` is not below ``i``, so the
  discrete score adapter's ``int(t (N - 1))`` (``models.utils.get_score_fn``) reads label ``i``."""
  n = int(sde.N)
  labels = np.arange(n, dtype=np.float32)
  times = (np.arange(n, dtype=np.float64) / (n - 1)).astype(np.float32)
  low = times * np.float32(n - 1) < labels
  while low.any():  # At most a few ulps.
    times[low] = np.nextafter(times[low], np.float32(np.inf))
    low = times * np.float32(n - 1) < labels
  return jnp.asarray(times)


def ddpm_prior_kl(sde: sde_lib.SDE, x0: jax.Array) -> jax.Array:
  """``KL(q(x_N | x0) || N(0, I))`` per example, ``(B,)`` nats: the chain's prior term."""
  chain = _Chain(sde)
  mean = chain.prior_mean_coeff * x0
  return _sum_except_batch(normal_kl(mean, chain.prior_logvar, 0., 0.))


def _check_reverse_variance(reverse_variance: str) -> None:
  if reverse_variance not in REVERSE_VARIANCES:
    raise ValueError(f'reverse_variance={reverse_variance!r}; choose one of '
                     f'{", ".join(REVERSE_VARIANCES)} (DDPM\'s beta~ or beta).')


def ddpm_term(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x0: jax.Array, labels: jax.Array,
              noise: jax.Array, reverse_variance: str = 'posterior', clip_denoised: bool = False,
              data_range: Tuple[float, float] = (-1., 1.), cdf: str = 'exact',
              chain: Optional[_Chain] = None) -> jax.Array:
  """One term of the chain's bound per example, ``(B,)`` nats, at chain labels ``i`` ``(B,)``
  int: ``L_{i}`` = the KL of Ho et al. eq. 5 between ``q(x_{i-1} | x_i, x0)`` and the model's
  kernel for ``i >= 1``, and the discretized decoder's ``-log p(x0 | x_1)`` for ``i = 0``.

  Args:
    sde: a ``VPSDE`` (its DDPM chain).
    score_fn: ``score_fn(x, t)``, called at ``ddpm_label_times(sde)[labels]``.
    x0: ``(B, ...)`` float32 8-bit data on the grid of ``data_range``.
    labels: ``(B,)`` int chain labels in ``[0, N)``.
    noise: ``(B, ...)``, the standard normal draw of ``x_i = sqrt(abar_i) x0 + sqrt(1 -
      abar_i) noise``.
    reverse_variance: ``'posterior'`` (``beta~``) or ``'beta'``.
    clip_denoised: clip the clean-image estimate to ``data_range`` before forming the mean.
    data_range: model-space values of the 8-bit grid's ends.
    cdf: the decoder's normal CDF, as for ``discretized_gaussian_log_likelihood``.
  """
  _check_reverse_variance(reverse_variance)
  chain = _Chain(sde) if chain is None else chain
  labels = jnp.asarray(labels, jnp.int32)
  x_t = (batch_mul(chain.sqrt_abar[labels], x0) + batch_mul(chain.sqrt_1m_abar[labels], noise))
  score = score_fn(x_t, ddpm_label_times(sde)[labels])
  x_hat = batch_mul(1. / chain.sqrt_abar[labels],
                    x_t + batch_mul(chain.one_minus_abar[labels], score))
  if clip_denoised:
    x_hat = jnp.clip(x_hat, *data_range)
  posterior_mean = lambda x: (batch_mul(chain.coef_x0[labels], x)
                              + batch_mul(chain.coef_xt[labels], x_t))
  model_mean = posterior_mean(x_hat)
  model_logvar = batch_mul(chain.logvar[reverse_variance][labels], jnp.ones_like(x0))
  kl = _sum_except_batch(normal_kl(posterior_mean(x0),
                                   batch_mul(chain.true_logvar[labels], jnp.ones_like(x0)),
                                   model_mean, model_logvar))
  decoder_nll = -_sum_except_batch(discretized_gaussian_log_likelihood(
      x0, model_mean, 0.5 * model_logvar, *data_range, cdf=cdf))
  return jnp.where(labels == 0, decoder_nll, kl)


def ddpm_kl_weights(sde: sde_lib.SDE, reverse_variance: str = 'posterior',
                    design: str = 'eps') -> np.ndarray:
  """``(N,)`` float64 weights ``w_i`` with ``L_i = w_i || target - prediction ||^2 + c_i`` on
  the chain (``c_i`` independent of the network), for the derivation's two designs of the
  reverse kernel's mean (Ho et al. sec. 3.2):

  * ``'eps'``: ``mu_theta = (x_i - beta_i / sqrt(1 - abar_i) eps_hat) / sqrt(1 - beta_i)``:
    ``w_i = beta_i^2 / (2 sigma_i^2 (1 - beta_i) (1 - abar_i))`` on ``|| eps - eps_hat ||^2``
    (Ho et al. eq. 12; ``losses.ddpm_elbo_weights``, what ``training.weighting='elbo'``
    trains with);
  * ``'x0'``: ``mu_theta = mu~(x_hat, x_i)``: ``w_i = abar_{i-1} beta_i^2 / (2 sigma_i^2
    (1 - abar_i)^2)`` on ``|| x0 - x_hat ||^2``;

  with ``sigma_i^2`` the reverse variance. The same KL in two units (``x0 - x_hat = -sqrt((1 -
  abar_i) / abar_i) (eps - eps_hat)``). At ``i = 0`` the weight is that of a Gaussian decoder of
  the first step's variance, whose negative log-density is the discretized decoder's in the
  limit of narrow bins.
  """
  if design not in ('x0', 'eps'):
    raise ValueError(f"design={design!r}; choose 'x0' or 'eps'.")
  _Chain(sde)  # Fails for an SDE without a chain.
  eps_weight = losses.ddpm_elbo_weights(sde, reverse_variance)
  if design == 'eps':
    return eps_weight
  abar = np.cumprod(1. - np.asarray(sde.chain_betas, np.float64))
  return eps_weight * abar / (1. - abar)


# ------------------------------------------------------------------------------ estimators
def label_probabilities(sde: sde_lib.SDE, time_sampling: str = 'importance') -> np.ndarray:
  """``(N - 1,)`` float64 probabilities of drawing chain labels ``1 .. N - 1`` for the sampled
  denoising sum: ``'uniform'``, or ``'importance'``, each label's share of the chain's log-SNR
  drop ``log SNR_{i-1} - log SNR_i`` (``SNR_i = abar_i / (1 - abar_i)``), the discrete form of
  the continuous bound's proposal; the few low-noise labels that hold most of the sum are then
  drawn in proportion to their weight, where uniform labels would rarely see them."""
  if time_sampling not in TIME_SAMPLINGS:
    raise ValueError(f'time_sampling={time_sampling!r}; choose one of '
                     f'{", ".join(TIME_SAMPLINGS)}.')
  abar = np.cumprod(1. - np.asarray(sde.chain_betas, np.float64))
  if time_sampling == 'uniform':
    return np.full(abar.size - 1, 1. / (abar.size - 1))
  log_snr = np.log(abar) - np.log1p(-abar)
  drop = log_snr[:-1] - log_snr[1:]
  return drop / drop.sum()


def _stratified_uniform(rng: jax.Array, batch: int, num_samples: int) -> jax.Array:
  """``(K, B)`` draws in ``[0, 1)``, row ``k`` in the stratum ``[k / K, (k + 1) / K)``, drawn
  at the global batch shape."""
  u = jax.random.uniform(rng, (num_samples, batch))
  return (jnp.arange(num_samples, dtype=jnp.float32)[:, None] + u) / num_samples


def _mean_and_stderr(values: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Mean over the leading ``K`` axis of one draw per stratum (``_stratified_uniform``'s rows)
  and its standard error by collapsed strata: neighbouring strata ``(2j, 2j + 1)`` are taken as
  one stratum of two draws, ``Var ~ sum_j (y_2j - y_2j+1)^2 / K^2`` (conservative: it counts
  the integrand's change between neighbours as noise; the i.i.d. formula would count its whole
  range over the integral). Odd ``K``: the i.i.d. formula. ``K = 1``: NaN."""
  k = values.shape[0]
  mean = jnp.mean(values, axis=0)
  if k < 2:
    return mean, jnp.full_like(mean, jnp.nan)
  if k % 2:
    return mean, jnp.std(values, axis=0, ddof=1) / np.sqrt(k)
  pairs = values.reshape((k // 2, 2) + values.shape[1:])
  return mean, jnp.sqrt(jnp.sum(jnp.square(pairs[:, 0] - pairs[:, 1]), axis=0)) / k


def _map_samples(fn: Callable, inputs, chunk: Optional[int]):
  """``jax.lax.map`` over the leading axis, ``chunk`` evaluations vectorized at a time."""
  return jax.lax.map(fn, inputs, batch_size=chunk)


def _data_range(inverse_scaler: Optional[Callable]) -> Tuple[float, float]:
  """Model-space values of pixel values 0 and 1 under an affine ``inverse_scaler``."""
  if inverse_scaler is None:
    return 0., 1.
  with jax.ensure_compile_time_eval():
    at0 = float(inverse_scaler(jnp.float32(0.)))
    slope = float(inverse_scaler(jnp.float32(1.))) - at0
  return -at0 / slope, (1. - at0) / slope


def get_elbo_fn(sde: sde_lib.SDE, inverse_scaler: Optional[Callable] = None, *,
                discrete: bool = False, num_samples: Optional[int] = 16,
                time_sampling: str = 'importance', eps: float = 1e-5,
                reverse_variance: str = 'posterior', clip_denoised: bool = False,
                decoder_cdf: str = 'exact', control_variate: bool = False,
                chunk: Optional[int] = None, units: str = 'bpd'):
  """Builds ``elbo_fn(rng, score_fn, data) -> (bpd, terms)``, the per-example variational bound.

  The shape of ``likelihood.get_likelihood_fn``: a pure, traceable function of a typed key, a
  plain ``score_fn(x, t)`` and ``data`` ``(B, ...)`` in model space.

  Args:
    sde: the forward SDE. ``discrete=True`` needs a ``VPSDE`` (its DDPM chain).
    inverse_scaler: elementwise affine map from model space to ``[0, 1]`` (None: identity). The
      discrete bound reads the 8-bit grid's ends from it; the continuous one its Jacobian, as
      the ODE's bits/dim (``likelihood.bits_per_dim``).
    discrete: the DDPM chain's bound (data on the 8-bit grid, not dequantized) instead of the
      continuous one (data dequantized, as for the ODE).
    num_samples: draws per example of the denoising sum or integral: labels ``i in [1, N)``
      for the chain, times for continuous; each example's estimate comes with its standard
      error. ``None`` with ``discrete``: the exact sum over all ``N - 1`` labels.
    time_sampling: ``'importance'`` (uniform in log-SNR; for the chain, labels in proportion
      to their log-SNR drop, ``label_probabilities``) or ``'uniform'`` (in ``t``, or over the
      labels); both stratified.
    eps: continuous only: the decoder's time, the lower end of the integral.
    reverse_variance, clip_denoised, decoder_cdf: discrete only, as for ``ddpm_term``.
    control_variate: continuous only: subtract ``c(lambda) (||z||^2 - D)`` from each draw's
      integrand, ``c = alpha^2 / (alpha^2 + std^2)``: zero mean, so unbiased; it cancels the
      ``||z||^2`` that dominates the integrand at low noise, where the score cannot predict
      the noise. ``c`` is the optimum for unit-variance data: it lowers the error 20-50% on the
      VP and sub-VP closed-form targets, raises it 7-12% on VE's and 15% on the trained digits
      network (docs/likelihood.md), hence off by default.
    chunk: evaluations of ``score_fn`` vectorized at once over the samples (memory: ``chunk``
      batches); None: one after another.
    units: ``'bpd'`` or ``'nats'`` (per example; no dequantization offset).
  Returns:
    ``elbo_fn`` returning ``bpd (B,)`` float32 and ``terms``: ``'prior'``, ``'diffusion'``,
    ``'reconstruction'`` (``(B,)``, summing to ``bpd``), ``'diffusion_stderr'`` (``(B,)``, the
    standard error of the sampled ``'diffusion'``; 0 for the exact sum) and ``'nfe'`` (int32
    scalar: batched ``score_fn`` evaluations).
  """
  if units not in likelihood.UNITS:
    raise ValueError(f'Unknown units {units!r}; use one of {", ".join(likelihood.UNITS)}.')
  if num_samples is not None and int(num_samples) < 1:
    raise ValueError(f'num_samples={num_samples} must be >= 1 (or None for the exact sum).')
  if discrete:
    _check_reverse_variance(reverse_variance)
    chain = _Chain(sde)
    low, high = _data_range(inverse_scaler)
    if num_samples is not None and int(num_samples) > chain.num_steps - 1:
      raise ValueError(f'num_samples={num_samples} exceeds the chain\'s {chain.num_steps - 1} '
                       'denoising terms; pass num_samples=None for the exact sum.')
    body = _discrete_terms(sde, chain, num_samples, time_sampling, reverse_variance,
                           clip_denoised, (low, high), decoder_cdf, chunk)
  else:
    if time_sampling not in TIME_SAMPLINGS:
      raise ValueError(f'time_sampling={time_sampling!r}; choose one of '
                       f'{", ".join(TIME_SAMPLINGS)}.')
    if num_samples is None:
      raise ValueError('The continuous bound is estimated from sampled times; pass '
                       'num_samples >= 1.')
    if not 0. < eps < sde.T:
      raise ValueError(f'eps={eps} must lie in (0, T={sde.T}).')
    body = _continuous_terms(sde, int(num_samples), time_sampling, eps, chunk, control_variate)
  inverse_scaler = (lambda y: y) if inverse_scaler is None else inverse_scaler

  def elbo_fn(rng: jax.Array, score_fn: sde_lib.ScoreFn, data: jax.Array):
    nats, nfe = body(rng, score_fn, data)
    if not discrete:  # A density of the data in [0, 1] space: the scaler's Jacobian.
      nats['reconstruction'] = (nats['reconstruction']
                                + likelihood.inverse_scaler_log_det(inverse_scaler, data))
    dim = int(np.prod(data.shape[1:]))
    if units == 'nats':
      terms = dict(nats)
    else:
      to_bits = 1. / (dim * np.log(2.))
      terms = {name: value * to_bits for name, value in nats.items()}
      if not discrete:  # The dequantization offset: bits_per_dim's + 8 (centered: already
        terms['reconstruction'] = terms['reconstruction'] + 8.  # in the log-det).
    total = terms['prior'] + terms['diffusion'] + terms['reconstruction']
    return total, {**terms, 'nfe': nfe}

  return elbo_fn


def _discrete_terms(sde, chain, num_samples, time_sampling, reverse_variance, clip_denoised,
                    data_range, cdf, chunk):
  """The chain's terms in nats: ``(terms, nfe)``, as ``get_elbo_fn`` describes."""
  steps = chain.num_steps
  probs = label_probabilities(sde, time_sampling)
  cumulative = jnp.asarray(np.cumsum(probs), jnp.float32)
  probs = jnp.asarray(probs, jnp.float32)

  def term(score_fn, x0, labels, noise):
    return ddpm_term(sde, score_fn, x0, labels, noise, reverse_variance, clip_denoised,
                     data_range, cdf, chain)

  def body(rng, score_fn, x0):
    batch = x0.shape[0]
    noise_of = lambda key: jax.random.normal(key, x0.shape, x0.dtype)
    if num_samples is None:  # Every label, each with its own noise.
      labels = jnp.arange(1, steps)
      per_label = _map_samples(
          lambda i: term(score_fn, x0, jnp.full((batch,), i),
                         noise_of(jax.random.fold_in(rng, i))),
          labels, chunk)
      diffusion, stderr = jnp.sum(per_label, axis=0), jnp.zeros((batch,), jnp.float32)
      nfe = steps
    else:
      u = _stratified_uniform(jax.random.fold_in(rng, steps), batch, num_samples)
      index = jnp.minimum(jnp.searchsorted(cumulative, u, side='right'), steps - 2)
      keys = jax.random.split(jax.random.fold_in(rng, steps + 1), num_samples)
      per_draw = _map_samples(lambda a: term(score_fn, x0, a[0], noise_of(a[1])),
                              (index + 1, keys), chunk)
      diffusion, stderr = _mean_and_stderr(per_draw / probs[index])
      nfe = num_samples + 1
    reconstruction = term(score_fn, x0, jnp.zeros((batch,), jnp.int32),
                          noise_of(jax.random.fold_in(rng, 0)))
    terms = {'prior': ddpm_prior_kl(sde, x0), 'diffusion': diffusion,
             'reconstruction': reconstruction, 'diffusion_stderr': stderr}
    return terms, jnp.int32(nfe)

  return body


def continuous_integrand(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x0: jax.Array,
                         t: jax.Array, z: jax.Array) -> jax.Array:
  """``|| std(t) score(x_t, t) + z ||^2`` per example ``(B,)``, ``x_t = alpha x0 + std z``: the
  noise-prediction error, the diffusion term's integrand per unit of ``lambda`` (the half
  log-SNR); per unit of ``t`` it is this times ``g(t)^2 / (2 std(t)^2)``."""
  mean, std = sde.marginal_prob(x0, t)
  score = score_fn(mean + batch_mul(std, z), t)
  return _sum_except_batch(jnp.square(batch_mul(std, score) + z))


def continuous_reconstruction(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, x0: jax.Array,
                              eps: float, z: jax.Array) -> jax.Array:
  """``-log N(x0; x_hat(x_eps), (std / alpha)^2 I)`` at ``t = eps`` per example, ``(B,)`` nats,
  with ``x_hat = (x_eps + std^2 score) / alpha`` (Tweedie):
  ``D / 2 log(2 pi std^2 / alpha^2) + || std score + z ||^2 / 2``."""
  t = jnp.full(x0.shape[:1], eps, jnp.float32)
  alpha, std = sde.marginal_coeffs(t)
  dim = int(np.prod(x0.shape[1:]))
  log_norm = 0.5 * dim * (np.log(2. * np.pi) + 2. * (jnp.log(std) - jnp.log(alpha)))
  return log_norm + 0.5 * continuous_integrand(sde, score_fn, x0, t, z)


def _continuous_terms(sde, num_samples, time_sampling, eps, chunk, control_variate):
  """The continuous bound's terms in nats: ``(terms, nfe)``."""
  with jax.ensure_compile_time_eval():
    lam_eps = float(schedule.half_log_snr(sde, jnp.float32(eps)))
    lam_end = float(schedule.half_log_snr(sde, jnp.float32(sde.T)))

  def times_and_weights(u):
    """Times for stratified ``u`` and the factor turning the integrand into the integral."""
    if time_sampling == 'importance':
      lam = lam_end + u * (lam_eps - lam_end)
      return schedule.t_of_half_log_snr(sde, lam), jnp.full_like(u, lam_eps - lam_end)
    t = eps + u * (sde.T - eps)
    g2 = sde.sde(jnp.zeros(t.shape + (1,)), t)[1] ** 2
    std = sde.marginal_coeffs(t)[1]
    return t, (sde.T - eps) * g2 / (2. * std ** 2)

  def body(rng, score_fn, x0):
    batch = x0.shape[0]
    u = _stratified_uniform(jax.random.fold_in(rng, 0), batch, num_samples)
    keys = jax.random.split(jax.random.fold_in(rng, 1), num_samples)

    def one_draw(args):
      u_k, key = args
      t, weight = times_and_weights(u_k)
      z = jax.random.normal(key, x0.shape, x0.dtype)
      value = continuous_integrand(sde, score_fn, x0, t, z)
      if control_variate:
        alpha, std = sde.marginal_coeffs(t)
        share = alpha ** 2 / (alpha ** 2 + std ** 2)
        value = value - share * (_sum_except_batch(jnp.square(z)) - z[0].size)
      return weight * value

    diffusion, stderr = _mean_and_stderr(_map_samples(one_draw, (u, keys), chunk))
    z_eps = jax.random.normal(jax.random.fold_in(rng, 2), x0.shape, x0.dtype)
    terms = {'prior': gaussian_prior_kl(sde, x0), 'diffusion': diffusion,
             'reconstruction': continuous_reconstruction(sde, score_fn, x0, eps, z_eps),
             'diffusion_stderr': stderr}
    return terms, jnp.int32(num_samples + 1)

  return body


# ------------------------------------------------------------------------------ a run's bound
# The per-example terms of ``get_elbo_fn`` (bits/dim, ``(B,)``); its 'nfe' is a scalar.
TERMS = ('prior', 'diffusion', 'reconstruction', 'diffusion_stderr')


def uses_chain(config) -> bool:
  """Whether the bound of ``config``'s model is that of its DDPM chain (a discrete-time VP model:
  ``training.continuous=False``, ``training.sde='vpsde'``) rather than the continuous one."""
  return not config.training.continuous and str(config.training.sde).lower() == 'vpsde'


def get_run_elbo_fn(config, sde: sde_lib.SDE, num_samples: Optional[int] = None,
                    time_sampling: Optional[str] = None):
  """``get_elbo_fn`` for the run of ``config``: the DDPM chain's bound for a discrete-time VP
  model (``uses_chain``; 8-bit data, not dequantized; reverse variance
  ``model.reverse_variance``), the continuous-time bound otherwise (dequantized data, as the
  ODE's bits/dim).

  Args:
    config: the run's config; ``eval.elbo_samples`` (0: the chain's exact sum) and
      ``eval.elbo_time_sampling`` are the defaults of the two arguments below.
    sde: the run's SDE.
    num_samples, time_sampling: as for ``get_elbo_fn`` (0 for None).
  Returns:
    ``(elbo_fn, continuous)``: the bound and the ``continuous`` argument of
    ``models.utils.get_score_fn`` for its score: the chain's own labels for the chain,
    ``ode_score_continuous`` (the likelihood's) otherwise.
  """
  e = config.eval
  num_samples = e.elbo_samples if num_samples is None else num_samples
  time_sampling = e.elbo_time_sampling if time_sampling is None else time_sampling
  chain = uses_chain(config)
  fn = get_elbo_fn(sde, data.get_data_inverse_scaler(config.data.centered), discrete=chain,
                   num_samples=int(num_samples) or None, time_sampling=time_sampling,
                   reverse_variance=config.model.get('reverse_variance', 'posterior'))
  continuous = False if chain else mutils.ode_score_continuous(sde, config.training.continuous)
  return fn, continuous


def get_sharded_elbo_fn(elbo_fn, make_score_fn: Callable, mesh: Mesh,
                        scaler: Optional[Callable] = None):
  """``elbo_fn`` (``get_elbo_fn``) compiled once for a mesh, as
  ``likelihood.get_sharded_likelihood_fn``: the batch split over ``'data'``, the key and
  parameters replicated; each example's bound depends on that example only.

  Args:
    elbo_fn: ``elbo_fn(rng, score_fn, data) -> (bpd, terms)``.
    make_score_fn: ``make_score_fn(params) -> score_fn``.
    mesh: from ``parallel.make_mesh``.
    scaler: elementwise ``[0, 1] -> model space``, applied on device first (None: identity).
  Returns:
    ``fn(rng, params, images) -> (bpd (B,), terms)``; ``images`` ``(B, ...)`` in ``[0, 1]``
    (8-bit for the chain's bound, dequantized for the continuous one), a global ``jax.Array``
    or this host's rows as numpy; ``terms`` holds ``TERMS`` ``(B,)`` split like ``bpd`` and
    the replicated scalar ``'nfe'``.
  """
  scaler = (lambda x: x) if scaler is None else scaler

  def step(rng, params, images):
    return elbo_fn(rng, make_score_fn(params), scaler(images))

  split, whole = parallel.data_sharding(mesh), parallel.replicated(mesh)
  return parallel.jit_over_examples(step, mesh, (split, dict({name: split for name in TERMS},
                                                             nfe=whole)), 'ELBO batch size')
