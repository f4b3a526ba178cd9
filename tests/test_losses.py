"""The DSM objectives against their closed-form values at the exact score, and their gradients
against finite differences.

For data ``N(0, s^2 I)`` perturbed to ``alpha x0 + std z`` the marginal variance is
``v = alpha^2 s^2 + std^2`` and the score is ``-x / v``; plugging it into each objective gives
expected per-dimension losses in closed form (derived in each test), which Monte Carlo over a
large batch must reproduce within a few standard errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate

from score_sde import analytic, elbo, losses, optim, sde_lib

S, DIM, BATCH, EPS = 0.8, 3, 200000, 1e-5
SDES = {
    'vpsde': sde_lib.VPSDE(0.1, 20., 1000),
    'subvpsde': sde_lib.subVPSDE(0.1, 20., 1000),
    'vesde': sde_lib.VESDE(0.01, 5., 1000),
}


def _moments(sde, t):
  alpha, std = sde.marginal_coeffs(jnp.asarray([t], jnp.float32))
  g = sde.sde(jnp.zeros((1, 1)), jnp.asarray([t], jnp.float32))[1]
  return float(alpha[0]), float(std[0]), float(g[0])


def _exact_score(sde):
  def score_fn(x, t):
    alpha, std = sde.marginal_coeffs(t)
    return -sde_lib.batch_mul(1. / (alpha ** 2 * S ** 2 + std ** 2), x)
  return score_fn


def _times_and_noise(key, data, sde, eps=EPS):
  """The continuous objective's draws for ``data``: ``t ~ U(eps, T)`` per row, ``z ~ N(0, I)``."""
  t_key, z_key = jax.random.split(key)
  return (jax.random.uniform(t_key, (data.shape[0],), minval=eps, maxval=sde.T),
          jax.random.normal(z_key, data.shape))


def _labels_and_noise(key, data, sde):
  """The discrete objectives' draws: labels uniform over the ``N`` levels, ``z ~ N(0, I)``."""
  label_key, z_key = jax.random.split(key)
  return (jax.random.randint(label_key, (data.shape[0],), 0, sde.N),
          jax.random.normal(z_key, data.shape))


def _check_mc(per_example, expected):
  per_example = np.asarray(per_example, np.float64)
  se = per_example.std() / np.sqrt(per_example.size)
  assert abs(per_example.mean() - expected) < 4 * se, (per_example.mean(), expected, se)


@pytest.mark.parametrize('name', SDES)
@pytest.mark.parametrize('weighting', ['dsm', 'likelihood'])
def test_dsm_loss_at_the_exact_score(name, weighting):
  """E||std s + z||^2 = alpha^2 s^2 / v per dimension at the true score; with lambda = g^2 the
  loss is E||s + z / std||^2 g^2 = g^2 alpha^2 s^2 / (v std^2); both averaged over t ~ U(eps, 1)
  by quadrature."""
  sde = SDES[name]

  def integrand(t):
    alpha, std, g = _moments(sde, t)
    v = alpha ** 2 * S ** 2 + std ** 2
    per_dim = alpha ** 2 * S ** 2 / v
    return per_dim * g ** 2 / std ** 2 if weighting == 'likelihood' else per_dim

  # Half the sum over dimensions: the reference's reduce_op for reduce_mean=False.
  expected = 0.5 * DIM * integrate.quad(integrand, EPS, 1., limit=200,
                                        points=[1e-3, 1e-2])[0] / (1 - EPS)
  data = S * jax.random.normal(jax.random.key(0), (BATCH, DIM))
  per_example = jax.jit(lambda d: losses.dsm_loss(
      _exact_score(sde), sde, d, *_times_and_noise(jax.random.key(1), d, sde), False, weighting,
      EPS))(data)
  _check_mc(per_example, expected)


def test_smld_loss_at_the_exact_score():
  """sigma^2 E||s + noise / sigma^2||^2 = s^2 / v per dimension (v = s^2 + sigma^2), averaged over
  the N scales; labels index the scales in descending order (label 0 = sigma_max)."""
  sde = SDES['vesde']
  sigmas_desc = np.exp(np.linspace(np.log(0.01), np.log(5.), 1000))[::-1]
  model_fn = lambda x, labels: -sde_lib.batch_mul(
      1. / (S ** 2 + jnp.asarray(sigmas_desc, jnp.float32)[labels] ** 2), x)
  expected = 0.5 * DIM * np.mean(S ** 2 / (S ** 2 + sigmas_desc ** 2))
  data = S * jax.random.normal(jax.random.key(2), (BATCH, DIM))
  _check_mc(losses.smld_loss(model_fn, sde, data, *_labels_and_noise(jax.random.key(3), data,
                                                                     sde)), expected)


