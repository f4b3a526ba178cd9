"""The sampler contract around the math: config dispatch, sharding, exact ODE evaluation counts,
the encoder, and early failures on bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_sampling_support as support
from score_sde import analytic, sampling, sde_lib
from score_sde.common import parallel
from score_sde.configs import validation
from score_sde.sampling import schedule


def _toy(dim=4, sde_name='vpsde'):
  sde = support.SDES[sde_name]()
  return sde, analytic.score_fn(support.mixture(dim), sde)


def test_get_sampler_runs_every_method_from_the_smoke_config(smoke_config):
  """get_sampler builds each config method on a plain score_fn (what the training loop calls)
  with the nfe each documents: PC N (1 + n_steps_each), Heun 2 num_steps - 1, the multistep
  solvers num_steps (their last step, to sigma = 0, evaluates nothing), the ODE and the
  adaptive SDE sampler the counted calls."""
  sde = sde_lib.get_sde(smoke_config)
  shape = (2, 4, 4, 1)
  expected = {'pc': sde.N * 2, 'heun': 2 * 4 - 1, 'dpm_solver': 4, 'unipc': 4, 'deis': 4,
              'ipndm': 4, 'ode': None, 'adaptive': None}

  def standard_normal_data_score(x, t):  # Exact for x(0) ~ N(0, I) under VE.
    return sde_lib.batch_mul(-1. / (1. + sde.marginal_coeffs(t)[1] ** 2), x)

  for method, want in expected.items():
    smoke_config.sampling.method = method
    score_fn, calls = support.counting(standard_normal_data_score)
    sampler = sampling.get_sampler(smoke_config, sde, shape, sampling.identity, eps=1e-5)
    samples, nfe = jax.jit(lambda r: sampler(r, score_fn))(jax.random.key(0))
    assert samples.shape == shape and np.isfinite(np.asarray(samples)).all(), method
    assert int(nfe) == calls[0] == (want or calls[0]), method
  smoke_config.sampling.method = 'langevin'
  with pytest.raises(KeyError, match=', '.join(sampling.METHODS.names())):
    sampling.get_sampler(smoke_config, sde, shape, sampling.identity, eps=1e-5)


def test_config_fields_reach_heun_churn_and_dpm_order(smoke_config):
  """sampling.s_churn and sampling.order change what get_sampler builds: the same key
  gives other samples, with the same NFE; an order the solver lacks is a config error."""
  sde = sde_lib.get_sde(smoke_config)
  score_fn = lambda x, t: sde_lib.batch_mul(-1. / (1. + sde.marginal_coeffs(t)[1] ** 2), x)
  smoke_config.sampling.num_steps = 6  # Order 3 needs a step with two steps of history.

  def run():
    sampler = sampling.get_sampler(smoke_config, sde, (4, 4, 4, 1), sampling.identity, eps=1e-5)
    return jax.jit(lambda r: sampler(r, score_fn))(jax.random.key(0))

  for method, field, values in (('heun', 's_churn', (0., 40.)),
                                ('dpm_solver', 'order', (2, 3))):
    smoke_config.sampling.method = method
    results = []
    for value in values:
      setattr(smoke_config.sampling, field, value)
      results.append(run())
    assert int(results[0][1]) == int(results[1][1]), method
    assert not np.allclose(results[0][0], results[1][0]), method
  smoke_config.sampling.order = 4
  with pytest.raises(ValueError, match='sampling.order'):
    validation.validate_config(smoke_config, num_devices=8)


def test_config_fields_reach_the_multistep_solvers(smoke_config):
  """sampling.schedule, rho, final_step, unipc_variant and order each change what get_sampler
  builds for unipc / deis / ipndm (same key, other samples; 'tweedie' one more evaluation);
  bad values are config errors naming the fix."""
  sde = sde_lib.get_sde(smoke_config)
  score_fn = lambda x, t: sde_lib.batch_mul(-1. / (1. + sde.marginal_coeffs(t)[1] ** 2), x)
  smoke_config.sampling.num_steps = 6

  def run(**fields):
    config = smoke_config.copy_and_resolve_references()
    for name, value in fields.items():
      setattr(config.sampling, name, value)
    validation.validate_config(config, num_devices=8)
    sampler = sampling.get_sampler(config, sde, (4, 4, 4, 1), sampling.identity, eps=1e-5)
    samples, nfe = jax.jit(lambda r: sampler(r, score_fn))(jax.random.key(0))
    return np.asarray(samples), int(nfe)

  # Each field on one method (a compilation each): what reaches one reaches all, through the
  # same get_sampler branch.
  base = {method: run(method=method) for method in ('unipc', 'deis', 'ipndm')}
  for method, change in (('unipc', dict(schedule='karras')), ('unipc', dict(unipc_variant='bh1')),
                         ('unipc', dict(final_step='tweedie')), ('deis', dict(rho=3.)),
                         ('ipndm', dict(order=1))):
    base_samples, base_nfe = base[method]
    samples, nfe = run(method=method, **change)
    assert base_nfe == 6 and nfe == 6 + (change.get('final_step') == 'tweedie'), (method, change)
    assert not np.allclose(samples, base_samples), (method, change)
  for field, value, match in (('schedule', 'edm', 'logSNR'), ('final_step', 'zero', 'tweedie'),
                              ('unipc_variant', 'bh3', 'bh2'), ('order', 4, 'orders 1 to 3'),
                              ('rho', 0., 'rho > 0')):
    config = smoke_config.copy_and_resolve_references()
    config.sampling.method = 'unipc'
    setattr(config.sampling, field, value)
    with pytest.raises(ValueError, match=match):
      validation.validate_config(config, num_devices=8)


def test_config_times_is_the_grid_and_sets_the_step_count(smoke_config):
  """config.sampling.times reaches get_sampler as the grid: with num_steps=0 its length sets the
  steps and its last time the eps, drawing what the same grid drawn by name draws; a grid of the
  wrong length, or on a method that has none, is a config error naming the field."""
  sde = sde_lib.get_sde(smoke_config)
  score_fn = lambda x, t: sde_lib.batch_mul(-1. / (1. + sde.marginal_coeffs(t)[1] ** 2), x)
  times = tuple(float(t) for t in schedule.time_steps(sde, 6, 1e-4, 'karras'))

  def run(**fields):
    config = smoke_config.copy_and_resolve_references()
    config.sampling.update(method='dpm_solver', **fields)
    validation.validate_config(config, num_devices=8)
    sampler = sampling.get_sampler(config, sde, (4, 4, 4, 1), sampling.identity,
                                   eps=config.sampling.eps)
    samples, nfe = jax.jit(lambda r: sampler(r, score_fn))(jax.random.key(0))
    return np.asarray(samples), int(nfe)

  given, named = run(times=times, num_steps=0), run(num_steps=6, schedule='karras', eps=1e-4)
  assert given[1] == named[1] == 6
  # Equal up to float rounding: a constant grid compiles into other fusions than a computed one.
  np.testing.assert_allclose(given[0], named[0], rtol=1e-5, atol=1e-6)
  for fields, match in ((dict(method='dpm_solver', num_steps=4), 'uses 4 levels'),
                        (dict(method='ode'), 'only the fixed-step methods')):
    config = smoke_config.copy_and_resolve_references()
    config.sampling.update(times=times, **fields)
    with pytest.raises(ValueError, match=f'sampling.times(.|\n)*{match}'):
      validation.validate_config(config, num_devices=8)


def test_validation_knows_the_samplers_methods_and_orders(smoke_config):
  """config_validation's sampling methods are sampling.METHODS: every name passes and another is
  refused with all of them listed; the multistep solvers are the methods with an order, and
  each one's largest order, read off the solver, passes validation and one more is refused."""
  names = sampling.METHODS.names()
  for method in names:
    smoke_config.sampling.method = method
    validation.validate_config(smoke_config, num_devices=8)
  smoke_config.sampling.method = 'ddim'
  with pytest.raises(ValueError, match=', '.join(names)):
    validation.validate_config(smoke_config, num_devices=8)
  max_orders = {n: sampling.methods.get(n).max_order for n in names
                if sampling.methods.get(n).max_order}
  # The orders each solver implements (DPM-Solver++ 3M, UniPC-3, DEIS / iPNDM 4th order).
  assert max_orders == {'dpm_solver': 3, 'unipc': 3, 'deis': 4, 'ipndm': 4}
  for method, order in max_orders.items():
    smoke_config.sampling.update(method=method, order=order)
    validation.validate_config(smoke_config, num_devices=8)
    smoke_config.sampling.order = order + 1
    with pytest.raises(ValueError, match=f'orders 1 to {order}'):
      validation.validate_config(smoke_config, num_devices=8)


