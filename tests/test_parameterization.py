"""The network's output as score, noise, clean image or velocity (``models.parameterization``).

Against closed forms: every conversion inverts to float precision on each kernel (VP, sub-VP, VE
in continuous time; the DDPM chain and the SMLD ladder), and each parameterization fed the exact
denoiser / noise / velocity of a Gaussian mixture (``analytic``) gives its exact score. The
default ('auto') reproduces the released arithmetic bit for bit on the paper configs, and four
networks trained with the four parameterizations on one objective sample the same distribution.
"""
import importlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_sde import analytic, losses, sampling, sde_lib
from score_sde.common import errors
from score_sde.configs import default, record, validation
from score_sde.models import parameterization as pz
from score_sde.models import utils as mutils
from score_sde.sde_lib import batch_mul

NAMES = ('score', 'eps', 'x0', 'v')
F32 = float(np.finfo(np.float32).eps)

# (name, SDE, continuous, times): the five kernels; times from near the start to T.
KERNELS = {
    'vp': (sde_lib.VPSDE(), True, (1e-3, 0.02, 0.3, 0.7, 1.)),
    'subvp': (sde_lib.subVPSDE(), True, (1e-3, 0.02, 0.3, 0.7, 1.)),
    've': (sde_lib.VESDE(), True, (1e-5, 0.02, 0.3, 0.7, 1.)),
    'ddpm': (sde_lib.VPSDE(), False, (0., 1. / 999, 0.3, 0.7, 1.)),
    'smld': (sde_lib.VESDE(), False, (0., 0.02, 0.3, 0.7, 1.)),
}


def _kernel(kind):
  sde, continuous, times = KERNELS[kind]
  t = jnp.asarray(times, jnp.float32)
  _, alpha, std = pz.labels_and_coeffs(sde, t, continuous)
  return sde, continuous, t, alpha, std


def _target():
  """A 2-D mixture of two Gaussians with diagonal covariances."""
  return analytic.GaussianMixture(jnp.asarray([0.4, 0.6]), jnp.asarray([[-1., 0.5], [1., -0.5]]),
                                  jnp.asarray([[0.3, 0.5], [0.4, 0.3]]))


def _max_abs(*arrays):
  """Per example, the largest magnitude over ``arrays`` (each ``(B, D)``): ``(B, 1)``."""
  return sum(np.abs(np.asarray(a)).max(axis=1, keepdims=True) for a in arrays)


@pytest.mark.parametrize('kind', list(KERNELS))
@pytest.mark.parametrize('name', NAMES)
def test_conversions_invert_to_float_precision(kind, name):
  """output -> score -> output is the identity; noise / denoised agree with the Eps / X0 inverse
  of the score; the target of ``(x0, noise)`` reads back as the conditional score
  ``-noise / std``. Tolerance: float32 rounding of the inputs (32 ulp) of the size a conversion
  meets: ``x / alpha`` (x0 from x_t) and the output; the target's score also ``x / std`` (x0's
  ``(alpha out - x) / std^2`` times std)."""
  sde, _, t, alpha, std = _kernel(kind)
  p = pz.get_parameterization(name, sde)
  keys = jax.random.split(jax.random.key(0), 3)
  x0 = jax.random.normal(keys[0], (t.shape[0], 2))
  noise = jax.random.normal(keys[1], (t.shape[0], 2))
  x = batch_mul(alpha, x0) + batch_mul(std, noise)
  out = jax.random.normal(keys[2], x.shape)
  a, s = np.asarray(alpha)[:, None], np.asarray(std)[:, None]
  tol = 32 * F32 * (_max_abs(x) / a + _max_abs(out))

  def check(got, expected, tol=tol):
    assert np.all(np.abs(np.asarray(got) - np.asarray(expected)) <= tol)

  score = p.score(out, x, alpha, std)
  check(p.from_score(score, x, alpha, std), out)
  check(p.noise(out, x, alpha, std), pz.Eps().from_score(score, x, alpha, std))
  check(p.denoised(out, x, alpha, std), pz.X0().from_score(score, x, alpha, std))
  target = p.target(x0, noise, alpha, std)
  check(batch_mul(std, p.score(target, x, alpha, std)), -noise,
        tol + 32 * F32 * _max_abs(x, x0) / s)


