"""The DDPM chain's variational bound against openai/improved-diffusion's own numbers (no torch).

tests/fixtures/improved_diffusion_vb.npz was written by benchmarks/make_elbo_fixtures.py from
improved-diffusion's ``gaussian_diffusion.py`` (``calc_bpd_loop``, ``_vb_terms_bpd``,
``_prior_bpd``) and ``losses.py`` (``discretized_gaussian_log_likelihood``, ``normal_kl``): an
independent computation of Ho et al.'s eq. 5 on the chain of ``VPSDE(0.1, 20., 40)``, 8-bit data
with pixels at both edges, fixed noise per step, and the elementwise model ``tanh(A x_t + B t /
N)`` read as the noise (EPSILON) and as the clean image (START_X), under both fixed reverse
variances (FIXED_SMALL = ``'posterior'``, FIXED_LARGE = ``'beta'``) with and without clipping.

Each case is stored three ways: the reference as written (``float32``: float32 arithmetic and
Ho et al.'s tanh approximation of the normal CDF with ``1e-12`` floors in the decoder), the same
code in float64 (``float64``), and in float64 with the exact CDF (``float64_ndtr``). This
project's ``cdf='tanh'`` bound is checked against the first, its ``cdf='exact'`` bound against
the last. The tolerance is 1e-5 absolute, in bits/dim for the bound's terms and totals and in
nats for the elementwise functions; float32 resolves the terms to about 6e-6 (the largest
difference of this project's float32 terms from the float64 run, on terms of up to 16 bits/dim).

START_X's decoder term (``t = 0``) is left out of the bound's comparison (and its total is
compared without it): there the tanh model's clean image is 7-8 standard deviations from the
edge pixels, where the tanh CDF's ``1 - cdf`` cancels in float32 (the reference's float32 and
float64 runs differ by up to 1.5 bits/dim, and this project's float32 run from either by as
much) and the exact CDF's tail mass lies below the reference's ``1e-12`` floor, which the exact
decoder, computing it in log space, does not have. The decoder itself is checked elementwise
on inputs within 4 scales of the data.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import elbo, sde_lib
from score_sde.sde_lib import batch_mul

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'improved_diffusion_vb.npz')
TOL = 1e-5  # Absolute: bits/dim for the bound, nats for the elementwise functions.
CASES = [(mean, var, clip) for mean in ('epsilon', 'start_x')
         for var in ('fixed_small', 'fixed_large') for clip in ('clip', 'noclip')]
REVERSE_VARIANCE = {'fixed_small': 'posterior', 'fixed_large': 'beta'}
# This project's decoder CDF and the fixture variant it reproduces.
REFERENCE = {'tanh': 'float32', 'exact': 'float64_ndtr'}


@pytest.fixture(scope='module')
def fixture():
  data = np.load(FIXTURE)
  return {k: data[k] for k in data.files}


@pytest.fixture(scope='module')
def sde(fixture):
  n = len(fixture['betas'])
  return sde_lib.VPSDE(0.1, 20., n)


def _score_fn(fixture, mean_type):
  """The fixture's model as a score: label ``i = round(t (N - 1))``, ``out = tanh(A x + B i /
  N)``; EPSILON: ``-out / sqrt(1 - abar_i)``; START_X: ``(sqrt(abar_i) out - x) / (1 -
  abar_i)``, so that ``(x + (1 - abar_i) score) / sqrt(abar_i)`` is the reference's ``x_0``
  prediction."""
  abar = np.cumprod(1. - fixture['betas'])
  sqrt_abar, one_minus_abar = (jnp.asarray(v, jnp.float32) for v in (np.sqrt(abar), 1. - abar))
  sqrt_1m_abar = jnp.asarray(np.sqrt(1. - abar), jnp.float32)
  n = len(abar)
  a, b = float(fixture['A']), float(fixture['B'])

  def score_fn(x, t):
    i = jnp.round(t * (n - 1)).astype(jnp.int32)
    out = jnp.tanh(a * x + batch_mul(b * i.astype(jnp.float32) / n, jnp.ones_like(x)))
    if mean_type == 'epsilon':
      return batch_mul(-1. / sqrt_1m_abar[i], out)
    return batch_mul(1. / one_minus_abar[i], batch_mul(sqrt_abar[i], out) - x)
  return score_fn


def _terms_bpd(sde, fixture, mean, var, clip, cdf, reverse_variance=None):
  """``ddpm_term`` at every label with the fixture's noise, ``(B, N)`` bits/dim."""
  x0, noise = fixture['x_start'], fixture['noise']
  n, batch = noise.shape[:2]
  dim = int(np.prod(x0.shape[1:]))
  labels = np.repeat(np.arange(n), batch)
  nats = jax.jit(lambda x, z: elbo.ddpm_term(
      sde, _score_fn(fixture, mean), x, labels, z,
      reverse_variance=reverse_variance or REVERSE_VARIANCE[var], clip_denoised=clip == 'clip',
      cdf=cdf))(np.tile(x0, (n, 1, 1, 1)), noise.reshape((n * batch,) + x0.shape[1:]))
  return np.asarray(nats, np.float64).reshape(n, batch).T / (dim * np.log(2.))


