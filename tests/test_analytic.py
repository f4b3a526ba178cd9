"""The closed-form targets are themselves checked against autodiff, scipy and Monte Carlo."""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, stats

from score_sde import analytic, sde_lib


def _mixture(event_shape=(2,)):
  return analytic.random_mixture(np.random.default_rng(0), 3, event_shape)


def test_log_prob_matches_scipy_and_normalises():
  """A 1-D mixture's log_prob equals scipy's weighted normal pdfs and integrates to one."""
  gmm = _mixture((1,))
  w, m, s = (np.asarray(a, np.float64) for a in (gmm.weights, gmm.means, gmm.stds))
  xs = np.linspace(-3, 3, 7)[:, None]
  expected = np.log(sum(w[k] * stats.norm(m[k, 0], s[k, 0]).pdf(xs[:, 0]) for k in range(3)))
  np.testing.assert_allclose(gmm.log_prob(jnp.asarray(xs, jnp.float32)), expected, rtol=1e-5)
  pdf = lambda x: float(jnp.exp(gmm.log_prob(jnp.asarray([[x]], jnp.float32)))[0])
  total, _ = integrate.quad(pdf, -10, 10, limit=200)
  np.testing.assert_allclose(total, 1., atol=1e-5)


def test_score_is_the_gradient_of_log_prob():
  """score(x) equals jax.grad of log_prob, for the data and for every perturbed marginal."""
  gmm = _mixture((2, 2))
  x = jax.random.normal(jax.random.key(0), (5, 2, 2))
  grad = jax.vmap(jax.grad(lambda xi: gmm.log_prob(xi[None])[0]))(x)
  np.testing.assert_allclose(gmm.score(x), grad, rtol=1e-4, atol=1e-5)
  for sde in (sde_lib.VPSDE(), sde_lib.subVPSDE(), sde_lib.VESDE(0.01, 5.)):
    t = jnp.linspace(0.05, 1., 5)
    log_p = analytic.log_prob_fn(gmm, sde)
    grad = jax.grad(lambda x_: jnp.sum(log_p(x_, t)))(x)
    np.testing.assert_allclose(analytic.score_fn(gmm, sde)(x, t), grad, rtol=1e-4, atol=1e-5)


def test_marginal_matches_monte_carlo_of_the_kernel():
  """Perturbing samples with the SDE kernel alpha x0 + std z gives the mean and covariance of
  analytic.marginal's mixture (4 standard errors)."""
  gmm, sde, t, n = _mixture(), sde_lib.VPSDE(), 0.3, 200000
  x0 = gmm.sample(jax.random.key(1), n)
  mean, std = sde.marginal_prob(x0, jnp.full((n,), t))
  xt = np.asarray(mean + std[:, None] * jax.random.normal(jax.random.key(2), x0.shape))
  mt = analytic.marginal(gmm, sde, t)
  w, mu, s = (np.asarray(a, np.float64) for a in (mt.weights, mt.means, mt.stds))
  exp_mean = w @ mu
  exp_var = w @ (s ** 2 + mu ** 2) - exp_mean ** 2
  np.testing.assert_array_less(np.abs(xt.mean(0) - exp_mean), 4 * np.sqrt(exp_var / n))
  np.testing.assert_array_less(np.abs(xt.var(0) - exp_var), 4 * exp_var * np.sqrt(2. / n) * 2)