def test_ddpm_loss_at_the_posterior_mean_noise():
  """With x = a x0 + b z (a = sqrt(abar_i), b = sqrt(1 - abar_i)) the best noise prediction is
  E[z|x] = b x / v, v = a^2 s^2 + b^2, with loss 1 - b^2 / v per dimension, averaged over i."""
  sde = SDES['vpsde']
  abar = np.cumprod(1. - np.linspace(0.1 / 1000, 20. / 1000, 1000))
  v = abar * S ** 2 + (1. - abar)
  c = jnp.asarray(np.sqrt(1. - abar) / v, jnp.float32)
  model_fn = lambda x, labels: sde_lib.batch_mul(c[labels], x)
  expected = 0.5 * DIM * np.mean(1. - (1. - abar) / v)
  data = S * jax.random.normal(jax.random.key(4), (BATCH, DIM))
  _check_mc(losses.ddpm_loss(model_fn, sde, data, *_labels_and_noise(jax.random.key(5), data,
                                                                     sde)), expected)


@pytest.mark.parametrize('loss', ['dsm', 'smld', 'ddpm'])
def test_summed_loss_is_half_the_sum_as_in_the_reference(loss):
  """With reduce_mean=False the reference reduces as 0.5 * sum (every VE config), so
  its logged losses, gradients and the effect of optim.grad_clip are those of half the sum
  (a plain sum made them 2x). Same draws, both reductions: summed = 0.5 * D * mean, exactly."""
  data = S * jax.random.normal(jax.random.key(6), (16, 4, 4, 2))
  d = 4 * 4 * 2
  key = jax.random.key(7)
  if loss == 'dsm':
    sde = SDES['vesde']
    fn = lambda reduce_mean: losses.dsm_loss(_exact_score(sde), sde, data,
                                             *_times_and_noise(key, data, sde), reduce_mean)
  elif loss == 'smld':
    fn = lambda reduce_mean: losses.smld_loss(lambda x, l: -x, SDES['vesde'], data,
                                              *_labels_and_noise(key, data, SDES['vesde']),
                                              reduce_mean)
  else:
    fn = lambda reduce_mean: losses.ddpm_loss(lambda x, l: 0.5 * x, SDES['vpsde'], data,
                                              *_labels_and_noise(key, data, SDES['vpsde']),
                                              reduce_mean)
  np.testing.assert_allclose(fn(False), 0.5 * d * fn(True), rtol=1e-6)
  # And the summed value is half of an independent squared norm (DSM at the exact score).
  if loss == 'dsm':
    sde = SDES['vesde']
    t_rng, z_rng = jax.random.split(jax.random.key(7))
    t = jax.random.uniform(t_rng, (16,), minval=1e-5, maxval=1.)
    z = jax.random.normal(z_rng, data.shape)
    mean, std = sde.marginal_prob(data, t)
    x = mean + std[:, None, None, None] * z
    residual = std[:, None, None, None] * _exact_score(sde)(x, t) + z
    np.testing.assert_allclose(fn(False), 0.5 * np.sum(np.square(residual), axis=(1, 2, 3)),
                               rtol=1e-5)


def test_discrete_losses_reject_the_wrong_sde():
  """SMLD is defined for VE only and DDPM for VP only; the error names the config fix."""
  data, labels = jnp.zeros((2, 3)), jnp.zeros((2,), jnp.int32)
  with pytest.raises(ValueError, match='training.sde = "vesde"'):
    losses.smld_loss(lambda x, l: x, SDES['vpsde'], data, labels, data)
  with pytest.raises(ValueError, match='training.sde = "vpsde"'):
    losses.ddpm_loss(lambda x, l: x, SDES['subvpsde'], data, labels, data)


