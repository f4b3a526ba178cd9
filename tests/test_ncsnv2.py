"""Tests of the NCSN / NCSNv2 score networks (score_sde.models.ncsnv2, refinenet, normalization)
and of their experiment configs.

The expected parameter layouts are written out by hand from the released score_sde NCSN code
(module creation order), as tests/test_models.py does for NCSN++. Shapes are tiny (16x16, nf=8,
one channel, 10 noise levels); parameters are random numpy draws on the abstract tree, which
avoids compiling the initialisers, and each network is compiled once per test, at XLA's
lowest backend optimisation level (``_compile``).
"""
import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import losses, models, optim, sampling, sde_lib
from score_sde.configs import default, validation
from score_sde.configs.validation import validate_config
from score_sde.models import normalization
from score_sde.training import train_state

NF, SIZE, LEVELS = 8, 16, 10
NCSN_NAMES = ('ncsn', 'ncsnv2_64', 'ncsnv2_128', 'ncsnv2_256')


def _flat_shapes(tree):
  return {'/'.join(k.key for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _model(name, **kwargs):
  return models.MODELS.get(name)(nf=NF, sigma_min=0.01, sigma_max=1., num_scales=LEVELS,
                                 **kwargs)


def _compile(fn, *args):
  """``jax.jit(fn)`` compiled for ``args`` at XLA's lowest backend optimisation level, which
  halves the CPU compile time of these deep, tiny networks (it changes no formula)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={'xla_backend_optimization_level': 0})


def _random_params(model, seed=0):
  """Random parameters on the model's tree: ~N(1, 0.1^2) for multiplicative normalisation
  parameters, ~N(0, 0.1^2) otherwise (so zero-initialised ones count too)."""
  rng = np.random.default_rng(seed)
  abstract = models.abstract_params(model, (SIZE, SIZE, 1))

  def draw(path, leaf):
    one = path[-1].key in ('gamma', 'alpha', 'scale') or path[-1].key == 'embedding'
    return jnp.asarray(float(one) + 0.1 * rng.normal(size=leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract)


# ------------------------------------------------------------------------ released layouts

def _norm(c, conditional):
  if conditional:
    return {'Embed_0/embedding': (LEVELS, 3 * c)}
  return {p: (1, 1, 1, c) for p in ('alpha', 'beta', 'gamma')}


def _with_norms(block, norms, conditional, prefix=''):
  """``block`` plus ``<prefix>{Conditional}InstanceNorm2dPlus_<i>`` for each channel count."""
  kind = 'ConditionalInstanceNorm2dPlus' if conditional else 'InstanceNorm2dPlus'
  for i, c in enumerate(norms):
    block.update({f'{prefix}{kind}_{i}/{p}': s for p, s in _norm(c, conditional).items()})
  return block


def _residual(cin, cout, resample, dilation, conditional):
  """A residual block: the same-width block has Conv_0, Conv_1 (3x3); downsampling at dilation 1
  has Conv_0 and two ConvMeanPools (3x3 branch, 1x1 shortcut); dilated downsampling has Conv_0,
  Conv_1 (branch) and Conv_2 (3x3 shortcut). Every convolution has a bias."""
  conv = lambda k, i, o: {'kernel': (k, k, i, o), 'bias': (o,)}  # noqa: E731
  if resample is None:
    convs = {'Conv_0': conv(3, cin, cout), 'Conv_1': conv(3, cout, cout)}
  elif dilation == 1:
    convs = {'Conv_0': conv(3, cin, cin), 'ConvMeanPool_0/Conv_0': conv(3, cin, cout),
             'ConvMeanPool_1/Conv_0': conv(1, cin, cout)}
  else:
    convs = {'Conv_0': conv(3, cin, cin), 'Conv_1': conv(3, cin, cout),
             'Conv_2': conv(3, cin, cout)}
  block = {f'{m}/{p}': s for m, ps in convs.items() for p, s in ps.items()}
  return _with_norms(block, [cin, cin if resample else cout], conditional)


def _rcu(c, n_blocks, conditional):
  block = {f'Conv_{i}/kernel': (3, 3, c, c) for i in range(2 * n_blocks)}  # No biases.
  return _with_norms(block, [c] * (2 * n_blocks) if conditional else [], conditional)


def _refine(channels, features, start, end, conditional):
  """RCUBlock_<i> per input (2 units), MSFBlock_0 (3x3 conv with bias per input), CRPBlock_0
  (2 bias-free convs) and the output RCUBlock (3 units in the last block, else 1); normalisations
  inside them only when conditional (NCSN)."""
  cond = 'Cond' if conditional else ''
  block = {}
  for i, c in enumerate(channels):
    block.update({f'{cond}RCUBlock_{i}/{p}': s for p, s in _rcu(c, 2, conditional).items()})
  if not start:
    msf = {}
    for i, c in enumerate(channels):
      msf.update({f'Conv_{i}/kernel': (3, 3, c, features), f'Conv_{i}/bias': (features,)})
    msf = _with_norms(msf, channels if conditional else [], conditional)
    block.update({f'{cond}MSFBlock_0/{p}': s for p, s in msf.items()})
  crp = _with_norms({f'Conv_{i}/kernel': (3, 3, features, features) for i in range(2)},
                    [features] * 2 if conditional else [], conditional)
  block.update({f'{cond}CRPBlock_0/{p}': s for p, s in crp.items()})
  out = _rcu(features, 3 if end else 1, conditional)
  block.update({f'{cond}RCUBlock_{len(channels)}/{p}': s for p, s in out.items()})
  return block


def _released_layout(conditional):
  """The tree the released code gives NCSN (conditional) or NCSNv2-64 at nf=8, 1 channel: a stem
  conv, 8 residual blocks (nf, nf | down to 2nf, 2nf | dilated 2 | dilated 4), 4 RefineBlocks
  from the deepest level up, a final normalisation and an output conv."""
  nf = NF
  blocks = [(nf, nf, None, 1), (nf, nf, None, 1), (nf, 2 * nf, 'down', 1),
            (2 * nf, 2 * nf, None, 1), (2 * nf, 2 * nf, 'down', 2), (2 * nf, 2 * nf, None, 2),
            (2 * nf, 2 * nf, 'down', 4), (2 * nf, 2 * nf, None, 4)]
  refines = [([2 * nf], 2 * nf, True, False), ([2 * nf, 2 * nf], 2 * nf, False, False),
             ([2 * nf, 2 * nf], 2 * nf, False, False), ([nf, 2 * nf], nf, False, True)]
  res = 'ConditionalResidualBlock' if conditional else 'ResidualBlock'
  ref = 'CondRefineBlock' if conditional else 'RefineBlock'
  layout = {'Conv_0/kernel': (3, 3, 1, nf), 'Conv_0/bias': (nf,),
            'Conv_1/kernel': (3, 3, nf, 1), 'Conv_1/bias': (1,)}
  for i, (cin, cout, resample, dilation) in enumerate(blocks):
    layout.update({f'{res}_{i}/{p}': s
                   for p, s in _residual(cin, cout, resample, dilation, conditional).items()})
  for i, args in enumerate(refines):
    layout.update({f'{ref}_{i}/{p}': s for p, s in _refine(*args, conditional).items()})
  return _with_norms(layout, [nf], conditional)


@pytest.mark.parametrize('name, conditional, count', [('ncsn', True, 162385),
                                                      ('ncsnv2_64', False, 133753)])
def test_parameter_tree_is_the_released_layout(name, conditional, count):
  """Protects loading released NCSN / NCSNv2 checkpoints: every module path, parameter name and
  shape is the released code's (its size, counted by running that code, is ``count``)."""
  shapes = _flat_shapes(models.abstract_params(_model(name), (SIZE, SIZE, 1)))
  want = _released_layout(conditional)
  assert shapes == want
  assert sum(int(np.prod(s)) for s in shapes.values()) == count


@pytest.mark.parametrize('name, leaves, count', [('ncsnv2_128', 191, 327689),
                                                 ('ncsnv2_256', 229, 369721)])
def test_larger_ncsnv2_trees(name, leaves, count):
  """Protects the 128 / 256 px layouts: leaf and parameter counts of the released code, and the
  extra levels (a fifth / sixth RefineBlock, 4 nf at the deepest one)."""
  shapes = _flat_shapes(models.abstract_params(_model(name), (32, 32, 1)))
  assert (len(shapes), sum(int(np.prod(s)) for s in shapes.values())) == (leaves, count)
  deepest = 'RefineBlock_0/CRPBlock_0/Conv_0/kernel'
  assert shapes[deepest] == (3, 3, 4 * NF, 4 * NF)
  last = len(models.MODELS.get(name).refine_mults) - 1
  assert shapes[f'RefineBlock_{last}/RCUBlock_2/Conv_5/kernel'] == (3, 3, NF, NF)


# ------------------------------------------------------------------------ normalisations

def _instance_norm_plus(x, gamma, alpha, beta):
  """Independent float64 InstanceNorm++: per (b, c) spatial moments, then the spread of the
  channel means; ``gamma, alpha, beta`` broadcast against ``(B, 1, 1, C)``."""
  x = np.asarray(x, np.float64)
  b, h, w, c = x.shape
  flat = x.reshape(b, h * w, c)
  mu, s2 = flat.mean(1), flat.var(1)  # (B, C)
  mu_plus = (mu - mu.mean(1, keepdims=True)) / np.sqrt(mu.var(1, keepdims=True) + 1e-5)
  y = (flat - mu[:, None]) / np.sqrt(s2[:, None] + 1e-5) + alpha * mu_plus[:, None]
  return (gamma * y + beta).reshape(x.shape)


def test_conditional_instance_norm_plus_formula():
  """Protects NCSN's conditional InstanceNorm++: ``gamma_y ((x - mu) / s + alpha_y mu+) +
  beta_y`` with ``[gamma | alpha | beta]`` read from row ``y`` of its table, against numpy; the
  table starts at gamma, alpha ~ 1 + N(0, 0.02^2) and beta = 0."""
  rng = np.random.default_rng(0)
  c = 6
  x = (rng.normal(size=(3, 5, 4, c)) * rng.uniform(.5, 3, c) + rng.normal(size=c) * 4)
  labels = np.array([2, 0, 2])
  module = normalization.ConditionalInstanceNorm2dPlus(num_scales=4)
  x32 = jnp.asarray(x, jnp.float32)
  params = module.init(jax.random.key(0), x32, jnp.asarray(labels))['params']
  table = np.asarray(params['Embed_0']['embedding'])
  assert table.shape == (4, 3 * c)
  assert np.all(table[:, 2 * c:] == 0) and abs(table[:, :2 * c].std() - 0.02) < 0.01
  table = rng.normal(size=table.shape)
  out = module.apply({'params': {'Embed_0': {'embedding': jnp.asarray(table, jnp.float32)}}},
                     x32, jnp.asarray(labels))
  rows = table[labels][:, None, :]  # (B, 1, 3C): [gamma | alpha | beta].
  gamma, alpha, beta = (rows[..., k * c:(k + 1) * c] for k in range(3))
  np.testing.assert_allclose(out, _instance_norm_plus(x, gamma, alpha, beta), rtol=1e-4,
                             atol=1e-4)


def test_unconditional_normalizations():
  """Protects NCSNv2's normalisations against numpy: InstanceNorm++ (the conditional formula
  with one row), instance norm and variance norm (no centring); and the name registry."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 4, 6, 5)) * 2 + rng.normal(size=5)
  x32 = jnp.asarray(x, jnp.float32)
  p = {k: rng.normal(size=(1, 1, 1, 5)) for k in ('alpha', 'gamma', 'beta', 'scale', 'bias')}
  jp = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
  plus = normalization.get_normalization('InstanceNorm++')()
  out = plus.apply({'params': {k: jp[k] for k in ('alpha', 'gamma', 'beta')}}, x32)
  want = _instance_norm_plus(x, p['gamma'][0, 0], p['alpha'][0, 0], p['beta'][0, 0])
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)

  mu, s = x.mean((1, 2), keepdims=True), np.sqrt(x.var((1, 2), keepdims=True) + 1e-5)
  inst = normalization.get_normalization('InstanceNorm')()
  out = inst.apply({'params': {'scale': jp['scale'], 'bias': jp['bias']}}, x32)
  np.testing.assert_allclose(out, (x - mu) / s * p['scale'] + p['bias'], rtol=1e-4, atol=1e-4)
  var = normalization.get_normalization('VarianceNorm')()
  out = var.apply({'params': {'scale': jp['scale']}}, x32)
  np.testing.assert_allclose(out, x / s * p['scale'], rtol=1e-4, atol=1e-4)

  assert validation.choices()['model.normalization'] == tuple(normalization.NORMALIZATIONS)
  with pytest.raises(ValueError, match=r'conditional normalisations are InstanceNorm\+\+'):
    normalization.get_normalization('GroupNorm', conditional=True)


# ------------------------------------------------------------------------ forward passes

def test_ncsnv2_output_is_one_network_divided_by_the_labelled_sigma():
  """Protects NCSNv2's parameterisation and the discrete VE score adapter together:
  ``s(x, t) = f(x) / sigma_i`` with ``i = round((1 - t)(N - 1))`` the label of the descending
  ladder that the SMLD loss trains (label 0 = sigma_max). On the PC grid times, score times the
  ladder's sigma_i is the same finite ``f(x)`` for every label, and sigma_i matches sigma(t)."""
  model = _model('ncsnv2_64')
  params = _random_params(model)
  sde = sde_lib.VESDE(0.01, 1., LEVELS)
  times = jnp.asarray(sampling.get_times(sde, 'pc', eps=1e-5))  # (N,) from T down to eps.
  x = jnp.broadcast_to(jax.random.uniform(jax.random.key(0), (1, SIZE, SIZE, 1)),
                       (LEVELS, SIZE, SIZE, 1))
  score = _compile(models.get_score_fn(sde, model, params, continuous=False), x, times)(x, times)
  assert score.shape == x.shape and score.dtype == jnp.float32
  ladder = np.asarray(models.get_sigmas(0.01, 1., LEVELS))
  assert ladder[0] == pytest.approx(1.) and np.all(np.diff(ladder) < 0)
  np.testing.assert_allclose(ladder, np.asarray(sde.discrete_sigmas)[::-1], rtol=1e-6)
  f = np.asarray(score) * ladder[:, None, None, None]
  assert np.all(np.isfinite(f)) and np.abs(f).max() > 0
  np.testing.assert_allclose(f, np.broadcast_to(f[:1], f.shape), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(sde.sigma(times)), ladder, rtol=1e-3)


def test_ncsn_label_selects_its_noise_level_row():
  """Protects NCSN's conditioning: the label ``i`` picks row ``i`` of every conditional
  normalisation table (changing row 3 changes the outputs labelled 3 and no other), and outputs
  are finite, float32, the input's shape, and differ between labels."""
  model = _model('ncsn')
  params = _random_params(model, seed=3)
  x = jnp.broadcast_to(jax.random.uniform(jax.random.key(1), (1, SIZE, SIZE, 1)),
                       (4, SIZE, SIZE, 1))
  labels = jnp.array([3, 0, 3, 9])
  apply = _compile(model.apply, {'params': params}, x, labels)
  out = np.asarray(apply({'params': params}, x, labels))
  assert out.shape == x.shape and out.dtype == np.float32 and np.all(np.isfinite(out))
  np.testing.assert_allclose(out[0], out[2], rtol=1e-5, atol=1e-6)
  assert np.abs(out[0] - out[1]).max() > 1e-3 and np.abs(out[1] - out[3]).max() > 1e-3

  def bump_row_3(path, leaf):
    return leaf.at[3].add(0.5) if path[-1].key == 'embedding' else leaf

  bumped = np.asarray(apply({'params': jax.tree_util.tree_map_with_path(bump_row_3, params)},
                            x, labels))
  assert np.abs(bumped[[0, 2]] - out[[0, 2]]).max() > 1e-3
  np.testing.assert_array_equal(bumped[[1, 3]], out[[1, 3]])


def test_every_ncsn_model_is_registered_and_exercised():
  """Protects the registry: the four names of the released code resolve to the classes tested
  here."""
  classes = {name: models.MODELS.get(name) for name in NCSN_NAMES}
  assert classes == {'ncsn': models.NCSN, 'ncsnv2_64': models.NCSNv2,
                     'ncsnv2_128': models.NCSNv2_128, 'ncsnv2_256': models.NCSNv2_256}


# ------------------------------------------------------------------------ training and sampling

def _tiny_config(name):
  from score_sde.configs import smoke
  config = smoke.get_config()
  config.training.continuous = False
  model = config.model
  model.name, model.nf, model.num_scales, model.sigma_max = name, NF, LEVELS, 1.
  model.normalization, model.nonlinearity = 'InstanceNorm++', 'elu'
  model.scale_by_sigma = name != 'ncsn'
  config.optim.warmup = 0  # As the NCSN configs: the first step has the full rate.
  return config


def test_one_smld_training_step_then_annealed_langevin_sampling():
  """Protects training and sampling an NCSN-family model as its configs do, through the public
  functions: one SMLD optimiser step from a validated config gives a finite loss and gradient,
  moves the parameters and advances the step; PC sampling with predictor 'none' and corrector
  'ald' on the discrete VE score of the EMA weights visits every noise level with n_steps_each
  evaluations each and returns finite images of the asked shape."""
  config = _tiny_config('ncsnv2_64')
  validate_config(config, num_devices=8)
  model, sde = models.get_model(config), sde_lib.get_sde(config)
  tx = optim.get_optimizer(config.optim)
  state = train_state.create_train_state(_random_params(model), tx)
  step_fn = losses.get_step_fn(sde, model, train=True, optimizer=tx,
                               settings=losses.StepSettings(continuous=False, ema_rate=0.9))
  batch = {'image': jax.random.uniform(jax.random.key(2), (4, SIZE, SIZE, 1))}
  key = jax.random.key(3)
  new_state, metrics = _compile(step_fn, state, batch, key)(state, batch, key)
  assert int(new_state.step) == 1
  assert np.isfinite(float(metrics['loss'])) and np.isfinite(float(metrics['grad_norm']))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.params, state.params)
  assert max(jax.tree.leaves(moved)) > 0

  score_fn = models.get_score_fn(sde, model, new_state.params_ema, continuous=False)
  sampler = sampling.get_pc_sampler(sde, (2, SIZE, SIZE, 1), sampling.identity,
                                    sampling.get_times(sde, 'pc', eps=1e-5), 'none', 'ald',
                                    snr=0.176, n_steps=2)
  nfe = []

  def sample(k):
    images, evaluations = sampler(k, score_fn)
    nfe.append(evaluations)  # A Python int, known when tracing.
    return images

  key = jax.random.key(5)
  samples = _compile(sample, key)(key)
  assert nfe == [2 * LEVELS]
  assert samples.shape == (2, SIZE, SIZE, 1) and np.all(np.isfinite(np.asarray(samples)))


def test_from_config_refuses_what_the_networks_cannot_take():
  """Protects against silent misuse: continuous-time labels, a normalisation without a
  conditional form, and class labels are refused with the field to fix."""
  config = _tiny_config('ncsn')
  config.training.continuous = True
  with pytest.raises(ValueError, match='training.continuous=False'):
    models.get_model(config)
  config = _tiny_config('ncsn')
  config.model.normalization = 'GroupNorm'
  with pytest.raises(ValueError, match='InstanceNorm'):
    models.get_model(config)
  config = _tiny_config('ncsnv2_64')
  config.model.num_classes = 10
  with pytest.raises(ValueError, match='num_classes'):
    models.get_model(config)


# ------------------------------------------------------------------------ configs

CONFIG_ROOT = pathlib.Path(__file__).resolve().parents[1] / 'configs'
NCSN_CONFIGS = sorted(str(p.relative_to(CONFIG_ROOT).with_suffix(''))
                      for d in ('ve/ncsn', 've/ncsnv2') for p in (CONFIG_ROOT / d).glob('*.py')
                      if not p.name.startswith('_'))


def _load(name):
  return importlib.import_module('configs.' + name.replace('/', '.')).get_config()


def test_the_reference_ncsn_experiments_exist():
  """The reference's configs/ve/ncsn and configs/ve/ncsnv2 files all have a counterpart."""
  assert set(NCSN_CONFIGS) == {
      've/ncsn/cifar10', 've/ncsn/cifar10_5', 've/ncsn/cifar10_124', 've/ncsn/cifar10_1245',
      've/ncsn/celeba', 've/ncsn/celeba_5', 've/ncsn/celeba_124', 've/ncsn/celeba_1245',
      've/ncsnv2/cifar10', 've/ncsnv2/celeba', 've/ncsnv2/bedroom'}


# Values typed in from the reference's files: model, image size, sigma_max, N, ALD snr and
# steps per level, EMA rate, learning rate.
REFERENCE = {
    've/ncsn/cifar10': ('ncsn', 32, 1., 10, 0.316, 100, 0., 1e-3),
    've/ncsn/celeba': ('ncsn', 64, 1., 10, 0.316, 100, 0., 1e-3),
    've/ncsn/cifar10_5': ('ncsn', 32, 1., 10, 0.316, 100, 0.999, 1e-3),
    've/ncsn/cifar10_124': ('ncsn', 32, 50., 232, 0.176, 5, 0., 1e-3),
    've/ncsn/cifar10_1245': ('ncsn', 32, 50., 232, 0.176, 5, 0.999, 1e-3),
    've/ncsn/celeba_5': ('ncsn', 64, 1., 10, 0.316, 100, 0.999, 1e-3),
    've/ncsn/celeba_124': ('ncsn', 64, 90., 500, 0.128, 5, 0., 1e-3),
    've/ncsn/celeba_1245': ('ncsn', 64, 90., 500, 0.128, 5, 0.999, 1e-3),
    've/ncsnv2/cifar10': ('ncsnv2_64', 32, 50., 232, 0.176, 5, 0.999, 1e-4),
    've/ncsnv2/celeba': ('ncsnv2_64', 64, 90., 500, 0.128, 5, 0.999, 1e-4),
    've/ncsnv2/bedroom': ('ncsnv2_128', 128, 190., 1086, 0.095, 3, 0.9999, 1e-4),
}


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_ncsn_configs_follow_the_reference(name):
  """Each NCSN experiment: SMLD (discrete VE) training, ALD sampling, the reference's noise
  ladder, sampler, EMA and optimiser; NCSNv2 divides by sigma, NCSN does not; it validates."""
  config = _load(name)
  m, s = config.model, config.sampling
  got = (m.name, config.data.image_size, m.sigma_max, m.num_scales, s.snr, s.n_steps_each,
         m.ema_rate, config.optim.lr)
  assert got == REFERENCE[name]
  assert (config.training.sde, config.training.continuous) == ('vesde', False)
  assert (s.method, s.predictor, s.corrector) == ('pc', 'none', 'ald')
  assert (m.sigma_min, m.normalization, m.nonlinearity, m.nf) == (0.01, 'InstanceNorm++', 'elu',
                                                                   128)
  assert m.scale_by_sigma == m.name.startswith('ncsnv2')
  assert (config.optim.warmup, config.optim.grad_clip) == (0, -1.)
  assert config.data.dataset == ('LSUN' if 'bedroom' in name else
                                 'CELEBA' if 'celeba' in name else 'CIFAR10')
  doc = importlib.import_module('configs.' + name.replace('/', '.')).__doc__
  assert f'python main.py --config configs/{name}.py' in doc
  validate_config(config, num_devices=8)


@pytest.mark.parametrize('name, figures', [('ve/ncsn/cifar10', ('25.32', '8.87')),
                                           ('ve/ncsnv2/cifar10', ('10.87', '8.40'))])
def test_docstring_states_the_reported_figures(name, figures):
  """The CIFAR-10 FID / IS of NCSN and NCSNv2 that the paper's Table 3 lists are stated."""
  doc = importlib.import_module('configs.' + name.replace('/', '.')).__doc__
  assert all(figure in doc for figure in figures)


NCSN_RULES = [
    ({'model.name': 'ncsn', 'training.continuous': True}, 'training.continuous'),
    ({'model.name': 'ncsnv2_64', 'training.sde': 'vpsde', 'model.scale_by_sigma': False},
     'training.sde'),
    ({'model.name': 'ncsn', 'model.normalization': 'VarianceNorm'}, 'model.normalization'),
    ({'model.name': 'ncsnv2_64', 'model.normalization': 'GroupNorm', 'model.nf': 48},
     'model.nf'),
    ({'model.name': 'ncsnpp', 'model.normalization': 'InstanceNorm++'}, 'model.normalization'),
    ({'model.name': 'ncsnv2_64', 'model.interpolation': 'bicubic'}, 'model.interpolation'),
    ({'model.name': 'ncsnv2_128', 'model.remat': True}, 'model.remat'),
    ({'model.name': 'ncsn', 'model.num_classes': 10}, 'model.num_classes'),
]


@pytest.mark.parametrize('overrides, field', NCSN_RULES)
def test_validation_refuses_what_the_ncsn_models_cannot_do(overrides, field):
  """Continuous or non-VE training of an NCSN model, a normalisation a model lacks (or GroupNorm
  on channels that 32 groups do not divide), an unknown interpolation, and rematerialisation or
  class conditioning (which the NCSN networks do not have) are refused."""
  config = _load('ve/ncsnv2/cifar10')
  for path, value in overrides.items():
    section, key = path.split('.')
    config[section][key] = value
  with pytest.raises(ValueError, match=f'config.{field}='):
    validate_config(config, num_devices=8)


def test_default_config_has_the_ncsn_fields():
  """The one new model field has its default in configs/default.py."""
  assert default.get_config().model.interpolation == 'bilinear'