def test_chain_is_the_references(fixture, sde):
  """The fixture's betas are this project's ``VPSDE(0.1, 20., 40)`` DDPM chain, so every other
  test here compares the same chain; the fixture names the reference commit it came from."""
  provenance = json.loads(str(fixture['provenance']))
  assert provenance['reference_commit'] not in ('', 'unknown') and provenance['torch']
  assert sde.chain == 'ddpm'
  np.testing.assert_allclose(sde.chain_betas, fixture['betas'], rtol=1e-15, atol=0.)


@pytest.mark.parametrize('mean', ['epsilon', 'start_x'])
def test_fixture_model_rebuilt_as_a_score(fixture, mean):
  """The test's score function, read back through Tweedie, gives the reference's ``x_0``
  prediction (its ``xstart_mse`` at every step, clipped and not): the labels, the noise's step
  order and the model are rebuilt as the reference ran them, independently of ``elbo``."""
  x0, noise = fixture['x_start'], fixture['noise']
  abar = np.cumprod(1. - fixture['betas'])
  times = elbo.ddpm_label_times(sde_lib.VPSDE(0.1, 20., len(abar)))
  score_fn = _score_fn(fixture, mean)
  for clip in ('clip', 'noclip'):
    expected = fixture[f'float64/{mean}/fixed_small/{clip}/xstart_mse']
    for i in range(len(abar)):
      x_t = (np.float32(np.sqrt(abar[i])) * x0 + np.float32(np.sqrt(1. - abar[i])) * noise[i])
      score = np.asarray(score_fn(x_t, jnp.full((x0.shape[0],), times[i])))
      x_hat = (x_t + np.float32(1. - abar[i]) * score) / np.float32(np.sqrt(abar[i]))
      x_hat = np.clip(x_hat, -1., 1.) if clip == 'clip' else x_hat
      mse = np.mean(np.square(x_hat.astype(np.float64) - x0).reshape(x0.shape[0], -1), -1)
      np.testing.assert_allclose(mse, expected[:, i], rtol=1e-4, atol=1e-6, err_msg=f't={i}')


@pytest.mark.parametrize('cdf', ['tanh', 'exact'])
@pytest.mark.parametrize('case', CASES, ids=['/'.join(c) for c in CASES])
def test_terms_and_total_equal_reference(fixture, sde, case, cdf):
  """Every term of the bound (the ``t >= 1`` KLs of Ho et al. eq. 5 and the discretized decoder
  at ``t = 0``) and the total with the prior equal improved-diffusion's ``calc_bpd_loop`` within
  1e-5 bits/dim: protects the posterior's mean and variance, the reverse variances (including
  the first step's), the Tweedie ``x_0`` estimate, clipping, the decoder's bins and edges, the
  step indexing and the units."""
  mean, var, clip = case
  prefix = f'{REFERENCE[cdf]}/{mean}/{var}/{clip}'
  terms = _terms_bpd(sde, fixture, mean, var, clip, cdf)
  expected = fixture[f'{prefix}/vb']
  first = 1 if mean == 'start_x' else 0  # START_X's decoder term: see the module docstring.
  err = np.abs(terms - expected)[:, first:]
  t_worst = first + int(np.argmax(err.max(axis=0)))
  assert err.max() < TOL, (f'{prefix}: term at t={t_worst} off by {err.max():.2e} bits/dim '
                           f'(ours {terms[:, t_worst]}, reference {expected[:, t_worst]})')
  dim = int(np.prod(fixture['x_start'].shape[1:]))
  prior = np.asarray(elbo.ddpm_prior_kl(sde, fixture['x_start'])) / (dim * np.log(2.))
  total = terms[:, first:].sum(axis=1) + prior
  expected_total = fixture[f'{prefix}/total_bpd'] - expected[:, :first].sum(axis=1)
  np.testing.assert_allclose(total, expected_total, rtol=0., atol=TOL)


