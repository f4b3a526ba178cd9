"""Paper fidelity: the ODE-path score of discretely trained VP models and FID's sample
quantisation follow the reference code.

The reference builds the score of the probability-flow ODE sampler, its denoising step and the
likelihood with ``continuous=True`` whatever the training; and it truncates samples to uint8
before Inception. (The summed-loss scale is tested in test_losses.py, the paper configs'
corrector in test_sampling_correctors.py, the released-checkpoint hint in
test_released_checkpoints.py.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import data, likelihood, sampling, sde_lib
from score_sde.common import parallel
from score_sde.evaluation import evaluate, samples as eval_samples
from score_sde.models import utils as mutils
from score_sde.sampling import network


class _Ones:
  """A stand-in network whose output is 1 everywhere: the score is then -1 / std."""

  def apply(self, variables, x, labels, train=False, rngs=None):
    del variables, labels, train, rngs
    return jnp.ones_like(x)


def test_ode_score_of_a_discrete_vp_model_uses_the_continuous_std():
  """At t = 1e-5 (where the likelihood solve starts) the DDPM table's std is sqrt(beta_1) = 1e-2,
  10x the VP marginal std sqrt(beta_min t) ~ 1e-3; the ODE path must divide by the latter, as the
  reference's continuous=True does. VE keeps the training convention (its network knows ladder
  indices, not sigma values)."""
  vp = sde_lib.VPSDE(0.1, 20., 1000)
  x, t = jnp.zeros((2, 3)), jnp.full((2,), 1e-5)
  assert mutils.ode_score_continuous(vp, False) is True
  assert mutils.ode_score_continuous(sde_lib.subVPSDE(0.1, 20., 1000), False) is True
  assert mutils.ode_score_continuous(sde_lib.VESDE(0.01, 50., 1000), False) is False
  assert mutils.ode_score_continuous(sde_lib.VESDE(0.01, 50., 1000), True) is True
  ode = mutils.get_score_fn(vp, _Ones(), None, continuous=mutils.ode_score_continuous(vp, False))
  table = mutils.get_score_fn(vp, _Ones(), None, continuous=False)
  marginal_std = np.sqrt(-np.expm1(-(0.1 * 1e-5 + 0.5 * 19.9 * 1e-10)))
  np.testing.assert_allclose(ode(x, t), -1. / marginal_std, rtol=1e-4)
  np.testing.assert_allclose(table(x, t), -1. / np.sqrt(1e-4), rtol=1e-4)


@pytest.fixture
def discrete_vp(smoke_config):
  smoke_config.training.update(sde='vpsde', continuous=False)
  smoke_config.model.update(embedding_type='positional', num_scales=1000)
  return smoke_config


def _recorded_continuity(monkeypatch):
  seen = []
  real = mutils.get_score_fn

  def recording(sde, model, params, train=False, continuous=False, rng=None, **kwargs):
    seen.append(continuous)
    return real(sde, model, params, train=train, continuous=continuous, rng=rng, **kwargs)

  monkeypatch.setattr(mutils, 'get_score_fn', recording)
  return seen


@pytest.mark.parametrize('method,expected', [('ode', True), ('heun', True), ('dpm_solver', True),
                                             ('pc', False)])
def test_network_sampler_builds_the_ode_score_for_ode_methods(discrete_vp, monkeypatch, method,
                                                                expected):
  """A discrete VP model: the ODE-based samplers get the continuous score, the PC sampler the
  training convention (as the reference's PC sampler)."""
  discrete_vp.sampling.update(method=method, num_steps=2)
  seen = _recorded_continuity(monkeypatch)
  sde, model = sde_lib.get_sde(discrete_vp), mutils.get_model(discrete_vp)
  mesh = parallel.make_mesh(jax.devices()[:1])
  sample = network.get_network_sampler(discrete_vp, sde, model, mesh, 2)
  params = mutils.init_params(jax.random.key(0), model, (16, 16, 1))
  jax.eval_shape(sample, params, jax.random.key(1))  # Traces: builds the score function.
  assert seen and set(seen) == {expected}


def test_bits_per_dim_of_a_discrete_vp_model_use_the_continuous_score(discrete_vp, monkeypatch):
  """The likelihood of vp/cifar10_ddpm-style models is the reference's computation (not the
  DDPM table's staircase std, 10x the marginal std at t = 1e-5)."""
  seen = _recorded_continuity(monkeypatch)
  factories = []
  monkeypatch.setattr(likelihood, 'get_sharded_likelihood_fn',
                      lambda fn, make_score_fn, mesh, scaler=None: factories.append(make_score_fn))
  sde, model = sde_lib.get_sde(discrete_vp), mutils.get_model(discrete_vp)
  mesh = parallel.make_mesh(jax.devices()[:1])
  evaluate.make_bpd_evaluator(discrete_vp, sde, model, mesh,
                              data.get_dataset(discrete_vp.data, 'test'))
  factories[0](mutils.init_params(jax.random.key(0), model, (16, 16, 1)))
  assert seen == [True]


def test_truncation_is_the_references_uint8_cast():
  """'truncate' equals np.clip(x * 255, 0, 255).astype(np.uint8) / 255 bit for bit (values near
  grid points included); 'round' equals np.round; the reproduction default is truncation."""
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.uniform(-0.1, 1.1, 10000),
                      (np.arange(256) + 1e-6) / 255., (np.arange(256) - 1e-6) / 255.])
  x = x.astype(np.float32)
  reference = np.clip(x * np.float32(255.), 0, 255).astype(np.uint8)
  got = np.asarray(network.to_8bit_grid(jnp.asarray(x), 'truncate')) * 255.
  np.testing.assert_array_equal(np.round(got).astype(np.uint8), reference)
  rounded = np.asarray(network.to_8bit_grid(jnp.asarray(x), 'round')) * 255.
  np.testing.assert_array_equal(np.round(rounded), np.round(np.clip(x, 0, 1) * np.float32(255.)))
  assert (np.round(got) != np.round(rounded)).mean() > 0.3  # The two differ on many pixels.
  from score_sde.configs import default
  assert default.get_config().eval.quantization == 'truncate'


def test_fid_rounds_quantise_as_the_config_says(smoke_config, monkeypatch):
  """eval_samples hands config.eval.quantization to the sampler (not always rounding)."""
  seen = []
  monkeypatch.setattr(sampling, 'get_network_sampler',
                      lambda *a, quantize=None, **k: seen.append(quantize) or (lambda p, r: None))
  for mode in ('truncate', 'round'):
    smoke_config.eval.quantization = mode
    eval_samples.make_round_fn(smoke_config, None, None, None, lambda images: None)
  assert seen == ['truncate', 'round']