@pytest.mark.parametrize('method,tol,sde_name', [
    ('RK45', 1e-4, 'vpsde'), ('Tsit5', 1e-4, 'vpsde'), ('Bosh3', 1e-4, 'vpsde'),
    ('Dopri8', 1e-4, 'vpsde'), ('RK45', 1e-9, 'vesde')])
def test_ode_nfe_is_the_number_of_score_calls(method, tol, sde_name):
  """The ODE sampler's nfe, 1 + (stages - 1) per attempted step (ode_solve), equals the score_fn
  calls counted at run time, denoising step included; at tol 1e-9 on VE the first step is
  rejected, which once cost an uncounted re-evaluation of the first stage."""
  sde, score_fn = _toy(sde_name=sde_name)
  score_fn, calls = support.counting(score_fn)
  sampler = sampling.get_ode_sampler(sde, (16, 4), sampling.identity,
                                     sampling.get_times(sde, 'ode', eps=sde.sampling_eps),
                                     denoise=True, rtol=tol, atol=tol, method=method)
  _, nfe = jax.jit(lambda r: sampler(r, score_fn))(jax.random.key(0))
  assert int(nfe) == calls[0]


def test_encoder_maps_p_eps_to_the_prior_and_inverts_the_sampler():
  """Encoding exact draws of p_eps through the probability-flow ODE gives latents with the
  prior's law N(0, I) (VP; mean and variance within 5 standard errors, p_T's own offset from
  the prior being ~1e-2 of those), and solving back from the latents recovers the data."""
  sde, score_fn = _toy()
  eps = support.EPS['vpsde']
  law = analytic.marginal(support.mixture(4), sde, eps)
  data = jnp.asarray(support.exact_draws(law, 4000, seed=0), jnp.float32)
  encoder = sampling.get_ode_encoder(sde, rtol=1e-6, atol=1e-6, eps=eps)
  latents, _ = jax.jit(lambda x: encoder(score_fn, x))(data)
  z = np.asarray(latents, np.float64)
  np.testing.assert_array_less(np.abs(z.mean(0)), 5 / np.sqrt(len(z)))
  np.testing.assert_array_less(np.abs(z.var(0) - 1.), 5 * np.sqrt(2. / len(z)))
  back, _ = jax.jit(lambda z: sampling.solve_probability_flow(sde, score_fn, z, sde.T, eps,
                                                              1e-6, 1e-6))(latents)
  np.testing.assert_allclose(back, data, atol=2e-3)


