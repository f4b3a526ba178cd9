"""Equality with score_sde_pytorch, number for number, from its own stored outputs (no torch).

The fixtures in tests/fixtures/parity/ were written by benchmarks/make_parity_fixtures.py from
the port's code (commit and torch version in each .npz's ``provenance``): each network of
tests/parity_networks.py took three steps of the port's own train step, was saved with the
port's ``utils.save_checkpoint`` (``<name>.pth``), and was evaluated by the port's ``model(x, t)``
in eval mode with its weights (``out_model``) and its EMA (``out_ema``). Here the ``.pth`` is read
without torch (score_sde.conversion.pytorch_checkpoints), converted into this project's linen tree,
and this project's network must give the port's outputs. This protects the forward pass of every
architecture option the paper's configs use (a swapped concatenation, a skip rescale, a norm
epsilon, an init scale that leaks into the output) and the checkpoint conversion (names, kernel
layouts, the EMA and Adam's moments). NCSNv2, whose port layers are named by attribute rather than
``all_modules``, is checked at this project's parameters copied into the port (``ncsnv2.npz``).
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import losses, models, optim, sde_lib
from score_sde.conversion import pytorch_checkpoints, released_checkpoints, torch_files
from tests.parity_networks import NETWORKS, ncsnv2_config, network_config

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'parity')
REL_TOL = 1e-5  # Of the output's range, float32 throughout.


def _fixture(name):
  data = np.load(os.path.join(FIXTURES, f'{name}.npz'))
  return {k: data[k] for k in data.files}


def _converted(name):
  config = network_config(name)
  template = models.abstract_params(config)
  released = pytorch_checkpoints.load_pytorch_checkpoint(
      os.path.join(FIXTURES, f'{name}.pth'), template, models.module_order(config))
  state = released_checkpoints.to_train_state(released, template,
                                              optim.get_optimizer(config.optim))
  return config, released, state


def _assert_close(actual, expected, what):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, what
  err = np.abs(actual - expected).max() / np.ptp(expected)
  assert err < REL_TOL, f'{what}: max error {err:.2e} of the output range (tolerance {REL_TOL})'


@pytest.mark.parametrize('name', list(NETWORKS))
def test_network_equals_port(name):
  """Our network on the port's converted weights and EMA gives the port's ``model(x, t)``."""
  fixture = _fixture(name)
  provenance = json.loads(str(fixture['provenance']))
  assert provenance['port_commit'] and provenance['torch']
  config, released, state = _converted(name)
  model = models.get_model(config)
  for params, key in ((state.params, 'out_model'), (state.params_ema, 'out_ema')):
    out = model.apply({'params': params}, fixture['x'], fixture['t'], train=False)
    _assert_close(out, fixture[key], f'{name} {key} ({NETWORKS[name][1]})')
  # The EMA is a different set of weights (three updates at rate 0.9, warmed up as the port's).
  assert np.abs(fixture['out_ema'] - fixture['out_model']).max() > 100 * REL_TOL * np.ptp(
      fixture['out_ema'])
  assert released['step'] == int(fixture['step']) == int(state.step)


def test_ncsnv2_equals_port():
  """NCSNv2 (RefineNet, InstanceNorm++, dilated and mean-pooled residual blocks, output / sigma_i)
  gives the port's ``NCSNv2`` forward pass at this project's initial parameters, copied into the
  port by name. The port's NCSNv2 does not build as released (a bias-free convolution scales
  its missing bias) and departs from score_sde's JAX NCSNv2 in four places; the generator mends
  and aligns them (``make_parity_fixtures._mend_ncsn_layers``, docs/fidelity.md), so this checks
  every layer the two share."""
  data = _fixture('ncsnv2')
  config = ncsnv2_config()
  params = jax.tree_util.tree_map_with_path(
      lambda path, _: jnp.asarray(data['params/' + '/'.join(
          str(getattr(k, 'key', k)) for k in path)]), models.abstract_params(config))
  out = models.get_model(config).apply({'params': params}, jnp.asarray(data['x']),
                                       jnp.asarray(data['labels']))
  _assert_close(out, data['out'], 'ncsnv2')


def test_adam_moments_and_counts_carry_over():
  """torch Adam's exp_avg / exp_avg_sq land in optax's ScaleByAdamState, step counts with them."""
  config, released, state = _converted('ncsnpp_ve')
  adam = released['adam']
  assert adam['count'] == released['step'] == 3
  raw = torch_files.read_pth(os.path.join(FIXTURES, 'ncsnpp_ve.pth'))
  # all_modules.1 is the first Dense (the Fourier projection, all_modules.0, is frozen: no state).
  names = [k for k in raw['model'] if k.startswith('module.all_modules.')]
  dense_w = names.index('module.all_modules.1.weight')
  torch_mu = raw['optimizer']['state'][dense_w]['exp_avg']
  np.testing.assert_array_equal(adam['mu']['Dense_0']['kernel'], torch_mu.T)
  scale_by_adam = [s for s in jax.tree.leaves(
      state.opt_state, is_leaf=lambda s: hasattr(s, 'nu')) if hasattr(s, 'nu')]
  assert len(scale_by_adam) == 1 and int(scale_by_adam[0].count) == 3
  np.testing.assert_array_equal(scale_by_adam[0].mu['Dense_0']['kernel'], torch_mu.T)
  np.testing.assert_array_equal(scale_by_adam[0].nu['GaussianFourierProjection_0']['W'], 0.)


def test_converted_workdir_samples_with_the_ema(tmp_path):
  """The command line's ``convert`` writes a workdir that ``score_sde.load`` serves at the
  file's training step; its network is the port's EMA network (what the port samples and
  evaluates with)."""
  import score_sde
  name = 'ncsnpp_embedded'
  pth = tmp_path / 'checkpoint_2.pth'
  shutil.copy(os.path.join(FIXTURES, f'{name}.pth'), pth)
  config = network_config(name)
  step = released_checkpoints.convert(config, str(tmp_path), str(tmp_path / 'run'))
  assert step == 3  # The port's train steps the fixture took.
  pipe = score_sde.load(str(tmp_path / 'run'))
  assert pipe.step == 3
  fixture = _fixture(name)
  out = pipe.model.apply({'params': pipe.params}, fixture['x'], fixture['t'], train=False)
  _assert_close(out, fixture['out_ema'], f'{name} loaded EMA')


def test_wrong_config_names_the_mismatch():
  """A checkpoint converted with another network's config fails naming what differs."""
  config = network_config('ddpmpp_vp')
  with pytest.raises(Exception, match='blocks with parameters|no module|no parameter|differ'):
    template = models.abstract_params(config)
    released = pytorch_checkpoints.load_pytorch_checkpoint(
        os.path.join(FIXTURES, 'ncsnpp_ve.pth'), template, models.module_order(config))
    released_checkpoints.to_train_state(released, template, optim.get_optimizer(config.optim))


