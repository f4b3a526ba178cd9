"""The multistep solvers (DPM-Solver++, UniPC, DEIS / iPNDM) and their shared loop.

The order of each step is measured where it is defined: one step taken from the exact
probability-flow trajectory (diffrax's Dopri8 at tight tolerance from a fixed ``x(T)``) with exact
history, on a Gaussian-mixture target with its exact score; the local error must fall as
``h^(p + 1)`` for a method of order ``p`` (log-log slope over three step sizes). A whole solve
cannot show it: its first step has no history and is first order, which caps the global order.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_sampling_support as support
from score_sde import analytic, sampling
from score_sde.sampling import base, deis, dpm_solver, multistep, schedule, unipc

BATCH, DIM = 64, 4
SDE_NAMES = list(support.SDES)


@functools.cache
def _vp():
  """The VP SDE, the mixture's exact score and a compiled reference solve, shared by the order
  tests (compiles dominate their time)."""
  sde = support.SDES['vpsde']()
  score_fn = analytic.score_fn(support.mixture(DIM), sde)
  solve = jax.jit(lambda x, t0, t1: sampling.solve_probability_flow(
      sde, score_fn, x, t0, t1, 1e-9, 1e-9, 'Dopri8')[0])
  return sde, score_fn, solve


def _trajectory(times):
  """The exact ODE solution at ``times`` (decreasing) from ``x(T) ~ prior_key(key(3))``."""
  sde, _, solve = _vp()
  x = sde.prior_sampling(base.prior_key(jax.random.key(3)), (BATCH, DIM))
  points, t_prev = [], sde.T
  for t in np.asarray(times, np.float64):
    x = solve(x, t_prev, float(t))
    points.append(x)
    t_prev = float(t)
  return points


def _one_step_error(method, order, sde, score_fn, times, corrector=None):
  """RMS error of the step ``times[-2] -> times[-1]`` of ``method`` from exact history at
  ``times[:-1]`` (and, given a ``corrector`` method, of its correction of that step with the
  evaluation at the predicted point)."""
  times = jnp.asarray(times, jnp.float32)
  grid = multistep.Grid.of(sde, times)
  exact = _trajectory(times)
  i = len(times) - 2
  history = jnp.zeros((method.depth, BATCH, DIM), jnp.float32)
  for j in range(i + 1):
    x0 = schedule.data_prediction(sde, score_fn, exact[j], base.batch_times(times[j], BATCH))
    history = jnp.concatenate([method.store(grid, j, exact[j], x0)[None], history[:-1]])
  order = jnp.int32(order)
  _, x_next = method.step(grid, i, exact[i], exact[i], history, order, order)
  if corrector is not None:
    method = corrector
    x0 = schedule.data_prediction(sde, score_fn, x_next, base.batch_times(times[i + 1], BATCH))
    history = jnp.concatenate([method.store(grid, i + 1, x_next, x0)[None], history[:-1]])
    grid = multistep.Grid.of(sde, jnp.append(times, times[-1] * 0.5))  # Room for step i + 1.
    x_next, _ = method.step(grid, i + 1, x_next, exact[i], history, order, order)
  return float(jnp.sqrt(jnp.mean((x_next - exact[-1]) ** 2)))


def _lambda_grid(sde, centre_t, h, nodes):
  """``nodes + 1`` times uniform in lambda with step ``h``, the last step starting at
  ``lambda(centre_t)``."""
  lam = schedule.half_log_snr(sde, jnp.float32(centre_t))
  lams = lam + h * jnp.arange(-(nodes - 1), 2, dtype=jnp.float32)
  return schedule.t_of_half_log_snr(sde, lams)


def _sigma_grid(sde, centre_t, h, nodes):
  """The same, uniform in sigma (iPNDM's constant-step weights assume it)."""
  sigma = schedule.sigma(sde, jnp.float32(centre_t))
  return schedule.t_of_sigma(sde, sigma - h * jnp.arange(-(nodes - 1), 2, dtype=jnp.float32))


def _unipc(variant):
  return unipc.method(variant, corrector=False), unipc.method(variant, corrector=True)


# name: (method, order, corrector method, expected local order, grid, step sizes)
CASES = {
    'dpm_solver++ 1 (DDIM)': (dpm_solver.method(), 1, None, 2, _lambda_grid, (0.4, 0.2, 0.1)),
    'dpm_solver++ 2M': (dpm_solver.method(), 2, None, 3, _lambda_grid, (0.4, 0.2, 0.1)),
    'dpm_solver++ 3M': (dpm_solver.method(), 3, None, 4, _lambda_grid, (0.4, 0.2, 0.1)),
    'unip 3': (_unipc('bh2')[0], 3, None, 4, _lambda_grid, (0.4, 0.2, 0.1)),
    'unipc 1 bh1': (_unipc('bh1')[0], 1, _unipc('bh1')[1], 3, _lambda_grid, (0.4, 0.2, 0.1)),
    'unipc 2 bh2': (_unipc('bh2')[0], 2, _unipc('bh2')[1], 4, _lambda_grid, (0.4, 0.2, 0.1)),
    'unipc 3 bh2': (_unipc('bh2')[0], 3, _unipc('bh2')[1], 5, _lambda_grid, (0.4, 0.2, 0.1)),
    'deis rhoAB 2': (deis.method(True), 2, None, 3, _sigma_grid, (0.3, 0.15, 0.075)),
    'deis rhoAB 3': (deis.method(True), 3, None, 4, _sigma_grid, (0.3, 0.15, 0.075)),
    'deis rhoAB 4': (deis.method(True), 4, None, 5, _sigma_grid, (0.3, 0.15, 0.075)),
    'ipndm 4': (deis.method(False), 4, None, 5, _sigma_grid, (0.3, 0.15, 0.075)),
}


@pytest.mark.parametrize('case', list(CASES))
def test_each_step_has_its_stated_order(case):
  """Protects every solver's coefficients: the one-step error from exact history falls as
  h^(p + 1) (slope accepted within 0.6 of it; UniC adds one to the predictor's order)."""
  method, order, corrector, local_order, make_grid, steps = CASES[case]
  sde, score_fn, _ = _vp()
  errors = [_one_step_error(method, order, sde, score_fn,
                            make_grid(sde, 0.3, h, method.depth), corrector) for h in steps]
  slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
  assert abs(slope - local_order) < 0.6, (slope, errors)


def test_lagrange_weights_and_integrals_are_exact_for_polynomials():
  """Protects the final step to sigma = 0 and DEIS's weights: through ``count`` of the nodes,
  the Lagrange weights reproduce a polynomial of degree count - 1 at any point (0 included) and
  integrate it exactly (numpy's polynomial integral); padded nodes get weight 0."""
  rng = np.random.default_rng(0)
  nodes = jnp.asarray([0.3, 0.55, 0.9, 1.6, 7.], jnp.float32)  # The last one is padding.
  for count in (1, 2, 3, 4):
    poly = np.polynomial.Polynomial(rng.normal(size=count))
    values = jnp.asarray(poly(np.asarray(nodes, np.float64)), jnp.float32)
    weights = multistep.lagrange_weights(nodes, jnp.int32(count), jnp.float32(0.))
    assert np.all(np.asarray(weights)[count:] == 0.)
    np.testing.assert_allclose(float(weights @ values), poly(0.), rtol=1e-4, atol=1e-5)
    integral = poly.integ()
    got = multistep.lagrange_integrals(nodes, jnp.int32(count), jnp.float32(0.3),
                                       jnp.float32(0.))
    np.testing.assert_allclose(float(got @ values), integral(0.) - integral(0.3),
                               rtol=1e-4, atol=1e-6)


def test_variable_step_weights_on_a_uniform_grid_are_ipndms():
  """DEIS's exact Adams-Bashforth weights, on equal steps, are iPNDM's constants (a second,
  independent derivation of both)."""
  h = 0.25
  nodes = jnp.asarray([1., 1.25, 1.5, 1.75], jnp.float32)  # sigma_i, sigma_{i-1}, ...
  for order in (1, 2, 3, 4):
    weights = multistep.lagrange_integrals(nodes, jnp.int32(order), nodes[0], nodes[0] - h)
    np.testing.assert_allclose(np.asarray(weights) / -h, np.asarray(deis._IPNDM[order - 1]),
                               rtol=1e-5, atol=1e-6)


def _solvers(sde, shape, eps, num_steps, **kwargs):
  """The first-order multistep solvers on one logSNR grid of ``num_steps`` steps; ``kwargs``:
  the end (``denoise``, ``final``), which sets its levels too."""
  identity = sampling.identity
  times = sampling.get_times(sde, 'dpm_solver', num_steps, schedule_name='logSNR', eps=eps,
                             **kwargs)
  return {
      'dpm_solver++ 1': sampling.get_dpm_solver_sampler(sde, shape, identity, times, order=1,
                                                        **kwargs),
      'unip 1': sampling.get_unipc_sampler(sde, shape, identity, times, order=1,
                                           corrector=False, **kwargs),
      'deis 1': sampling.get_deis_sampler(sde, shape, identity, times, order=1, **kwargs),
      'ipndm 1': sampling.get_deis_sampler(sde, shape, identity, times, order=1,
                                           variable_step=False, **kwargs),
  }


@pytest.mark.parametrize('end', ['extrapolate', 'tweedie', 'no denoise'])
@pytest.mark.parametrize('sde_name', SDE_NAMES)
def test_every_first_order_multistep_solver_is_ddim(sde_name, end):
  """UniPC's predictor, DEIS and iPNDM at order 1 are DDIM (DPM-Solver++ 1) on the same grid,
  with each way of ending; four formulas in two variables (lambda, sigma) agreeing."""
  sde, eps = support.SDES[sde_name](), support.EPS[sde_name]
  score_fn = analytic.score_fn(support.mixture(DIM), sde)
  kwargs = {'denoise': False} if end == 'no denoise' else {'final': end}
  results = {name: jax.jit(lambda r, s=s: s(r, score_fn))(jax.random.key(0))
             for name, s in _solvers(sde, (BATCH, DIM), eps, 8, **kwargs).items()}
  reference, _ = results.pop('dpm_solver++ 1')
  for name, (samples, _) in results.items():
    np.testing.assert_allclose(np.asarray(samples), np.asarray(reference), rtol=2e-4,
                               atol=2e-4, err_msg=name)


@pytest.mark.parametrize('end', ['extrapolate', 'tweedie', 'no denoise'])
def test_multistep_nfe_is_the_number_of_score_calls(end):
  """Each solver reports the evaluations it made: num_steps, one more for 'tweedie'; UniC reuses
  the next step's evaluation (no extra call) at orders 1 to 3."""
  sde = support.SDES['vpsde']()
  score_fn, calls = support.counting(analytic.score_fn(support.mixture(DIM), sde))
  kwargs = {'denoise': False} if end == 'no denoise' else {'final': end}
  identity = sampling.identity
  times = {name: sampling.get_times(sde, name, 7, eps=1e-3, **kwargs)
           for name in ('unipc', 'deis')}
  samplers = list(_solvers(sde, (8, DIM), 1e-3, 7, **kwargs).values()) + [
      sampling.get_unipc_sampler(sde, (8, DIM), identity, times['unipc'], order=o, **kwargs)
      for o in (2, 3)] + [
      sampling.get_deis_sampler(sde, (8, DIM), identity, times['deis'], order=4, **kwargs)]
  for sampler in samplers:
    calls[0] = 0
    _, nfe = jax.jit(lambda r, s=sampler: s(r, score_fn))(jax.random.key(0))
    assert nfe == calls[0] == 7 + (end == 'tweedie')


def test_schedules_space_the_grid_as_named():
  """Every schedule runs from T to eps (exactly) and decreases; logSNR is uniform in lambda,
  karras is EDM's rho-spaced sigmas, time_uniform uniform in t, time_quadratic uniform in
  sqrt(t - eps)."""
  sde, eps, n = support.SDES['vpsde'](), 1e-3, 9
  for name in schedule.FORMULAS:
    times = np.asarray(schedule.time_steps(sde, n, eps, name), np.float64)
    assert times[0] == np.float32(sde.T) and times[-1] == np.float32(eps), name
    assert np.all(np.diff(times) < 0), name
  steps = lambda name: schedule.time_steps(sde, n, eps, name)
  assert np.ptp(np.diff(np.asarray(schedule.half_log_snr(sde, steps('logSNR'))))) < 1e-4
  np.testing.assert_allclose(
      np.asarray(schedule.sigma(sde, steps('karras'))),
      np.asarray(schedule.karras_sigmas(schedule.sigma(sde, jnp.float32(eps)),
                                        schedule.sigma(sde, jnp.float32(sde.T)), n)), rtol=1e-4)
  assert np.ptp(np.diff(np.asarray(steps('time_uniform')))) < 1e-6
  assert np.ptp(np.diff(np.sqrt(np.asarray(steps('time_quadratic'), np.float64) - eps))) < 1e-4


GRID_BUILDERS = {
    'heun': sampling.get_heun_sampler, 'dpm_solver': sampling.get_dpm_solver_sampler,
    'unipc': sampling.get_unipc_sampler, 'deis': sampling.get_deis_sampler}


@pytest.mark.parametrize('name', list(GRID_BUILDERS))
def test_a_given_grid_is_the_grid_the_sampler_steps_on(name):
  """``times`` (a published or fitted grid) reaches the steps unchanged: the callback sees the
  score evaluated at each of its levels in turn, down to its last time eps where the sampler
  denoises or steps on to sigma = 0; without denoising at every level but eps, where the
  sample is x(eps)."""
  sde = support.SDES['vesde']()
  score_fn = analytic.score_fn(support.mixture(DIM), sde)
  for denoise in (True, False):
    times = sampling.get_times(sde, name, 5, schedule_name='time_uniform', eps=1e-4,
                               denoise=denoise)
    sampler = GRID_BUILDERS[name](sde, (BATCH, DIM), sampling.identity, times, denoise=denoise)
    seen = []

    def observe(i, x, t, denoised):
      del x, denoised
      jax.debug.callback(lambda i, t: seen.append((int(i), float(t))), i, t, ordered=True)

    jax.block_until_ready(jax.jit(lambda r: sampler(r, score_fn, callback=observe)[0])(
        jax.random.key(0)))
    jax.effects_barrier()
    want = times if denoise else times[:-1]
    assert [i for i, _ in seen] == list(range(len(want))), (denoise, seen)
    np.testing.assert_array_equal(np.asarray([t for _, t in seen], np.float32), want)


def test_bad_given_grids_fail_early_naming_the_fix():
  """A grid not decreasing, starting above T or reaching 0 is refused before tracing; one of
  the wrong length for the settings is refused saying how many levels they use (the ODE's two;
  ``check_times`` given a level count); one starting below T builds but refuses to draw its
  own x(T), asking for x_T; the level counts are the settings' (N + 1 for Heun without
  denoising and for a final Tweedie step)."""
  sde = support.SDES['vpsde']()
  identity = sampling.identity
  good = (1., 0.5, 0.1, 1e-3)
  for times, match in (((1., 0.1, 0.5, 1e-3), 'decreasing'), ((1.1, 0.5, 0.1, 1e-3), 'start at T'),
                       ((1., 0.5, 0.1, 0.), '> 0')):
    with pytest.raises(ValueError, match=match):
      sampling.get_dpm_solver_sampler(sde, (4, 2), identity, times)
  with pytest.raises(ValueError, match='uses 4 levels'):
    schedule.check_times(sde, good[1:], 'DPM-Solver++ with num_steps=4', num_levels=4)
  with pytest.raises(ValueError, match='uses 2 levels'):
    sampling.get_ode_sampler(sde, (4, 2), identity, good)
  below = sampling.get_unipc_sampler(sde, (4, 2), identity, good[1:])
  with pytest.raises(ValueError, match='pass x_T'):
    below(jax.random.key(0), lambda x, t: -x)
  assert len(sampling.get_times(sde, 'heun', 4)) == 4
  assert len(sampling.get_times(sde, 'heun', 4, denoise=False)) == 5
  assert len(sampling.get_times(sde, 'unipc', 4, final='extrapolate')) == 4
  assert len(sampling.get_times(sde, 'unipc', 4, final='tweedie')) == 5


def test_bad_multistep_arguments_fail_early_with_the_fix():
  """Unknown schedules, ends and variants list the known ones; orders the solvers lack, rho <= 0
  and no steps say what is allowed."""
  sde = support.SDES['vpsde']()
  identity = sampling.identity
  times = sampling.get_times(sde, 'unipc', 10)
  with pytest.raises(ValueError, match='logSNR, karras'):
    sampling.get_times(sde, 'unipc', 10, schedule_name='edm')
  with pytest.raises(ValueError, match='extrapolate, tweedie'):
    sampling.get_dpm_solver_sampler(sde, (4, 2), identity, times, final='denoise')
  with pytest.raises(ValueError, match='bh1, bh2'):
    sampling.get_unipc_sampler(sde, (4, 2), identity, times, variant='bh3')
  with pytest.raises(ValueError, match='1, 2, 3 or 4'):
    sampling.get_deis_sampler(sde, (4, 2), identity, times, order=5)
  with pytest.raises(ValueError, match='1, 2 or 3'):
    sampling.get_unipc_sampler(sde, (4, 2), identity, times, order=4)
  with pytest.raises(ValueError, match='rho > 0'):
    sampling.get_times(sde, 'heun', 10, rho=0.)
  with pytest.raises(ValueError, match='positive integer'):
    sampling.get_times(sde, 'deis', 0)
  with pytest.raises(ValueError, match='positive integer'):  # One level, no step to take.
    sampling.get_deis_sampler(sde, (4, 2), identity, (1.,), denoise=False)


def test_third_order_steps_are_capped_where_the_steps_are_long():
  """At 10 logSNR steps on VP every step is about 1 long in lambda, beyond the cap of 0.75:
  DPM-Solver++ 3M and UniPC-3 then take exactly the steps of order 2 (where uncapped they were
  worse, ``multistep.cap_third_order``; compared at x(eps), before the final step to 0, whose
  order is not capped); at 40 steps (0.24 each) the cap changes nothing."""
  sde = support.SDES['vpsde']()
  score_fn = analytic.score_fn(support.mixture(DIM), sde)
  identity = sampling.identity
  run = lambda s: np.asarray(jax.jit(lambda r: s(r, score_fn)[0])(jax.random.key(0)))
  short = sampling.get_times(sde, 'dpm_solver', 10, eps=1e-3, denoise=False)
  long = sampling.get_times(sde, 'dpm_solver', 40, eps=1e-3)
  for build in (sampling.get_dpm_solver_sampler, sampling.get_unipc_sampler):
    third, second = (run(build(sde, (BATCH, DIM), identity, short, order=o, denoise=False))
                     for o in (3, 2))
    uncapped = run(build(sde, (BATCH, DIM), identity, short, order=3, denoise=False,
                         order3_max_step=None))
    np.testing.assert_array_equal(third, second)
    assert not np.allclose(uncapped, third)
    long_third, long_uncapped = (run(build(sde, (BATCH, DIM), identity, long, order=3,
                                           order3_max_step=cap)) for cap in (0.75, None))
    np.testing.assert_array_equal(long_third, long_uncapped)
