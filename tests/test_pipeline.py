"""score_sde.load(workdir): one call from a trained run (or a converted released checkpoint) to
samples, inpainting, bits/dim and latents, on 8 fake devices."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

import score_sde
from score_sde import likelihood, pipeline, sampling
from score_sde.common import errors
from score_sde.configs import record
from score_sde.conversion import released_checkpoints as rc
from score_sde.data import embedded


@pytest.fixture(scope='module')
def run(trained_smoke_run):
  """A 4-step smoke run (conftest): checkpoints at steps 2 and 4 and its config.json."""
  return trained_smoke_run


@pytest.fixture(scope='module')
def pipe(run):
  return score_sde.load(run[1])


def _digits(n):
  """uint8 (n, 16, 16, 1): held-out embedded digits at the smoke config's size."""
  from score_sde.configs import smoke
  source = embedded.mnist_embedded(smoke.get_config().data, 'test')
  return source.get(np.arange(n))['image']


def test_training_records_its_config_and_load_rebuilds_it(run, pipe):
  """config.json holds the run's config; load() rebuilds it equal (tuples included) and takes
  the newest checkpoint's EMA weights."""
  config, workdir = run
  assert os.path.isfile(os.path.join(workdir, record.RUN_CONFIG))
  assert pipe.config == config
  assert pipe.step == 4 and pipe.shape == (16, 16, 1)
  assert 'step 4' in repr(pipe)


def test_sample_is_seeded_and_any_batch_size_splits(pipe):
  """The same seed gives the same images; a batch that does not split over the 8 devices is
  padded, and its images are the first ones of the padded batch."""
  eight = pipe.sample(8, seed=3)
  three = pipe.sample(3, seed=3)
  assert three.shape == (3, 16, 16, 1) and three.dtype == np.float32
  assert three.min() >= 0. and three.max() <= 1.
  np.testing.assert_array_equal(three, eight[:3])
  assert not np.array_equal(pipe.sample(3, seed=4), three)


@pytest.mark.parametrize('method, field, nfe_per_step, final', [
    ('dpm_solver', 'num_steps', 1, 0),  # One evaluation a step; the step to sigma = 0 is free.
    ('unipc', 'num_steps', 1, 0),
    ('pc', 'pc_num_steps', 2, 0)])  # Predictor and corrector on the network's own SDE.
def test_sample_equals_the_configured_sampler_called_directly(run, pipe, method, field,
                                                              nfe_per_step, final):
  """sample(method=..., num_steps=...) is the plain sampler of ``sampling.get_sampler`` on the
  network's score function (``models.utils.get_score_fn``), for the same config and key, clipped
  to [0, 1]: num_steps lands in sampling.num_steps (DPM-Solver++, UniPC) or
  sampling.pc_num_steps (PC), and the sharded, compiled path adds nothing else."""
  from score_sde import data
  from score_sde.models import utils as mutils
  config, _ = run
  assert config.training.continuous
  got = pipe.sample(8, method=method, num_steps=3, seed=1)
  config = config.copy_and_resolve_references()
  config.sampling.method = method
  config.sampling[field] = 3
  sampler = sampling.get_sampler(config, pipe.sde, (8,) + pipe.shape,
                                 data.get_data_inverse_scaler(config.data.centered),
                                 eps=config.sampling.eps)
  score_fn = mutils.get_score_fn(pipe.sde, pipe.model, pipe.params, train=False, continuous=True)
  want, nfe = jax.jit(lambda key: sampler(key, score_fn))(jax.random.key(1))
  np.testing.assert_allclose(got, np.clip(np.asarray(want), 0., 1.), atol=1e-5)
  assert int(nfe) == 3 * nfe_per_step + final * config.sampling.noise_removal


def test_sample_refuses_unknown_fields_and_steps_of_an_adaptive_solver(pipe):
  with pytest.raises(errors.ConfigError, match='Unknown sampling field'):
    pipe.sample(8, predictr='euler_maruyama')
  with pytest.raises(errors.ConfigError, match='adaptive'):
    pipe.sample(8, method='ode', num_steps=10)
  with pytest.raises(errors.ConfigError, match='adaptive_rtol'):
    pipe.sample(8, method='adaptive', num_steps=10)
  with pytest.raises(errors.ConfigError, match='sampling.method'):
    pipe.sample(8, method='nope')