def _exact(target, alpha, std, x):
  """Closed forms per example: the score (``analytic``) and, independently, E[x0 | x_t] and
  E[eps | x_t] from each component's Gaussian posterior, weighted by its responsibility."""
  def one(a, s, xi):
    law = target.perturb(a, s)
    r = law.responsibilities(xi[None])[0]  # (K,)
    var = a ** 2 * target.stds ** 2 + s ** 2  # (K, D)
    resid = xi[None] - a * target.means
    x0 = r @ (target.means + a * target.stds ** 2 / var * resid)
    eps = r @ (s / var * resid)
    return law.score(xi[None])[0], x0, eps
  return jax.vmap(one)(alpha, std, x)


@pytest.mark.parametrize('kind', list(KERNELS))
def test_exact_outputs_give_the_exact_score(kind):
  """The exact noise, denoiser, velocity and score of a Gaussian mixture, each read through its
  parameterization, give the mixture's exact score; ``get_denoiser_fn`` on the exact score gives
  the exact denoiser.

  Tolerance: float32 rounding (32 ulp) of the closed forms, amplified by the conversion: ``1 /
  std`` for eps and v, ``1 / std^2`` for x0. Where ``std^2`` is below x's float32 resolution
  (sub-VP at t = 1e-3, std = 1e-4) an x0 output holds no score at all, and the bound says so."""
  sde, continuous, t, alpha, std = _kernel(kind)
  target = _target()
  x = batch_mul(alpha, target.sample(jax.random.key(1), t.shape[0])) + batch_mul(
      std, jax.random.normal(jax.random.key(2), (t.shape[0], 2)))
  score, x0, eps = _exact(target, alpha, std, x)
  outputs = {'score': score, 'eps': eps, 'x0': x0,
             'v': batch_mul(alpha, eps) - batch_mul(std, x0)}
  a, s = np.asarray(alpha)[:, None], np.asarray(std)[:, None]
  amplification = {'score': 0., 'eps': 1. / s, 'x0': 1. / s ** 2, 'v': 1. / s}
  for name, out in outputs.items():
    got = pz.get_parameterization(name, sde).score(out, x, alpha, std)
    tol = 32 * F32 * (_max_abs(score) + _max_abs(x, x0, eps) * amplification[name])
    assert np.all(np.abs(np.asarray(got) - np.asarray(score)) <= tol), name
  exact_score_fn = lambda xs, ts: _exact(target, *pz.labels_and_coeffs(sde, ts, continuous)[1:],
                                         xs)[0]
  denoised = pz.get_denoiser_fn(sde, exact_score_fn, continuous)(x, t)
  assert np.all(np.abs(np.asarray(denoised - x0)) <= 32 * F32 * (_max_abs(x) / a + _max_abs(x0)))


class _Probe(nn.Module):
  """A network whose output depends on the input and on the time label."""

  @nn.compact
  def __call__(self, x, labels, train=False):
    w = self.param('w', nn.initializers.normal(1.), (x.shape[-1],))
    return jnp.tanh(x * w + batch_mul(jnp.log1p(jnp.abs(labels.astype(jnp.float32))), x))


def _released_score_fn(sde, model_fn, continuous):
  """The released score adapter, written out: VP / sub-VP ``-output / std``, VE the output."""
  if isinstance(sde, sde_lib.VPSDE):
    def score_fn(x, t):
      if continuous or isinstance(sde, sde_lib.subVPSDE):
        labels, std = t * 999, sde.marginal_coeffs(t)[1]
      else:
        labels = t * (sde.N - 1)
        std = sde.sqrt_1m_alphas_cumprod[labels.astype(jnp.int32)]
      return sde_lib.batch_mul(-1. / std, model_fn(x, labels))
  else:
    def score_fn(x, t):
      if continuous:
        return model_fn(x, sde.marginal_coeffs(t)[1])
      return model_fn(x, jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32))
  return score_fn


