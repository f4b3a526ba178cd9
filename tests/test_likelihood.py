"""Likelihoods through the probability-flow ODE, checked against closed-form Gaussian mixtures.

Tolerances: the solver runs at rtol = atol = 1e-5 on states of size O(1) (VP) to O(50) (VE, where
x(T) ~ sigma_max), over ~100 evaluations; the global error of log p stays near 1e-4 nats, well
inside the 1e-3 bits/dim asked of it (1e-3 bits/dim = 1.4e-3 nats for D = 2).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from score_sde import analytic, likelihood, sde_lib
from score_sde.common import parallel
from score_sde.sampling import ode_solve

EPS = 1e-5
SDES = {'vp': sde_lib.VPSDE, 'subvp': sde_lib.subVPSDE, 've': sde_lib.VESDE}


def _mixture(event_shape=(2,)):
  return analytic.random_mixture(np.random.default_rng(0), 3, event_shape)


def _data(sde, target, n, seed=1):
  """Points distributed as p_eps: the ODE starts at t = eps, so this is the density it computes."""
  return analytic.marginal(target, sde, EPS).sample(jax.random.key(seed), n)


@functools.cache
def _flow(name):
  """One compiled solve per SDE, shared by the tests (compiles dominate their run time)."""
  sde = SDES[name]()
  score = analytic.score_fn(_mixture(), sde)
  return sde, jax.jit(lambda x, v: likelihood.flow_to_prior(sde, score, x, v, eps=EPS))


def test_bits_per_dim_of_a_uniform_density_is_eight():
  """A density uniform on [0, 1]^D gives every pixel value probability 1/256: exactly 8 bits/dim,
  whether the model sees [0, 1] (p_y = 1) or [-1, 1] (p_y = 2^-D)."""
  dim = 12
  np.testing.assert_allclose(likelihood.bits_per_dim(jnp.zeros(3), dim, centered=False), 8.)
  np.testing.assert_allclose(
      likelihood.bits_per_dim(jnp.full(3, -dim * np.log(2.)), dim, centered=True), 8., rtol=1e-6)


def test_bits_per_dim_matches_a_discretized_gaussian():
  """Per-pixel N(0.5, 0.1^2) in [0, 1]: bits/dim from the centered model density (y = 2x - 1,
  so p_y = N(0, 0.2^2)) at bin centres equals -log2 of the exact bin probabilities (scipy cdf
  differences on the 256 bins), which for a density this smooth differ by O(bin^2) only."""
  k = np.arange(60, 196)
  prob = stats.norm.cdf((k + 1) / 256., 0.5, 0.1) - stats.norm.cdf(k / 256., 0.5, 0.1)
  y = 2. * (k + 0.5) / 256. - 1.
  logp_y = stats.norm.logpdf(y, 0., 0.2)  # One pixel per example: D = 1.
  got = likelihood.bits_per_dim(jnp.asarray(logp_y, jnp.float32), 1, centered=True)
  np.testing.assert_allclose(got, -np.log2(prob), atol=1e-3)


@pytest.mark.parametrize('name', list(SDES))
def test_exact_divergence_recovers_the_analytic_log_density(name):
  """log p_T(z) + int div f~ dt equals the closed-form log p_eps(x) within 1e-3 bits/dim, for
  VP, sub-VP and VE: the ODE, its time direction and the exact divergence are right."""
  sde, flow = _flow(name)
  target, x = _mixture(), _data(sde, _mixture(), 64)
  result = flow(x, None)
  log_p = analytic.log_prob_fn(target, sde)
  got = log_p(result.z, jnp.full(64, sde.T)) + result.delta_logp[0]
  want = log_p(x, jnp.full(64, EPS))
  np.testing.assert_allclose(got / (2 * np.log(2.)), want / (2 * np.log(2.)), atol=1e-3)


@pytest.mark.parametrize('kind', ['rademacher', 'gaussian'])
def test_hutchinson_estimate_is_unbiased(kind):
  """At each of 64 points the mean of 400 probe estimates of int div f~ dt lies within 4
  standard errors (plus a 1e-3 nats solver floor) of the exact integral, and the estimates do
  vary (the mixture's Hessian is not diagonal, so even Rademacher probes are noisy)."""
  sde, flow = _flow('vp')
  x = _data(sde, _mixture(), 64)
  exact = np.asarray(flow(x, None).delta_logp[0])
  probes = likelihood.sample_probes(jax.random.key(3), x.shape, kind, num_probes=400)
  estimates = np.asarray(flow(x, probes).delta_logp, np.float64)  # (400, 64).
  stderr = estimates.std(0, ddof=1) / np.sqrt(estimates.shape[0])
  assert np.median(stderr) > 1e-3, 'the estimates barely vary; the test would be vacuous'
  np.testing.assert_array_less(np.abs(estimates.mean(0) - exact), 4 * stderr + 1e-3)


@pytest.mark.parametrize('num_nodes,control_variate', [(0, True), (8, True), (8, False)])
def test_nfe_counts_every_score_evaluation(num_nodes, control_variate):
  """The returned nfe equals the number of batched score_fn calls actually executed (counted by
  a host callback), for the reference's Rademacher likelihood, the control variate and the
  quadrature whose solve steps onto its nodes."""
  sde = sde_lib.VPSDE()
  score = analytic.score_fn(_mixture(), sde)
  calls = []

  def counted_score(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return score(x, t)

  likelihood_fn = likelihood.get_likelihood_fn(sde, rtol=1e-4, atol=1e-4, num_nodes=num_nodes,
                                               control_variate=control_variate)
  run = jax.jit(lambda rng, x: likelihood_fn(rng, counted_score, x))
  _, _, nfe = run(jax.random.key(0), _data(sde, _mixture(), 8))
  jax.effects_barrier()
  assert int(nfe) == len(calls) > 10


def test_likelihood_fn_bits_per_dim_with_centered_scaler():
  """The full path (prior log-density, probe average, inverse-scaler Jacobian, bits) equals the
  analytic log p_eps(y), with the prior's own log p_T(z) swapped in for the true one,
  converted by bits_per_dim for centered data."""
  sde, target = sde_lib.VPSDE(), _mixture()
  y = _data(sde, target, 16)
  likelihood_fn = likelihood.get_likelihood_fn(
      sde, inverse_scaler=lambda v: (v + 1.) / 2., hutchinson_type='exact', eps=EPS)
  bpd, z, _ = jax.jit(lambda rng, v: likelihood_fn(rng, analytic.score_fn(target, sde), v))(
      jax.random.key(0), y)
  log_p = analytic.log_prob_fn(target, sde)
  logp = log_p(y, jnp.full(16, EPS)) - log_p(z, jnp.ones(16)) + sde.prior_logp(z)
  np.testing.assert_allclose(bpd, likelihood.bits_per_dim(logp, 2, centered=True), atol=1e-3)


def test_likelihood_fn_in_nats_is_the_negative_log_density_of_the_data():
  """units='nats' returns -log p(x) per example of the data in [0, 1] space: the analytic
  log p_eps(y) in model space minus log |dx/dy| = D log(1/2) (centered scaler), with the prior's
  log p_T(z) swapped in; bad units name the known ones."""
  sde, target = sde_lib.VPSDE(), _mixture()
  y = _data(sde, target, 16)
  likelihood_fn = likelihood.get_likelihood_fn(
      sde, inverse_scaler=lambda v: (v + 1.) / 2., hutchinson_type='exact', eps=EPS,
      units='nats')
  nll, z, _ = jax.jit(lambda rng, v: likelihood_fn(rng, analytic.score_fn(target, sde), v))(
      jax.random.key(0), y)
  log_p = analytic.log_prob_fn(target, sde)
  logp_y = log_p(y, jnp.full(16, EPS)) - log_p(z, jnp.ones(16)) + sde.prior_logp(z)
  np.testing.assert_allclose(nll, -(logp_y + 2 * np.log(2.)), atol=2e-3)
  with pytest.raises(ValueError, match='bpd, nats'):
    likelihood.get_likelihood_fn(sde, units='bits')


def test_sharded_matches_one_device():
  """8 devices, batch split over 'data', give the one-device bits/dim, latents and NFE: the
  probes are drawn at the global shape and the step control sees the global batch."""
  sde, target = sde_lib.VESDE(), _mixture((2, 2, 1))
  images = np.asarray(_data(sde, target, 16))
  likelihood_fn = likelihood.get_likelihood_fn(sde, eps=EPS, num_probes=2)
  make_score_fn = lambda params: analytic.score_fn(params, sde)
  results = []
  for devices in (jax.devices()[:8], jax.devices()[:1]):
    mesh = parallel.make_mesh(devices)
    fn = likelihood.get_sharded_likelihood_fn(likelihood_fn, make_score_fn, mesh)
    results.append(fn(jax.random.key(4), target, images))
  assert len(results[0][0].sharding.device_set) == 8
  (bpd8, z8, nfe8), (bpd1, z1, nfe1) = results
  # Sums in another order may move a step size in its last bits: agreement is to within the
  # solver's tolerance (1e-5 relative), not bitwise.
  np.testing.assert_allclose(bpd8, bpd1, atol=1e-4)
  np.testing.assert_allclose(z8, z1, rtol=1e-4, atol=1e-4)
  assert int(nfe8) == int(nfe1)


def test_dataset_rounds_mask_padding_and_resume():
  """Padding rows are dropped, every (repeat, batch) gets its own key, and a run resumed at
  (1, 1) yields exactly the rounds the full run yielded from there; the summary is their mean."""
  images = np.arange(12, dtype=np.float32).reshape(3, 4, 1)

  def make_batches(repeat):
    for b in range(3):
      yield {'image': images[b] + 100 * repeat, 'mask': np.arange(4) < (4 if b < 2 else 1)}

  def bpd_fn(rng, x):  # A stand-in whose output shows the data and the key it was given.
    noise = jax.random.uniform(rng, (x.shape[0],))
    return jnp.asarray(x[:, 0]) + noise, None, jnp.int32(7)

  full = list(likelihood.dataset_bpd_rounds(bpd_fn, make_batches, jax.random.key(0), 2))
  assert [(r.repeat, r.batch, r.bpd.size) for r in full] == [
      (0, 0, 4), (0, 1, 4), (0, 2, 1), (1, 0, 4), (1, 1, 4), (1, 2, 1)]
  assert len({float(r.bpd[0] % 1) for r in full}) == 6  # Distinct noise per round.
  resumed = list(likelihood.dataset_bpd_rounds(bpd_fn, make_batches, jax.random.key(0), 2,
                                               start=(1, 1)))
  for a, b in zip(resumed, full[4:], strict=True):
    np.testing.assert_array_equal(a.bpd, b.bpd)
  summary = likelihood.summarize_bpd(full)
  values = np.concatenate([r.bpd for r in full])
  assert summary.count == 18 and summary.mean_nfe == 7.
  np.testing.assert_allclose(summary.mean, values.mean())
  np.testing.assert_allclose(summary.stderr, values.std(ddof=1) / np.sqrt(18))


def test_failed_solve_is_nan_and_stops_the_dataset_loop():
  """A solve that runs out of steps returns NaN (not a silently wrong number), and the dataset
  loop refuses to average it, naming the batch."""
  sde = sde_lib.VPSDE()
  likelihood_fn = likelihood.get_likelihood_fn(sde, max_steps=2)
  score = analytic.score_fn(_mixture(), sde)
  bpd_fn = jax.jit(lambda rng, x: likelihood_fn(rng, score, x))
  bpd, z, _ = bpd_fn(jax.random.key(0), _data(sde, _mixture(), 8))
  assert np.all(np.isnan(bpd)) and np.all(np.isnan(z))
  batches = lambda repeat: [{'image': np.asarray(_data(sde, _mixture(), 8))}]
  with pytest.raises(FloatingPointError, match='repeat 0, batch 0'):
    list(likelihood.dataset_bpd_rounds(bpd_fn, batches, jax.random.key(0), 1))


def test_bad_arguments_name_the_fix():
  """Unknown estimator or solver, eps outside (0, T) and misshapen probes fail before solving."""
  sde = sde_lib.VPSDE()
  with pytest.raises(ValueError, match='hutchinson_type'):
    likelihood.get_likelihood_fn(sde, hutchinson_type='bernoulli')
  with pytest.raises(ValueError, match='ODE method'):
    likelihood.get_likelihood_fn(sde, method='euler')
  with pytest.raises(ValueError, match='num_probes'):
    likelihood.get_likelihood_fn(sde, num_probes=0)
  with pytest.raises(ValueError, match='num_nodes'):
    likelihood.get_likelihood_fn(sde, num_nodes=-1)
  score = lambda x, t: -x
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match='eps'):
    likelihood.flow_to_prior(sde, score, x, eps=0.)
  with pytest.raises(ValueError, match='num_probes'):
    likelihood.flow_to_prior(sde, score, x, jnp.ones((2, 3)))
  with pytest.raises(ValueError, match='dim'):
    likelihood.bits_per_dim(jnp.zeros(2), 0)


@pytest.mark.parametrize('name', ['vp', 've'])
def test_quadrature_with_exact_divergence_recovers_the_analytic_log_density(name):
  """The trajectory quadrature (x solved alone, the divergence at 64 Gauss-Legendre nodes in
  lambda) equals the closed-form log p_eps(x) within 2e-3 bits/dim: the nodes, their weights and
  the change of variable are right."""
  sde = SDES[name]()
  target = _mixture()
  x = _data(sde, target, 32)
  score = analytic.score_fn(target, sde)
  quadrature = likelihood.divergence_quadrature(sde, EPS, 64)
  assert np.all(np.diff(np.asarray(quadrature.times)) > 0)
  result = jax.jit(lambda v: likelihood.flow_with_quadrature(
      sde, score, v, jax.random.key(0), quadrature, 'exact', eps=EPS))(x)
  log_p = analytic.log_prob_fn(target, sde)
  got = log_p(result.z, jnp.full(32, sde.T)) + result.delta_logp[0]
  want = log_p(x, jnp.full(32, EPS))
  np.testing.assert_allclose(got / (2 * np.log(2.)), want / (2 * np.log(2.)), atol=2e-3)


def test_saved_states_are_step_ends_when_asked():
  """ode_solve.solve(step_to_saves=True), as the quadrature solves: every save time is a step's
  end, so the saved state has the step's accuracy (the dense interpolant's put a trained
  network's state 4e-3 off near t = eps, and its quadrature 0.27 bits/dim off). On
  dy/dt = -y / (t + c), y = y0 (t0 + c) / (t + c), the states at 40 times spread over a 1e4-fold
  range of t + c are within 1e-4 relative, and there are at least as many steps as save times."""
  c, t0, t1 = 1e-4, 0., 1.
  times = jnp.asarray(np.geomspace(2e-4, 0.9, 40) - c, jnp.float32)
  y0 = jnp.ones((3,), jnp.float32)
  solution = ode_solve.solve(lambda t, y, args: -y / (t + c), 'rk45', t0, t1, y0, rtol=1e-6,
                             atol=1e-9, max_steps=4096, save_at=times, step_to_saves=True)
  want = (t0 + c) / (np.asarray(times, np.float64) + c)
  np.testing.assert_allclose(np.asarray(solution.ys)[:, 0], want, rtol=1e-4)
  assert (int(solution.nfe) - 1) // 6 >= times.shape[0]


def test_quadrature_probes_are_unbiased_and_less_noisy_than_fixed_probes():
  """Fresh Rademacher probes per node: at each of 32 points the mean of 200 estimates lies within
  4 standard errors (plus 2e-3 nats) of the exact-divergence quadrature, and a point's spread is
  less than half that of the reference's probe fixed along the solve (the estimator's reason to
  exist; measured 2.3-3.9x less at 64 nodes on the benchmark's 32-D mixture)."""
  sde, flow = _flow('vp')
  target = _mixture((8,))
  x = _data(sde, target, 32)
  score = analytic.score_fn(target, sde)
  quadrature = likelihood.divergence_quadrature(sde, EPS, 64)
  run = jax.jit(jax.vmap(lambda rng, kind='rademacher': likelihood.flow_with_quadrature(
      sde, score, x, rng, quadrature, kind, eps=EPS).delta_logp[0]))
  exact = np.asarray(likelihood.flow_with_quadrature(
      sde, score, x, jax.random.key(0), quadrature, 'exact', eps=EPS).delta_logp[0])
  estimates = np.asarray(run(jax.random.split(jax.random.key(4), 200)), np.float64)
  stderr = estimates.std(0, ddof=1) / np.sqrt(estimates.shape[0])
  np.testing.assert_array_less(np.abs(estimates.mean(0) - exact), 4 * stderr + 2e-3)
  fixed = jax.jit(lambda v, p: likelihood.flow_to_prior(
      sde, score, v, p, eps=EPS).delta_logp)(
          x, likelihood.sample_probes(jax.random.key(3), x.shape, 'rademacher', 200))
  fixed_spread = np.asarray(fixed, np.float64).std(0, ddof=1)
  assert np.median(estimates.std(0, ddof=1)) < 0.5 * np.median(fixed_spread)


def test_control_variate_stays_unbiased_where_the_quadrature_is_not():
  """A score whose divergence oscillates in t (the mixture's score times 1 + 0.5 sin(2000 t), as
  a network's sinusoidal time embedding can make it) defeats a 16-node quadrature in log-SNR: its
  exact-divergence value misses the adaptive solve's by more than 1 nat at most points. The
  control variate (the fixed-probe solve, minus the quadrature of the same probe, plus the
  fresh-probe quadrature) is still unbiased: the mean of 100 estimates lies within 4 standard
  errors (plus 2e-3 nats) of the exact-divergence solve, at each of 16 points. On the smooth
  score with 64 nodes, where the quadrature is accurate, it keeps the quadrature's low noise: a
  point's spread under half the fixed probe's."""
  sde = sde_lib.VPSDE()
  target = _mixture((8,))
  x = _data(sde, target, 16)
  smooth = analytic.score_fn(target, sde)
  wobbly = lambda y, t: smooth(y, t) * (1. + 0.5 * jnp.sin(2000. * t))[:, None]
  quadrature = likelihood.divergence_quadrature(sde, EPS, 16)
  draws = jax.random.split(jax.random.key(5), 100)

  def estimates(score, quadrature):
    run = jax.jit(jax.vmap(lambda rng: likelihood.flow_with_control_variate(
        sde, score, x, rng, quadrature, eps=EPS).delta_logp[0]))
    return np.asarray(run(draws), np.float64)

  exact = np.asarray(likelihood.flow_to_prior(sde, wobbly, x, eps=EPS).delta_logp[0])
  quadrature_only = np.asarray(likelihood.flow_with_quadrature(
      sde, wobbly, x, jax.random.key(0), quadrature, 'exact', eps=EPS).delta_logp[0])
  assert np.median(np.abs(quadrature_only - exact)) > 1.
  got = estimates(wobbly, quadrature)
  stderr = got.std(0, ddof=1) / np.sqrt(got.shape[0])
  np.testing.assert_array_less(np.abs(got.mean(0) - exact), 4 * stderr + 2e-3)
  fixed = jax.jit(lambda p: likelihood.flow_to_prior(sde, smooth, x, p, eps=EPS).delta_logp)(
      likelihood.sample_probes(jax.random.key(3), x.shape, 'rademacher', 100))
  accurate = likelihood.divergence_quadrature(sde, EPS, 64)
  assert (np.median(estimates(smooth, accurate).std(0, ddof=1))
          < 0.5 * np.median(np.asarray(fixed, np.float64).std(0, ddof=1)))
