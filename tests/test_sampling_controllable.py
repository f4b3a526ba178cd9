"""Inpainting, colorization and classifier guidance against closed-form conditionals.

Targets have independent coordinates (diagonal Gaussians) in the basis where the constraint is
imposed, so the exact conditional of the unknown coordinates is their marginal, and the
replacement method of appendix I is exact there; any leak of the known values or of the noise
into the unknown coordinates shows. Tolerances: 5 two-sample standard errors
(``test_sampling_support``) plus ``3 std(eps)^2`` on variances for the final denoising.
"""
import jax
import jax.numpy as jnp
import numpy as np

import test_sampling_support as support
from score_sde import analytic, sampling

BATCH = 10000


def _law(means, stds):
  return analytic.GaussianMixture(jnp.ones((1,)), jnp.asarray(means[None], jnp.float32),
                                  jnp.asarray(stds[None], jnp.float32))


def _denoise_bias(sde, eps):
  _, std = sde.marginal_coeffs(jnp.float32(eps))
  return 3. * float(std) ** 2


def test_inpainting_keeps_known_pixels_and_samples_the_conditional():
  """Known coordinates equal the data bit for bit (even far-off values); unknown ones follow
  their exact conditional, which for a diagonal Gaussian is their p_eps marginal, denoised."""
  dim, eps = 6, support.EPS['vesde']
  sde = support.SDES['vesde'](200)
  rng = np.random.default_rng(0)
  means, stds = rng.normal(size=dim), rng.uniform(0.2, 0.5, dim)
  score_fn = analytic.score_fn(_law(means, stds), sde)
  mask = jnp.asarray([[1., 0., 1., 0., 0., 1.]])
  data = jnp.asarray(rng.normal(3., 1., (BATCH, dim)), jnp.float32)
  inpainter = sampling.get_pc_inpainter(sde, sampling.get_times(sde, 'pc', eps=eps),
                                        'reverse_diffusion', 'langevin', sampling.identity,
                                        snr=0.075)
  samples, nfe = jax.jit(lambda r, d: inpainter(r, score_fn, d, mask))(jax.random.key(1), data)
  samples = np.asarray(samples)
  known = np.asarray(mask[0], bool)
  np.testing.assert_array_equal(samples[:, known], np.asarray(data)[:, known])
  assert int(nfe) == 2 * sde.N
  law = analytic.marginal(_law(means[~known], stds[~known]), sde, eps)
  support.assert_matches(samples[:, ~known], law, seed=3, var_bias=_denoise_bias(sde, eps))


def test_colorization_keeps_the_grey_level_and_samples_the_colours():
  """For pixels whose RGB law is N(m, s^2 I) (isotropic across channels), the colour coordinates
  of the orthonormal grey/colour basis are independent of grey with law N(m B, s^2): the
  colorizer's output has the input grey level (channel mean, to float32 rounding) and colour
  coordinates with that p_eps law. The basis is rebuilt here from its definition."""
  eps, shape = support.EPS['vesde'], (BATCH, 2, 2, 3)
  sde = support.SDES['vesde'](200)
  rng = np.random.default_rng(1)
  means = rng.normal(size=shape[1:])
  stds = np.repeat(rng.uniform(0.2, 0.5, shape[1:3] + (1,)), 3, axis=-1)
  score_fn = analytic.score_fn(_law(means, stds), sde)
  grey = np.repeat(rng.uniform(0., 1., shape[:3] + (1,)), 3, axis=-1).astype(np.float32)
  colorizer = sampling.get_pc_colorizer(sde, sampling.get_times(sde, 'pc', eps=eps),
                                        'reverse_diffusion', 'langevin', sampling.identity,
                                        snr=0.075)
  samples, _ = jax.jit(lambda r, g: colorizer(r, score_fn, g))(jax.random.key(1), grey)
  samples = np.asarray(samples, np.float64)
  np.testing.assert_allclose(samples.mean(-1), grey[..., 0], atol=2e-6)
  colour_basis = np.stack([[-2., 1., 1.] / np.sqrt(6.), [0., 1., -1.] / np.sqrt(2.)], axis=1)
  colours = (samples @ colour_basis).reshape(BATCH, -1)
  law = analytic.marginal(_law((means @ colour_basis).ravel(), stds[..., :2].ravel()), sde, eps)
  support.assert_matches(colours, law, seed=4, var_bias=_denoise_bias(sde, eps))


def test_classifier_guidance_with_the_exact_posterior_samples_the_chosen_component():
  """score + grad log p_t(y | x), with the classifier's logits the exact log posterior
  log w_y N(x; alpha mu_y, alpha^2 s_y^2 + std^2) of the perturbed mixture (written out here), is
  the score of component y: guided DPM-Solver++ draws component y of p_eps for each label
  (>= 99% of samples in it, with its moments)."""
  dim, eps = 4, support.EPS['vpsde']
  sde = support.SDES['vpsde']()
  target = support.mixture(dim, components=2, seed=2)
  score_fn = analytic.score_fn(target, sde)

  def classifier_fn(x, t):
    alpha, std = sde.marginal_coeffs(t)
    var = alpha[:, None, None] ** 2 * target.stds[None] ** 2 + std[:, None, None] ** 2
    diff = x[:, None] - alpha[:, None, None] * target.means[None]
    return jnp.log(target.weights) - 0.5 * jnp.sum(diff ** 2 / var + jnp.log(var), -1)

  labels = jnp.repeat(jnp.arange(2), BATCH // 2)
  guided = sampling.get_conditional_score_fn(score_fn, classifier_fn, labels, scale=1.)
  sampler = sampling.get_dpm_solver_sampler(sde, (BATCH, dim), sampling.identity,
                                            sampling.get_times(sde, 'dpm_solver', 40, eps=eps))
  samples, _ = jax.jit(lambda r: sampler(r, guided))(jax.random.key(1))
  samples = np.asarray(samples)
  law = analytic.marginal(target, sde, eps)
  assert np.mean(support.most_responsible(law, samples) == np.asarray(labels)) >= 0.99
  for y in range(2):
    component = analytic.GaussianMixture(jnp.ones((1,)), law.means[y:y + 1], law.stds[y:y + 1])
    support.assert_matches(samples[np.asarray(labels) == y], component, seed=5 + y,
                           var_bias=_denoise_bias(sde, eps))
