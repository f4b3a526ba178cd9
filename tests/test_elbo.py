"""The variational bound (``score_sde.elbo``) against closed forms.

Gaussian data ``N(mu, diag s^2)`` under every SDE: with the exact score the bound's expectation
over the data is the entropy plus two computed gaps (the prior mismatch ``KL(p_T || pi)`` and the
decoder's, at ``eps``), and each term's expectation has its own closed form. Data on the 8-bit
grid: the DDPM chain's bound with the exact posterior mean closes on the entropy as ``N`` grows.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic, elbo, sde_lib
from score_sde.sampling import schedule

MEAN = np.array([0.3, -0.2, 0.5, 0.1])
STD = np.array([0.5, 0.8, 0.3, 1.0])
GAUSSIAN = analytic.GaussianMixture(jnp.ones(1), jnp.asarray(MEAN[None], jnp.float32),
                                    jnp.asarray(STD[None], jnp.float32))
SDES = {'vp': lambda: sde_lib.VPSDE(), 'subvp': lambda: sde_lib.subVPSDE(),
        've': lambda: sde_lib.VESDE(sigma_max=5.)}
EPS = 1e-5


def _coeffs(sde, t):
  return [float(v) for v in sde.marginal_coeffs(jnp.float32(t))]


def _expected_terms(sde, eps=EPS):
  """Closed-form expectations over ``x ~ N(mu, s^2)`` (nats): the diffusion term
  ``int sum_d SNR s_d^2 / (SNR s_d^2 + 1) d lambda`` (the posterior variance of the noise,
  integrated over the half log-SNR), the decoder's, the prior KL, and entropy plus gaps."""
  s2 = STD ** 2
  lam_eps = float(schedule.half_log_snr(sde, jnp.float32(eps)))
  lam_end = float(schedule.half_log_snr(sde, jnp.float32(sde.T)))
  lam = np.linspace(lam_end, lam_eps, 400001)
  snr = np.exp(2. * lam)[:, None]
  diffusion = np.trapezoid(np.sum(snr * s2 / (snr * s2 + 1.), axis=1), lam)
  alpha, std = _coeffs(sde, eps)
  snr_eps = alpha ** 2 / std ** 2
  reconstruction = (0.5 * MEAN.size * np.log(2. * np.pi * std ** 2 / alpha ** 2)
                    + 0.5 * np.sum(snr_eps * s2 / (snr_eps * s2 + 1.)))
  alpha_end, std_end = _coeffs(sde, sde.T)
  var_end, prior_var = alpha_end ** 2 * s2 + std_end ** 2, sde.prior_std ** 2
  prior_mismatch = 0.5 * np.sum(np.log(prior_var / var_end)
                                + (var_end + (alpha_end * MEAN) ** 2) / prior_var - 1.)
  posterior_var, decoder_var = 1. / (1. / s2 + snr_eps), 1. / snr_eps
  decoder_gap = 0.5 * np.sum(np.log(decoder_var / posterior_var)
                             + posterior_var / decoder_var - 1.)
  entropy = 0.5 * np.sum(np.log(2. * np.pi * np.e * s2))
  return {'diffusion': diffusion, 'reconstruction': reconstruction,
          'bound': entropy + prior_mismatch + decoder_gap}


def _bound(sde, data, rng, **kwargs):
  fn = elbo.get_elbo_fn(sde, units='nats', **kwargs)
  bound, terms = jax.jit(lambda r, x: fn(r, analytic.score_fn(GAUSSIAN, sde), x))(rng, data)
  return np.asarray(bound, np.float64), {k: np.asarray(v, np.float64) for k, v in terms.items()}


def _within(values, expected, sigmas=4.):
  mean, stderr = values.mean(), values.std(ddof=1) / np.sqrt(values.size)
  assert abs(mean - expected) < sigmas * stderr, (mean, stderr, expected)


@pytest.mark.parametrize('name', sorted(SDES))
def test_continuous_bound_with_exact_score_equals_entropy_plus_computed_gaps(name):
  """Protects the continuous bound (Girsanov on [eps, T] + prior KL + Gaussian decoder): with the
  exact score its mean over the data is the entropy plus the prior mismatch and the decoder's
  gap, and each term's mean is its closed form; the prior term is exact per example."""
  sde = SDES[name]()
  data = GAUSSIAN.sample(jax.random.key(1), 20000)
  bound, terms = _bound(sde, data, jax.random.key(2), num_samples=8)
  expected = _expected_terms(sde)
  _within(terms['diffusion'], expected['diffusion'])
  _within(terms['reconstruction'], expected['reconstruction'])
  _within(bound, expected['bound'])
  np.testing.assert_allclose(bound, terms['prior'] + terms['diffusion'] + terms['reconstruction'],
                             rtol=1e-5, atol=1e-4)
  alpha, std = _coeffs(sde, sde.T)
  var, prior_var = std ** 2, sde.prior_std ** 2
  prior = 0.5 * np.sum(np.log(prior_var / var) + (var + (alpha * np.asarray(data)) ** 2)
                       / prior_var - 1., axis=1)
  np.testing.assert_allclose(terms['prior'], prior, rtol=1e-4, atol=1e-5)


