"""EDM's training recipe inside the step: its log-normal noise levels, its objective as a
weighting of the score objective, its EMA by half-life, and the config's checks of them."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from score_sde import losses, low_noise, optim, sde_lib
from score_sde.common import errors
from score_sde.configs import default, validation
from score_sde.models import parameterization as P


def _edm_halflife_rate(step, batch, halflife_kimg, rampup_ratio):
  """EDM's training_loop.py EMA update, written out in float64."""
  nimg = halflife_kimg * 1000
  if rampup_ratio:
    nimg = min(nimg, step * batch * rampup_ratio)
  return 0.5 ** (batch / max(nimg, 1e-8))


@pytest.mark.parametrize('rampup', [0., 0.05])
def test_ema_halflife_rate_is_edms(rampup):
  """optim.ema_halflife_rate at steps 0..1e5 equals EDM's beta = 0.5^(batch / halflife), the
  half-life capped by rampup_ratio times the images seen before the update."""
  for step in (0, 1, 2, 10, 100, 1000, 100000):
    got = float(optim.ema_halflife_rate(step, 512, 500., rampup))
    np.testing.assert_allclose(got, _edm_halflife_rate(step, 512, 500., rampup), rtol=1e-6,
                               atol=1e-30)


def test_train_step_uses_the_halflife_ema():
  """With model.ema_halflife_kimg > 0 the step's EMA follows EDM's rate, not ema_rate."""
  from score_sde.training import train_state  # pylint: disable=g-import-not-at-top

  def loss(rng, params, batch, noise):
    del rng, noise
    return {'loss': jnp.sum((params['w'] - batch) ** 2)[None]}

  tx = optax.sgd(0.1)
  settings = losses.StepSettings(ema_rate=0.5, ema_halflife_kimg=0.01, ema_rampup_ratio=0.5,
                                 batch_size=4)
  step_fn = jax.jit(losses.get_objective_step_fn(
      losses.Objective(draw=lambda rng, batch: {}, loss=loss), True, tx, settings))
  state = train_state.create_train_state({'w': jnp.asarray(2.)}, tx)
  w, ema = 2., 2.
  for s in range(5):
    state, _ = step_fn(state, jnp.asarray(0.), jax.random.key(0))
    w = w - 0.1 * 2. * w
    r = _edm_halflife_rate(s, 4, 0.01, 0.5)
    ema = r * ema + (1. - r) * w
    np.testing.assert_allclose(float(state.params_ema['w']), ema, rtol=1e-6)


def test_lognormal_levels_are_edms():
  """Without strata the levels are exp(p_mean + p_std n) of the drawn normals n; their logs pass
  a Kolmogorov-Smirnov test against N(-1.2, 1.2^2) at 1e-3."""
  sampler = low_noise.lognormal_sampler(-1.2, 1.2)
  n = sampler.draw(jax.random.key(0), 4096)
  levels = sampler.levels(n)
  np.testing.assert_allclose(levels.values, np.exp(-1.2 + 1.2 * np.asarray(n)), rtol=1e-6)
  assert levels.every == 0 and np.all(np.asarray(levels.weights) == 1.)
  assert scipy.stats.kstest(np.log(np.asarray(levels.values)), 'norm',
                            args=(-1.2, 1.2)).pvalue > 1e-3


def test_stratified_lognormal_levels_are_unbiased():
  """With bfloat16 strata at sigma = 0.2 the low rows are below 0.2, the others above, and the
  row-weighted means of ln sigma and (ln sigma)^2 are the log-normal's (-1.2 and 2.88) within
  5 standard errors."""
  sampler = low_noise.lognormal_sampler(-1.2, 1.2, below=0.2)
  levels = sampler.levels(sampler.draw(jax.random.key(1), 2 ** 15))
  low = np.arange(2 ** 15) % levels.every == 0
  sigma, w = np.asarray(levels.values), np.asarray(levels.weights)
  assert levels.every >= 2 and np.all(sigma[low] < 0.2) and np.all(sigma[~low] >= 0.2)
  for f, mean in ((np.log, -1.2), (lambda s: np.log(s) ** 2, 1.2 ** 2 + 1.44)):
    values = w * f(sigma)
    assert abs(values.mean() - mean) < 5 * values.std() / math.sqrt(len(values))


def test_edm_objective_is_edm_loss_at_its_draws():
  """score_objective with weighting 'edm' draws n and z, and its per-example loss is
  losses.edm_loss of the 'edm' network's denoiser at sigma = exp(p_mean + p_std n) and z."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Tiny(nn.Module):
    num_classes: int = 0

    @nn.compact
    def __call__(self, x, labels, train=False):
      return nn.Dense(x.shape[-1])(x) * jnp.tanh(labels)[:, None, None, None]

  model = Tiny()
  data = jax.random.normal(jax.random.key(0), (8, 4, 4, 2)) * 0.5
  params = model.init(jax.random.key(1), data, jnp.ones((8,)))['params']
  sde = sde_lib.VESDE(0.002, 80.)
  settings = losses.StepSettings(weighting='edm', parameterization='edm', sigma_data=0.6,
                                 p_mean=-1., p_std=1.4)
  objective = losses.score_objective(sde, model, False, settings)
  noise = objective.draw(jax.random.key(2), {'image': data})
  got = objective.loss(jax.random.key(3), params, {'image': data}, noise)['loss']
  sigma = jnp.exp(-1. + 1.4 * noise['levels'])
  model_fn = lambda x, labels, class_labels=None: model.apply({'params': params}, x, labels)
  denoiser = P.sigma_denoiser_fn(P.EDMPreconditioning(0.6), model_fn)
  np.testing.assert_allclose(got, losses.edm_loss(denoiser, data, sigma, noise['z'], 0.6),
                             rtol=1e-6)


@pytest.mark.parametrize('changes,field', [
    (dict(weighting='edm'), 'model.parameterization'),
    (dict(parameterization='edm', continuous=False), 'training.continuous'),
    (dict(parameterization='edm_vp'), 'model.parameterization'),
    (dict(parameterization='edm', sigma_data=0.), 'model.sigma_data'),
    (dict(parameterization='edm', weighting='edm', p_std=0.), 'training.p_std'),
    (dict(ema_halflife_kimg=-1.), 'model.ema_halflife_kimg'),
])
def test_config_checks_name_the_edm_field(changes, field):
  """A config asking EDM's recipe of what cannot take it fails validation naming the field:
  EDM's weighting on a time-labelled network, a preconditioned network in discrete time,
  VPPrecond on a VE SDE, sigma_data <= 0, p_std <= 0, a negative EMA half-life."""
  config = default.get_config()  # VE SDE, continuous.
  for key, value in changes.items():
    section = config.training if key in config.training else config.model
    section[key] = value
  with pytest.raises(errors.ConfigError, match=field.replace('.', r'\.')):
    validation.validate_config(config, 1)