def test_prior_equals_reference(fixture, sde):
  """``ddpm_prior_kl`` is improved-diffusion's ``_prior_bpd`` (float64 run), to 1e-4 of its
  value: the term is about 1.5e-6 bits/dim here, so an absolute 1e-5 would not test it."""
  dim = int(np.prod(fixture['x_start'].shape[1:]))
  prior = np.asarray(elbo.ddpm_prior_kl(sde, fixture['x_start'])) / (dim * np.log(2.))
  np.testing.assert_allclose(prior, fixture['float64/epsilon/fixed_small/clip/prior_bpd'],
                             rtol=1e-4)


@pytest.mark.parametrize('cdf', ['tanh', 'exact'])
def test_decoder_equals_reference(fixture, cdf):
  """``discretized_gaussian_log_likelihood`` at every 8-bit level (both open edge bins included),
  log-scales from 1e-3 to 0.2 and means within 4 scales equals improved-diffusion's (float64
  runs): with its tanh CDF and floors (``'tanh'``) and with the exact CDF (``'exact'``), within
  1e-5 nats. The tanh form ``0.5 (1 + tanh(.))`` rounds each CDF to an absolute 2^-24 in
  float32, so a bin of mass P carries up to about 2^-23 / P nats of rounding (2e-5 nats at
  P = 6e-3), which the tolerance adds for ``'tanh'``; the exact form needs no such allowance."""
  ours = np.asarray(elbo.discretized_gaussian_log_likelihood(
      fixture['decoder/x'], fixture['decoder/means'], fixture['decoder/log_scales'], cdf=cdf),
      np.float64)
  expected = fixture[f'decoder/{"float64" if cdf == "tanh" else "float64_ndtr"}/log_probs']
  tol = TOL + (2. ** -23 / np.exp(expected) if cdf == 'tanh' else 0.)
  excess = np.abs(ours - expected) - tol
  worst = int(np.argmax(excess))
  assert excess.max() < 0., (
      f'{cdf}: off by {abs(ours[worst] - expected[worst]):.2e} nats (tolerance {tol[worst]:.1e})'
      f' at x={fixture["decoder/x"][worst]}, log-probability {expected[worst]:.3f}')


def test_normal_kl_equals_reference(fixture):
  """``normal_kl`` is improved-diffusion's elementwise Gaussian KL, to float32 precision
  (1e-5 of each value, values up to 45 nats)."""
  args = [fixture[f'normal_kl/{k}'] for k in ('mean1', 'logvar1', 'mean2', 'logvar2')]
  np.testing.assert_allclose(np.asarray(elbo.normal_kl(*args)), fixture['normal_kl/kl'],
                             rtol=1e-5, atol=1e-6)


def test_fixture_tells_the_variances_and_clipping_apart(fixture, sde):
  """The comparison bites: with the other reverse variance, or without the clipping the
  reference used, the terms differ from the reference by far more than the tolerance."""
  expected = fixture['float32/epsilon/fixed_small/clip/vb']
  swapped = _terms_bpd(sde, fixture, 'epsilon', 'fixed_small', 'clip', 'tanh',
                       reverse_variance='beta')
  assert np.abs(swapped - expected).max() > 1e3 * TOL
  unclipped = _terms_bpd(sde, fixture, 'epsilon', 'fixed_small', 'noclip', 'tanh')
  assert np.abs(unclipped - expected).max() > 1e3 * TOL
