"""Tests of the paper's experiment configs and of ``score_sde.configs.validation``.

Expected values are typed in from the paper (Song et al. 2021) and the README of the reference
implementation (yang-song/score_sde), not read from our own configs. Pure Python: no JAX work.
"""
import importlib
import pathlib
import sys
import types

import pytest

from score_sde.common.registry import Registry
from score_sde.configs import default, validation
from score_sde.configs.validation import validate_config

CONFIG_ROOT = pathlib.Path(__file__).resolve().parents[1] / 'configs'
# Every loadable config file (one defining get_config); modules starting with '_' are shared
# bases, and validation.py / record.py code, not experiments.
ALL_CONFIGS = sorted(
    str(p.relative_to(CONFIG_ROOT).with_suffix(''))
    for p in CONFIG_ROOT.rglob('*.py')
    if not p.name.startswith('_') and 'def get_config(' in p.read_text())
# Experiments named <sde>/<dataset>_<model>[_continuous]; the sub-directories ve/ncsn/ and
# ve/ncsnv2/ follow the reference's other naming and are checked in tests/test_ncsnv2.py, and
# edm/ holds Karras et al. 2022's experiments, checked in tests/test_edm_configs.py.
EXPERIMENTS = [name for name in ALL_CONFIGS
               if name.count('/') == 1 and not name.startswith('edm/')]

# Figures of the reference README's checkpoint table (FID and IS from the paper's Table 3,
# FID of the probability-flow ODE and bits/dim from its Table 2).
README_FIGURES = {
    've/cifar10_ncsnpp': ('2.45', '9.73'),
    've/cifar10_ncsnpp_continuous': ('2.38', '9.83'),
    've/cifar10_ncsnpp_deep_continuous': ('2.20', '9.89'),
    'vp/cifar10_ddpm': ('3.24', '3.37', '3.28'),
    'vp/cifar10_ddpm_continuous': ('3.69', '3.21'),
    'vp/cifar10_ddpmpp': ('2.78', '9.64'),
    'vp/cifar10_ddpmpp_continuous': ('2.55', '9.58', '3.93', '3.16'),
    'vp/cifar10_ddpmpp_deep_continuous': ('2.41', '9.68', '3.08', '3.13'),
    'subvp/cifar10_ddpm_continuous': ('3.56', '3.05'),
    'subvp/cifar10_ddpmpp_continuous': ('2.61', '9.56', '3.16', '3.02'),
    'subvp/cifar10_ddpmpp_deep_continuous': ('2.41', '9.57', '2.92', '2.99'),
}

# VE sigma_max per data set in the reference configs (its README advises the largest pairwise
# distance between training images).
SIGMA_MAX = {'cifar10': 50., 'celeba': 90., 'bedroom': 378., 'church': 380.,
             'celebahq_256': 348., 'ffhq_256': 348., 'ffhq': 1348., 'celebahq': 1348.}
IMAGE_SIZE = {'cifar10': 32, 'celeba': 64, 'bedroom': 256, 'church': 256, 'celebahq_256': 256,
              'ffhq_256': 256, 'ffhq': 1024, 'celebahq': 1024}


def _module(name):
  return importlib.import_module('configs.' + name.replace('/', '.'))


def _load(name):
  return _module(name).get_config()


def _dataset_key(name):
  """'ve/celebahq_256_ncsnpp_continuous' -> 'celebahq_256'."""
  stem = name.split('/')[1]
  return stem.split('_ncsnpp')[0].split('_ddpm')[0]


# --------------------------------------------------------------------------------- all configs
@pytest.mark.parametrize('num_devices', [1, 8])
@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_every_config_loads_and_validates(name, num_devices):
  """Every config under configs/ is accepted, against the real registries where they exist."""
  validate_config(_load(name), num_devices=num_devices)