@pytest.mark.parametrize('centered', [False, True])
def test_inpaint_keeps_known_pixels_exactly(pipe, centered):
  """Appendix I.2: the known half of each digit comes back bit for bit, also for centred data
  (model space [-1, 1], where the scalers' round trip alone would be off by float rounding);
  the rest is sampled."""
  if centered:
    config = pipe.config.copy_and_resolve_references()
    config.data.centered = True
    pipe = pipeline.Pipeline(config, pipe.model, pipe.params, pipe.step, pipe.mesh)
  digits = _digits(5)
  mask = np.zeros((16, 16, 1), np.float32)
  mask[:, :8] = 1.
  out = pipe.inpaint(digits, mask, seed=0, num_steps=4)
  assert out.shape == (5, 16, 16, 1)
  np.testing.assert_array_equal(out[:, :, :8], digits[:, :, :8].astype(np.float32) / 255.)
  assert not np.allclose(out[:, :, 8:], digits[:, :, 8:] / 255.)


def test_colorize_needs_an_rgb_network(pipe):
  with pytest.raises(ValueError, match='RGB'):
    pipe.colorize(np.zeros((2, 16, 16, 1), np.float32))


def test_bits_per_dim_matches_the_likelihood_function_on_one_batch(pipe):
  """Per-image bits/dim of 8 digits equal likelihood.get_likelihood_fn with the per-example
  estimator (the control variate of 96 quadrature nodes, 4 probes each) on the same dequantized
  data and key, computed without the pipeline's padding and sharding."""
  digits = _digits(8)
  got = pipe.bits_per_dim(digits, seed=2)
  assert got.shape == (8,) and np.all(np.isfinite(got))
  rng = jax.random.key(2)
  noise = np.asarray(jax.random.uniform(jax.random.fold_in(rng, 1), digits.shape))
  x = (digits.astype(np.float32) + noise) / 256.
  fn = likelihood.get_likelihood_fn(pipe.sde, pipe.inverse_scaler, num_probes=4, num_nodes=96)
  want = jax.jit(lambda k, d: fn(k, pipe.score_fn(continuous=True), pipe.scaler(d))[0])(rng, x)
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4)
  # Padding: 5 images give the first 5 values up to the batch-shared ODE step sizes.
  assert pipe.bits_per_dim(digits[:5], seed=2).shape == (5,)


def test_elbo_matches_the_elbo_function_on_one_batch(pipe):
  """Per-image bound and terms of 8 digits equal elbo.get_elbo_fn (the continuous bound of the
  VE run, 4 importance-sampled times) on the same dequantized data (bits_per_dim's noise for the
  seed), score function and key, computed without the pipeline's padding and sharding; the
  terms sum to the bound."""
  from score_sde import elbo
  from score_sde.models import utils as mutils
  digits = _digits(8)
  got, terms = pipe.elbo(digits, num_samples=4, time_sampling='importance', seed=2)
  assert got.shape == (8,) and np.all(np.isfinite(got)) and terms['nfe'] == 5
  np.testing.assert_allclose(terms['prior'] + terms['diffusion'] + terms['reconstruction'], got,
                             rtol=1e-6)
  rng = jax.random.key(2)
  noise = np.asarray(jax.random.uniform(jax.random.fold_in(rng, 1), digits.shape))
  x = (digits.astype(np.float32) + noise) / 256.
  fn = elbo.get_elbo_fn(pipe.sde, pipe.inverse_scaler, num_samples=4, time_sampling='importance')
  score_fn = pipe.score_fn(continuous=mutils.ode_score_continuous(pipe.sde, True))
  want, want_terms = jax.jit(lambda k, d: fn(k, score_fn, pipe.scaler(d)))(
      jax.random.fold_in(rng, 0), x)
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5)
  for name in ('prior', 'diffusion', 'reconstruction', 'diffusion_stderr'):
    np.testing.assert_allclose(terms[name], np.asarray(want_terms[name]), rtol=1e-5, atol=1e-6)


def _discrete_vp_pipe():
  """A Pipeline of the smoke network as a discrete-time VP (DDPM) model of a 25-step chain, with
  freshly initialised weights."""
  from score_sde.common import parallel
  from score_sde.configs import smoke
  from score_sde.models import utils as mutils
  config = smoke.get_config()
  config.training.sde, config.training.continuous = 'vpsde', False
  config.model.update(scale_by_sigma=False, embedding_type='positional', num_scales=25)
  mesh = parallel.make_mesh()
  params = parallel.replicate(mutils.init_params(jax.random.key(0), config), mesh)
  return pipeline.Pipeline(config, mutils.get_model(config), params, 0, mesh)