@pytest.mark.parametrize('weighting', ['dsm', 'likelihood'])
def test_dsm_gradient_matches_finite_differences(weighting):
  """d loss / d theta for the score family s = -theta x, by jax.grad and by central differences
  (the loss is quadratic in theta, so the difference quotient is exact up to rounding)."""
  sde = SDES['vpsde']
  data = S * jax.random.normal(jax.random.key(6), (512, DIM))

  def loss(theta):
    per_example = losses.dsm_loss(lambda x, t: -theta * x, sde, data,
                                  *_times_and_noise(jax.random.key(7), data, sde, 1e-2), True,
                                  weighting, 1e-2)
    return jnp.mean(per_example)

  theta, h = 0.7, 1e-2
  fd = (loss(theta + h) - loss(theta - h)) / (2 * h)
  np.testing.assert_allclose(jax.grad(loss)(theta), fd, rtol=2e-3)


def test_optimizer_warmup_and_clipping(smoke_config):
  """Learning rate k * lr / warmup for the first updates, then lr; gradients are clipped to
  global norm grad_clip before Adam (checked on the first Adam update, whose size is lr)."""
  cfg = smoke_config.optim
  cfg.warmup, cfg.lr, cfg.grad_clip = 4, 1e-2, 1.
  schedule = optim.get_learning_rate_schedule(cfg)
  np.testing.assert_allclose([schedule(k) for k in range(6)],
                             [0., 2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2], rtol=1e-6)
  tx = optim.get_optimizer(cfg)
  params = {'w': jnp.zeros(3)}
  state = tx.init(params)
  grads = {'w': jnp.asarray([30., -40., 0.])}
  clipped, _ = optax.clip_by_global_norm(1.).update(grads, optax.EmptyState())
  np.testing.assert_allclose(optax.tree.norm(clipped), 1., rtol=1e-6)
  _, state = tx.update(grads, state, params)  # k = 0: learning rate 0.
  updates, _ = tx.update(grads, state, params)  # k = 1: Adam's step has magnitude ~lr_k.
  np.testing.assert_allclose(updates['w'][:2], [-2.5e-3, 2.5e-3], rtol=1e-3)
  cfg.optimizer = 'SGD'
  with pytest.raises(ValueError, match='known: Adam, AdamW'):
    optim.get_optimizer(cfg)


@pytest.mark.parametrize('warmup', [False, True])
def test_ema_follows_its_rate_and_the_warmed_up_rate(warmup):
  """params_ema after each train step is r_s e + (1 - r_s) p, with r_s = ema_rate, or with
  model.ema_warmup min(ema_rate, (1 + n) / (10 + n)) at the n = s + 1-th update s (the port's
  num_updates; so step 0 keeps 18% of the initial weights, not 99.9%); checked against the
  recurrence in numpy on a 1-D quadratic."""
  from score_sde.training import train_state
  rate = 0.999

  def loss(rng, params, batch, noise):
    del rng, noise
    return {'loss': jnp.sum((params['w'] - batch) ** 2)[None]}  # One example.

  tx = optax.sgd(0.1)
  objective = losses.Objective(draw=lambda rng, batch: {}, loss=loss)
  step_fn = jax.jit(losses.get_objective_step_fn(
      objective, True, tx, losses.StepSettings(ema_rate=rate, ema_warmup=warmup)))
  state = train_state.create_train_state({'w': jnp.asarray(2.)}, tx)
  w, ema = 2., 2.
  for s in range(4):
    state, _ = step_fn(state, jnp.asarray(0.), jax.random.key(0))
    w = w - 0.1 * 2. * w
    r = min(rate, (2. + s) / (11. + s)) if warmup else rate
    ema = r * ema + (1. - r) * w
    np.testing.assert_allclose(float(state.params_ema['w']), ema, rtol=1e-6)