def test_the_expected_experiments_exist():
  """The paper's experiments named in the reference's configs/ tree all have a config here."""
  expected = {
      've/cifar10_ncsnpp_continuous', 've/cifar10_ncsnpp_deep_continuous', 've/cifar10_ncsnpp',
      've/cifar10_ddpm', 've/celeba_ncsnpp', 've/bedroom_ncsnpp_continuous',
      've/church_ncsnpp_continuous', 've/celebahq_256_ncsnpp_continuous',
      've/ffhq_256_ncsnpp_continuous', 've/ffhq_ncsnpp_continuous',
      've/celebahq_ncsnpp_continuous', 'vp/cifar10_ddpmpp_continuous',
      'vp/cifar10_ddpmpp_deep_continuous', 'vp/cifar10_ddpmpp', 'vp/cifar10_ddpm',
      'vp/cifar10_ddpm_continuous', 'vp/cifar10_ncsnpp_continuous',
      'vp/cifar10_ncsnpp_deep_continuous', 'vp/cifar10_ncsnpp', 'subvp/cifar10_ddpmpp_continuous',
      'subvp/cifar10_ddpmpp_deep_continuous', 'subvp/cifar10_ncsnpp_continuous',
      'subvp/cifar10_ncsnpp_deep_continuous', 'subvp/cifar10_ddpm_continuous'}
  assert expected <= set(EXPERIMENTS)


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_docstring_gives_its_command(name):
  """Each experiment's docstring shows the command that runs exactly this file."""
  doc = _module(name).__doc__
  assert f'--config configs/{name}.py' in doc
  assert 'python main.py' in doc


@pytest.mark.parametrize('name', sorted(README_FIGURES))
def test_docstring_states_the_reported_figures(name):
  """The reported FID / IS / bits-per-dim of the reference README appear in the docstring."""
  doc = _module(name).__doc__
  for figure in README_FIGURES[name]:
    assert figure in doc, f'{name}: {figure} not in its docstring'


# --------------------------------------------------------------------------------- paper facts
@pytest.mark.parametrize('name', EXPERIMENTS)
def test_sde_model_and_loss_follow_the_file_name(name):
  """Folder = SDE; '_continuous' = continuous-time loss; 'ddpm' (not ddpmpp) = Ho et al. net."""
  config = _load(name)
  folder, stem = name.split('/')
  assert config.training.sde == {'ve': 'vesde', 'vp': 'vpsde', 'subvp': 'subvpsde'}[folder]
  assert config.training.continuous == stem.endswith('_continuous')
  is_ddpm = '_ddpm' in stem and '_ddpmpp' not in stem
  assert config.model.name == ('ddpm' if is_ddpm else 'ncsnpp')


@pytest.mark.parametrize('name', [n for n in EXPERIMENTS if n.startswith('ve/')])
def test_ve_noise_scales(name):
  """VE: sigma_min = 0.01, sigma_max per data set, N = 1000 (2000 at 256 px and up)."""
  config = _load(name)
  key = _dataset_key(name)
  assert config.model.sigma_min == 0.01
  assert config.model.sigma_max == SIGMA_MAX[key]
  assert config.model.num_scales == (1000 if IMAGE_SIZE[key] <= 64 else 2000)
  assert config.model.scale_by_sigma
  assert config.sampling.eps == 1e-5


@pytest.mark.parametrize('name', [n for n in EXPERIMENTS if not n.startswith('ve/')])
def test_vp_and_subvp_settings(name):
  """VP / sub-VP: beta in [0.1, 20], N = 1000, centred data, mean loss, EMA 0.9999."""
  config = _load(name)
  assert (config.model.beta_min, config.model.beta_max) == (0.1, 20.)
  assert config.model.num_scales == 1000
  assert config.data.centered and config.training.reduce_mean
  assert config.model.ema_rate == 0.9999
  assert not config.model.scale_by_sigma
  assert config.sampling.eps == 1e-3


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_ema_rate_and_image_size(name):
  """EMA 0.999 for VE up to 256 px, 0.9999 for VP / sub-VP and 1024 px; size per data set."""
  config = _load(name)
  key = _dataset_key(name)
  high_res_or_vp = not name.startswith('ve/') or IMAGE_SIZE[key] == 1024
  assert config.model.ema_rate == (0.9999 if high_res_or_vp else 0.999)
  assert config.data.image_size == IMAGE_SIZE[key]


@pytest.mark.parametrize('name', [n for n in EXPERIMENTS if 'cifar10' in n])
def test_cifar10_depth_and_training_length(name):
  """Deep = 8 blocks per resolution for 950k steps; else 4 (NCSN++/DDPM++) or 2 (DDPM), 1.3M."""
  config = _load(name)
  is_ddpm = '_ddpm' in name and '_ddpmpp' not in name
  if '_deep' in name:
    assert (config.model.num_res_blocks, config.training.n_iters) == (8, 950001)
  else:
    assert config.model.num_res_blocks == (2 if is_ddpm else 4)
    assert config.training.n_iters == 1300001
  assert config.model.nf == 128 and tuple(config.model.ch_mult) == (1, 2, 2, 2)
  assert tuple(config.model.attn_resolutions) == (16,)
  assert config.training.batch_size == 128 and config.optim.lr == 2e-4


