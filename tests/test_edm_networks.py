"""EDM's DDPM++ and NCSN++ (NVlabs/edm ``SongUNet``) as ``ncsnpp``, number for number, from EDM's
own stored outputs (no torch).

tests/fixtures/edm_ddpmpp.pkl and edm_ncsnpp_cond.pkl are small ``EDMPrecond(SongUNet)``
networks built, randomised and pickled as ``network-snapshot-*.pkl`` by EDM's code
(benchmarks/make_edm_network_fixtures.py), and tests/fixtures/edm_networks.npz holds their
inputs and outputs and the parameter counts of EDM's full-size CIFAR-10 networks. Here the
pickles are read without torch (``conversion.edm_checkpoints``) and ``ncsnpp`` with the
converted weights must give EDM's inner network ``F(c_in x; c_noise)``: this protects the
options EDM's networks need (``embed_log_sigma``, ``class_embedding``) and every detail of the
architecture they share (embedding order and frequencies, norms, resampling, the residual
encoder, attention's fused ``qkv``, the class table and its null row).
"""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import models
from score_sde.configs import default, validation
from score_sde.conversion import edm_checkpoints as ec, edm_pickles
from score_sde.io import checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
NETWORKS = ('edm_ddpmpp', 'edm_ncsnpp_cond')
REL_TOL = 1e-5  # Of the output's range, float32 throughout (as tests/test_parity.py).


@pytest.fixture(scope='module')
def fixture():
  data = np.load(os.path.join(FIXTURES, 'edm_networks.npz'))
  return {k: data[k] for k in data.files}


@pytest.fixture(scope='module')
def converted():
  """name -> (config, params) of each fixture network, converted from its pickle."""
  out = {}
  for name in NETWORKS:
    snapshot = edm_pickles.read_snapshot(os.path.join(FIXTURES, f'{name}.pkl'))
    config, _ = ec.snapshot_config(snapshot, 'CIFAR10')
    out[name] = config, ec.convert_params(snapshot['ema'].modules['model'], config)
  return out


def _inner(config, params, fixture, name):
  """``ncsnpp`` on EDM's stored network input ``c_in x`` and label ``c_noise``."""
  kwargs = {}
  if config.model.num_classes:
    kwargs['class_labels'] = jnp.asarray(fixture[f'{name}/class_labels'])
  apply = jax.jit(models.get_model(config).apply)
  return apply({'params': params}, fixture[f'{name}/net_input'], fixture[f'{name}/c_noise'],
               **kwargs)


def _error(actual, expected) -> float:
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  return float(np.abs(actual - expected).max() / np.ptp(expected))


@pytest.mark.parametrize('name', NETWORKS)
def test_network_equals_edm(name, fixture, converted):
  """``ncsnpp`` with the converted weights gives EDM's ``SongUNet`` output on EDM's inputs:
  DDPM++ (positional embedding of a negative label, plain resampling) and NCSN++ (Fourier
  embedding of c_noise itself, residual encoder, FIR resampling, 3 classes and the null label)."""
  provenance = json.loads(str(fixture['provenance']))
  assert provenance['edm_commit'] and provenance['torch']
  config, params = converted[name]
  # EDM's count less the dropped augmentation map, plus the Fourier frequencies (EDM's buffer).
  edm = provenance['networks'][name]
  augment = edm.get('augment_dim', 0) * edm['model_channels'] * edm['channel_mult_noise']
  freqs = config.model.nf if config.model.embedding_type == 'fourier' else 0
  assert models.count_params(params) == int(fixture[f'{name}/num_params']) - augment + freqs
  err = _error(_inner(config, params, fixture, name), fixture[f'{name}/inner'])
  assert err < REL_TOL, f'{name}: max error {err:.2e} of the output range'


def _swap_query_key(params):
  attn = dict(params['AttnBlockpp_0'])
  attn['NIN_0'], attn['NIN_1'] = attn['NIN_1'], attn['NIN_0']
  return {**params, 'AttnBlockpp_0': attn}


def _null_row_of_class_0(params):
  table = np.array(params['ClassEmbed']['embedding'])
  table[-1] = table[0]
  return {**params, 'ClassEmbed': {'embedding': table}}


@pytest.mark.parametrize('name,perturb', [
    ('edm_ddpmpp', _swap_query_key), ('edm_ncsnpp_cond', _swap_query_key),
    ('edm_ncsnpp_cond', _null_row_of_class_0)])
