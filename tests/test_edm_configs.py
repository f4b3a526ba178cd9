"""Tests of EDM's experiment configs (``configs/edm/``) and of ``configs/embedded_edm.py``.

Expected values are typed in from NVlabs/edm (commit 008a4e5): the defaults of its ``train.py``
and ``training/training_loop.py``, its ``SongUNet`` and its README / paper (Karras et al. 2022,
Table 2); none is read from our own configs. ``tests/test_configs.py`` validates every config
file on 1 and 8 devices; here, what makes them EDM's.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loop_config
from score_sde.configs import embedded, embedded_edm
from score_sde.configs.validation import validate_config

# EDM's train.py options and training_loop.py arguments, in EDM's own units.
EDM_TRAINING = dict(
    batch=512, lr=10e-4, betas=(0.9, 0.999), adam_eps=1e-8, duration_mimg=200,
    lr_rampup_kimg=10000, ema_mimg=0.5, ema_rampup_ratio=0.05, dropout=0.13, xflip=False,
    fp16=False, label_dropout=0,
    # EDMPrecond / EDMLoss.
    sigma_data=0.5, sigma_min=0.002, sigma_max=80., p_mean=-1.2, p_std=1.2,
    # generate.py's edm_sampler: 18 steps (35 NFE), rho 7, deterministic.
    num_steps=18, rho=7., s_churn=0.)

# train.py's --arch network_kwargs; SongUNet's defaults give 4 blocks and attention at 16x16.
EDM_ARCH = {
    'ddpmpp': dict(embedding_type='positional', encoder_type='standard', decoder_type='standard',
                   channel_mult_noise=1, resample_filter=(1, 1), model_channels=128,
                   channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,)),
    'ncsnpp': dict(embedding_type='fourier', encoder_type='residual', decoder_type='standard',
                   channel_mult_noise=2, resample_filter=(1, 3, 3, 1), model_channels=128,
                   channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,)),
}

# Parameters of EDM's SongUNet of these kwargs on 32x32x3 (counted with NVlabs/edm), plus its
# NCSN++'s 128 Fourier frequencies, a buffer there and a parameter here.
EDM_PARAMS = {('ddpmpp', False): 55732739, ('ddpmpp', True): 55734147,
              ('ncsnpp', False): 56395523 + 128, ('ncsnpp', True): 56398339 + 128}

# Karras et al. 2022, Table 2 (EDM, 35 NFE), also the README's abstract for the first two.
EDM_FID = {('ddpmpp', True): '1.79', ('ncsnpp', True): '1.79', ('ddpmpp', False): '1.97',
           ('ncsnpp', False): '1.98'}

NAMES = {(arch, cond): f'cifar10_{arch}_{"cond" if cond else "uncond"}'
         for arch in EDM_ARCH for cond in (False, True)}


def _config(arch, cond):
  return importlib.import_module(f'score_sde.configs.edm.{NAMES[arch, cond]}').get_config()


@pytest.mark.parametrize('arch,cond', sorted(NAMES))
def test_edm_config_validates_and_builds_edms_network(arch, cond):
  """Each EDM config is accepted and its network (built abstractly, nothing computed) has the
  parameter count of EDM's SongUNet for that architecture and conditioning."""
  from score_sde.models import utils as mutils
  config = _config(arch, cond)
  validate_config(config, num_devices=1)
  params = mutils.abstract_params(config, (32, 32, 3))
  assert mutils.count_params(params) == EDM_PARAMS[arch, cond]