def test_step_settings_are_the_configs(smoke_config):
  """Protects the one place where a config becomes the score model's step: every field of
  ``step_settings`` is the config's (the objective, precision and accumulation from
  ``training``; the reverse variance, parameterization and EMA from ``model``)."""
  smoke_config.training.update(continuous=False, weighting='elbo', reduce_mean=False, eps=1e-3,
                               label_dropout=0.25, compute_dtype='bfloat16',
                               float32_below_std=0.1, grad_accum_steps=2, p_mean=-1., p_std=1.5,
                               batch_size=16)
  smoke_config.model.update(reverse_variance='beta', parameterization='eps', ema_rate=0.9,
                            ema_warmup=True, sigma_data=0.6, ema_halflife_kimg=2.,
                            ema_rampup_ratio=0.1)
  assert losses.step_settings(smoke_config) == losses.StepSettings(
      continuous=False, weighting='elbo', reduce_mean=False, eps=1e-3, reverse_variance='beta',
      parameterization='eps', sigma_data=0.6, p_mean=-1., p_std=1.5, label_dropout=0.25,
      compute_dtype='bfloat16', float32_below_std=0.1, ema_rate=0.9, ema_warmup=True,
      ema_halflife_kimg=2., ema_rampup_ratio=0.1, batch_size=16, grad_accum_steps=2)


def _g2_over_2var(sde, t):
  """``g(t)^2 / (2 std(t)^2)``, ``(B,)``: the bound's weight per unit ``t`` on
  ``|| std s + z ||^2``, from the SDE's own drift and diffusion."""
  g = sde.sde(jnp.zeros((t.shape[0], 1)), t)[1]
  return g ** 2 / (2. * sde.marginal_coeffs(t)[1] ** 2)


@pytest.mark.parametrize('name', SDES)
def test_elbo_weighting_is_the_bounds_diffusion_term_at_each_t_and_z(name):
  """Protects weighting='elbo' in continuous time: at fixed (t, z) the per-example loss is the
  bound's diffusion-term estimate (T - eps) g^2 / (2 std^2) || std s + z ||^2 in nats, the
  integrand of ``elbo.continuous_integrand`` with its weight per unit t (the full sum over the
  dimensions, not the half sum of the other weightings)."""
  sde, eps = SDES[name], 1e-3
  keys = jax.random.split(jax.random.key(8), 3)
  data = S * jax.random.normal(keys[0], (64, 4, 4, 2))
  t = jax.random.uniform(keys[1], (64,), minval=eps, maxval=1.)
  z = jax.random.normal(keys[2], data.shape)
  score_fn = lambda x, t: -0.6 * x + 0.1 * t[:, None, None, None]  # Not the true score.
  got = losses.dsm_loss(score_fn, sde, data, t, z, False, 'elbo', eps)
  expected = ((sde.T - eps) * _g2_over_2var(sde, t)
              * elbo.continuous_integrand(sde, score_fn, data, t, z))
  np.testing.assert_allclose(got, expected, rtol=2e-6)
  # (T - eps) times the half-sum likelihood-weighted loss: the same integrand, per unit t.
  likelihood = losses.dsm_loss(score_fn, sde, data, t, z, False, 'likelihood')
  np.testing.assert_allclose(got, (sde.T - eps) * likelihood, rtol=1e-4)


@pytest.mark.parametrize('name', SDES)
def test_elbo_weighting_averages_to_the_bounds_diffusion_term(name):
  """Protects the meaning of the 'elbo' training loss: its mean over t ~ U(eps, T) and z, at the
  exact score of Gaussian data (``analytic``), is the continuous bound's diffusion term of
  ``elbo.get_elbo_fn`` (nats, uniform times) for the same example, within the two Monte Carlo
  estimates' standard errors. eps = 1e-2 keeps the uniform-t estimator's variance small (its
  weight grows as 1 / t on VP)."""
  sde, eps, draws = SDES[name], 1e-2, 20000
  target = analytic.GaussianMixture(jnp.ones((1,)), jnp.asarray([[0.3, -0.5]]),
                                    jnp.asarray([[0.8, 0.6]]))
  score_fn = analytic.score_fn(target, sde)
  x0 = jnp.asarray([[0.4, -1.1]])
  data = jnp.broadcast_to(x0, (draws, 2))
  per_draw = jax.jit(lambda key: losses.dsm_loss(
      score_fn, sde, data, *_times_and_noise(key, data, sde, eps), False, 'elbo', eps))(
          jax.random.key(9))
  per_draw = np.asarray(per_draw, np.float64)
  mean, se = per_draw.mean(), per_draw.std() / np.sqrt(draws)
  elbo_fn = elbo.get_elbo_fn(sde, units='nats', time_sampling='uniform', num_samples=4096,
                             eps=eps)
  _, terms = jax.jit(lambda key: elbo_fn(key, score_fn, x0))(jax.random.key(10))
  bound, bound_se = float(terms['diffusion'][0]), float(terms['diffusion_stderr'][0])
  assert abs(mean - bound) < 4. * np.hypot(se, bound_se), (mean, se, bound, bound_se)