def test_the_comparison_bites(name, perturb, fixture, converted):
  """One misplaced converted tensor (query and key of one attention block swapped, or the
  null label's row replaced) moves the output far past the tolerance: the fixtures constrain
  each of them."""
  config, params = converted[name]
  err = _error(_inner(config, perturb(params), fixture, name), fixture[f'{name}/inner'])
  assert err > 100 * REL_TOL, f'{name}: {perturb.__name__} changed the output by only {err:.2e}'


def test_fourier_embedding_of_the_label_itself_is_of_log_sigma_at_exp(converted):
  """``embed_log_sigma=False`` at label ``c`` is the released ``embed_log_sigma=True`` at
  ``sigma = exp(c)``, with the same parameters: the option changes only what is embedded."""
  config, params = converted['edm_ncsnpp_cond']
  model = models.get_model(config)
  released = model.clone(embed_log_sigma=True)
  x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  label, classes = jnp.asarray([-1.2, 0.1, 0.9]), jnp.asarray([0, 1, 3])
  ours = jax.jit(model.apply)({'params': params}, x, label, class_labels=classes)
  theirs = jax.jit(released.apply)({'params': params}, x, jnp.exp(label), class_labels=classes)
  assert _error(ours, theirs) < REL_TOL


def _cifar10_config(arch_kwargs, label_dim):
  """The converted config of EDM's CIFAR-10 network ``arch_kwargs`` (EDM's train.py)."""
  unet = edm_pickles.PersistentObject('SongUNet', {'_init_kwargs': dict(
      img_resolution=32, in_channels=3, out_channels=3, label_dim=label_dim, dropout=0.13,
      **arch_kwargs)})
  wrapper = edm_pickles.PersistentObject('EDMPrecond', {'_modules': {'model': unet}, 'sigma_data': 0.5})
  config, _ = ec.snapshot_config({'ema': wrapper, 'dataset_kwargs': {
      'path': 'datasets/cifar10-32x32.zip'}})
  return config


@pytest.mark.parametrize('arch', ['ddpmpp', 'ncsnpp'])
@pytest.mark.parametrize('label_dim', [0, 10])
def test_parameter_counts_equal_edm(arch, label_dim, fixture):
  """EDM's full-size CIFAR-10 DDPM++ and NCSN++, unconditional and 10-class, have as many
  parameters as EDM's own SongUNet counts (printed by its code), the Fourier frequencies
  (an EDM buffer) included; the augmentation labels the conversion drops are
  ``9 model_channels channel_mult_noise`` more. Counted with ``jax.eval_shape``. The converted
  network is that of the matching configs/edm/ file, whose --config then serves a converted
  workdir."""
  archs = json.loads(str(fixture['provenance']))['cifar10_archs']
  config = _cifar10_config(archs[arch], label_dim)
  validation.validate_config(config, num_devices=1)
  cond = 'cond' if label_dim else 'uncond'
  edm = int(fixture[f'cifar10/{arch}_{cond}'])
  params = models.abstract_params(config)
  ours = models.count_params(params)
  assert ours == edm + int(fixture[f'cifar10/{arch}_buffer_freqs'])
  recipe = importlib.import_module(f'score_sde.configs.edm.cifar10_{arch}_{cond}').get_config()
  assert checkpoint.leaf_specs(models.abstract_params(recipe)) == checkpoint.leaf_specs(params)
  noise_channels = archs[arch]['model_channels'] * archs[arch]['channel_mult_noise']
  assert int(fixture[f'cifar10/{arch}_{cond}_augment']) - edm == 9 * noise_channels


def _problems(**model):
  config = default.get_config()
  config.model.update(model)
  return validation.config_problems(config, num_devices=1)


def test_config_checks_of_the_edm_options():
  """A preconditioned network's Fourier embedding must read c_noise as it is (its log would be
  of a negative number); continuous VE training may then use the positional embedding; only
  ncsnpp adds the class embedding to the noise embedding; class_embedding has two values."""
  edm = dict(parameterization='edm', scale_by_sigma=False)
  assert any('model.embed_log_sigma' in p for p in _problems(**edm))
  assert not _problems(**edm, embed_log_sigma=False)
  assert not _problems(**edm, embedding_type='positional')
  assert any("config.model.embedding_type='positional'" in p
             for p in _problems(embedding_type='positional'))
  assert not _problems(num_classes=10, class_embedding='noise')
  assert any('config.model.class_embedding' in p and 'ncsnpp' in p
             for p in _problems(name='ddpm', class_embedding='noise', scale_by_sigma=False))
  assert any("class_embedding='label'" in p for p in _problems(class_embedding='label'))
