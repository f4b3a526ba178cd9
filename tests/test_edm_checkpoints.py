"""EDM's network pickles (score_sde.conversion.edm_checkpoints): read as data without running
anything from them, mapped to a config whose SDE and preconditioning are EDM's, and converted
into a workdir whose denoiser is EDM's, number for number (tests/fixtures/edm_*.pkl, pickled by
EDM's own code as its training loop saves ``network-snapshot-*.pkl``; no torch here)."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import score_sde
from score_sde import sde_lib
from score_sde.common import errors
from score_sde.configs import validation
from score_sde.conversion import edm_checkpoints as ec, edm_pickles, torch_files
from score_sde.models import parameterization, utils as mutils
from tests import crafted_pth as craft

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
REL_TOL = 1e-5  # Of the output's range, as tests/test_parity.py.


def _fixture_path(name):
  return os.path.join(FIXTURES, f'{name}.pkl')


@pytest.fixture(scope='module')
def outputs():
  data = np.load(os.path.join(FIXTURES, 'edm_networks.npz'))
  return {k: data[k] for k in data.files}


def test_snapshot_reads_as_data():
  """The snapshot's dict as EDM's training loop pickles it: the EMA network, the loss, the
  augmentation pipe and the dataset's keywords, as class names and states, tensors as numpy."""
  snapshot = edm_pickles.read_snapshot(_fixture_path('edm_ncsnpp_cond'))
  assert sorted(snapshot) == ['augment_pipe', 'dataset_kwargs', 'ema', 'loss_fn']
  wrapper = snapshot['ema']
  assert wrapper.class_name == 'EDMPrecond' and wrapper.state['sigma_data'] == 0.5
  assert snapshot['loss_fn'].class_name == 'EDMLoss'
  assert snapshot['loss_fn'].state['P_mean'] == -1.2
  assert snapshot['augment_pipe'].class_name == 'AugmentPipe'
  assert snapshot['dataset_kwargs']['resolution'] == 16
  unet = wrapper.modules['model']
  assert unet.class_name == 'SongUNet' and unet.init_kwargs['encoder_type'] == 'residual'
  assert unet.modules['enc'].class_name == 'ModuleDict'
  qkv = unet.modules['enc'].modules['8x8_block0'].modules['qkv'].tensors['weight']
  assert isinstance(qkv, np.ndarray) and qkv.dtype == np.float32 and qkv.shape == (24, 8, 1, 1)


def test_config_of_an_edm_snapshot():
  """EDMPrecond around EDM's NCSN++ becomes ncsnpp with EDM's options and preconditioning on a
  VE SDE over EDM's sampling range, sampled by EDM's Heun sampler (18 levels, rho 7)."""
  config, notes = ec.snapshot_config(edm_pickles.read_snapshot(_fixture_path('edm_ncsnpp_cond')),
                                     'CIFAR10')
  validation.validate_config(config, num_devices=1)
  m, t, s = config.model, config.training, config.sampling
  assert (m.name, m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions) == (
      'ncsnpp', 4, (1, 2, 2), 1, (8,))
  assert (m.embedding_type, m.embed_log_sigma, m.progressive_input, m.fir, m.fir_kernel) == (
      'fourier', False, 'residual', True, (1, 3, 3, 1))
  assert (m.num_classes, m.class_embedding, m.parameterization, m.sigma_data) == (
      3, 'noise', 'edm', 0.5)
  assert (t.sde, m.sigma_min, m.sigma_max, t.continuous, t.weighting) == (
      'vesde', 0.002, 80., True, 'edm')
  assert config.data.centered and not m.scale_by_sigma and t.label_dropout == 0.1
  assert (s.method, s.schedule, s.rho, s.num_steps) == ('heun', 'karras', 7., 18)
  assert len(notes) == 1 and 'map_augment' in notes[0]


def _snapshot(wrapper='EDMPrecond', path='datasets/cifar10-32x32.zip', unet='SongUNet',
              state=(('sigma_data', 0.5),), **unet_kwargs):
  """A snapshot as ``read_snapshot`` gives it, of a full-size network without its tensors."""
  model = edm_pickles.PersistentObject(unet, {'_init_kwargs': dict(
      img_resolution=32, in_channels=3, out_channels=3, **unet_kwargs)})
  return {'ema': edm_pickles.PersistentObject(wrapper, {'_modules': {'model': model}, **dict(state)}),
          'dataset_kwargs': {'path': path}}