@pytest.mark.parametrize('name', [n for n in EXPERIMENTS if 'cifar10' in n and 'ddpm' not in n])
def test_ncsnpp_uses_fir_and_progressive_input(name):
  """NCSN++ = FIR resampling + residual progressive input; DDPM++ drops both."""
  model = _load(name).model
  assert model.fir and model.progressive_input == 'residual'
  if not name.startswith('ve/'):  # DDPM++ exists for VP and sub-VP only.
    ddpmpp = _load(name.replace('ncsnpp', 'ddpmpp')).model
    assert not ddpmpp.fir and ddpmpp.progressive_input == 'none'


@pytest.mark.parametrize('name', [n for n in EXPERIMENTS if n.startswith('subvp/')])
def test_subvp_is_vp_with_the_sde_swapped(name):
  """The paper trains sub-VP models with the same settings as their VP counterparts."""
  subvp = _load(name).to_dict()
  vp = _load(name.replace('subvp/', 'vp/')).to_dict()
  assert subvp['training'].pop('sde') == 'subvpsde'
  assert vp['training'].pop('sde') == 'vpsde'
  assert subvp == vp


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_evaluated_checkpoints_exist(name):
  """eval.end_ckpt (in units of snapshot_freq) is not past the end of training."""
  config = _load(name)
  assert config.eval.end_ckpt * config.training.snapshot_freq <= config.training.n_iters


# --------------------------------------------------------------------------------- rules
BAD_VALUES = [
    ('training.sde', 'vesd'), ('model.name', 'unet'), ('data.dataset', 'IMAGENET'),
    ('sampling.predictor', 'heun'), ('sampling.corrector', 'hmc'), ('sampling.method', 'ddim'),
    ('data.image_size', 48), ('data.image_size', 4), ('data.num_channels', 1),
    ('model.attn_resolutions', (7,)), ('model.ch_mult', (1, 2, 2, 2, 2, 2, 2)),
    ('model.ch_mult', ()), ('training.batch_size', 12), ('eval.batch_size', 100),
    ('training.n_snapshot_samples', 4), ('model.ema_rate', 1.), ('optim.lr', 0.),
    ('optim.warmup', -1), ('training.snapshot_freq', 0), ('training.n_iters', 0),
    ('model.progressive', 'input_skip'), ('model.progressive_input', 'output_skip'),
    ('model.progressive_combine', 'concat'), ('model.resblock_type', 'resnet'),
    ('model.nonlinearity', 'gelu'), ('model.normalization', 'BatchNorm'),
    ('model.attention_type', 'linear'), ('optim.optimizer', 'SGD'), ('optim.beta2', 1.),
    ('eval.end_ckpt', 0), ('eval.begin_ckpt', 0), ('eval.bpd_dataset', 'val'),
    ('model.embedding_type', 'positional'), ('training.eps', 0.), ('sampling.eps', 1.5),
    ('model.dropout', 1.), ('model.sigma_max', 0.001), ('sampling.snr', 0.),
    ('model.num_scales', 1), ('model.conv_size', 4), ('model.fourier_scale', 0.),
    ('model.fir_kernel', (1, -3, 3, 1)), ('sampling.rtol', 0.), ('sampling.num_steps', -1),
    ('training.max_to_keep', -1), ('optim.eps', 0.), ('model.nf', 0),
    ('model.num_classes', -1), ('training.label_dropout', 1.5), ('sampling.cfg_scale', -1.5),
    ('sampling.batch_size', 12), ('classifier.name', 'resnet'), ('classifier.n_iters', 0),
    ('training.float32_below_std', -0.1), ('training.weighting', 'g2'),
    ('model.reverse_variance', 'tilde'),
]


@pytest.mark.parametrize('field,value', BAD_VALUES)
def test_each_rule_names_its_field(field, value):
  """A bad value of one field fails validation with a message naming that field and value."""
  config = default.get_config()
  section, key = field.split('.')
  config[section][key] = value
  with pytest.raises(ValueError) as error:
    validate_config(config, num_devices=8)
  assert f'config.{field}=' in str(error.value)
  assert repr(config[section][key]) in str(error.value)


