"""EDM's preconditioned denoisers and objectives are NVlabs/edm's own.

``tests/fixtures/edm_precond.npz`` holds EDM's ``EDMPrecond`` (sigma_data 0.5), ``VPPrecond`` and
``VEPrecond`` (commit 008a4e5, ``training/networks.py``) around the closed-form inner network
``F(x, c_noise) = tanh(a x + b c_noise + c)`` at fixed images and noise levels 0.002 to 80, and
EDM's ``EDMLoss``, ``VPLoss`` and ``VELoss`` (``training/loss.py``) per image with the draws they
made, made by ``benchmarks/make_edm_precond_fixtures.py``. Here the same ``F`` goes through
``models.parameterization`` ('edm', 'edm_vp', 'edm_ve') and ``losses``; tests never need torch.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import losses, sde_lib
from score_sde.models import parameterization as P

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'edm_precond.npz')
# float32 against EDM's float32 (torch); the losses' weights reach 1/0.002^2.
RTOL, ATOL = 2e-5, 2e-5


@pytest.fixture(scope='module')
def edm():
  with np.load(FIXTURE) as f:
    return {k: jnp.asarray(v) for k, v in f.items()}


def _inner(edm):
  """The fixture's inner network with this package's model interface."""
  def model_fn(x, labels, class_labels=None):
    del class_labels
    return jnp.tanh(edm['a'] * x + edm['b'] * labels[:, None, None, None] + edm['c'])
  return model_fn


def _param(name, sigma_data=0.5):
  sde = sde_lib.VPSDE(0.1, 20.) if name == 'edm_vp' else sde_lib.VESDE(0.002, 80.)
  return P.get_parameterization(name, sde, sigma_data)


@pytest.mark.parametrize('name', ['edm', 'edm_vp', 'edm_ve'])
def test_denoiser_equals_edm_preconditioning(edm, name):
  """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) with EDM's coefficients of each of its
  three preconditionings, at noise levels 0.002 to 80."""
  denoiser = P.sigma_denoiser_fn(_param(name), _inner(edm))
  np.testing.assert_allclose(denoiser(edm['noisy'], edm['sigma']), edm[f'denoised_{name}'],
                             rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('name,change', [
    ('edm', lambda: _param('edm', sigma_data=0.55)),
    ('edm_ve', lambda: P.EDMPreconditioning(0.5)),
    ('edm_vp', lambda: P.VPPreconditioning(beta_min=0.1, beta_d=20.)),
])
def test_denoiser_comparison_bites(edm, name, change):
  """The comparison above detects a changed sigma_data (0.5 -> 0.55), another preconditioning's
  coefficients, and VPPrecond's beta_d off by 0.5%."""
  denoised = P.sigma_denoiser_fn(change(), _inner(edm))(edm['noisy'], edm['sigma'])
  assert not np.allclose(denoised, edm[f'denoised_{name}'], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('name,sde', [('edm', sde_lib.VESDE(0.002, 80.)),
                                      ('edm', sde_lib.VPSDE(0.1, 20.)),
                                      ('edm_vp', sde_lib.VPSDE(0.1, 20.)),
                                      ('edm_ve', sde_lib.VESDE(0.002, 80.))])
def test_score_is_the_denoiser_through_the_sdes_scaling(edm, name, sde):
  """Every sampler's score from an EDM network: at x_t = alpha x_hat, time t of sigma(t) =
  std / alpha = sigma, the score is (alpha D(x_hat; sigma) - x_t) / std^2, with D EDM's own."""
  param = _param(name)
  sigma = np.asarray(edm['sigma'], np.float64)
  # The time of each noise level on this SDE (float64 bisection on its marginal coefficients).
  lo, hi = np.zeros_like(sigma), np.full_like(sigma, 1.5)
  for _ in range(80):
    mid = (lo + hi) / 2
    alpha, std = (np.asarray(v, np.float64) for v in sde.marginal_coeffs(jnp.asarray(mid)))
    below = std / alpha < sigma
    lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
  t = jnp.asarray((lo + hi) / 2, jnp.float32)
  alpha, std = sde.marginal_coeffs(t)
  x_t = sde_lib.batch_mul(alpha, edm['noisy'])
  score = P.score_fn_from_model_fn(sde, _inner(edm), True, param)(x_t, t)
  # D at the SDE's own float32 sigma(t), which differs from the fixture's by float32 rounding.
  denoised = P.sigma_denoiser_fn(param, _inner(edm))(edm['noisy'], std / alpha)
  expected = sde_lib.batch_mul(1. / std ** 2, sde_lib.batch_mul(alpha, denoised) - x_t)
  np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-4 * float(jnp.max(
      jnp.abs(expected))))
  ok = np.abs(np.asarray(std / alpha) - sigma) <= 1e-4 * sigma
  np.testing.assert_allclose(np.asarray(denoised)[ok], np.asarray(edm[f'denoised_{name}'])[ok],
                             rtol=1e-3, atol=1e-3)