def test_elbo_of_a_discrete_vp_model_is_its_chains_exact_sum():
  """A discrete-time VP model's bound is that of its DDPM chain on the 8-bit images, not
  dequantized: num_samples=0 sums all 24 denoising terms (standard error 0, 25 evaluations) and
  equals elbo.get_elbo_fn(discrete=True, num_samples=None) on the chain's own score labels.
  Images off the 8-bit grid, dequantize=True and more draws than the chain has terms are
  refused before any compile."""
  from score_sde import elbo
  pipe = _discrete_vp_pipe()
  digits = _digits(8)
  off_grid = digits.astype(np.float32) / 255.
  off_grid[3, 0, 0, 0] += .3 / 255.
  _refused(lambda: pipe.elbo(off_grid, num_samples=0), 'images: 1 of 8 (images[3])',
           'not on the 8-bit grid')
  _refused(lambda: pipe.elbo(digits, num_samples=0, dequantize=True), 'dequantize=True')
  _refused(lambda: pipe.elbo(digits, num_samples=25), 'num_samples=25', '24 denoising terms')
  assert not pipe._compiled
  got, terms = pipe.elbo(digits, num_samples=0, seed=1)
  assert terms['nfe'] == 25 and np.all(terms['diffusion_stderr'] == 0.)
  np.testing.assert_allclose(terms['prior'] + terms['diffusion'] + terms['reconstruction'], got,
                             rtol=1e-6)
  fn = elbo.get_elbo_fn(pipe.sde, pipe.inverse_scaler, discrete=True, num_samples=None)
  x = pipe.scaler(digits.astype(np.float32) / 255.)
  want, _ = jax.jit(lambda k: fn(k, pipe.score_fn(continuous=False), x))(
      jax.random.fold_in(jax.random.key(1), 0))
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5)
  np.testing.assert_array_equal(pipe.elbo(digits.astype(np.float32) / 255., num_samples=0,
                                          seed=1)[0], got)


def test_decode_inverts_encode(pipe):
  """The probability-flow ODE maps data to latents and back (sec. 4.3)."""
  digits = _digits(3).astype(np.float32) / 255.
  z = pipe.encode(digits)
  assert z.shape == digits.shape and np.std(z) > np.std(digits)
  np.testing.assert_allclose(pipe.decode(z), digits, atol=2e-3)


def test_load_a_chosen_step_and_refuse_a_missing_one(run):
  _, workdir = run
  assert score_sde.load(workdir, step=2).step == 2
  with pytest.raises(errors.WorkdirError, match='No checkpoint at step 3'):
    score_sde.load(workdir, step=3)


def test_load_errors_name_the_problem(run, tmp_path):
  """No checkpoint, no config record, and a config whose network differs: each a UserError
  saying what to do."""
  config, workdir = run
  with pytest.raises(errors.WorkdirError, match='does not exist'):
    score_sde.load(tmp_path / 'nowhere')
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(errors.WorkdirError, match='no config.json'):
    score_sde.load(empty)
  with pytest.raises(errors.WorkdirError, match='no readable checkpoint of the score model'):
    score_sde.load(empty, config=config)
  other = config.copy_and_resolve_references()
  other.model.nf = 16
  with pytest.raises(errors.ConfigError, match='does not describe the network'):
    score_sde.load(workdir, config=other)
  broken = tmp_path / 'broken'
  shutil.copytree(workdir, broken)
  (broken / 'config.json').write_text('{"model.nf": ')
  with pytest.raises(errors.WorkdirError, match='not valid JSON'):
    score_sde.load(broken)


def test_a_config_file_path_works_for_a_converted_released_checkpoint(tmp_path):
  """released_checkpoints.convert records the config, so load(workdir) alone works; a config
  file path is accepted as well."""
  from score_sde.configs import smoke
  from tests.test_released_checkpoints import random_like, write_released
  config = smoke.get_config()
  template = score_sde.models.abstract_params(config)
  trees = [random_like(template, s) for s in range(4)]
  trees[3] = jax.tree.map(np.abs, trees[3])
  path = write_released(tmp_path / 'checkpoint_1', *trees, step=4, opt_step=4)
  rc.convert(config, path, tmp_path / 'converted')
  loaded = score_sde.load(tmp_path / 'converted')
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params), trees[1])
  os.remove(tmp_path / 'converted' / 'config.json')
  smoke_file = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs', 'smoke.py')
  assert score_sde.load(tmp_path / 'converted', config=smoke_file).step == loaded.step


def test_to_pil_tiles_a_grid(pipe):
  image = pipeline.to_pil(np.zeros((4, 16, 16, 1), np.float32), nrow=2)
  assert image.size == (2 * 18 + 2, 2 * 18 + 2)


