"""Correctors against the closed-form laws of Langevin dynamics on a Gaussian.

For ``p_t = N(mu, v)`` per coordinate the score is linear, so unadjusted Langevin with a fixed step
``eps`` is the linear recursion ``x' = rho x + (1 - rho) mu + sqrt(2 eps) z`` with
``rho = 1 - eps / v``, whose mean and variance after ``M`` steps are known exactly. Step sizes
that depend on ``x`` change the stationary law itself; that is checked too.
"""
import jax
import jax.numpy as jnp
import numpy as np

import test_sampling_support as support
from score_sde import analytic, sampling
from score_sde.sampling import correctors

BATCH = 20000


def _gaussian(dim, seed=0):
  rng = np.random.default_rng(seed)
  return analytic.GaussianMixture(jnp.ones((1,)), jnp.asarray(rng.normal(size=(1, dim)),
                                                              jnp.float32),
                                  jnp.asarray(rng.uniform(0.2, 0.6, (1, dim)), jnp.float32))


def _run(name, sde, score_fn, snr, n_steps, x, t):
  corrector = sampling.CORRECTORS.get(name)(sde, score_fn, snr, n_steps)
  x, _ = jax.jit(corrector.update_fn)(jax.random.key(0), x, jnp.full((x.shape[0],), t))
  return np.asarray(x, np.float64)


def test_ald_matches_the_linear_recursion_in_closed_form():
  """Annealed Langevin (eps = 2 alpha_i (snr std_t)^2, alpha_i = 1 - beta_i of the DDPM chain for
  VP) started away from p_t: after M steps each coordinate's mean and variance equal
  mu + rho^M (m0 - mu) and rho^(2M) v0 + 2 eps (1 - rho^(2M)) / (1 - rho^2), within 5 standard
  errors of 2*10^4 samples."""
  sde, t, snr, m = support.SDES['vpsde'](100), 0.3, 0.2, 40
  target = _gaussian(4)
  law = analytic.marginal(target, sde, t)
  mu, v = np.asarray(law.means[0], np.float64), np.asarray(law.stds[0], np.float64) ** 2
  m0, v0 = mu + 1., 4. * v
  x = m0 + np.sqrt(v0) * np.random.default_rng(1).standard_normal((BATCH, 4))
  got = _run('ald', sde, analytic.score_fn(target, sde), snr, m, jnp.asarray(x, jnp.float32), t)
  beta_i = (0.1 + int(t * 99) / 99 * (20. - 0.1)) / 100  # DDPM chain, index floor(t (N - 1)).
  _, std_t = sde.marginal_coeffs(jnp.float32(t))
  eps = 2 * (1 - beta_i) * (snr * float(std_t)) ** 2
  rho = 1. - eps / v
  mean = mu + rho ** m * (m0 - mu)
  var = rho ** (2 * m) * v0 + 2 * eps * (1 - rho ** (2 * m)) / (1 - rho ** 2)
  np.testing.assert_array_less(np.abs(got.mean(0) - mean), 5 * np.sqrt(var / BATCH))
  np.testing.assert_array_less(np.abs(got.var(0) - var), 5 * var * np.sqrt(2. / BATCH))


def test_per_example_langevin_samples_the_documented_biased_law():
  """Per-example norms (``langevin_per_example``) make the step depend on x and z; at small steps
  the chain samples p^(D/(D+2)) ||s||^2, whose variance for p = N(0, v I) is v ((D+2)/D)^2 =
  1.5625 v at D = 8, while ``langevin`` (the reference's batch-averaged norms) keeps v. Both
  chains start at p and run to stationarity; tolerance 3% = ULA's O(snr^2) bias + 5 standard
  errors."""
  dim, v = 8, 0.5
  sde = support.SDES['vesde']()
  score_fn = lambda x, t: -x / v
  x = jnp.sqrt(v) * jax.random.normal(jax.random.key(1), (BATCH, dim))
  per_example = _run('langevin_per_example', sde, score_fn, 0.05, 1000, x, 0.5)
  batch = _run('langevin', sde, score_fn, 0.05, 1000, x, 0.5)
  np.testing.assert_allclose(per_example.var() / v, ((dim + 2) / dim) ** 2, rtol=0.03)
  np.testing.assert_allclose(batch.var() / v, 1., rtol=0.03)


def test_langevin_alpha_per_sde():
  """Algorithm 5's alpha_i is 1 - beta_i of VP's DDPM chain (beta_i = beta(i / (N-1)) / N,
  recomputed here); sub-VP, which has no chain (the released code crashed), and VE use 1."""
  t = jnp.asarray([1e-3, 0.5, 1.], jnp.float32)
  i = np.floor(np.asarray(t) * 99).astype(int)
  expected = 1 - (0.1 + i / 99 * 19.9) / 100
  np.testing.assert_allclose(correctors.langevin_alpha(support.SDES['vpsde'](), t), expected,
                             rtol=1e-6)
  for name in ('subvpsde', 'vesde'):
    np.testing.assert_array_equal(correctors.langevin_alpha(support.SDES[name](), t), 1.)


def test_paper_configs_select_the_references_batch_averaged_corrector():
  """The VE paper configs name 'langevin', which must be the reference's corrector: one step for
  the whole batch, 2 alpha (r mean||z|| / mean||s||)^2 (computed here independently), not
  per-example steps (those are 'langevin_per_example')."""
  import glob
  import importlib
  import os
  names = set()
  for path in glob.glob(os.path.join(os.path.dirname(__file__), '..', 'configs', 've', '*.py')):
    module = os.path.splitext(os.path.basename(path))[0]
    if module.startswith('_'):
      continue
    names.add(importlib.import_module(f'configs.ve.{module}').get_config().sampling.corrector)
  assert names == {'langevin'}
  sde = support.SDES['vesde']()
  corrector = correctors.CORRECTORS.get('langevin')(sde, None, snr=0.16, n_steps=1)
  score = jax.random.normal(jax.random.key(2), (6, 5)) * jnp.arange(1., 7.)[:, None]
  z = jax.random.normal(jax.random.key(3), (6, 5))
  t = jnp.full((6,), 0.5)
  ratio = 0.16 * np.mean(np.linalg.norm(np.asarray(z), axis=1)) / np.mean(
      np.linalg.norm(np.asarray(score), axis=1))
  np.testing.assert_allclose(corrector.step_size(score, z, t), 2. * ratio ** 2 * np.ones(6),
                             rtol=1e-5)
