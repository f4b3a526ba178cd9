"""SDEs against closed forms, an independent ODE for the moments, and Monte Carlo of eq. (5)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from score_sde import sde_lib

SDES = {
    'vpsde': lambda n=1000: sde_lib.VPSDE(0.1, 20., n),
    'subvpsde': lambda n=1000: sde_lib.subVPSDE(0.1, 20., n),
    'vesde': lambda n=1000: sde_lib.VESDE(0.01, 50., n),
}
TIMES = np.array([1e-5, 1e-3, 0.1, 0.5, 0.9, 1.0])


def _coeffs(sde, t):
  """Affine drift coefficient f(t) (drift = f x) and diffusion g(t), in float64 numpy."""
  tt = jnp.full((1,), t, jnp.float32)
  drift, g = sde.sde(jnp.ones((1, 1)), tt)
  return float(drift[0, 0]), float(g[0])


@pytest.mark.parametrize('name', SDES)
def test_marginals_solve_the_moment_odes(name):
  """marginal_coeffs is the solution of d alpha/dt = f alpha, d var/dt = 2 f var + g^2 (the
  moment equations of a linear SDE), integrated numerically in float64 from sde()."""
  sde = SDES[name]()
  var0 = sde.sigma_min ** 2 if name == 'vesde' else 0.  # VE: x(0) carries sigma_min noise.

  def rhs(t, y):
    f, g = _coeffs(sde, t)
    return [f * y[0], 2 * f * y[1] + g ** 2]

  sol = integrate.solve_ivp(rhs, (0., 1.), [1., var0], t_eval=TIMES, rtol=1e-10, atol=1e-12)
  alpha, std = sde.marginal_coeffs(jnp.asarray(TIMES, jnp.float32))
  np.testing.assert_allclose(alpha, sol.y[0], rtol=2e-5)
  np.testing.assert_allclose(std, np.sqrt(sol.y[1]), rtol=2e-4, atol=1e-7)


def test_vp_std_is_accurate_in_float32_at_small_t():
  """std(t) = sqrt(1 - exp(2m)) keeps ~1e-6 relative precision at t ~ 1e-5 in float32, where the
  naive 1 - exp(.) form (the released code's) loses ~1e-3 or more."""
  sde = SDES['vpsde']()
  t = np.geomspace(1e-6, 1., 50)
  m = -0.25 * t ** 2 * (20. - 0.1) - 0.5 * t * 0.1
  exact = np.sqrt(-np.expm1(2 * m))
  _, std = sde.marginal_coeffs(jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(np.asarray(std, np.float64), exact, rtol=2e-6)
  naive = np.sqrt(1. - np.exp(2 * m.astype(np.float32)))
  assert np.max(np.abs(naive / exact - 1.)) > 1e-3  # The failure mode this protects against.


@pytest.mark.parametrize('name', SDES)
def test_euler_maruyama_monte_carlo_matches_marginal_prob(name):
  """Simulating eq. (5) with 1000 Euler-Maruyama steps from a fixed x(0) reproduces
  marginal_prob's mean and std at t = 0.5 and 1 (4 standard errors + O(dt) bias)."""
  sde = SDES[name]()
  n, steps, x0 = 20000, 1000, 1.5
  dt = 1. / steps
  rng = jax.random.key(0)
  x = jnp.full((n, 1), x0, jnp.float32)
  if name == 'vesde':
    x = x + sde.sigma_min * jax.random.normal(jax.random.fold_in(rng, steps), x.shape)

  def step(x, i):
    t = jnp.full((n,), i * dt)
    drift, g = sde.sde(x, t)
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape)
    x = x + drift * dt + sde_lib.batch_mul(g * jnp.sqrt(dt), z)
    return x, x[:, 0]

  _, path = jax.jit(lambda x: jax.lax.scan(step, x, jnp.arange(steps)))(x)
  for t in (0.5, 1.0):
    xs = np.asarray(path[int(round(t * steps)) - 1], np.float64)
    mean, std = sde.marginal_prob(jnp.full((1, 1), x0), jnp.full((1,), t))
    mean, std = float(mean[0, 0]), float(std[0])
    se_mean, se_std = std / np.sqrt(n), std / np.sqrt(2 * n)
    assert abs(xs.mean() - mean) < 4 * se_mean + 2e-3 * abs(mean), (t, xs.mean(), mean)
    assert abs(xs.std() - std) < 4 * se_std + 2e-3 * std, (t, xs.std(), std)


def test_vp_discretize_is_the_ddpm_chain():
  """Chaining VPSDE.discretize gives mean sqrt(alphabar_i) x0 and variance 1 - alphabar_i (the
  DDPM forward kernel), and alphabar_i approaches alpha(t_i)^2 of the SDE as N grows."""
  sde = SDES['vpsde'](1000)
  mean, var = jnp.ones((1, 1)), 0.
  for i in range(50):
    f, g = sde.discretize(mean, jnp.full((1,), (i + 0.5) / (sde.N - 1)))
    mean, var = mean + f, (1. + f[0, 0] / mean[0, 0]) ** 2 * var + g[0] ** 2
  np.testing.assert_allclose(mean[0, 0], sde.sqrt_alphas_cumprod[49], rtol=1e-5)
  np.testing.assert_allclose(var, 1. - sde.alphas_cumprod[49], rtol=1e-4)
  errors = []
  for n in (250, 1000, 4000):
    fine = SDES['vpsde'](n)
    i = np.arange(n)
    alpha, _ = fine.marginal_coeffs(jnp.asarray(i / (n - 1), jnp.float32))
    errors.append(np.max(np.abs(np.asarray(fine.alphas_cumprod) - np.asarray(alpha) ** 2)))
  assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-2, errors


def test_ve_discretize_is_the_smld_chain():
  """The SMLD noise increments telescope: sum_{j<=i} G_j^2 = sigma_i^2 (eq. 8)."""
  sde = SDES['vesde'](100)
  t = (jnp.arange(sde.N) + 0.5) / (sde.N - 1)  # Mid-cell: _timestep truncates.
  f, g = sde.discretize(jnp.ones((sde.N, 2)), t)
  assert np.all(np.asarray(f) == 0)
  np.testing.assert_allclose(np.cumsum(np.asarray(g, np.float64) ** 2),
                             np.asarray(sde.discrete_sigmas, np.float64) ** 2, rtol=1e-5)


def test_timestep_maps_the_sampler_grid_onto_every_index():
  """linspace(T, eps, N) with the VP eps of 1e-3 lands on indices N-1, ..., 0 exactly once."""
  sde = SDES['vpsde'](1000)
  idx = sde._timestep(jnp.linspace(sde.T, 1e-3, sde.N))
  np.testing.assert_array_equal(np.asarray(idx), np.arange(sde.N)[::-1])


@pytest.mark.parametrize('name', SDES)
def test_probability_flow_transports_gaussian_marginals(name):
  """For data N(0, s^2) the marginal variance is v(t) = alpha^2 s^2 + std^2, and the
  probability-flow drift (eq. 13) must be x v'(t) / (2 v(t)); v' by central differences."""
  sde, s = SDES[name](), 0.7

  def v(t):
    alpha, std = sde.marginal_coeffs(jnp.asarray([t], jnp.float32))
    return np.float64(alpha[0]) ** 2 * s ** 2 + np.float64(std[0]) ** 2

  score_fn = lambda x, t: -x / jnp.asarray([v(float(t[0]))], jnp.float32)[:, None]
  rev = sde.reverse(score_fn, probability_flow=True)
  for t in (0.2, 0.6):
    x = jnp.asarray([[1.3]])
    drift, diffusion = rev.sde(x, jnp.asarray([t]))
    h = 1e-3
    expected = 1.3 * (v(t + h) - v(t - h)) / (2 * h) / (2 * v(t))
    np.testing.assert_allclose(drift[0, 0], expected, rtol=2e-3)
    assert diffusion[0] == 0


@pytest.mark.parametrize('name', SDES)
def test_reverse_sde_drift_and_discretization(name):
  """Reverse SDE (eq. 6): drift f - g^2 score, same diffusion; its discretisation subtracts
  G^2 score from the forward step's f."""
  sde = SDES[name]()
  x = jax.random.normal(jax.random.key(1), (3, 4, 4, 1))
  t = jnp.asarray([0.1, 0.5, 0.9])
  score = jax.random.normal(jax.random.key(2), x.shape)
  rev = sde.reverse(lambda x_, t_: score)
  f, g = sde.sde(x, t)
  drift, diffusion = rev.sde(x, t)
  np.testing.assert_allclose(drift, f - g[:, None, None, None] ** 2 * score, rtol=1e-6)
  np.testing.assert_allclose(diffusion, g)
  fd, gd = sde.discretize(x, t)
  rf, rg = rev.discretize(x, t)
  np.testing.assert_allclose(rf, fd - gd[:, None, None, None] ** 2 * score, rtol=1e-6)
  np.testing.assert_allclose(rg, gd)


@pytest.mark.parametrize('name', SDES)
def test_prior_logp_and_sampling(name):
  """prior_logp is the sum of N(0, prior_std^2) log-densities (scipy), and prior_sampling draws
  with that std."""
  sde = SDES[name]()
  prior_std = 50. if name == 'vesde' else 1.
  z = sde.prior_sampling(jax.random.key(3), (4000, 3, 2))
  np.testing.assert_allclose(np.std(np.asarray(z)), prior_std, rtol=0.03)
  expected = stats.norm(scale=prior_std).logpdf(np.asarray(z, np.float64)).sum(axis=(1, 2))
  np.testing.assert_allclose(sde.prior_logp(z), expected, rtol=1e-5)


def test_get_sde_from_config_and_unknown_name(smoke_config):
  """Configs name SDEs through the registry; a typo lists the known names."""
  smoke_config.training.sde = 'vpsde'
  # N = 10 steps cannot carry DDPM's beta up to 20: the exponential chain takes over.
  assert sde_lib.get_sde(smoke_config).chain == 'exponential'
  smoke_config.model.num_scales = 100
  sde = sde_lib.get_sde(smoke_config)
  assert isinstance(sde, sde_lib.VPSDE) and sde.N == smoke_config.model.num_scales
  smoke_config.training.sde = 'vp_sde'
  with pytest.raises(KeyError, match='subvpsde, vesde, vpsde'):
    sde_lib.get_sde(smoke_config)
  with pytest.raises(ValueError, match='sigma_min < sigma_max'):
    sde_lib.VESDE(50., 0.01)
  # sub-VP has no discrete chain, so few steps are fine (fast samplers use N = 10 or 20).
  assert not hasattr(sde_lib.subVPSDE(0.1, 20., 10), 'alphas_cumprod')


def test_methods_are_jit_and_vmap_safe():
  """marginal_prob under jit and vmap equals the eager result."""
  sde = SDES['subvpsde']()
  x, t = jnp.ones((5, 3)), jnp.linspace(0.1, 1., 5)
  eager = sde.marginal_prob(x, t)
  jitted = jax.jit(sde.marginal_prob)(x, t)
  mapped = jax.vmap(lambda xi, ti: sde.marginal_prob(xi[None], ti[None]))(x, t)
  for a, b, c in zip(eager, jitted, mapped):
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, c.reshape(a.shape), rtol=1e-6)