def test_config_record_round_trips_every_paper_config(tmp_path):
  """Every field of a config survives config.json (tuples stay tuples, floats stay floats)."""
  from score_sde.configs.vp import cifar10_ddpmpp_continuous
  config = cifar10_ddpmpp_continuous.get_config()
  record.save_run_config(config, str(tmp_path))
  assert record.load_run_config(str(tmp_path)) == config
  assert json.loads((tmp_path / 'config.json').read_text())['model.ch_mult'] == [1, 2, 2, 2]


def test_sample_mode_draws_a_chosen_step_in_rounds(run):
  """--mode sample --step 2 --num_samples 12: two rounds of sampling.batch_size = 8, the first
  with the key of step 2's training snapshot (so it reproduces that grid), the second new; all
  12 in samples.npz. A step the run does not hold is refused with the steps it has."""
  from score_sde import generate
  from score_sde.common import rng
  config, workdir = run
  config = config.copy_and_resolve_references()
  config.sampling.batch_size = 8
  out = generate.generate(config, workdir, step=2, num_samples=12)
  assert out['step'] == 2 and out['images'].shape == (12, 16, 16, 1)
  pipe = score_sde.load(workdir, step=2)
  sampler = sampling.get_network_sampler(config, pipe.sde, pipe.model, pipe.mesh, 8)
  key = jax.random.fold_in(rng.stream_key(config.seed, rng.SAMPLE_STREAM), 2)
  np.testing.assert_array_equal(out['images'][:8], np.asarray(sampler(pipe.params, key)[0]))
  assert not np.allclose(out['images'][8:], out['images'][:4])
  saved = np.load(os.path.join(workdir, 'generated', 'step_2', 'samples.npz'))
  assert saved['images'].shape == (12, 16, 16, 1) and saved['images'].dtype == np.uint8
  with pytest.raises(errors.WorkdirError, match=r'No checkpoint at step 3.*periodic steps: \[4\]'):
    generate.generate(config, workdir, step=3)


# ------------------------------------------------------------------------------ input checks
def _unloaded(**fields):
  """A Pipeline of the smoke network without weights (``config.<section>.<field>`` overrides
  as ``section__field=value``): a check that fired after anything compiled or touched the
  network would fail there with another error than InputError."""
  from score_sde.common import parallel
  from score_sde.configs import smoke
  from score_sde.models import utils as mutils
  config = smoke.get_config()
  for name, value in fields.items():
    section, field = name.split('__')
    config[section][field] = value
  return pipeline.Pipeline(config, mutils.get_model(config), None, 0, parallel.make_mesh())


def _refused(call, *needed):
  """``call()`` raises InputError (a UserError, a ValueError) whose one message holds every
  string of ``needed``; returns the message."""
  with pytest.raises(pipeline.InputError) as err:
    call()
  message = str(err.value)
  assert isinstance(err.value, errors.UserError) and isinstance(err.value, ValueError)
  for text in needed:
    assert text in message, message
  return message


def test_bits_per_dim_refuses_images_outside_0_1_naming_them():
  """Images in 0-255 as floats (about 54 bits/dim, unchecked) or in [-1, 1] are refused
  before any compile, naming the argument, the images at fault and the expected range; a batch
  where one image is bad names that one only."""
  pipe = _unloaded()
  digits = _digits(4).astype(np.float32)
  _refused(lambda: pipe.bits_per_dim(digits), 'images: 4 of 4', 'outside [0, 1]', 'uint8',
           'divided by 255')
  _refused(lambda: pipe.bits_per_dim(digits / 127.5 - 1.), '(x + 1) / 2')
  one_bad = digits / 255.
  one_bad[2, 3, 3, 0] = 1.2
  _refused(lambda: pipe.bits_per_dim(one_bad), 'images: 1 of 4 (images[2])', 'expected [0, 1]')
  assert not pipe._compiled


@pytest.mark.parametrize('method', ['bits_per_dim', 'encode'])
def test_one_non_finite_image_is_refused_before_it_can_spoil_the_batch(method):
  """One NaN pixel in image 1 (which, solved, turned several images of the batch NaN: the ODE
  solver shares its steps across the batch) or an inf in image 3 is refused up front, naming
  those images."""
  pipe = _unloaded()
  images = _digits(5).astype(np.float32) / 255.
  images[1, 8, 8, 0] = np.nan
  images[3, 0, 0, 0] = np.inf
  _refused(lambda: getattr(pipe, method)(images), 'images: 2 of 5 (images[1, 3])',
           'NaN or infinite')
  assert not pipe._compiled