def test_corrupt_and_foreign_files_are_refused(tmp_path):
  """A truncated .pth, or a file that is no torch checkpoint, is a ValueError naming the file."""
  data = open(os.path.join(FIXTURES, 'ncsnpp_ve.pth'), 'rb').read()
  truncated = tmp_path / 'checkpoint_1.pth'
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match='checkpoint_1.pth'):
    torch_files.read_pth(truncated)
  foreign = tmp_path / 'notes.pth'
  foreign.write_bytes(b'not a checkpoint')
  assert not torch_files.is_torch_file(foreign)
  with pytest.raises(ValueError, match='notes.pth'):
    torch_files.read_pth(foreign)


def _sde(config, name):
  m = config.model
  if name == 'vesde':
    return sde_lib.VESDE(m.sigma_min, m.sigma_max, m.num_scales)
  cls = sde_lib.VPSDE if name == 'vpsde' else sde_lib.subVPSDE
  return cls(m.beta_min, m.beta_max, m.num_scales)


def _fixed_noise_objective(model, step, sde, continuous, weighting, eps=1e-5):
  """The ``losses.Objective`` of ``losses``'s objectives at the port's stored t / labels and z
  (it draws nothing); its batch is the data."""
  def loss(rng, params, data, noise):
    del rng, noise
    if continuous:
      # The port's torch.rand(B) * (T - eps) + eps.
      t = jnp.asarray(step['u']) * (sde.T - eps) + eps
      score_fn = models.get_score_fn(sde, model, params, train=False, continuous=True)
      # The fixtures record the port's likelihood_weighting flag.
      per_example = losses.dsm_loss(score_fn, sde, data, t, step['z'], bool(step['reduce_mean']),
                                    'likelihood' if weighting else 'dsm')
    else:
      model_fn = models.get_model_fn(model, params, train=False)
      at = losses.smld_loss if isinstance(sde, sde_lib.VESDE) else losses.ddpm_loss
      per_example = at(model_fn, sde, data, jnp.asarray(step['labels'], jnp.int32), step['z'],
                       bool(step['reduce_mean']))
    return {'loss': per_example}
  return losses.Objective(draw=lambda rng, data: {}, loss=loss)