@pytest.mark.parametrize('arch,cond', sorted(NAMES))
def test_edm_config_holds_edms_hyperparameters(arch, cond):
  """Training, objective, EMA, data and sampler are EDM's published settings, converted to this
  codebase's fields (steps of batch 512, kimg, the preconditioning's name)."""
  c, e = _config(arch, cond), EDM_TRAINING
  t, m, o, s = c.training, c.model, c.optim, c.sampling
  assert t.batch_size == e['batch']
  assert t.n_iters * t.batch_size == e['duration_mimg'] * 10 ** 6
  assert abs(o.warmup * t.batch_size - e['lr_rampup_kimg'] * 1000) < t.batch_size
  assert (o.optimizer, o.lr, (o.beta1, o.beta2), o.eps) == ('Adam', e['lr'], e['betas'],
                                                            e['adam_eps'])
  assert o.weight_decay == 0. and o.grad_clip <= 0.  # EDM only nan_to_num's its gradients.
  assert (m.ema_halflife_kimg, m.ema_rampup_ratio) == (e['ema_mimg'] * 1000,
                                                       e['ema_rampup_ratio'])
  assert m.dropout == e['dropout'] and t.label_dropout == e['label_dropout']
  assert t.compute_dtype == 'float32' and not e['fp16']
  assert c.data.dataset == 'CIFAR10' and c.data.centered
  assert c.data.random_flip == e['xflip'] and not c.data.uniform_dequantization
  assert (t.sde, t.continuous, t.weighting) == ('vesde', True, 'edm')
  assert (t.p_mean, t.p_std) == (e['p_mean'], e['p_std'])
  assert (m.parameterization, m.sigma_data) == ('edm', e['sigma_data'])
  assert (m.sigma_min, m.sigma_max) == (e['sigma_min'], e['sigma_max'])
  assert (s.method, s.schedule, s.rho, s.num_steps, s.s_churn) == (
      'heun', 'karras', e['rho'], e['num_steps'], e['s_churn'])
  assert s.noise_removal  # EDM's last step goes to sigma = 0: 2 * 18 - 1 = 35 evaluations.


@pytest.mark.parametrize('arch,cond', sorted(NAMES))
def test_edm_config_network_is_edms_songunet(arch, cond):
  """The ncsnpp settings are EDM's SongUNet of train.py's --arch: width, levels, blocks,
  attention, resampling filter, encoder / decoder, noise embedding and class embedding."""
  m, a = _config(arch, cond).model, EDM_ARCH[arch]
  assert m.name == 'ncsnpp' and m.resblock_type == 'biggan' and m.skip_rescale
  assert (m.nf, tuple(m.ch_mult), m.num_res_blocks) == (a['model_channels'],
                                                        a['channel_mult'], a['num_blocks'])
  assert tuple(m.attn_resolutions) == a['attn_resolutions']
  # resample_filter [1, 1] is the box filter of the plain resampling; longer ones are FIR.
  assert m.fir == (len(a['resample_filter']) > 2)
  if m.fir:
    assert tuple(m.fir_kernel) == a['resample_filter']
  assert m.progressive_input == {'standard': 'none', 'residual': 'residual'}[a['encoder_type']]
  assert m.progressive == {'standard': 'none'}[a['decoder_type']]
  assert m.embedding_type == a['embedding_type']
  assert not m.embed_log_sigma and not m.scale_by_sigma  # c_noise is the label; D the output.
  if m.embedding_type == 'fourier':
    assert m.fourier_scale == 16.  # EDM's FourierEmbedding(scale=16).
  assert m.num_classes == (10 if cond else 0)
  if cond:
    assert m.class_embedding == 'noise'  # map_label, added to the noise embedding.


@pytest.mark.parametrize('arch,cond', sorted(NAMES))
def test_edm_config_docstring_gives_both_commands_and_the_fid(arch, cond):
  """Each docstring shows this codebase's command, EDM's own command for the same run, EDM's
  FID at 35 NFE, and says that EDM's augmentation pipeline is not implemented here."""
  name = NAMES[arch, cond]
  doc = ' '.join(importlib.import_module(f'score_sde.configs.edm.{name}').__doc__.split())
  assert f'python main.py --config configs/edm/{name}.py' in doc
  assert 'torchrun --standalone --nproc_per_node=8 train.py --outdir=training-runs' in doc
  assert f'--cond={int(cond)} --arch={arch}' in doc
  assert f'FID {EDM_FID[arch, cond]} at 35 NFE' in doc
  assert 'augmentation pipeline' in doc