def test_image_dtype_and_shape_are_named():
  """An integer dtype other than uint8 (0-255 or 0-1 cannot be told), a batch of the wrong
  image size, a single image without its batch axis and an empty batch each name the argument
  and what this network takes."""
  pipe = _unloaded()
  _refused(lambda: pipe.encode(_digits(2).astype(np.int64)), 'images has dtype int64', 'uint8')
  _refused(lambda: pipe.bits_per_dim(np.zeros((2, 8, 8, 1), np.float32)),
           'images has shape (2, 8, 8, 1)', '(N, 16, 16, 1)')
  _refused(lambda: pipe.encode(np.zeros((16, 16, 1), np.float32)), 'shape (16, 16, 1)')
  _refused(lambda: pipe.bits_per_dim(np.zeros((0, 16, 16, 1), np.float32)), 'N >= 1')
  assert not pipe._compiled


def test_inpaint_checks_its_mask_and_known_pixels():
  """A soft mask (0.3 everywhere) is refused saying what a mask means; a mask of the wrong
  shape names its shape and the images'; a NaN among the known pixels of image 0 is refused,
  naming it."""
  pipe = _unloaded()
  digits = _digits(3)
  _refused(lambda: pipe.inpaint(digits, np.full((16, 16, 1), .3)), 'mask holds 256 values',
           'other than 0 and 1', 'known (1)', 'mask > 0.5')
  _refused(lambda: pipe.inpaint(digits, np.ones((8, 8, 1))), 'mask has shape (8, 8, 1)',
           '(3, 16, 16, 1)', '(16, 16, 1)')
  _refused(lambda: pipe.inpaint(digits, np.ones((2, 16, 16, 1))), 'mask has shape (2, 16, 16, 1)')
  mask = np.zeros((16, 16, 1), bool)
  mask[:, :8] = True
  images = digits.astype(np.float32) / 255.
  images[0, 4, 2, 0] = np.nan
  _refused(lambda: pipe.inpaint(images, mask), 'images: 1 of 3 (images[0])', 'NaN')
  assert not pipe._compiled


def test_inpaint_reads_only_the_known_pixels(pipe):
  """The unknown pixels may hold anything, NaN included: the result is the one for zeros
  there, finite, with the known pixels as given."""
  digits = _digits(5).astype(np.float32) / 255.
  mask = np.zeros((16, 16, 1), np.float32)
  mask[:, :8] = 1.
  holes = digits.copy()
  holes[:, :, 8:] = np.nan
  zeros = digits.copy()
  zeros[:, :, 8:] = 0.
  out = pipe.inpaint(holes, mask, seed=0, num_steps=4)
  assert np.all(np.isfinite(out))
  np.testing.assert_array_equal(out, pipe.inpaint(zeros, mask, seed=0, num_steps=4))
  np.testing.assert_array_equal(out[:, :, :8], digits[:, :, :8])


def test_colorize_refuses_grey_images_with_unequal_channels():
  """colorize keeps the grey level (R + G + B) / 3: an RGB image whose channels differ is not
  grey, and is named."""
  pipe = _unloaded(data__num_channels=3)
  grey = np.repeat(_digits(3), 3, axis=-1)
  grey[2, 5, 5] = (10, 200, 30)
  _refused(lambda: pipe.colorize(grey), 'grey: 1 of 3 (grey[2])', 'unequal R, G and B')
  assert not pipe._compiled


def test_decode_checks_its_latents():
  """Latents must be finite and of the network's image shape; the bad ones are named."""
  pipe = _unloaded()
  z = np.zeros((3, 16, 16, 1), np.float32)
  z[1, 0, 0, 0] = np.nan
  _refused(lambda: pipe.decode(z), 'z: 1 of 3 (z[1])', 'finite')
  _refused(lambda: pipe.decode(np.zeros((3, 16, 16, 3))), 'z has shape (3, 16, 16, 3)')
  assert not pipe._compiled


def test_sample_checks_n_and_class_labels():
  """n must be a positive integer; class_labels must be integer classes of a class-conditional
  network (named by position), and are refused for an unconditional one."""
  _refused(lambda: _unloaded().sample(0), 'n=0')
  _refused(lambda: _unloaded().sample(4, class_labels=[1, 2]), 'nothing conditions on a class')
  pipe = _unloaded(model__num_classes=10)
  _refused(lambda: pipe.sample(4, class_labels=[3, 10, -1]), 'positions [1, 2]', '[0, 10)')
  _refused(lambda: pipe.sample(4, class_labels=[1.5]), 'integer classes')
  assert not pipe._compiled
