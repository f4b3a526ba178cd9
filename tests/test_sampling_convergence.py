"""Deterministic solvers converge to the probability-flow ODE's solution at their order.

With the initial noise fixed (every sampler draws ``x(T)`` from ``base.prior_key(rng)``), each
solver's output is compared with diffrax's 8th-order Dormand-Prince at rtol = atol = 1e-7 from the
same ``x(T)``, on a Gaussian-mixture target with its exact score; the slope of log(error) against
log(steps), fitted over three doublings, must be the method's order.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import test_sampling_support as support
from score_sde import analytic, sampling
from score_sde.sampling import base, dpm_solver

BATCH, DIM = 256, 4


def _reference(sde, score_fn, x_T, t1):
  solve = jax.jit(lambda x: sampling.solve_probability_flow(sde, score_fn, x, sde.T, t1,
                                                            1e-7, 1e-7, 'Dopri8')[0])
  return solve(x_T)


def _slope(steps, errors):
  return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


def _rms_error(sampler, score_fn, rng, reference):
  samples, _ = jax.jit(lambda r: sampler(r, score_fn))(rng)
  return float(jnp.sqrt(jnp.mean((samples - reference) ** 2)))


@pytest.mark.parametrize('sde_name', ['vpsde', 'vesde'])
def test_probability_flow_euler_is_first_order(sde_name):
  """The Euler-Maruyama predictor with probability_flow=True and no corrector is explicit Euler
  on eq. (13) from T to 0 (the PC grid's last step reaches t = 0): slope 1 +- 0.25."""
  target, eps = support.mixture(DIM), support.EPS[sde_name]
  rng = jax.random.key(3)
  steps, errors = [200, 400, 800], []
  for n in steps:
    sde = support.SDES[sde_name](n)
    score_fn = analytic.score_fn(target, sde)
    reference = _reference(sde, score_fn, sde.prior_sampling(base.prior_key(rng), (BATCH, DIM)),
                           0.)
    sampler = sampling.get_pc_sampler(sde, (BATCH, DIM), sampling.identity,
                                      sampling.get_times(sde, 'pc', eps=eps), 'euler_maruyama',
                                      'none', 0., probability_flow=True, denoise=False)
    errors.append(_rms_error(sampler, score_fn, rng, reference))
  assert 0.75 < _slope(steps, errors) < 1.25, errors


@pytest.mark.parametrize('sde_name', ['vpsde', 'subvpsde', 'vesde'])
@pytest.mark.parametrize('solver', ['heun', 'dpm_solver_2m'])
def test_second_order_solvers(sde_name, solver):
  """EDM's Heun (rho = 7 grid in sigma = std / alpha) and DPM-Solver++(2M) (logSNR grid) reach
  x(eps) with slope 2 (accepted: 1.7 to 2.7, the pre-asymptotic range measured at 10-40 steps)
  for VP, sub-VP and VE alike."""
  sde, eps = support.SDES[sde_name](), support.EPS[sde_name]
  score_fn = analytic.score_fn(support.mixture(DIM), sde)
  rng = jax.random.key(3)
  reference = _reference(sde, score_fn, sde.prior_sampling(base.prior_key(rng), (BATCH, DIM)),
                         eps)
  steps, errors = [10, 20, 40], []
  for n in steps:
    if solver == 'heun':
      sampler = sampling.get_heun_sampler(
          sde, (BATCH, DIM), sampling.identity,
          sampling.get_times(sde, 'heun', n, eps=eps, denoise=False), denoise=False)
    else:
      sampler = sampling.get_dpm_solver_sampler(
          sde, (BATCH, DIM), sampling.identity,
          sampling.get_times(sde, 'dpm_solver', n, eps=eps, denoise=False), order=2,
          denoise=False)
    errors.append(_rms_error(sampler, score_fn, rng, reference))
  assert 1.7 < _slope(steps, errors) < 2.7, errors


@pytest.mark.parametrize('order', [1, 2, 3])
def test_dpm_solver_step_is_exact_for_polynomial_data_prediction(order):
  """A DPM-Solver++ step of order k integrates the exact solution (their eq. 8)
  x_t = (std_t / std_s) x_s + std_t int e^lambda x0(lambda) d lambda exactly when x0 is a
  polynomial of degree k - 1 in lambda (here on an uneven lambda grid), the integral done by
  scipy quadrature: this pins each phi coefficient and the divided differences."""
  rng = np.random.default_rng(0)
  coeffs = rng.normal(size=(order, 3))  # x0(lambda) = sum_j coeffs[j] lambda^j, 3 coordinates.

  def x0_of(lam):
    return sum(c * lam ** j for j, c in enumerate(coeffs))

  lams = np.array([-1.3, -0.9, -0.2, 0.5])
  std, std_next = 0.8, 0.45
  alpha_next = std_next * np.exp(lams[3])  # lambda = log(alpha / std).
  x = rng.normal(size=3)
  integral = np.array([integrate.quad(lambda u, d=d: np.exp(u) * x0_of(u)[d], lams[2], lams[3])[0]
                       for d in range(3)])
  exact = std_next / std * x + std_next * integral
  as32 = lambda a: jnp.asarray(a, jnp.float32)
  got = dpm_solver.multistep_update(
      as32(x), tuple(as32(x0_of(lam)) for lam in lams[:3]), tuple(as32(lams)), as32(std),
      as32(std_next), as32(alpha_next), jnp.int32(order))
  np.testing.assert_allclose(np.asarray(got), exact, rtol=1e-5, atol=1e-5)