PAPER_CONFIGS = ('vp.cifar10_ddpmpp_continuous', 'vp.cifar10_ddpm',
                 'subvp.cifar10_ddpmpp_continuous', 've.cifar10_ncsnpp_continuous',
                 've.cifar10_ncsnpp')


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_auto_is_the_released_score_bit_for_bit(name):
  """A paper config's default ('auto') gives the released score adapter's numbers exactly,
  eager and jitted, and its discrete loss the released loss exactly: the parameterization
  leaves released checkpoints and parity fixtures untouched."""
  config = importlib.import_module(f'score_sde.configs.{name}').get_config()
  assert config.model.parameterization == 'auto'
  sde, continuous = sde_lib.get_sde(config), config.training.continuous
  net = _Probe()
  params = net.init(jax.random.key(0), jnp.ones((4, 8, 8, 3)), jnp.ones((4,)))['params']
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  t = jnp.asarray([sde.sampling_eps, 0.1, 0.5, 1.], jnp.float32)
  ours = lambda x, t: mutils.get_score_fn(sde, net, params, continuous=continuous,
                                          parameterization=config.model.parameterization)(x, t)
  released = _released_score_fn(sde, mutils.get_model_fn(net, params), continuous)
  np.testing.assert_array_equal(ours(x, t), released(x, t))
  np.testing.assert_array_equal(jax.jit(ours)(x, t), jax.jit(released)(x, t))
  if continuous:
    return
  model_fn = mutils.get_model_fn(net, params)
  labels, z = jnp.asarray([0, 3, 500, 999]), jax.random.normal(jax.random.key(2), x.shape)
  if isinstance(sde, sde_lib.VESDE):
    sigmas = sde.discrete_sigmas[::-1][labels]
    noise = batch_mul(sigmas, z)
    target = -batch_mul(1. / sigmas ** 2, noise)
    expected = 0.5 * jnp.sum(jnp.square(model_fn(x + noise, labels) - target).reshape(4, -1),
                             -1) * sigmas ** 2
    got = losses.smld_loss(model_fn, sde, x, labels, z, False, config.model.parameterization)
  else:
    perturbed = (batch_mul(sde.sqrt_alphas_cumprod[labels], x)
                 + batch_mul(sde.sqrt_1m_alphas_cumprod[labels], z))
    expected = 0.5 * jnp.sum(jnp.square(model_fn(perturbed, labels) - z).reshape(4, -1), -1)
    got = losses.ddpm_loss(model_fn, sde, x, labels, z, False, config.model.parameterization)
  np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('kind', ['ddpm', 'smld'])
@pytest.mark.parametrize('name', NAMES)
def test_discrete_losses_read_any_parameterization(kind, name):
  """A network that outputs the native quantity and the same network converted to ``name``
  (through the inverse conversion) have the same DDPM / SMLD loss."""
  sde = KERNELS[kind][0]
  native = pz.get_parameterization('auto', sde)
  p = pz.get_parameterization(name, sde)
  at = losses.ddpm_loss if kind == 'ddpm' else losses.smld_loss
  labels = jnp.asarray([0, 10, 400, 999])
  data = jax.random.normal(jax.random.key(0), (4, 3))
  z = jax.random.normal(jax.random.key(1), (4, 3))

  def coeffs(labels):
    if kind == 'ddpm':
      return sde.sqrt_alphas_cumprod[labels], sde.sqrt_1m_alphas_cumprod[labels]
    sigmas = sde.discrete_sigmas[::-1][labels]
    return jnp.ones_like(sigmas), sigmas

  native_fn = lambda x, labels: 0.3 * x - 0.1 * jnp.tanh(x)

  def converted_fn(x, labels):
    alpha, std = coeffs(labels)
    return p.from_score(native.score(native_fn(x, labels), x, alpha, std), x, alpha, std)

  expected = at(native_fn, sde, data, labels, z, False, 'auto')
  got = at(converted_fn, sde, data, labels, z, False, name)
  # The x0 round trip at the smallest noise (std = 0.01) loses up to 2.5e-5 (|x| / std^2
  # amplifies float32 rounding); the others 2e-7.
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_unknown_parameterization_fails_naming_the_choices():
  """A typo in model.parameterization is a config problem listing every choice, and the
  function itself refuses it the same way."""
  config = default.get_config()
  config.model.parameterization = 'epsilon'
  with pytest.raises(errors.ConfigError) as info:
    validation.validate_config(config, 1)
  assert ("model.parameterization='epsilon' is not supported; use one of 'auto', 'edm', "
          "'edm_ve', 'edm_vp', 'eps', 'score', 'v', 'x0'") in str(info.value)
  with pytest.raises(errors.ConfigError,
                     match="'auto', 'edm', 'edm_ve', 'edm_vp', 'eps', 'score', 'v', 'x0'"):
    pz.get_parameterization('epsilon', sde_lib.VPSDE())