def test_vp_chain_choice_and_the_exponential_chain():
  """Protects few-step VP sampling without changing the released chain: 'auto' keeps DDPM's
  beta_i = beta(i / (N - 1)) / N wherever it is a probability (bit for bit), and below that
  uses beta_i = 1 - exp(-beta(i / (N - 1)) / N), in (0, 1) at any N; DDPM's chain asked for
  where it is invalid, or an unknown chain, is an error naming the fix. with_steps keeps the
  SDE and its parameters and changes only N."""
  n = 1000
  ddpm = sde_lib.VPSDE(0.1, 20., n)
  assert ddpm.chain == 'ddpm'
  released = np.linspace(0.1 / n, 20. / n, n)
  np.testing.assert_array_equal(ddpm.discrete_betas, released.astype(np.float32))
  for n in (2, 10, 20):
    sde = sde_lib.VPSDE(0.1, 20., n)
    want = -np.expm1(-np.linspace(0.1, 20., n) / n)
    assert sde.chain == 'exponential'
    np.testing.assert_allclose(sde.discrete_betas, want, rtol=1e-6)
    assert 0. < float(sde.discrete_betas.min()) and float(sde.discrete_betas.max()) < 1.
    np.testing.assert_allclose(sde.alphas_cumprod, np.cumprod(1. - want), rtol=1e-5)
  assert sde_lib.VPSDE(0.1, 20., 21).chain == 'ddpm'
  with pytest.raises(ValueError, match="chain='exponential'"):
    sde_lib.VPSDE(0.1, 20., 10, chain='ddpm')
  with pytest.raises(ValueError, match='auto, ddpm, exponential'):
    sde_lib.VPSDE(chain='exact')
  for sde in (sde_lib.VPSDE(0.2, 10., 1000), sde_lib.subVPSDE(0.2, 10., 1000),
              sde_lib.VESDE(0.02, 30., 1000)):
    few = sde.with_steps(10)
    assert type(few) is type(sde) and few.N == 10
    t = jnp.linspace(0., 1., 5)
    for a, b in zip(few.marginal_coeffs(t), sde.marginal_coeffs(t)):
      np.testing.assert_array_equal(a, b)