COMBINATIONS = [
    # sub-VP has no discrete-time loss.
    ({'training.sde': 'subvpsde', 'training.continuous': False,
      'model.embedding_type': 'positional', 'model.scale_by_sigma': False},
     'training.continuous'),
    # Likelihood weighting exists only for the continuous loss.
    ({'training.continuous': False, 'training.weighting': 'likelihood',
      'model.embedding_type': 'positional'}, 'training.weighting'),
    # The SMLD ladder has no variational bound; the bound is a sum over the dimensions.
    ({'training.continuous': False, 'training.weighting': 'elbo',
      'model.embedding_type': 'positional'}, 'training.weighting'),
    ({'training.weighting': 'elbo', 'training.reduce_mean': True}, 'training.reduce_mean'),
    # The Fourier embedding reads sigma(t), which discrete training does not pass.
    ({'training.continuous': False}, 'model.embedding_type'),
    # VP scores are divided by the marginal std already.
    ({'training.sde': 'vpsde', 'model.embedding_type': 'positional'}, 'model.scale_by_sigma'),
    # Ancestral sampling is stochastic: it has no probability-flow form.
    ({'sampling.predictor': 'ancestral_sampling', 'sampling.probability_flow': True},
     'sampling.probability_flow'),
    # optax's Adam has no decoupled weight decay.
    ({'optim.weight_decay': 0.01}, 'optim.weight_decay'),
    # A PC sampler with neither step does nothing.
    ({'sampling.predictor': 'none', 'sampling.corrector': 'none'}, 'sampling.predictor'),
    # Discrete DDPM uses beta_i = beta_max / N at the last step: it must stay below 1.
    ({'training.sde': 'vpsde', 'training.continuous': False, 'model.scale_by_sigma': False,
      'model.embedding_type': 'positional', 'model.beta_max': 1500.}, 'model.beta_max'),
    ({'training.sde': 'vpsde', 'model.scale_by_sigma': False,
      'model.embedding_type': 'positional', 'model.beta_min': 30.}, 'model.beta_max'),
    # LSUN needs a scene category.
    ({'data.dataset': 'LSUN'}, 'data.category'),
    # Guidance needs something that conditions on a class.
    ({'sampling.cfg_scale': 1.}, 'sampling.cfg_scale'),
    ({'sampling.class_labels': (3,)}, 'sampling.class_labels'),
    ({'model.num_classes': 10, 'sampling.class_labels': (10,)}, 'sampling.class_labels'),
    ({'model.num_classes': 10, 'model.conditional': False}, 'model.conditional'),
]


@pytest.mark.parametrize('overrides,field', COMBINATIONS)
def test_illegal_combinations_are_reported(overrides, field):
  """Combinations that have no loss, sampler or network input in the reference are refused."""
  config = default.get_config()
  for path, value in overrides.items():
    section, key = path.split('.')
    config[section][key] = value
  with pytest.raises(ValueError, match=f'config.{field}='):
    validate_config(config, num_devices=8)


def test_all_problems_are_reported_at_once():
  """Several bad fields give one error with one line per problem, not just the first."""
  config = default.get_config()
  config.training.batch_size = 12
  config.model.ema_rate = 1.5
  config.sampling.method = 'ddim'
  with pytest.raises(ValueError) as error:
    validate_config(config, num_devices=8)
  message = str(error.value)
  assert message.startswith('3 problem(s)')
  for field in ('training.batch_size', 'model.ema_rate', 'sampling.method'):
    assert f'config.{field}=' in message


def test_batch_message_suggests_multiples():
  """A batch that does not split names the device count and the nearest multiples."""
  config = default.get_config()
  config.training.batch_size = 100
  with pytest.raises(ValueError, match=r'over 8 devices.*e\.g\. 96 or 104'):
    validate_config(config, num_devices=8)


def test_missing_and_unknown_fields():
  """A field the code reads that is missing, and a typo'd field, are both named with the fix."""
  config = default.get_config()
  del config.model['fir']
  config.model.ema = 0.999
  with pytest.raises(ValueError) as error:
    validate_config(config, num_devices=8)
  message = str(error.value)
  assert 'config.model.fir is missing' in message
  assert 'config.model.ema is not a field' in message and 'config.model.ema_rate' in message