def _ddpm_chain(n):
  """DDPM's chain, computed here from its definition: ``beta_i = beta(i / (N - 1)) / N`` for
  ``beta(s) = 0.1 + 19.9 s`` (SDES['vpsde']), ``abar``, ``abar_prev`` and ``beta~``."""
  betas = np.linspace(0.1 / n, 20. / n, n)
  abar = np.cumprod(1. - betas)
  abar_prev = np.concatenate([[1.], abar[:-1]])
  return betas, abar, abar_prev, betas * (1. - abar_prev) / (1. - abar)


def _ddpm_predictions(key, shape, sde):
  """Data ``x0``, noise ``z`` and a noise predictor ``model_fn(x, i)`` that is neither right nor
  the identity (its error depends on ``x`` and the label)."""
  k0, k1 = jax.random.split(key)
  x0 = jax.random.uniform(k0, shape, minval=-1., maxval=1.)
  z = jax.random.normal(k1, shape)
  model_fn = lambda x, i: 0.7 * x + 0.05 * i[:, None, None, None] / sde.N
  return x0, z, model_fn


def _score_of(model_fn, sde, labels):
  """The score ``-eps_hat / sqrt(1 - abar_i)`` of a noise predictor at fixed ``labels``, as the
  ``score_fn(x, t)`` that ``elbo.ddpm_term`` calls."""
  return lambda x, t: -sde_lib.batch_mul(1. / sde.sqrt_1m_alphas_cumprod[labels],
                                         model_fn(x, labels))


