"""The fitted grid (``schedule='fitted'``, ``sampling.schedule_fit``): its proxy's score, the fit
itself, and what it buys on a target it was not fitted to.

The held-out check is pathwise: the same ``x(T)`` draws are carried to ``p_0`` by the sampler
and by a reference solve (DPM-Solver++ 3M, 400 steps), so the error is the sampler's alone,
free of sampling noise.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_sampling_support as support
from score_sde import analytic, sampling
from score_sde.configs import validation
from score_sde.sampling import schedule, schedule_fit

STEPS = 10


def _log_density(sde, x, t):
  """log p_t of the proxy (up to a constant) from its two Gaussians per coordinate."""
  m, c = schedule_fit.proxy_scales()
  alpha, std = sde.marginal_coeffs(t)
  var = alpha ** 2 * c ** 2 + std ** 2
  modes = jnp.stack([-(x - alpha * m) ** 2, -(x + alpha * m) ** 2]) / (2. * var)
  return jnp.sum(jax.nn.logsumexp(modes, axis=0) - 0.5 * jnp.log(var))


@pytest.mark.parametrize('sde_name', ['vpsde', 'vesde'])
def test_proxy_score_is_the_gradient_of_its_log_density(sde_name):
  """The closed-form score the fit uses equals autodiff of the proxy's perturbed log-density
  (two Gaussians per coordinate), at small, middle and large noise."""
  sde = support.SDES[sde_name]()
  m, _ = schedule_fit.proxy_scales()
  score_fn = schedule_fit.proxy_score_fn(sde)
  x = jax.random.normal(jax.random.key(0), (3, m.shape[0])) * 2.
  t = jnp.asarray([1e-3, 0.3, 1.], jnp.float32)
  expected = jax.vmap(jax.grad(lambda xi, ti: _log_density(sde, xi, ti)))(x, t)
  np.testing.assert_allclose(np.asarray(score_fn(x, t)), np.asarray(expected), rtol=2e-4,
                             atol=1e-3)


def _unipc(sde, shape, times):
  return sampling.get_unipc_sampler(sde, shape, sampling.identity, times, order=2)


def _pathwise_error(score_fn, sampler, reference):
  run = lambda s: np.asarray(jax.jit(lambda r: s(r, score_fn)[0])(jax.random.key(5)))
  return float(np.sqrt(np.mean((run(sampler) - run(reference)) ** 2)))


def test_fitted_grid_lowers_the_samplers_error_on_a_target_it_was_not_fitted_to():
  """UniPC-2 at 10 steps on VP: the fitted grid decreases from T to eps (ends exact), lowers
  the fit's own objective to below half its value at the logSNR start (measured: 0.34x), and
  the sampler's pathwise error on the 8-D mixture of the sampler tests to below 0.8x logSNR's
  (measured: 0.55x); ``fit_grid``, what ``sampling.get_sampler`` calls for
  ``schedule='fitted'``, gives that same grid for the method's registry entry, and
  ``get_times``, which spaces grids by formula, refuses the name naming ``fit_grid``."""
  sde, eps = support.SDES['vpsde'](), support.EPS['vpsde']
  build = lambda shape, times: _unipc(sde, shape, times)
  settings = dict(order=2, denoise=True, final='extrapolate')
  levels = sampling.methods.get('unipc').levels(STEPS, settings)
  fitted = schedule_fit.fit_times(build, sde, levels, eps, True, 'extrapolate')
  assert fitted.shape == (levels,) and fitted[0] == sde.T and fitted[-1] == np.float32(eps)
  assert np.all(np.diff(fitted) < 0)

  m, c = schedule_fit.proxy_scales()
  proxy_shape = (schedule_fit.NUM_DRAWS, m.shape[0])
  proxy_score = schedule_fit.proxy_score_fn(sde)
  reference_times = sampling.get_times(sde, 'dpm_solver', 400, eps=eps)
  proxy_ref = sampling.get_dpm_solver_sampler(sde, proxy_shape, sampling.identity,
                                              reference_times, order=3)
  x_ref = np.asarray(jax.jit(lambda r: proxy_ref(r, proxy_score)[0])(jax.random.key(0)))

  def proxy_loss(times):
    x = np.asarray(jax.jit(lambda r: build(proxy_shape, times)(r, proxy_score)[0])(
        jax.random.key(0)))
    return float(np.mean(np.log1p(((x - x_ref) / np.asarray(c)) ** 2)))
  log_snr = np.asarray(schedule.time_steps(sde, levels, eps, 'logSNR'))
  assert proxy_loss(tuple(fitted)) < 0.5 * proxy_loss(tuple(log_snr))

  shape = (256, 8)
  score_fn = analytic.score_fn(support.mixture(8), sde)
  reference = sampling.get_dpm_solver_sampler(sde, shape, sampling.identity, reference_times,
                                              order=3)
  errors = {name: _pathwise_error(score_fn, _unipc(sde, shape, times), reference)
            for name, times in (('logSNR', sampling.get_times(sde, 'unipc', STEPS, eps=eps)),
                                ('fitted', fitted))}
  assert errors['fitted'] < 0.8 * errors['logSNR'], errors

  np.testing.assert_array_equal(schedule_fit.fit_grid(
      sampling.methods.get('unipc'), sde, levels, eps, settings), fitted)
  with pytest.raises(ValueError, match='fit_grid'):
    sampling.get_times(sde, 'unipc', STEPS, schedule_name='fitted', eps=eps)


def test_fitted_is_a_schedule_of_every_fixed_step_sampler_but_not_a_formula(smoke_config):
  """'fitted' validates as config.sampling.schedule and ``sampling.get_sampler`` builds Heun on
  its grid (finite samples, exact NFE), also when the sampler is built inside a jit trace (the
  fit runs eagerly); time_steps, which knows no sampler, refuses it naming the fix."""
  smoke_config.sampling.update(method='heun', schedule='fitted', num_steps=4)
  validation.validate_config(smoke_config, num_devices=8)
  sde = support.SDES['vesde']()
  score_fn = analytic.score_fn(support.mixture(4), sde)
  samples, nfe = jax.jit(lambda r: sampling.get_sampler(
      smoke_config, sde, (16, 4), sampling.identity, eps=1e-5)(r, score_fn))(jax.random.key(0))
  assert int(nfe) == 7 and np.all(np.isfinite(np.asarray(samples)))
  with pytest.raises(ValueError, match='fit_grid'):
    schedule.time_steps(sde, 5, 1e-5, 'fitted')