def test_edm_loss_equals_edmloss(edm):
  """losses.edm_loss at EDMLoss's draws (ln sigma = -1.2 + 1.2 n) is half its sum per image."""
  sigma = jnp.exp(-1.2 + 1.2 * edm['level_edm'])
  denoiser = P.sigma_denoiser_fn(_param('edm'), _inner(edm))
  loss = losses.edm_loss(denoiser, edm['clean'], sigma, edm['z_edm'], 0.5)
  np.testing.assert_allclose(2 * loss, edm['loss_edm'], rtol=1e-4)


def test_edm_loss_weight_bites(edm):
  """The loss comparison detects sigma_data 0.5 -> 0.55 in the weight alone."""
  sigma = jnp.exp(-1.2 + 1.2 * edm['level_edm'])
  denoiser = P.sigma_denoiser_fn(_param('edm'), _inner(edm))
  loss = losses.edm_loss(denoiser, edm['clean'], sigma, edm['z_edm'], 0.55)
  assert not np.allclose(2 * loss, edm['loss_edm'], rtol=1e-4)


def test_vploss_is_dsm_on_a_vp_preconditioned_network(edm):
  """EDM's VPLoss (t = 1 + u (1e-5 - 1), weight 1 / sigma^2) is twice the 'dsm' objective of a
  VPPrecond network on the VP SDE (0.1, 20) at that t and noise."""
  sde = sde_lib.VPSDE(0.1, 20.)
  t = 1. + edm['level_vp'] * (1e-5 - 1.)
  score_fn = P.score_fn_from_model_fn(sde, _inner(edm), True, _param('edm_vp'))
  loss = losses.dsm_loss(score_fn, sde, edm['clean'], t, edm['z_vp'])
  np.testing.assert_allclose(2 * loss, edm['loss_vp'], rtol=1e-3)


def test_veloss_is_dsm_on_a_ve_preconditioned_network(edm):
  """EDM's VELoss (sigma = 0.02 (100 / 0.02)^u, weight 1 / sigma^2) is twice the 'dsm' objective
  of a VEPrecond network on the VE SDE (0.02, 100) at t = u and that noise."""
  sde = sde_lib.VESDE(0.02, 100.)
  score_fn = P.score_fn_from_model_fn(sde, _inner(edm), True, _param('edm_ve'))
  loss = losses.dsm_loss(score_fn, sde, edm['clean'], edm['level_ve'], edm['z_ve'])
  np.testing.assert_allclose(2 * loss, edm['loss_ve'], rtol=1e-4)


@pytest.mark.parametrize('name,sde', [('edm', sde_lib.VESDE(0.002, 80.)),
                                      ('edm', sde_lib.VPSDE()), ('edm', sde_lib.subVPSDE()),
                                      ('edm_vp', sde_lib.VPSDE()), ('edm_ve', sde_lib.VESDE())])
def test_exact_denoiser_gives_the_exact_score(name, sde):
  """A network that outputs the exact F of a Gaussian mixture, (E[x0 | x_t] - c_skip x_hat) /
  c_out (the preconditioning's target, read back by ``from_score``), gives the mixture's exact
  score on every SDE, and its denoiser is the exact E[x0 | x_t]. From t = 0.02: a denoiser's
  output holds no score where std^2 is below x's float32 resolution (sub-VP at t = 1e-3), as for
  the 'x0' parameterization (docs/parameterization.md)."""
  from score_sde import analytic  # pylint: disable=g-import-not-at-top
  target = analytic.GaussianMixture(jnp.asarray([0.4, 0.6]), jnp.asarray([[-1., .5], [1., -.5]]),
                                    jnp.asarray([[.3, .5], [.4, .3]]))
  param = _param(name) if name != 'edm_vp' else P.get_parameterization(name, sde)
  t = jnp.asarray([0.02, 0.1, 0.3, 0.7, 1.], jnp.float32)
  alpha, std = sde.marginal_coeffs(t)
  x = sde_lib.batch_mul(alpha, target.sample(jax.random.key(1), 5)) + sde_lib.batch_mul(
      std, jax.random.normal(jax.random.key(2), (5, 2)))
  score = jax.vmap(lambda a, s, xi: target.perturb(a, s).score(xi[None])[0])(alpha, std, x)
  out = param.from_score(score, x, alpha, std)
  scale = np.abs(np.asarray(score)).max() + np.abs(np.asarray(x)).max() / np.asarray(std).min()
  np.testing.assert_allclose(param.score(out, x, alpha, std), score, atol=1e-5 * scale)
  denoised = sde_lib.batch_mul(1. / alpha, x + sde_lib.batch_mul(std ** 2, score))
  np.testing.assert_allclose(param.denoised(out, x, alpha, std), denoised, rtol=1e-4, atol=1e-4)
  noise = jax.random.normal(jax.random.key(3), x.shape)
  x0 = target.sample(jax.random.key(4), 5)
  x_t = sde_lib.batch_mul(alpha, x0) + sde_lib.batch_mul(std, noise)
  conditional = sde_lib.batch_mul(-1. / std, noise)
  np.testing.assert_allclose(
      sde_lib.batch_mul(std, param.score(param.target(x0, noise, alpha, std), x_t, alpha, std)),
      sde_lib.batch_mul(std, conditional), atol=1e-3)