@pytest.mark.parametrize('num_devices,num_hosts', [(0, 1), (8, 3), (8, 0)])
def test_device_and_host_counts_are_checked(num_devices, num_hosts):
  """Hosts must split the devices evenly; the error names both counts."""
  with pytest.raises(ValueError, match='num_hosts'):
    validate_config(default.get_config(), num_devices=num_devices, num_hosts=num_hosts)


def test_multi_host_batches():
  """A batch that splits over 16 devices on 2 hosts is valid; one that does not is refused."""
  config = default.get_config()
  config.training.batch_size = 32
  validate_config(config, num_devices=16, num_hosts=2)
  config.training.batch_size = 40
  with pytest.raises(ValueError, match='config.training.batch_size=40'):
    validate_config(config, num_devices=16, num_hosts=2)


def test_names_come_from_the_registry(monkeypatch):
  """With a registry present, its names are the ones accepted (case-insensitively)."""
  sdes = Registry('SDE')
  sdes.register('VPSDE')(object)
  fake = types.ModuleType('score_sde.sde_lib')
  fake.SDES = sdes
  monkeypatch.setitem(sys.modules, 'score_sde.sde_lib', fake)
  assert validation.registered_names('score_sde.sde_lib', 'SDES') == ('vpsde',)
  with pytest.raises(ValueError, match="config.training.sde='vesde' is not registered; use one "
                                       "of vpsde"):
    validate_config(default.get_config(), num_devices=8)


def test_legal_variants_pass():
  """Settings the code supports are not refused: AdamW with decay, sub-VP ancestral sampling."""
  config = default.get_config()
  config.optim.optimizer = 'AdamW'
  config.optim.weight_decay = 0.01
  validate_config(config, num_devices=8)
  config = _load('subvp/cifar10_ddpmpp_continuous')
  config.sampling.predictor = 'ancestral_sampling'
  validate_config(config, num_devices=8)