@pytest.mark.parametrize('kind', ['pc', 'dpm_solver', 'unipc', 'adaptive'])
def test_sharded_sampling_does_not_depend_on_the_device_count(kind):
  """The same key gives the same samples on a 1-device and an 8-device mesh (noise drawn at the
  global shape; per-example Langevin norms), and the 8-device result is split over 'data'."""
  sde, score_fn = _toy(sde_name='vesde')
  shape = (64, 4)
  if kind == 'pc':
    sampler = sampling.get_pc_sampler(sde, shape, sampling.identity,
                                      sampling.get_times(sde, 'pc', eps=1e-5),
                                      'reverse_diffusion', 'langevin', 0.16)
  elif kind == 'dpm_solver':
    sampler = sampling.get_dpm_solver_sampler(sde, shape, sampling.identity,
                                              sampling.get_times(sde, kind, 10, eps=1e-5))
  elif kind == 'adaptive':  # Per-example Brownian paths and step sizes.
    sampler = sampling.get_adaptive_sampler(sde, shape, sampling.identity,
                                            sampling.get_times(sde, kind), rel_tol=0.1)
  else:
    sampler = sampling.get_unipc_sampler(sde, shape, sampling.identity,
                                         sampling.get_times(sde, kind, 10, eps=1e-5), order=3)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    sample = sampling.get_sharded_sampler(sampler, lambda params: score_fn, mesh)
    samples, nfe = sample(None, jax.random.key(7))
    results.append(np.asarray(samples))
  assert len(samples.sharding.device_set) == len(jax.devices()) == 8
  assert samples.sharding.spec[0] == parallel.DATA_AXIS
  np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_sharded_sampler_rejects_a_batch_that_does_not_split():
  """A batch of 12 over 8 devices fails before running, naming the fix."""
  sde, score_fn = _toy()
  sampler = sampling.get_heun_sampler(sde, (12, 4), sampling.identity,
                                      sampling.get_times(sde, 'heun', 3))
  sample = sampling.get_sharded_sampler(sampler, lambda p: score_fn, parallel.make_mesh())
  with pytest.raises(ValueError, match='multiple of 8'):
    sample(None, jax.random.key(0))