# ------------------------------------------------------------------------------ embedded_edm
def test_embedded_edm_changes_only_the_recipe():
  """configs/embedded_edm.py is configs/embedded.py with the SDE, objective, parameterization,
  snapshot sampler and EMA form changed, and nothing else: the same network, data, batch,
  steps and optimizer, so that the digits benchmark compares the recipes only."""
  base, edm = embedded.get_config().to_dict(), embedded_edm.get_config().to_dict()
  assert base.pop('seed') == edm.pop('seed')
  changed = {f'{section}.{key}' for section, fields in base.items() for key in fields
             if fields[key] != edm[section][key]}
  assert changed == {
      'training.sde', 'training.weighting', 'sampling.method', 'sampling.schedule',
      'sampling.num_steps', 'sampling.eps', 'model.sigma_min', 'model.sigma_max',
      'model.parameterization', 'model.embed_log_sigma', 'model.ema_halflife_kimg',
      'model.ema_rampup_ratio', 'model.ema_warmup'}


def test_embedded_edm_ema_matches_the_embedded_warmup():
  """The half-life EMA of embedded_edm has, at every step of its 3,000, the half-life of
  embedded.py's warmed-up EMA within one step: the recipes average their weights alike."""
  from score_sde import optim
  base, edm = embedded.get_config(), embedded_edm.get_config()
  steps = jnp.arange(1, base.training.n_iters)
  warm = jax.vmap(lambda s: optim.ema_rate_at(base.model.ema_rate, s, True))(steps)
  halflife = jax.vmap(lambda s: optim.ema_halflife_rate(
      s, edm.training.batch_size, edm.model.ema_halflife_kimg, edm.model.ema_rampup_ratio))(steps)
  to_steps = lambda rate: np.log(0.5) / np.log(np.asarray(rate, np.float64))
  np.testing.assert_allclose(to_steps(halflife), to_steps(warm), atol=1.)


def test_embedded_edm_trains_through_the_real_step():
  """Two train steps of embedded_edm's recipe on real digits (on the loop tests' one-level
  network), through the training step that train_and_evaluate compiles: the loss is finite,
  the second update moves the weights (the first has learning rate 0, the warm-up's start),
  and the EMA follows EDM's half-life rate at the config's batch, not model.ema_rate."""
  from score_sde import losses, optim as optim_lib, sde_lib
  from score_sde.data import embedded as embedded_data, get_data_scaler
  from score_sde.models import utils as mutils
  from score_sde.training import train_state
  config = embedded_edm.get_config()
  config.model.update(loop_config.NET)  # The loop tests' one-level network: seconds to compile.
  validate_config(config, num_devices=1)
  sde, model = sde_lib.get_sde(config), mutils.get_model(config)
  tx = optim_lib.get_optimizer(config.optim)
  state = train_state.state_factory(config, model, tx)()
  step_fn = jax.jit(losses.get_step_fn(sde, model, True, tx, losses.step_settings(config)))
  raw = embedded_data.mnist_embedded(config.data, 'train').get(np.arange(16))
  batch = {'image': get_data_scaler(True)(jnp.asarray(raw['image'], jnp.float32) / 255.),
           'label': jnp.asarray(raw['label'], jnp.int32)}
  key = jax.random.key(0)
  for _ in range(2):
    before = jax.device_get(state)
    state, metrics = step_fn(state, batch, key)
    assert np.isfinite(float(metrics['loss'])) and float(metrics['loss']) > 0
  assert int(state.step) == 2
  after = jax.device_get(state)
  assert any(not np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)))
  rate = float(optim_lib.ema_halflife_rate(1, config.training.batch_size,
                                           config.model.ema_halflife_kimg,
                                           config.model.ema_rampup_ratio))
  for old, new, ema in zip(*(jax.tree.leaves(t) for t in (before.params_ema, after.params,
                                                          after.params_ema))):
    np.testing.assert_allclose(ema, rate * old + (1. - rate) * new, rtol=1e-6, atol=1e-9)