def _mean_loss(objective):
  """``loss_fn(params, data)``: the batch's mean loss of a fixed-noise objective."""
  return lambda params, data: jnp.mean(objective.loss(None, params, data, {})['loss'])


@pytest.mark.parametrize('name', ['ncsnpp_ve', 'ddpmpp_vp'])
def test_losses_equal_port(name):
  """DSM (VE / VP / sub-VP, with and without likelihood weighting), SMLD and DDPM losses equal the
  port's ``get_sde_loss_fn`` / ``get_smld_loss_fn`` / ``get_ddpm_loss_fn`` at its t and z."""
  step = _fixture(f'{name}_step')
  config, _, state = _converted(name)
  model = models.get_model(config)
  variants = json.loads(str(step['variants']))
  assert len(variants) == len(step['losses'])
  for (sde_name, continuous, weighting), expected in zip(variants, step['losses']):
    fn = _mean_loss(_fixed_noise_objective(model, step, _sde(config, sde_name), continuous,
                                           weighting))
    value = float(fn(state.params, step['data']))
    assert abs(value - expected) <= 1e-6 * abs(expected), (sde_name, continuous, weighting,
                                                           value, expected)


@pytest.mark.parametrize('name', ['ncsnpp_ve', 'ddpmpp_vp'])
def test_train_step_equals_port(name):
  """One train step from the converted state (gradient, global-norm clipping, Adam at the
  warmed-up learning rate continuing the port's moments, the warmed-up EMA) gives the port's
  gradient, weights and EMA (``losses.get_step_fn``'s step around the port's noise)."""
  step = _fixture(f'{name}_step')
  config, _, state = _converted(name)
  model = models.get_model(config)
  sde_name, continuous, weighting = json.loads(str(step['variants']))[0]
  objective = _fixed_noise_objective(model, step, _sde(config, sde_name), continuous, weighting)
  # The run's step (get_step_fn's), around the fixed-noise objective.
  step_fn = losses.get_objective_step_fn(objective, True, optim.get_optimizer(config.optim),
                                         losses.step_settings(config))

  @jax.jit  # One compilation for both: eager, the FIR network's gradient takes twice as long.
  def gradient_and_step(state, data):
    return (jax.grad(_mean_loss(objective))(state.params, data),
            step_fn(state, data, jax.random.key(0))[0])
  grads, new_state = gradient_and_step(state, step['data'])
  order = models.module_order(config)

  def expected(prefix):
    tree = pytorch_checkpoints.convert_state_dict(
        {k[len(prefix):]: step[k] for k in step if k.startswith(prefix)}, state.params, order)
    return jax.tree.map(np.asarray, tree)

  for what, ours, theirs, tol in (('gradient', grads, expected('grad/'), 1e-5),
                                  ('weights', new_state.params, expected('after/'), 1e-6),
                                  ('EMA', new_state.params_ema, expected('ema_after/'), 1e-6)):
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(theirs))
    err = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), ours,
                                           theirs)))
    assert err <= tol * scale, f'{name} {what}: max error {err:.2e}, scale {scale:.2e}'


def _converted_score_fn(name):
  """``(config, sde, score_fn(x, t))`` of the converted network's trained weights."""
  config, _, state = _converted(name)
  sde = _sde(config, config.training.sde.lower())
  return config, sde, models.get_score_fn(sde, models.get_model(config), state.params,
                                          train=False, continuous=True)


@pytest.mark.parametrize('name', ['ncsnpp_ve', 'ddpmpp_vp'])
def test_sampling_steps_equal_port(name, monkeypatch):
  """One reverse-diffusion, Euler-Maruyama (dt = -1/N) and Langevin step (target snr, batch-mean
  norms, VP's alpha_i) and the probability-flow drift (eq. 13) equal the port's sampling.py at
  its x, t and noise, on the converted network."""
  from score_sde.sampling import correctors, predictors
  fixture = _fixture(f'{name}_sampling')
  _, sde, score_fn = _converted_score_fn(name)
  z = jnp.asarray(fixture['z'])
  monkeypatch.setattr(jax.random, 'normal', lambda key, shape, dtype=None: z.reshape(shape))
  x, t, dt = jnp.asarray(fixture['x']), jnp.asarray(fixture['t']), -1. / sde.N
  steps = {
      'reverse_diffusion': predictors.ReverseDiffusionPredictor(sde, score_fn).update_fn(
          None, x, t, dt),
      'euler_maruyama': predictors.EulerMaruyamaPredictor(sde, score_fn).update_fn(None, x, t, dt),
      'langevin': correctors.LangevinCorrector(sde, score_fn, float(fixture['snr']), 1).update_fn(
          jax.random.key(0), x, t),
  }
  for key, (new, mean) in steps.items():
    _assert_close(new, fixture[key], f'{name} {key}')
    _assert_close(mean, fixture[f'{key}_mean'], f'{name} {key} mean')
  drift = sde.reverse(score_fn, probability_flow=True).sde(x, t)[0]
  _assert_close(drift, fixture['probability_flow_drift'], f'{name} probability-flow drift')