def test_scale_by_sigma_needs_a_score_output():
  """Dividing the output by sigma makes it a score: a VE config with another output refuses it,
  and every parameterization validates without it."""
  config = default.get_config()  # VE, scale_by_sigma=True.
  for name in NAMES:
    config.model.parameterization = name
    config.model.scale_by_sigma = True
    problems = validation.config_problems(config, 1)
    assert any('model.scale_by_sigma' in p for p in problems) == (name != 'score'), name
    config.model.scale_by_sigma = False
    assert validation.config_problems(config, 1) == [], name


def test_a_record_without_the_field_reads_as_auto(tmp_path):
  """A recorded config.json without the field loads with 'auto', the released convention."""
  flat = record.flat_config(default.get_config())
  del flat['model.parameterization']
  (tmp_path / record.RUN_CONFIG).write_text(json.dumps(flat))
  assert record.load_run_config(str(tmp_path)).model.parameterization == 'auto'


# ------------------------------------------------------------------- trained networks agree
class _MLP(nn.Module):
  """A small time-conditioned MLP on 2-D points: labels ``999 t`` (VP continuous)."""

  @nn.compact
  def __call__(self, x, labels):
    t = labels[:, None] / 999.
    freqs = jnp.pi * 2. ** jnp.arange(4)
    h = jnp.concatenate([x, t, jnp.sin(freqs * t), jnp.cos(freqs * t)], axis=-1)
    for _ in range(3):
      h = nn.swish(nn.Dense(64)(h))
    return nn.Dense(2)(h)


TRAIN_STEPS, BATCH, SAMPLES, SAMPLER_STEPS = 3000, 256, 4096, 40
EPS = 1e-3  # Smallest time trained and sampled.
SEED = 0
# Allowed model error of each network's samples, beyond sampling noise, for (means, covariance
# entries, mode weights). x0 gets more: under this objective (the noise MSE, weight std^2) an
# x0 network's loss is SNR(t) ||x0_hat - x0||^2, whose gradient noise grows as sqrt(SNR) (100
# at t = 1e-3) and drowns the signal of the high-noise times in the same few thousand steps;
# its denoiser error at t = 0.3-0.5 stays 3-5x the others' (measured over 4 seeds: means 0.07,
# covariances 0.12, mode weights 0.05 off at worst; the others 0.04, 0.04, 0.024).
MODEL_ERROR = {'score': (0.03, 0.04, 0.02), 'eps': (0.03, 0.04, 0.02), 'v': (0.03, 0.04, 0.02),
               'x0': (0.06, 0.12, 0.05)}