def test_vp_and_ve_preconditionings_map_to_their_sdes():
  """VPPrecond's noise levels are those of the VP SDE written (``sigma(t) = std / alpha =
  sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)``, EDM's formula), VEPrecond's those of the VE
  SDE from its sigma_min to its sigma_max."""
  vp = dict(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5)
  config, _ = ec.snapshot_config(_snapshot('VPPrecond', state=vp))
  validation.validate_config(config, num_devices=1)
  assert (config.model.parameterization, config.training.sde) == ('edm_vp', 'vpsde')
  assert config.training.eps == config.sampling.eps == 1e-5
  t = jnp.asarray([1e-5, 0.1, 0.5, 1.])
  alpha, std = sde_lib.get_sde(config).marginal_coeffs(t)
  edm = np.sqrt(np.expm1(0.5 * 19.9 * np.asarray(t, np.float64) ** 2 + 0.1 * np.asarray(t)))
  np.testing.assert_allclose(std / alpha, edm, rtol=1e-4)
  config, _ = ec.snapshot_config(_snapshot('VEPrecond', state=dict(sigma_min=0.02,
                                                                   sigma_max=100)))
  validation.validate_config(config, num_devices=1)
  assert config.model.parameterization == 'edm_ve'
  _, std = sde_lib.get_sde(config).marginal_coeffs(jnp.asarray([0., 1.]))
  np.testing.assert_allclose(std, [0.02, 100.], rtol=1e-5)


@pytest.mark.parametrize('snapshot,match', [
    (_snapshot(unet='DhariwalUNet'), 'DhariwalUNet'),
    (_snapshot(wrapper='iDDPMPrecond'), 'iDDPMPrecond'),
    (_snapshot(encoder_type='skip'), "encoder_type='skip'"),
    (_snapshot(resample_filter=[1, 2, 1]), r'resample_filter=\[1, 2, 1\]'),
    (_snapshot(channel_mult_emb=2), 'channel_mult_emb=2'),
    (_snapshot(embedding_type='fourier'), "'fourier' with channel_mult_noise=1"),
    (_snapshot('VPPrecond', state=dict(beta_d=19.9, beta_min=0.1, M=500, epsilon_t=1e-5)),
     'M=500'),
])
def test_networks_ncsnpp_does_not_hold_are_refused(snapshot, match):
  """EDM's ADM network, its iDDPM preconditioning and SongUNet options that ncsnpp does not
  have are refused with a message naming the option and what is read."""
  with pytest.raises(ec.UnsupportedNetworkError, match=match) as err:
    ec.snapshot_config(snapshot)
  assert isinstance(err.value, errors.UserError)


def test_a_dataset_not_recognised_must_be_named():
  """A snapshot of another archive than EDM's CIFAR-10 asks for --dataset."""
  with pytest.raises(errors.ConfigError, match='--dataset'):
    ec.snapshot_config(_snapshot(path='datasets/ffhq-64x64.zip'))
  config, _ = ec.snapshot_config(_snapshot(path='datasets/ffhq-64x64.zip'), 'FFHQ')
  assert config.data.dataset == 'FFHQ'


def _refused(path, match):
  with pytest.raises(torch_files.CheckpointFileError, match=match) as err:
    edm_pickles.read_snapshot(path)
  assert str(path) in str(err.value) and '\n' not in str(err.value)


@pytest.mark.parametrize('module,name', [('posix', 'system'), ('os', 'system'),
                                         ('builtins', 'eval')])
def test_code_running_pickles_are_refused(tmp_path, module, name):
  """A pickle calling os.system or eval is refused, naming the global, and nothing runs."""
  marker = tmp_path / 'ran'
  command = f'touch {marker}' if name == 'system' else f'open({str(marker)!r}, "w")'
  path = tmp_path / 'network-snapshot-000000.pkl'
  path.write_bytes(craft.pickle_bytes({'ema': craft.Call(craft.Global(module, name),
                                                         (command,))}))
  _refused(path, f'{module}.{name} in the checkpoint is neither a tensor')
  assert not marker.exists()


