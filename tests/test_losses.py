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

from score_sde import losses, optim, sde_lib

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


def _check_mc(per_example, expected):
  per_example = np.asarray(per_example, np.float64)
  se = per_example.std() / np.sqrt(per_example.size)
  assert abs(per_example.mean() - expected) < 4 * se, (per_example.mean(), expected, se)


@pytest.mark.parametrize('name', SDES)
@pytest.mark.parametrize('likelihood_weighting', [False, True])
def test_dsm_loss_at_the_exact_score(name, likelihood_weighting):
  """E||std s + z||^2 = alpha^2 s^2 / v per dimension at the true score; with lambda = g^2 the
  loss is E||s + z / std||^2 g^2 = g^2 alpha^2 s^2 / (v std^2); both averaged over t ~ U(eps, 1)
  by quadrature."""
  sde = SDES[name]

  def integrand(t):
    alpha, std, g = _moments(sde, t)
    v = alpha ** 2 * S ** 2 + std ** 2
    per_dim = alpha ** 2 * S ** 2 / v
    return per_dim * g ** 2 / std ** 2 if likelihood_weighting else per_dim

  # Half the sum over dimensions: the reference's reduce_op for reduce_mean=False.
  expected = 0.5 * DIM * integrate.quad(integrand, EPS, 1., limit=200,
                                        points=[1e-3, 1e-2])[0] / (1 - EPS)
  data = S * jax.random.normal(jax.random.key(0), (BATCH, DIM))
  per_example = jax.jit(lambda d: losses.dsm_loss(
      _exact_score(sde), sde, jax.random.key(1), d, False, likelihood_weighting, EPS))(data)
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
  _check_mc(losses.smld_loss(model_fn, sde, jax.random.key(3), data), expected)


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
  _check_mc(losses.ddpm_loss(model_fn, sde, jax.random.key(5), data), expected)


@pytest.mark.parametrize('loss', ['dsm', 'smld', 'ddpm'])
def test_summed_loss_is_half_the_sum_as_in_the_reference(loss):
  """With reduce_mean=False the reference reduces as 0.5 * sum (every VE config), so
  its logged losses, gradients and the effect of optim.grad_clip are those of half the sum
  (a plain sum made them 2x). Same draws, both reductions: summed = 0.5 * D * mean, exactly."""
  data = S * jax.random.normal(jax.random.key(6), (16, 4, 4, 2))
  d = 4 * 4 * 2
  if loss == 'dsm':
    sde = SDES['vesde']
    fn = lambda reduce_mean: losses.dsm_loss(_exact_score(sde), sde, jax.random.key(7), data,
                                             reduce_mean)
  elif loss == 'smld':
    fn = lambda reduce_mean: losses.smld_loss(lambda x, l: -x, SDES['vesde'], jax.random.key(7),
                                              data, reduce_mean)
  else:
    fn = lambda reduce_mean: losses.ddpm_loss(lambda x, l: 0.5 * x, SDES['vpsde'],
                                              jax.random.key(7), data, reduce_mean)
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
  data = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match='training.sde = "vesde"'):
    losses.smld_loss(lambda x, l: x, SDES['vpsde'], jax.random.key(0), data)
  with pytest.raises(ValueError, match='training.sde = "vpsde"'):
    losses.ddpm_loss(lambda x, l: x, SDES['subvpsde'], jax.random.key(0), data)


@pytest.mark.parametrize('likelihood_weighting', [False, True])
def test_dsm_gradient_matches_finite_differences(likelihood_weighting):
  """d loss / d theta for the score family s = -theta x, by jax.grad and by central differences
  (the loss is quadratic in theta, so the difference quotient is exact up to rounding)."""
  sde = SDES['vpsde']
  data = S * jax.random.normal(jax.random.key(6), (512, DIM))

  def loss(theta):
    per_example = losses.dsm_loss(lambda x, t: -theta * x, sde, jax.random.key(7), data, True,
                                  likelihood_weighting, 1e-2)
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

  def loss_fn(rng, params, batch):
    del rng
    return jnp.sum((params['w'] - batch) ** 2)

  tx = optax.sgd(0.1)
  make_step = losses._get_step_fn  # pylint: disable=protected-access
  step_fn = jax.jit(make_step(loss_fn, True, tx, rate, ema_warmup=warmup))
  state = train_state.create_train_state({'w': jnp.asarray(2.)}, tx)
  w, ema = 2., 2.
  for s in range(4):
    state, _ = step_fn(state, jnp.asarray(0.), jax.random.key(0))
    w = w - 0.1 * 2. * w
    r = min(rate, (2. + s) / (11. + s)) if warmup else rate
    ema = r * ema + (1. - r) * w
    np.testing.assert_allclose(float(state.params_ema['w']), ema, rtol=1e-6)