def _train_all(target, sde):
  """The four parameterizations' networks, trained together (one compiled program, separate
  parameters: the summed loss's gradient is each network's own, Adam is per parameter) on the
  continuous VP DSM loss (weight std^2), with the same data and noise."""
  net = _MLP()
  init = net.init(jax.random.key(SEED), jnp.zeros((1, 2)), jnp.zeros((1,)))['params']
  params = {name: init for name in NAMES}
  tx = optax.adam(optax.cosine_decay_schedule(1e-3, TRAIN_STEPS, alpha=0.01))

  def score_fn(name, p):
    model_fn = lambda x, labels, class_labels=None: net.apply({'params': p}, x, labels)
    return pz.score_fn_from_model_fn(sde, model_fn, continuous=True, parameterization=name)

  def loss(params, rng):
    data_rng, loss_rng = jax.random.split(rng)
    t_rng, z_rng = jax.random.split(loss_rng)
    data = target.sample(data_rng, BATCH)
    t = jax.random.uniform(t_rng, (BATCH,), minval=EPS, maxval=sde.T)
    z = jax.random.normal(z_rng, data.shape)
    return sum(jnp.mean(losses.dsm_loss(score_fn(name, params[name]), sde, data, t, z, eps=EPS))
               for name in NAMES)

  @jax.jit
  def train(params):
    def step(carry, i):
      params, opt_state = carry
      grads = jax.grad(loss)(params, jax.random.fold_in(jax.random.key(SEED + 1), i))
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    return jax.lax.scan(step, (params, tx.init(params)), jnp.arange(TRAIN_STEPS))[0][0]

  return train(params), score_fn


def test_four_parameterizations_train_to_the_same_distribution():
  """Four MLPs, each with its own output, trained on the same objective draw the same mixture.

  One sampler (DPM-Solver++ 2M, 40 steps to sigma = 0) from the same 4096 prior draws; compared:
  the means, the covariance and the mode weights (fraction nearest each component mean) of the
  samples with the exact mixture's (mean and covariance in closed form, mode weights from 10^5
  exact draws). Tolerance per statistic: 4 standard errors of 4096 draws plus the network's
  model error (``MODEL_ERROR``); between two networks, whose prior draws are shared, the sum of
  their model errors plus 2 standard errors. The exact score through this sampler meets the
  mixture within 0.02 (its discretisation bias is below the sampling noise).
  """
  target, sde = _target(), sde_lib.VPSDE()
  params, score_fn = _train_all(target, sde)
  sampler = sampling.get_dpm_solver_sampler(
      sde, (SAMPLES, 2), sampling.identity,
      sampling.get_times(sde, 'dpm_solver', SAMPLER_STEPS, eps=EPS))
  draw = jax.jit(lambda params: {
      name: sampler(jax.random.key(SEED + 3), score_fn(name, params[name]))[0] for name in NAMES})
  samples = {name: np.asarray(x, np.float64) for name, x in draw(params).items()}

  w, mu, s = (np.asarray(a, np.float64) for a in (target.weights, target.means, target.stds))
  mean = w @ mu
  cov = np.einsum('k,kd,ke->de', w, mu - mean, mu - mean) + np.diag(w @ s ** 2)

  def modes(x):
    return np.bincount(np.argmin(((x[:, None] - mu[None]) ** 2).sum(-1), 1),
                       minlength=len(w)) / len(x)

  exact = (mean, cov, modes(np.asarray(target.sample(jax.random.key(4), 100_000), np.float64)))
  # Standard errors of 4096 draws: of a mean sqrt(var / n); of a covariance entry
  # sqrt((var_i var_j + cov_ij^2) / n) (Gaussian approximation); of a weight sqrt(w (1 - w) / n).
  var = np.diag(cov)
  se = (np.sqrt(var / SAMPLES), np.sqrt((np.outer(var, var) + cov ** 2) / SAMPLES),
        np.sqrt(exact[2] * (1 - exact[2]) / SAMPLES))
  stats = {name: (x.mean(0), np.cov(x.T), modes(x)) for name, x in samples.items()}
  for name, got in stats.items():
    for what, g, e, err, allowed in zip(('mean', 'cov', 'modes'), got, exact, se,
                                        MODEL_ERROR[name]):
      assert np.all(np.abs(g - e) <= 4 * err + allowed), (name, what, g, e)
  for a in NAMES:
    for b in NAMES:
      for what, ga, gb, err, allowed_a, allowed_b in zip(
          ('mean', 'cov', 'modes'), stats[a], stats[b], se, MODEL_ERROR[a], MODEL_ERROR[b]):
        assert np.all(np.abs(ga - gb) <= 2 * err + allowed_a + allowed_b), (a, b, what, ga, gb)