def test_the_module_source_of_a_persistent_object_never_runs(tmp_path):
  """EDM's persistence pickles module source that its own reader executes: here it is never
  read. A crafted EDMPrecond whose source would write a file is read as data only, and its
  conversion is refused (it holds no SongUNet); the file is never written."""
  marker = tmp_path / 'ran'
  meta = {'type': 'class', 'version': 6, 'class_name': 'EDMPrecond',
          'module_src': f'open({str(marker)!r}, "w")\nclass EDMPrecond: pass\n',
          'state': {'_init_kwargs': {}, '_modules': {}}}
  path = tmp_path / 'edm.pkl'
  path.write_bytes(craft.pickle_bytes({'ema': craft.Call(
      craft.Global('torch_utils.persistence', '_reconstruct_persistent_obj'), (meta,))}))
  snapshot = edm_pickles.read_snapshot(path)
  assert snapshot['ema'].class_name == 'EDMPrecond' and not marker.exists()
  with pytest.raises(ec.UnsupportedNetworkError, match='only SongUNet'):
    ec.convert(path, tmp_path / 'run', dataset='CIFAR10')
  assert not marker.exists() and not (tmp_path / 'run').exists()


def test_a_storage_record_of_another_byte_order_is_refused(tmp_path):
  """The tensors inside are torch's pre-1.6 storage records, each checked; one claiming
  big-endian values (one byte of the fixture changed) is refused."""
  data = open(_fixture_path('edm_ddpmpp'), 'rb').read()
  flag = b'little_endianq\x02\x88'  # NEWTRUE
  assert flag in data
  path = tmp_path / 'edm.pkl'
  path.write_bytes(data.replace(flag, flag[:-1] + b'\x89', 1))  # NEWFALSE
  _refused(path, 'not little-endian')


def test_converted_workdir_denoises_as_edm(tmp_path, outputs):
  """The converted workdir loads with ``score_sde.load``; its network under the config's
  preconditioning is EDM's denoiser ``D(x; sigma)`` (EDMPrecond's stored output, the null label
  included); the step is not converted twice."""
  name = 'edm_ncsnpp_cond'
  path = tmp_path / 'network-snapshot-000123.pkl'
  shutil.copy(_fixture_path(name), path)
  step = ec.convert(path, tmp_path / 'run', dataset='CIFAR10')
  pipe = score_sde.load(str(tmp_path / 'run'))
  assert step == pipe.step == pipe.config.training.snapshot_freq
  recorded = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert recorded['model.parameterization'] == 'edm' and recorded['eval.begin_ckpt'] == 1
  param = parameterization.config_parameterization(pipe.config, pipe.sde)
  denoiser = parameterization.sigma_denoiser_fn(param, mutils.get_model_fn(
      pipe.model, pipe.params, class_labels=jnp.asarray(outputs[f'{name}/class_labels'])))
  denoised = np.asarray(jax.jit(denoiser)(jnp.asarray(outputs[f'{name}/x']),
                                          jnp.asarray(outputs[f'{name}/sigma'])))
  expected = outputs[f'{name}/denoised']
  err = np.abs(denoised - expected).max() / np.ptp(expected)
  assert err < REL_TOL, f'max error {err:.2e} of the output range'
  with pytest.raises(errors.WorkdirError, match='exists'):
    ec.convert(path, tmp_path / 'run', dataset='CIFAR10')


def test_converted_workdir_samples(tmp_path):
  """``Pipeline.sample`` (what ``--mode sample`` runs) draws images from a converted
  workdir with the config's sampler, EDM's Heun on the Karras grid."""
  ec.convert(_fixture_path('edm_ddpmpp'), tmp_path / 'run', dataset='CIFAR10', step=100000)
  pipe = score_sde.load(str(tmp_path / 'run'))
  assert pipe.step == 100000 and pipe.config.eval.begin_ckpt == 2
  images = pipe.sample(2, num_steps=3)
  assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all() and np.ptp(images) > 0


def test_converter_command_refuses_a_crafted_file_with_one_line(tmp_path):
  """The command line on a pickle that would run code: exit status 2, one line on stderr
  naming the file and the global, nothing written."""
  path = tmp_path / 'evil.pkl'
  path.write_bytes(craft.pickle_bytes(craft.Call(craft.Global('os', 'system'), ('true',))))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, '-m', 'score_sde.conversion.edm_checkpoints', '--checkpoint', str(path),
       '--workdir', str(tmp_path / 'run')],
      capture_output=True, text=True, cwd=root, timeout=600,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == ec.USER_ERROR_STATUS, result.stderr[-2000:]
  assert len(lines) == 1 and str(path) in lines[0] and 'os.system' in lines[0], lines
  assert not (tmp_path / 'run').exists()