@pytest.mark.parametrize('flag,replacement', [(True, 'likelihood'), (False, 'dsm')])
def test_a_config_file_with_likelihood_weighting_names_training_weighting(tmp_path, flag,
                                                                        replacement):
  """Protects users whose config files set training.likelihood_weighting: validation reports that
  one field, once, with training.weighting set to the value that means the same as the fix."""
  import importlib.util
  path = tmp_path / 'mine.py'
  path.write_text('from score_sde.configs import default\n\n\ndef get_config():\n'
                  '  config = default.get_config()\n'
                  f'  config.training.likelihood_weighting = {flag}\n  return config\n')
  spec = importlib.util.spec_from_file_location('_legacy_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with pytest.raises(ValueError) as error:
    validate_config(module.get_config(), num_devices=8)
  message = str(error.value)
  assert message.startswith('1 problem(s)'), message
  assert 'config.training.likelihood_weighting is not a field the code reads' in message
  assert f"set config.training.weighting={replacement!r}" in message


@pytest.mark.parametrize('flag,replacement', [(True, 'likelihood'), (False, 'dsm')])
def test_a_recorded_likelihood_weighting_loads_as_training_weighting(tmp_path, flag,
                                                                     replacement):
  """Protects runs whose config.json records training.likelihood_weighting: the run loads with
  training.weighting meaning the same ('likelihood' for true, 'dsm' for false), no leftover
  field, and a config that validates."""
  import json
  from score_sde.configs import record
  record.save_run_config(default.get_config(), str(tmp_path))
  path = tmp_path / record.RUN_CONFIG
  recorded = json.loads(path.read_text())
  del recorded['training.weighting']
  recorded['training.likelihood_weighting'] = flag
  path.write_text(json.dumps(recorded))
  loaded = record.load_run_config(str(tmp_path))
  assert loaded.training.weighting == replacement
  assert 'likelihood_weighting' not in loaded.training
  validate_config(loaded, num_devices=8)


# --------------------------------------------------------------------------------- entries
def _entries():
  """Every registered SDE, model and dataset with the field that names it."""
  from score_sde import data, models, sde_lib
  return ([('training.sde', n, sde_lib.SDES.get(n)) for n in sde_lib.SDES]
          + [('model.name', n, models.MODELS.get(n)) for n in models.MODELS]
          + [('data.dataset', n, data.DATASETS.get(n)) for n in data.DATASETS])


@pytest.mark.parametrize('continuous', [True, False])
def test_every_registered_entry_reports_problems_as_fields_and_fixes(continuous):
  """Protects the contract validation reads: each registered SDE, model and dataset answers
  config_problems(config) with (field, fix) pairs whose field is one the code reads and whose
  fix is a sentence, for a config that names it (in continuous and discrete time)."""
  fields = set(_leaves(default.get_config()))
  for field, name, entry in _entries():
    config = default.get_config()
    config.training.continuous = continuous
    section, key = field.split('.')
    config[section][key] = name
    for problem in entry.config_problems(config):
      assert isinstance(problem, tuple) and len(problem) == 2, (name, problem)
      assert problem[0] in fields and isinstance(problem[1], str) and problem[1], (name, problem)


def _leaves(config, prefix=''):
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def test_a_registered_datasets_own_requirements_reach_validation(monkeypatch):
  """Protects the dataset seam: validation has no table of datasets; a dataset registered with
  a channel count and a check of its own is refused through them, worded like every problem."""
  from score_sde import data
  from score_sde.data import sources
  datasets = Registry('dataset')
  monkeypatch.setattr(data, 'DATASETS', datasets)
  monkeypatch.setattr(sources, 'DATASETS', datasets)

  def category_problems(config):
    return [] if config.data.category else [('data.category', 'TOY reads one category; name it')]

  sources.register_dataset('TOY', num_channels=1, problems=category_problems)(lambda c, s: None)
  config = default.get_config()
  config.data.dataset = 'toy'
  problems = validation.config_problems(config, num_devices=8)
  assert ("config.data.num_channels=3 is invalid: toy images have 1 channel(s); set it to 1."
          in problems)
  assert "config.data.category='' is invalid: TOY reads one category; name it." in problems
  config.data.update(num_channels=1, category='rocks')
  assert validation.config_problems(config, num_devices=8) == []


def test_a_registered_networks_own_problems_reach_validation(monkeypatch):
  """Protects the model seam: validation names no network; the registered class of
  config.model.name reports what the config asks of it that it does not have."""
  from score_sde import models

  class Toy:
    @classmethod
    def config_problems(cls, config):
      return [] if config.model.nf == 8 else [('model.nf', f'Toy has nf=8, not {config.model.nf}')]

  registry = Registry('model')
  registry.register('toy')(Toy)
  monkeypatch.setattr(models, 'MODELS', registry)
  config = default.get_config()
  config.model.name = 'toy'
  assert validation.config_problems(config, num_devices=8) == [
      'config.model.nf=128 is invalid: Toy has nf=8, not 128.']


def test_discrete_training_lists_the_sdes_with_a_discrete_model():
  """An SDE without a discrete model (sub-VP) refuses discrete-time training, naming those that
  have one (read off the registry) and the fix; those train discretely."""
  config = default.get_config()
  config.training.update(sde='subvpsde', continuous=False)
  config.model.update(embedding_type='positional', scale_by_sigma=False)
  assert validation.config_problems(config, num_devices=8) == [
      "config.training.continuous=False is invalid: discrete-time losses exist only for vesde "
      "(SMLD) and vpsde (DDPM), not 'subvpsde'; set training.continuous=True."]
  for sde in ('vesde', 'vpsde'):
    config.training.sde = sde
    assert validation.config_problems(config, num_devices=8) == [], sde


def test_the_bound_checks_name_the_config_field_or_the_argument():
  """Protects the one set of variational-bound rules that validation and Pipeline.elbo share:
  the config's fields are named as fields; the arguments given in their place as arguments."""
  config = default.get_config()
  config.training.update(sde='vpsde', continuous=False)
  config.model.update(embedding_type='positional', scale_by_sigma=False, num_scales=25)
  assert validation.elbo_problems(config, 25, 'log') == [
      "time_sampling='log' is not supported; use one of 'importance', 'uniform'.",
      'num_samples=25 is invalid: the chain of model.num_scales=25 steps has 24 denoising '
      'terms; draw at most 24, or use 0 for their exact sum.']
  config.eval.elbo_samples = 30
  assert validation.elbo_problems(config)[0].startswith('config.eval.elbo_samples=30 is invalid')
  assert validation.elbo_problems(config, of_model=False) == []
  assert validation.elbo_problems(config, num_samples=True)[0].startswith(
      'num_samples=True is invalid: use a positive number of draws')
