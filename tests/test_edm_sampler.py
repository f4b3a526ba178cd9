"""The Heun sampler is EDM's own sampler, deterministic (Algorithm 1) and stochastic (Algorithm 2).

``tests/fixtures/edm_sampler.npz`` holds NVlabs/edm's ``edm_sampler`` (commit 008a4e5) run by
``benchmarks/make_edm_fixtures.py`` on a Gaussian whose denoiser is exact, from this package's
prior draw and with this package's churn noise, in float64: 18 steps on EDM's rho = 7 grid from
sigma = 80 to the VE SDE's sigma(eps), with ``S_churn = 0`` and with EDM's ImageNet-64 churn
(``S_churn = 40, S_min = 0.05, S_max = 50, S_noise = 1.003``). Here ``get_heun_sampler`` runs on
``VESDE(0.002, 80)`` with the same exact score, built from a config through the registry (the
``sampling.s_*`` fields), and must give EDM's samples within float32 rounding. Tests never
need torch.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic, sampling, sde_lib
from score_sde.configs import default

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'edm_sampler.npz')


@pytest.fixture(scope='module')
def edm():
  with np.load(FIXTURE) as f:
    return dict(f)


def _sample(edm, settings, s_noise_scale=1.):
  """This package's Heun sampler with EDM's ``(S_churn, S_min, S_max, S_noise)`` from the
  config, on the fixture's Gaussian, seed and grid."""
  sde = sde_lib.VESDE(0.002, 80., N=int(edm['num_steps']))
  target = analytic.GaussianMixture(jnp.ones((1,)), jnp.asarray(edm['mean'][None], jnp.float32),
                                    jnp.asarray(edm['std'][None], jnp.float32))
  config = default.get_config()
  s = config.sampling
  s.method, s.num_steps, s.schedule, s.rho = 'heun', int(edm['num_steps']), 'karras', 7.
  s.s_churn, s.s_tmin, s.s_tmax, s.s_noise = (float(v) for v in settings)
  s.s_noise *= s_noise_scale
  sampler = sampling.get_sampler(config, sde, edm['latents'].shape, sampling.identity,
                                 eps=float(edm['eps']))
  samples, nfe = jax.jit(lambda r: sampler(r, analytic.score_fn(target, sde)))(
      jax.random.key(int(edm['seed'])))
  assert nfe == 2 * int(edm['num_steps']) - 1
  return np.asarray(samples)


@pytest.mark.parametrize('case', ['deterministic', 'stochastic'])
def test_heun_equals_edms_sampler(edm, case):
  """Algorithm 1 (no churn) and Algorithm 2 (EDM's ImageNet-64 churn) give EDM's samples
  within 1e-4 on values up to 2.4 (measured: 6e-7 and 1.7e-5, float32 against EDM's float64):
  the grid, the churn's raised level and noise, the Heun correction and the final Euler step to
  sigma = 0 are EDM's."""
  ours = _sample(edm, edm[f'{case}_settings'])
  np.testing.assert_allclose(ours, edm[case], rtol=1e-4, atol=1e-4)


def test_the_comparison_bites(edm):
  """The same comparison fails when a setting of Algorithm 2 is off (S_noise by 0.3% moves the
  samples by 5e-3, 50 times the tolerance; the churn dropped, by more than 1e-2), and the two
  cases of the fixture differ."""
  settings = edm['stochastic_settings']
  assert np.abs(_sample(edm, settings, s_noise_scale=1.003) - edm['stochastic']).max() > 1e-3
  assert np.abs(edm['deterministic'] - edm['stochastic']).max() > 1e-2
  assert np.abs(_sample(edm, edm['deterministic_settings']) - edm['stochastic']).max() > 1e-2