def test_ddpm_elbo_weighting_is_the_chains_kl_term():
  """Protects weighting='elbo' in discrete time: at fixed labels i >= 1 and noise, the DDPM loss
  divided by N is the bound's KL term L_i (``elbo.ddpm_term``) with the posterior reverse
  variance; with the reverse variance beta the two differ by a constant independent of the
  network (two different predictors give the same difference), equal to the KL's variance part
  -(D / 2)(log(beta / beta~) + beta~ / beta - 1)."""
  sde = SDES['vpsde']
  shape = (32, 4, 4, 3)
  labels = jax.random.randint(jax.random.key(11), (shape[0],), 1, sde.N)
  x0, z, model_fn = _ddpm_predictions(jax.random.key(12), shape, sde)
  other_fn = lambda x, i: -0.2 * x + 0.3
  term = lambda fn, rv: elbo.ddpm_term(sde, _score_of(fn, sde, labels), x0, labels, z, rv)
  loss = lambda fn, rv: losses.ddpm_loss(fn, sde, x0, labels, z, weighting='elbo',
                                         reverse_variance=rv) / sde.N
  np.testing.assert_allclose(loss(model_fn, 'posterior'), term(model_fn, 'posterior'),
                             rtol=1e-4)
  np.testing.assert_allclose(loss(other_fn, 'posterior'), term(other_fn, 'posterior'),
                             rtol=1e-4)
  betas, _, _, posterior = _ddpm_chain(sde.N)
  ratio = betas[np.asarray(labels)] / posterior[np.asarray(labels)]
  constant = -0.5 * np.prod(shape[1:]) * (np.log(ratio) + 1. / ratio - 1.)
  for fn in (model_fn, other_fn):
    difference = np.asarray(loss(fn, 'beta'), np.float64) - term(fn, 'beta')
    np.testing.assert_allclose(difference, constant, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('reverse_variance', ['posterior', 'beta'])
def test_ddpm_kl_weights_of_both_designs(reverse_variance):
  """Protects the derivation's two designs of the reverse mean (Ho et al. sec. 3.2): for random
  predictions, w_x0 ||x0 - x_hat||^2 = w_eps ||eps - eps_hat||^2 = the Gaussian KL between
  q(x_{i-1} | x_i, x0) and the model's kernel (``elbo.normal_kl``, less its value at the exact
  mean), with x_hat and eps_hat the same prediction and each design's mean formed its own way;
  and each weight is its textbook formula (eps: beta^2 / (2 sigma^2 alpha (1 - abar)), eq. 12;
  x0: abar_prev beta^2 / (2 sigma^2 (1 - abar)^2)), computed here from the betas. The loss's
  own weights (``losses.ddpm_elbo_weights``) are the eps design's."""
  sde = SDES['vpsde']
  betas, abar, abar_prev, posterior = _ddpm_chain(sde.N)
  var = np.concatenate([[posterior[1]], (posterior if reverse_variance == 'posterior'
                                          else betas)[1:]])
  w_eps = elbo.ddpm_kl_weights(sde, reverse_variance, 'eps')
  w_x0 = elbo.ddpm_kl_weights(sde, reverse_variance, 'x0')
  np.testing.assert_allclose(w_eps, betas ** 2 / (2. * var * (1. - betas) * (1. - abar)),
                             rtol=1e-10)
  np.testing.assert_allclose(w_x0, abar_prev * betas ** 2 / (2. * var * (1. - abar) ** 2),
                             rtol=1e-10)
  np.testing.assert_allclose(losses.ddpm_elbo_weights(sde, reverse_variance), w_eps,
                             rtol=1e-12)

  rng = np.random.default_rng(13)
  i = rng.integers(1, sde.N, 256)
  x0 = rng.uniform(-1., 1., (256, 6))
  eps = rng.normal(size=(256, 6))
  eps_hat = eps + 0.3 * rng.normal(size=(256, 6))
  a, b = np.sqrt(abar[i])[:, None], np.sqrt(1. - abar[i])[:, None]
  x_t = a * x0 + b * eps
  x_hat = (x_t - b * eps_hat) / a
  beta, alpha = betas[i][:, None], 1. - betas[i][:, None]
  mu_of = lambda x: (np.sqrt(abar_prev[i])[:, None] * beta / (1. - abar[i])[:, None] * x
                     + np.sqrt(alpha) * (1. - abar_prev[i])[:, None] / (1. - abar[i])[:, None]
                     * x_t)
  mu_x0 = mu_of(x_hat)  # The x0 design: the posterior mean at x_hat.
  mu_eps = (x_t - beta / b * eps_hat) / np.sqrt(alpha)  # The eps design, eq. 11.
  np.testing.assert_allclose(mu_x0, mu_eps, rtol=1e-8, atol=1e-8)
  by_x0 = w_x0[i] * np.sum((x0 - x_hat) ** 2, -1)
  by_eps = w_eps[i] * np.sum((eps - eps_hat) ** 2, -1)
  np.testing.assert_allclose(by_x0, by_eps, rtol=1e-9)
  # The KL's mean part, in float32 (normal_kl): the difference of means taken here in float64.
  logvar_q = np.log(posterior[i])[:, None]
  logvar_p = np.log(var[i])[:, None]
  kl = lambda mu: np.sum(np.asarray(elbo.normal_kl(0., logvar_q, mu, logvar_p), np.float64), -1)
  np.testing.assert_allclose(kl(mu_eps - mu_of(x0)) - kl(0. * mu_eps), by_eps, rtol=1e-4)


def test_weightings_the_objective_lacks_are_refused():
  """Protects the weighting's domain: an unknown name, 'likelihood' in discrete time, 'elbo'
  with reduce_mean (the bound is a sum) and 'elbo' on the SMLD ladder (no bound) fail with the
  config fix named."""
  data, t, labels = jnp.zeros((2, 3)), jnp.full((2,), 0.5), jnp.zeros((2,), jnp.int32)
  score_fn = lambda x, t: -x
  with pytest.raises(ValueError, match='choose one of dsm, likelihood, elbo'):
    losses.dsm_loss(score_fn, SDES['vpsde'], data, t, data, False, 'g2')
  with pytest.raises(ValueError, match='training.reduce_mean = False'):
    losses.dsm_loss(score_fn, SDES['vpsde'], data, t, data, True, 'elbo')
  with pytest.raises(ValueError, match="training.weighting = 'dsm'"):
    losses.ddpm_loss(lambda x, i: x, SDES['vpsde'], data, labels, data, weighting='likelihood')
  with pytest.raises(ValueError, match='SMLD objective has no variational bound'):
    losses.get_per_example_loss_fn(SDES['vesde'], None, False,
                                   losses.StepSettings(continuous=False, weighting='elbo'))