@pytest.mark.parametrize('name', ['ncsnpp_ve', 'ddpmpp_vp'])
def test_bits_per_dim_equals_port(name, monkeypatch):
  """bits/dim of fixed dequantized images (probability flow, Hutchinson divergence with the
  port's Rademacher probe, the prior and the 8-bit offset) equals the port's likelihood.py
  (scipy RK45 at rtol = atol = 1e-7) within 1e-3 bits/dim, solved here at 1e-6 (at the usual
  1e-5 both solvers' own errors reach 1.5e-3 bits/dim on the VP network)."""
  from score_sde import data as data_lib, likelihood
  fixture = _fixture(f'{name}_likelihood')
  config, sde, score_fn = _converted_score_fn(name)
  probe = jnp.asarray(fixture['probe'])
  monkeypatch.setattr(jax.random, 'rademacher',
                      lambda key, shape, dtype=None: probe.reshape(shape).astype(dtype))
  fn = likelihood.get_likelihood_fn(
      sde, data_lib.get_data_inverse_scaler(config.data.centered), rtol=1e-6, atol=1e-6)
  bpd, _, _ = jax.jit(lambda x: fn(jax.random.key(0), score_fn, x))(jnp.asarray(fixture['data']))
  np.testing.assert_allclose(np.asarray(bpd), fixture['bpd'], atol=1e-3)


# naive / accurate - 1 of the float32 std at t = 1e-5 (docs/fidelity.md, benchmarks/small_t.py).
NAIVE_STD_AT_EPS = {'vpsde': 6.1e-3, 'subvpsde': 1.23e-2}


def test_score_near_eps_differs_from_port_by_the_std_only():
  """Near the losses' eps (t = 1e-5 to 1e-3) the converted network gives the port's output, and
  the continuous VP and sub-VP scores (``-output / std``) equal the port's times
  ``std_port / std``: the one difference is the marginal std, ``sqrt(-expm1(2 m))`` here
  (sub-VP ``-expm1(2 m)``, within 1e-6 of float64) and the float32 ``sqrt(1 - exp(2 m))`` in
  the port, 0.6% (VP) and 1.2% (sub-VP) apart at t = 1e-5. Either code moving to the other's
  std, or the network's output drifting at small labels, fails here."""
  fixture = _fixture('ddpmpp_vp_small_t')
  config, _, state = _converted('ddpmpp_vp')
  assert int(fixture['step']) == int(state.step)
  model = models.get_model(config)
  x, t = jnp.asarray(fixture['x']), jnp.asarray(fixture['t'])
  out = model.apply({'params': state.params}, x, 999. * t, train=False)
  _assert_close(out, fixture['out'], 'ddpmpp_vp output near t = 0')
  t64 = fixture['t'].astype(np.float64)
  for name in ('vpsde', 'subvpsde'):
    sde = _sde(config, name)
    variance = -np.expm1(2. * sde.log_mean_coeff(t64))
    exact = np.sqrt(variance) if name == 'vpsde' else variance
    std = np.asarray(sde.marginal_coeffs(t)[1], np.float64)
    np.testing.assert_allclose(std, exact, rtol=1e-6, err_msg=f'{name} std')
    port_std, port = fixture[f'std_{name}'].astype(np.float64), fixture[f'score_{name}']
    score = np.asarray(models.get_score_fn(sde, model, state.params, train=False,
                                           continuous=True)(x, t))
    for i, ti in enumerate(t64):
      _assert_close(score[i], port[i] * (port_std[i] / std[i]), f'{name} score at t = {ti:g}')
    assert t64[0] == np.float32(1e-5)
    np.testing.assert_allclose(port_std[0] / std[0] - 1., NAIVE_STD_AT_EPS[name], rtol=0.02)
    assert np.abs(score[0] - port[0]).max() > 100 * REL_TOL * np.ptp(port[0])