def test_importance_sampling_and_control_variate_lower_the_variance_without_bias():
  """Protects the estimators: uniform and log-SNR (importance) times, with and without the
  control variate, agree within their standard errors on the same data, and each variance
  reduction lowers the per-example standard error it reports."""
  sde = sde_lib.VPSDE()
  eps = 1e-3  # The uniform estimator's weight g^2 / std^2 ~ 1 / t: a finite variance needs eps.
  data = GAUSSIAN.sample(jax.random.key(3), 8000)
  runs = {(sampling, cv): _bound(sde, data, jax.random.key(4), num_samples=8, eps=eps,
                                 time_sampling=sampling, control_variate=cv)[1]
          for sampling in ('uniform', 'importance') for cv in (False, True)}
  expected = _expected_terms(sde, eps)['diffusion']
  for terms in runs.values():
    _within(terms['diffusion'], expected)
  stderr = {key: np.mean(terms['diffusion_stderr']) for key, terms in runs.items()}
  assert stderr['importance', False] < stderr['uniform', False]
  assert stderr['importance', True] < stderr['importance', False]


class _ChainCoeffs:
  """The DDPM chain's kernel as ``marginal_coeffs``, at label ``round(t (N - 1))``, for the
  closed-form mixture score of the chain's marginals."""

  def __init__(self, sde):
    self.sde = sde

  def marginal_coeffs(self, t):
    i = jnp.round(t * (self.sde.N - 1)).astype(jnp.int32)
    return self.sde.sqrt_alphas_cumprod[i], self.sde.sqrt_1m_alphas_cumprod[i]


def _grid(k):
  return 2. * k / 255. - 1.


GRID_POINTS = jnp.asarray([[_grid(40), _grid(200)], [_grid(41), _grid(200)],
                           [_grid(128), _grid(10)]], jnp.float32)
GRID_WEIGHTS = jnp.asarray([0.5, 0.3, 0.2])
# Point masses on the 8-bit grid (a std far below the bin width): the exact posterior mean.
GRID_DATA = analytic.GaussianMixture(GRID_WEIGHTS, GRID_POINTS, jnp.full_like(GRID_POINTS, 1e-4))


def _chain_bound(num_steps, num_samples, rng):
  sde = sde_lib.VPSDE(0.1, 20., num_steps)
  k = jax.random.choice(jax.random.key(0), 3, (1000,), p=GRID_WEIGHTS)
  fn = elbo.get_elbo_fn(sde, discrete=True, num_samples=num_samples, units='nats', chunk=128)
  score = analytic.score_fn(GRID_DATA, _ChainCoeffs(sde))
  bound, terms = jax.jit(lambda r, x: fn(r, score, x))(rng, GRID_POINTS[k])
  return np.asarray(bound, np.float64), terms


def test_chain_bound_closes_on_the_entropy_as_steps_grow():
  """Protects the DDPM chain's bound (closed-form KLs, discretized decoder): with the exact
  posterior mean on 8-bit data its mean over the data stays above the entropy and closes on it
  as N grows (the Gaussian reverse kernel and the decoder become exact); the sum sampled by
  log-SNR agrees with the exact one within its standard error."""
  entropy = float(-jnp.sum(GRID_WEIGHTS * jnp.log(GRID_WEIGHTS)))
  exact, terms = _chain_bound(100, None, jax.random.key(1))
  sampled, sampled_terms = _chain_bound(100, 32, jax.random.key(1))
  assert float(jnp.max(terms['diffusion_stderr'])) == 0.
  stderr = np.sqrt(np.mean(np.asarray(sampled_terms['diffusion_stderr']) ** 2) / exact.size)
  assert abs(sampled.mean() - exact.mean()) < 4. * stderr + 1e-6
  gaps = [exact.mean() - entropy]
  for steps in (1000, 100000):
    bound, _ = _chain_bound(steps, 32, jax.random.key(2))
    gaps.append(bound.mean() - entropy)
    se = bound.std(ddof=1) / np.sqrt(bound.size)
  # N = 100, 1000, 1e5: 3.0, 1.6, 0.1 nats measured, the last within 3 standard errors of 0.
  assert gaps[0] > gaps[1] > gaps[2] > -4. * se, (gaps, se)
  assert gaps[1] > 1. and gaps[2] < 0.3, (gaps, se)


def test_decoder_is_a_distribution_over_the_grid():
  """Protects the discretized decoder: its bin masses sum to one over the 256 levels (edge bins
  open to infinity), in both CDFs, for a narrow and a wide Gaussian anywhere in the range."""
  levels = _grid(np.arange(256.))[:, None]
  for mean, log_scale in ((0.3, np.log(0.01)), (-0.99, np.log(0.5)), (1.2, np.log(0.002))):
    for cdf in elbo.DECODER_CDFS:
      log_p = elbo.discretized_gaussian_log_likelihood(jnp.asarray(levels, jnp.float32), mean,
                                                       log_scale, cdf=cdf)
      np.testing.assert_allclose(float(jnp.sum(jnp.exp(log_p))), 1., atol=2e-4)


@pytest.mark.parametrize('kwargs, match', [
    ({'discrete': True, 'sde': 'subvp'}, 'DDPM chain'),
    ({'time_sampling': 'sobol'}, 'time_sampling'),
    ({'discrete': True, 'num_samples': 5000}, 'exact sum'),
    ({'num_samples': None}, 'num_samples >= 1'),
    ({'discrete': True, 'reverse_variance': 'learned'}, 'reverse_variance'),
])
def test_bad_arguments_name_the_fix(kwargs, match):
  """Protects the builder's checks: each bad argument fails at build time naming the choice."""
  sde = SDES[kwargs.pop('sde', 'vp')]()
  with pytest.raises(ValueError, match=match):
    elbo.get_elbo_fn(sde, **kwargs)
