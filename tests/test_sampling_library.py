"""The one sampler signature, over everything registered: a grid, a start point, a callback.

Every ``config.sampling.method`` has one ``base.Method`` entry (``sampling.METHODS``); every
sampler is built on the grid ``times`` and called as ``sampler(rng, score_fn, x_T, callback)``.
The same contract test runs over every registered method (a method added to the registry is
tested without a line here), on a Gaussian mixture whose perturbed score is exact
(``test_sampling_support``). Euler ancestral, the method that shows what adding one takes, is
checked against DPM-Solver++ (its ``eta = 0`` is the same map) and against the mixture's law.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_sampling_support as support
from score_sde import analytic, sampling
from score_sde.configs import default, validation
from score_sde.sampling import base, methods

SHAPE = (64, 4)
STEPS = 8


def _build(name, sde, **settings):
  """``name``'s sampler on its own grid of ``STEPS`` steps, with the settings a default config
  gives it (PC: Euler-Maruyama alone, so that any chain length works)."""
  entry = methods.get(name)
  config = default.get_config()
  config.sampling.predictor, config.sampling.corrector = 'euler_maruyama', 'none'
  own = dict(entry.settings(config.sampling, sde), **settings)
  times = sampling.get_times(sde, name, STEPS, eps=1e-3, **own)
  return entry.build(sde, SHAPE, sampling.identity, times, **own), times, own


@pytest.mark.parametrize('name', sampling.METHODS.names())
def test_every_method_takes_a_start_point_and_reports_its_steps(name):
  """For every registered method: the prior draw passed as ``x_T`` gives the samples of
  ``x_T=None`` to float32 rounding (the start is the only thing ``x_T`` changes); a different start
  changes them; the callback runs inside the jitted loop once per step with the step index,
  a state of the sample shape and a time on the grid, and ``nfe`` counts the evaluations."""
  sde = support.SDES['vpsde'](100)
  target = support.mixture(SHAPE[1])
  score_fn, calls = support.counting(analytic.score_fn(target, sde))
  sampler, times, _ = _build(name, sde)
  rng = jax.random.key(3)
  prior = sde.prior_sampling(base.prior_key(rng), SHAPE)
  seen = []

  def callback(i, x, t, denoised):
    assert x.shape == SHAPE and (denoised is None or denoised.shape == SHAPE)
    jax.debug.callback(lambda i, t: seen.append((int(i), np.asarray(t).ravel()[0])), i, t,
                       ordered=True)

  run = jax.jit(lambda rng, x_T: sampler(rng, score_fn, x_T, callback))
  drawn, nfe = jax.jit(lambda rng: sampler(rng, score_fn))(rng)
  calls[0] = 0
  given, nfe_given = run(rng, prior)
  # Equal up to the fusion of two programs (x_T an input in one, drawn in the other), which
  # the adaptive solvers' step sizes amplify.
  np.testing.assert_allclose(np.asarray(given), np.asarray(drawn), rtol=1e-4, atol=1e-4)
  assert int(nfe_given) == int(nfe) == calls[0]
  assert seen, 'the callback never ran'
  steps = [i for i, _ in seen]
  entry = methods.get(name)
  if entry.steps_field:  # A fixed grid: one call per step, in order, at the grid's times.
    assert steps == list(range(len(steps))) and len(steps) >= STEPS
    on_grid = np.isclose(np.asarray([t for _, t in seen])[:, None], times[None], rtol=1e-5)
    assert on_grid.any(axis=1).mean() > 0.5  # Heun's churn moves some times off the grid.
  times_seen = np.asarray([t for _, t in seen])
  assert np.all((times_seen <= sde.T + 1e-6) & (times_seen >= 0.))
  assert not np.allclose(np.asarray(run(rng, prior + 0.5)[0]), np.asarray(drawn))


@pytest.mark.parametrize('name', ['heun', 'dpm_solver', 'euler_ancestral', 'ode', 'pc'])
def test_a_sampler_started_below_T_draws_the_data_from_exact_draws_of_p_t(name):
  """img2img / SDEdit: started at ``t0 = 0.4`` from exact draws of ``p_t0`` (numpy's), a
  sampler's grid from ``t0`` carries them to the mixture itself within the noise floor (PC: the
  tail of its uniform grid). Protects the start point and the grids that do not begin at T."""
  sde = support.SDES['vpsde'](200)
  target = support.mixture(SHAPE[1])
  n = 4096
  entry = methods.get(name)
  config = default.get_config()
  config.sampling.predictor, config.sampling.corrector = 'euler_maruyama', 'none'
  own = entry.settings(config.sampling, sde)
  if name == 'pc':
    full = sampling.get_times(sde, 'pc', 200, eps=1e-3)
    times = full[full <= 0.4 + 1e-6]
  elif entry.steps_field:
    times = np.asarray(sampling.schedule.time_steps(sde, entry.levels(60, own), 1e-3, 'logSNR')
                       ) * 0.4 / sde.T
    times[-1] = 1e-3 * 0.4  # Ends at eps * t0 / T: keep eps small; 4e-4 is small on VP.
  else:
    times = np.asarray([0.4, 1e-3], np.float32)
  t0 = float(times[0])
  start = support.exact_draws(analytic.marginal(target, sde, t0), n, seed=5).astype(np.float32)
  sampler = entry.build(sde, (n, SHAPE[1]), sampling.identity, times, **own)
  with pytest.raises(ValueError, match='starts below T'):
    sampler(jax.random.key(0), analytic.score_fn(target, sde))
  samples, _ = jax.jit(lambda rng, x: sampler(rng, analytic.score_fn(target, sde), x))(
      jax.random.key(0), jnp.asarray(start))
  eps = float(times[-1])
  _, std_eps = sde.marginal_coeffs(np.float32(eps))
  support.assert_matches(np.asarray(samples), target, seed=9, var_bias=3. * float(std_eps) ** 2)


def test_a_start_of_another_shape_is_refused():
  """``x_T`` must have the shape the sampler was built for; the error names both."""
  sde = support.SDES['vpsde'](100)
  sampler, _, _ = _build('heun', sde)
  with pytest.raises(ValueError, match=r'x_T has shape \(3, 4\).*\(64, 4\)'):
    sampler(jax.random.key(0), lambda x, t: -x, jnp.zeros((3, 4)))


def test_euler_ancestral_without_noise_is_ddim():
  """``eta = 0`` is DDIM: the same map as DPM-Solver++ of order 1 whose end is Tweedie's step,
  on the same grid (Euler in sigma of the data prediction; module docstring), to float32
  rounding, on VP and VE."""
  for sde_name in ('vpsde', 'vesde'):
    sde = support.SDES[sde_name](100)
    score_fn = analytic.score_fn(support.mixture(SHAPE[1]), sde)
    times = sampling.get_times(sde, 'euler_ancestral', 12, eps=support.EPS[sde_name])
    ancestral = sampling.methods.get('euler_ancestral').build(
        sde, SHAPE, sampling.identity, times, eta=0.)
    ddim = sampling.get_dpm_solver_sampler(sde, SHAPE, sampling.identity, times, order=1,
                                           final='tweedie')
    a, nfe_a = jax.jit(lambda r: ancestral(r, score_fn))(jax.random.key(2))
    b, nfe_b = jax.jit(lambda r: ddim(r, score_fn))(jax.random.key(2))
    assert nfe_a == nfe_b == 12
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize('sde_name', ['vpsde', 'vesde'])
def test_euler_ancestral_draws_the_mixture(sde_name):
  """``eta = 1`` (DDPM's ancestral step in sigma) on 200 karras steps draws the mixture's mode
  weights, means and variances within the noise floor, built from a config by ``get_sampler``
  (the registry entry's settings and grid)."""
  sde = support.SDES[sde_name](200)
  target = support.mixture(8)
  config = default.get_config()
  config.sampling.method, config.sampling.num_steps = 'euler_ancestral', 200
  config.sampling.eta = 1.
  sampler = sampling.get_sampler(config, sde, (10000, 8), sampling.identity,
                                 eps=support.EPS[sde_name])
  samples, nfe = jax.jit(lambda r: sampler(r, analytic.score_fn(target, sde)))(
      jax.random.key(4))
  assert nfe == 200
  _, std_eps = sde.marginal_coeffs(np.float32(support.EPS[sde_name]))
  support.assert_matches(np.asarray(samples), target, seed=11,
                         var_bias=3. * float(std_eps) ** 2)


def test_validation_reads_the_registry():
  """Validation knows a method by its registry entry: an unknown one lists the registered
  names, a registered one is accepted, its maximum order is the entry's, and an ``eta``
  outside [0, 1] is refused with the fix."""
  config = default.get_config()
  config.sampling.method = 'ddim'
  with pytest.raises(ValueError, match='euler_ancestral'):
    validation.validate_config(config, num_devices=1)
  config.sampling.method = 'euler_ancestral'
  validation.validate_config(config, num_devices=1)
  config.sampling.eta = 1.5
  with pytest.raises(ValueError, match=r'sampling.eta=1.5.*0 \(DDIM\) to 1'):
    validation.validate_config(config, num_devices=1)
  config.sampling.eta = 1.
  config.sampling.method = 'deis'
  config.sampling.order = methods.get('deis').max_order + 1
  with pytest.raises(ValueError, match=f'orders 1 to {methods.get("deis").max_order}'):
    validation.validate_config(config, num_devices=1)


@pytest.mark.parametrize('name', sampling.METHODS.names())
def test_every_method_runs_unchanged_on_an_edm_preconditioned_network(name):
  """Every registered method on a network with EDM's preconditioning (``'edm'``): a network
  whose output is the exact F of the mixture, (E[x0 | x_hat] - c_skip x_hat) / c_out, seen only
  through its inputs c_in x_hat and c_noise, read by ``score_fn_from_model_fn``, gives the
  samples of the exact score itself, on a VE and a VP SDE."""
  from score_sde import sde_lib  # pylint: disable=g-import-not-at-top
  from score_sde.models import parameterization as P  # pylint: disable=g-import-not-at-top
  target = support.mixture(SHAPE[1])
  param = P.EDMPreconditioning(0.5)
  for sde in (sde_lib.VESDE(0.002, 80., N=100), support.SDES['vpsde'](100)):

    def exact_network(inputs, c_noise, class_labels=None):
      del class_labels
      sigma = jnp.exp(4. * c_noise)  # EDM's c_noise = ln(sigma) / 4.
      c_skip, c_out, c_in, _ = param.coefficients(sigma)
      x_hat = sde_lib.batch_mul(1. / c_in, inputs)
      denoised = x_hat + sde_lib.batch_mul(sigma ** 2, jax.vmap(
          lambda x, s: target.perturb(1., s).score(x[None])[0])(x_hat, sigma))
      return sde_lib.batch_mul(1. / c_out, denoised - sde_lib.batch_mul(c_skip, x_hat))

    network_score = P.score_fn_from_model_fn(sde, exact_network, True, param)
    sampler, _, _ = _build(name, sde)
    rng = jax.random.key(5)
    exact = jax.jit(lambda rng: sampler(rng, analytic.score_fn(target, sde)))(rng)[0]
    through = jax.jit(lambda rng: sampler(rng, network_score))(rng)[0]
    through, exact = np.asarray(through), np.asarray(exact)
    if name != 'adaptive':
      np.testing.assert_allclose(through, exact, rtol=2e-3, atol=2e-3)
      continue
    # The adaptive SDE solver's accept / reject decisions turn float32 rounding into other step
    # sequences; its samples then agree in law (the same noise paths, other steps): means and
    # stds within 0.1, under one standard error of 64 draws of the mixture.
    assert np.abs(through.mean(0) - exact.mean(0)).max() < 0.1
    assert np.abs(through.std(0) - exact.std(0)).max() < 0.1