def test_bad_arguments_fail_early_with_the_fix():
  """Unknown names list the known ones; impossible settings and grids say what to use
  instead."""
  sde, _ = _toy()
  identity = sampling.identity
  pc_times, ode_times = sampling.get_times(sde, 'pc'), sampling.get_times(sde, 'ode')
  with pytest.raises(KeyError, match='euler_maruyama'):
    sampling.get_pc_sampler(sde, (4, 2), identity, pc_times, 'euler', 'none', 0.1)
  with pytest.raises(KeyError, match='langevin_per_example'):
    sampling.get_pc_sampler(sde, (4, 2), identity, pc_times, 'none', 'langevn', 0.1)
  with pytest.raises(ValueError, match='probability_flow'):
    sampling.get_pc_sampler(sde, (4, 2), identity, pc_times, 'ancestral_sampling', 'none', 0.1,
                            probability_flow=True)
  with pytest.raises(ValueError, match='batch'):
    sampling.get_ode_sampler(sde, (4,), identity, ode_times)
  with pytest.raises(ValueError, match='uses 2 levels'):
    sampling.get_ode_sampler(sde, (4, 2), identity, sampling.get_times(sde, 'heun', 3))
  with pytest.raises(ValueError, match='eps'):
    sampling.get_times(sde, 'heun', 10, eps=0.)
  with pytest.raises(ValueError, match='eps and must be > 0'):
    sampling.get_heun_sampler(sde, (4, 2), identity, [1., 0.5, 0.])
  with pytest.raises(ValueError, match='2 or more levels'):
    sampling.get_heun_sampler(sde, (4, 2), identity, sampling.get_times(sde, 'heun', 1))
  with pytest.raises(ValueError, match='order'):
    sampling.get_dpm_solver_sampler(sde, (4, 2), identity,
                                    sampling.get_times(sde, 'dpm_solver', 10), order=4)
  with pytest.raises(ValueError, match='must be positive'):
    sampling.get_adaptive_sampler(sde, (4, 2), identity, ode_times, rel_tol=0.)
  with pytest.raises(KeyError, match='dopri5'):
    sampling.get_ode_sampler(sde, (4, 2), identity, ode_times, method='RK23')
  with pytest.raises(ValueError, match='labels'):
    sampling.get_conditional_score_fn(lambda x, t: x, lambda x, t: x, jnp.zeros((2, 1), int))


def test_pc_samplers_take_their_own_step_count_on_vp():
  """Protects PC sampling at any step count (the released code raised below ~20 steps on VP,
  even for Euler-Maruyama): with num_steps = 10 and 40 on VP (N = 1000) every predictor gives
  finite samples, counts num_steps x (predictor + corrector) evaluations, and the moment error
  against p_eps (in two-sample standard errors) falls with the step count; the default grid
  (get_times without a step count) samples as the released linspace(T, eps, N), bit for bit."""
  sde, eps = sde_lib.VPSDE(N=1000), 1e-3
  target = support.mixture(8)
  law = analytic.marginal(target, sde, eps)
  for predictor, corrector in (('euler_maruyama', 'none'), ('reverse_diffusion', 'langevin'),
                               ('ancestral_sampling', 'none')):
    errors = []
    for num_steps in (10, 40):
      score_fn, calls = support.counting(analytic.score_fn(target, sde))
      sampler = sampling.get_pc_sampler(sde, (4000, 8), sampling.identity,
                                        sampling.get_times(sde, 'pc', num_steps, eps=eps),
                                        predictor, corrector, 0.16)
      x, nfe = jax.jit(lambda r: sampler(r, score_fn))(jax.random.key(0))
      assert np.isfinite(np.asarray(x)).all(), (predictor, num_steps)
      assert int(nfe) == calls[0] == num_steps * (1 + (corrector != 'none'))
      gap, se, _ = support.moment_gaps(x, law, seed=1)
      errors.append(float(np.max(gap / se)))
    assert errors[1] < errors[0] / 2, (predictor, errors)

  score_fn = analytic.score_fn(support.mixture(4), sde)
  released = jnp.linspace(sde.T, sde.sampling_eps, sde.N)  # The released code's grid.
  runs = [sampling.get_pc_sampler(sde, (16, 4), sampling.identity, times, 'reverse_diffusion',
                                  'langevin', 0.16)
          for times in (sampling.get_times(sde, 'pc'), released)]
  a, b = (jax.jit(lambda r, s=s: s(r, score_fn))(jax.random.key(2))[0] for s in runs)
  np.testing.assert_array_equal(a, b)


def test_config_pc_num_steps_reaches_the_sampler(smoke_config):
  """sampling.pc_num_steps sets the PC sampler's steps (0: the SDE's N); a discrete-time
  network, whose labels exist only on its N levels, refuses other counts with the fix."""
  sde = sde_lib.get_sde(smoke_config)
  score_fn = lambda x, t: sde_lib.batch_mul(-1. / (1. + sde.marginal_coeffs(t)[1] ** 2), x)
  smoke_config.sampling.update(method='pc', pc_num_steps=3)
  sampler = sampling.get_sampler(smoke_config, sde, (2, 4, 4, 1), sampling.identity, eps=1e-5)
  assert int(jax.jit(lambda r: sampler(r, score_fn))(jax.random.key(0))[1]) == 3 * 2
  validation.validate_config(smoke_config, num_devices=8)
  smoke_config.training.continuous = False
  with pytest.raises(ValueError, match='sampling.pc_num_steps'):
    validation.validate_config(smoke_config, num_devices=8)
