"""Evaluation mode: which checkpoints, loss and bits/dim over whole splits, FID / KID / IS from
resumable sample rounds, the report, and the early failures.

Cheap by construction: a one-resolution smoke model saved freshly initialised, a 20-image split,
random Inception weights at 75x75 (the smallest input the network takes), 16 samples in 2 rounds
of 8. Compiled pieces (the round function, the Inception network) are built once per module and
reused by every evaluation; what is tested is what evaluation does with them.
"""
import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest
from scipy import special

import loop_config
from score_sde import data, elbo, losses, optim, sampling, sde_lib
from score_sde.common import parallel
from score_sde.configs import validation
from score_sde.evaluation import bound, evaluate, report as eval_report, samples as eval_samples
from score_sde.io import checkpoint
from score_sde.metrics import fid, inception, inception_weights
from score_sde.models import utils as mutils
from score_sde.training import train_state

NUM_IMAGES = 20  # 3 batches of 8: the last has 4 padding rows.
STEP = 4
REAL_WEIGHTS_LOADER = inception_weights.load_inception_params  # Before the fixture patches it.


def _build_once(make):
  """``make`` called once; later calls (from later evaluations) get the same compiled result."""
  built = []

  def cached(*args, **kwargs):
    if not built:
      built.append(make(*args, **kwargs))
    return built[0]

  return cached


def _config():
  config = loop_config.get_config()
  config.eval.begin_ckpt = config.eval.end_ckpt = 1  # Step 4 (snapshot_freq 4, n_iters 6).
  config.eval.bpd_dataset = 'train'  # One pass (five over 'test').
  return config


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """A workdir with checkpoint 4, a tiny dataset, random Inception weights and their stats."""
  config = _config()
  full = data.get_dataset(config.data, 'test')
  tiny = full.get(np.arange(NUM_IMAGES))
  source = data.ArraySource(tiny['image'], tiny['label'])
  mesh = parallel.make_mesh()
  inception_params = inception.init_random_params(0)
  inception_fn = inception.get_inception_fn(inception_params, mesh, size=75)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(data.sources, 'get_dataset', lambda data_config, split: source)
    patch.setattr(inception_weights, 'load_inception_params', lambda path: inception_params)
    patch.setattr(inception, 'get_inception_fn', lambda params, mesh=None: inception_fn)
    # Compile the sampler + Inception round once for the module, not once per evaluate call.
    patch.setattr(eval_samples, 'make_round_fn', _build_once(eval_samples.make_round_fn))
    workdir = tmp_path_factory.mktemp('run')
    from score_sde.metrics import dataset_stats
    stats = dataset_stats.compute_statistics(
        inception_fn, dataset_stats.source_batches(source, 8), num_features=NUM_IMAGES)
    config.eval.stats_path = str(workdir / 'stats.npz')
    fid.save_stats(config.eval.stats_path, stats.pop('mu'), stats.pop('sigma'),
                   stats.pop(fid.FEATURES), **stats)
    model = mutils.get_model(config)
    state = jax.jit(train_state.state_factory(config, model, optim.get_optimizer(config.optim)),
                    out_shardings=parallel.replicated(mesh))()
    with checkpoint.Checkpointer(str(workdir), async_save=False) as ckpt:
      ckpt.save(STEP, state, periodic=True)
    yield dict(config=config, workdir=str(workdir), source=source, params=state.params_ema,
               model=model)


def _config_for(env, **eval_fields):
  config = _config()
  config.eval.stats_path = env['config'].eval.stats_path
  for key, value in eval_fields.items():
    config.eval[key] = value
  return config


@pytest.fixture(scope='module')
def full_run(env):
  """Loss, bits/dim, the variational bound and samples of checkpoint 4, in one uninterrupted
  evaluation."""
  config = _config_for(env, enable_loss=True, enable_bpd=True, enable_elbo=True,
                       enable_sampling=True)
  return evaluate.evaluate(config, env['workdir'], 'eval')


def _folder(env, name='eval'):
  return os.path.join(env['workdir'], name)


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_steps_rule():
  """Snapshots k * freq within [begin, end] that training reaches; the final step n_iters counts
  as snapshot ceil(n_iters / freq)."""
  assert evaluate.checkpoint_steps(1, 26, 4, 6) == [4, 6]
  assert evaluate.checkpoint_steps(1, 1, 4, 6) == [4]
  assert evaluate.checkpoint_steps(2, 3, 4, 6) == [6]
  paper = evaluate.checkpoint_steps(9, 26, 50000, 1300001)  # 1300001 is snapshot 27: excluded.
  assert paper == list(range(450000, 1300001, 50000))
  with pytest.raises(ValueError, match='begin_ckpt'):
    evaluate.checkpoint_steps(3, 5, 4, 6)


def test_wait_for_checkpoint_polls_until_the_timeout():
  """A checkpoint that appears during the wait is found; one that never does gives up at the
  deadline; a zero timeout does not sleep at all."""
  now = [0.]
  sleeps = []

  def sleep(secs):
    sleeps.append(secs)
    now[0] += secs

  clock = lambda: now[0]
  appears_at_70 = lambda: [4] if now[0] >= 70 else []
  assert evaluate.wait_for_checkpoint(appears_at_70, 4, 100, 30, sleep, clock)
  assert sleeps == [30, 30, 30]
  sleeps.clear()
  assert not evaluate.wait_for_checkpoint(lambda: [], 4, 50, 30, sleep, clock)
  assert sleeps == [30, 20]
  sleeps.clear()
  assert not evaluate.wait_for_checkpoint(lambda: [], 4, 0, 30, sleep, clock)
  assert sleeps == []


# ------------------------------------------------------------------------------ the report
def test_report_is_complete_and_matches_the_round_files(env, full_run):
  """Every column is finite; FID, KID and IS recomputed from the saved round files with numpy
  (np.cov instead of the streaming moments) equal the report; JSON and CSV agree."""
  (row,) = full_run.rows
  assert full_run.missing_steps == []
  assert row['step'] == STEP and row['num_samples'] == 16
  for column in eval_report.COLUMNS:
    assert row[column] is not None and np.isfinite(row[column]), column
  assert row['nfe'] == 2 * env['config'].model.num_scales  # Predictor + corrector per level.

  ckpt_dir = os.path.join(_folder(env), f'ckpt_{STEP}')
  rounds = [np.load(os.path.join(ckpt_dir, f'round_{r}.npz')) for r in range(2)]
  pool_3 = np.concatenate([r['pool_3'] for r in rounds])
  logits = np.concatenate([r['logits'] for r in rounds]).astype(np.float64)
  assert pool_3.shape == (16, inception.POOL_DIM)
  ref = fid.load_stats(env['config'].eval.stats_path)
  mu, sigma = pool_3.mean(0, dtype=np.float64), np.cov(pool_3.astype(np.float64), rowvar=False)
  assert row['fid'] == pytest.approx(fid.frechet_distance(mu, sigma, ref['mu'], ref['sigma']),
                                     rel=1e-6)
  kid, kid_std = fid.kernel_inception_distance(pool_3, ref[fid.FEATURES])
  assert (row['kid'], row['kid_std']) == pytest.approx((kid, kid_std), rel=1e-6)
  p = special.softmax(logits, axis=1)  # One split: exp(E_x KL(p(y|x) || p(y))).
  kl = np.sum(p * (np.log(p) - np.log(p.mean(0, keepdims=True))), axis=1)
  assert row['is'] == pytest.approx(np.exp(kl.mean()), rel=1e-6)

  with open(os.path.join(_folder(env), 'report.json')) as f:
    assert json.load(f) == [row]
  with open(os.path.join(_folder(env), 'report.csv')) as f:
    header, line = f.read().splitlines()
  assert header.split(',') == list(eval_report.COLUMNS)
  assert [float(v) for v in line.split(',')] == pytest.approx([row[c] for c in header.split(',')])
  assert os.path.exists(os.path.join(ckpt_dir, eval_samples.GRID_FILE))
  assert os.listdir(os.path.join(_folder(env), 'tensorboard'))
  assert not [n for n in os.listdir(ckpt_dir) if n.startswith('.')]  # No temporary files left.


def test_loss_is_the_masked_mean_over_the_whole_split(env, full_run):
  """The report's loss is the mean of per-example DSM losses over all 20 test images, computed
  here on one device, batch by batch with the documented keys, dropping the padding rows."""
  config = env['config']
  sde = sde_lib.get_sde(config)
  score_fn = mutils.get_score_fn(sde, env['model'], jax.device_get(env['params']),
                                 continuous=True)
  values = []
  eps = config.training.eps
  for index, batch in enumerate(data.epoch_batches(env['source'], 8)):
    # The objective's keys: the noise's half of the batch key, split into t's and z's.
    key, _ = jax.random.split(evaluate.loss_batch_key(config.seed, index))
    t_key, z_key = jax.random.split(key)
    x = batch['image']
    t = jax.random.uniform(t_key, (x.shape[0],), minval=eps, maxval=sde.T)
    per_example = losses.dsm_loss(score_fn, sde, x, t, jax.random.normal(z_key, x.shape), eps=eps)
    values.append(np.asarray(per_example, np.float64)[batch['mask']])
  values = np.concatenate(values)
  assert values.size == NUM_IMAGES
  assert full_run.rows[0]['loss'] == pytest.approx(values.mean(), rel=1e-5)


def test_bpd_covers_every_example_once_per_pass(env, full_run):
  """The saved bits/dim progress holds one value per image of the split (3 batches, the padding
  left out), and the report's mean and standard error are theirs."""
  progress = np.load(os.path.join(_folder(env), f'ckpt_{STEP}', evaluate.BPD_PROGRESS_FILE))
  assert progress['index'].tolist() == [[0, 0], [0, 1], [0, 2]]
  assert progress['count'].tolist() == [8, 8, 4]
  bpd = progress['bpd']
  row = full_run.rows[0]
  assert row['bpd'] == pytest.approx(bpd.mean(), rel=1e-12)
  assert row['bpd_stderr'] == pytest.approx(bpd.std(ddof=1) / np.sqrt(bpd.size), rel=1e-9)


def test_elbo_is_the_masked_mean_of_the_bound_over_the_split(env, full_run):
  """The saved ELBO progress holds one value per image of the split (the padding left out); the
  report's bound, terms, standard errors and NFE are their means; the terms sum to the bound,
  image by image and on average; the first batch's values equal elbo.get_elbo_fn on one device
  (continuous bound of the VE model, 16 importance-sampled times) on the first bits/dim pass's
  dequantized images with the batch's documented key; TensorBoard got the bound."""
  from score_sde import elbo
  from score_sde.common import rng
  import event_files
  config, row = env['config'], full_run.rows[0]
  progress = np.load(os.path.join(_folder(env), f'ckpt_{STEP}', bound.ELBO_PROGRESS_FILE))
  assert progress['count'].tolist() == [8, 8, 4] and progress['nfe'].tolist() == [17] * 3
  bpd = progress['bpd']
  parts = progress['prior'] + progress['diffusion'] + progress['reconstruction']
  np.testing.assert_allclose(parts, bpd, rtol=1e-6)
  assert row['elbo'] == pytest.approx(bpd.mean(), rel=1e-12)
  assert row['elbo_stderr'] == pytest.approx(bpd.std(ddof=1) / np.sqrt(bpd.size), rel=1e-9)
  assert row['elbo_prior'] + row['elbo_diffusion'] + row['elbo_reconstruction'] == (
      pytest.approx(row['elbo'], rel=1e-6))  # Per-image terms in float32.
  assert row['elbo_diffusion_stderr'] == pytest.approx(progress['diffusion_stderr'].mean())
  assert row['elbo_diffusion_stderr'] > 0 and row['elbo_nfe'] == 17

  sde = sde_lib.get_sde(config)
  batch = next(data.epoch_batches(env['source'], 8, uniform_dequantization=True,
                                  seed=evaluate.dequantization_seed(config.seed, 0)))
  key = jax.random.fold_in(rng.stream_key(config.seed, rng.EVAL_STREAM), evaluate._ELBO_DRAWS)
  score_fn = mutils.get_score_fn(sde, env['model'], jax.device_get(env['params']),
                                 continuous=True)
  fn = elbo.get_elbo_fn(sde, data.get_data_inverse_scaler(config.data.centered))
  want, _ = jax.jit(lambda k, x: fn(k, score_fn, x))(jax.random.fold_in(key, 0), batch['image'])
  np.testing.assert_allclose(bpd[:8], np.asarray(want), rtol=1e-5)
  events = event_files.tensorboard_view(event_files.read_events(
      pathlib.Path(_folder(env), 'tensorboard')))
  assert events['eval/elbo'] == [(STEP, pytest.approx(row['elbo'], rel=1e-6))]


def test_killed_elbo_pass_resumes_at_the_next_batch(env, full_run, monkeypatch):
  """An ELBO pass killed after batch 0 is saved keeps that batch; the rerun computes batches 1
  and 2 only and reports what the uninterrupted run reported."""
  workdir = os.path.join(env['workdir'], 'elbo_resumed')
  shutil.copytree(os.path.join(env['workdir'], checkpoint.PERIODIC_DIR),
                  os.path.join(workdir, checkpoint.PERIODIC_DIR))
  config = _config_for(env, enable_loss=False, enable_elbo=True)
  real_save = bound.save_progress
  saved = []

  def killed_after_first(path, done):
    if saved:
      raise KeyboardInterrupt('killed')
    saved.append(len(done))
    real_save(path, done)

  monkeypatch.setattr(bound, 'save_progress', killed_after_first)
  with pytest.raises(KeyboardInterrupt):
    evaluate.evaluate(config, workdir, 'eval')
  monkeypatch.setattr(bound, 'save_progress',
                      lambda path, done: (saved.append(len(done)), real_save(path, done)))
  (row,) = evaluate.evaluate(config, workdir, 'eval').rows
  assert saved == [1, 2, 3]
  for column in eval_report.COLUMNS:
    if column.startswith('elbo'):
      assert row[column] == pytest.approx(full_run.rows[0][column], rel=1e-9), column
  assert row['bpd'] is None and row['loss'] is None


def test_dequantization_noise_is_fresh_per_pass(env):
  """Each bits/dim pass dequantizes with its own noise: both passes stay inside the pixel bins
  [k / 256, (k + 1) / 256) and differ from each other."""
  passes = [next(data.epoch_batches(env['source'], 8, uniform_dequantization=True,
                                    seed=evaluate.dequantization_seed(42, r)))['image']
            for r in range(2)]
  pixels = env['source'].get(np.arange(8))['image'].astype(np.float64)
  for images in passes:
    assert np.all(images * 256 >= pixels) and np.all(images * 256 < pixels + 1 + 1e-4)
  assert not np.allclose(passes[0], passes[1])


# ------------------------------------------------------------------------------ resuming
def test_killed_evaluation_resumes_at_the_first_missing_round(env, full_run, monkeypatch):
  """A run killed after sample round 0 is saved leaves round_0.npz; the rerun computes only
  round 1 and reports what the uninterrupted run reported."""
  workdir = os.path.join(env['workdir'], 'resumed')
  shutil.copytree(os.path.join(env['workdir'], checkpoint.PERIODIC_DIR),
                  os.path.join(workdir, checkpoint.PERIODIC_DIR))
  config = _config_for(env, enable_loss=False, enable_sampling=True)
  real_save = eval_samples.save_round
  saved = []

  def killed_after_first(path, result):
    if saved:
      raise KeyboardInterrupt('killed')
    saved.append(os.path.basename(path))
    real_save(path, result)

  monkeypatch.setattr(eval_samples, 'save_round', killed_after_first)
  with pytest.raises(KeyboardInterrupt):
    evaluate.evaluate(config, workdir, 'eval')
  assert saved == ['round_0.npz']

  def counting(path, result):
    saved.append(os.path.basename(path))
    real_save(path, result)

  monkeypatch.setattr(eval_samples, 'save_round', counting)
  result = evaluate.evaluate(config, workdir, 'eval')
  assert saved == ['round_0.npz', 'round_1.npz']
  (row,) = result.rows
  expected = full_run.rows[0]
  for column in ('fid', 'kid', 'kid_std', 'is', 'is_std', 'num_samples', 'nfe'):
    assert row[column] == pytest.approx(expected[column], rel=1e-9), column
  assert row['loss'] is None and row['bpd'] is None


def test_saved_samples_are_the_images_inception_scored(env, full_run):
  """eval.save_samples keeps each round's uint8 images; Inception on them gives the round's
  saved features exactly, and the FID is the one of the run that kept none."""
  config = _config_for(env, enable_loss=False, enable_sampling=True, save_samples=True)
  (row,) = evaluate.evaluate(config, env['workdir'], 'eval_saved').rows
  assert row['fid'] == pytest.approx(full_run.rows[0]['fid'], rel=1e-9)
  ckpt_dir = os.path.join(_folder(env, 'eval_saved'), f'ckpt_{STEP}')
  inception_fn = inception.get_inception_fn(None)  # The module's patched, random network.
  for r in range(2):
    images = np.load(eval_samples.samples_path(ckpt_dir, r))['images']
    assert images.dtype == np.uint8 and images.shape == (8, 16, 16, 1)
    features = inception_fn(parallel.to_global(images.astype(np.float32) / 255.,
                                               parallel.make_mesh()))
    np.testing.assert_allclose(np.asarray(features['pool_3']),
                               np.load(eval_samples.round_path(ckpt_dir, r))['pool_3'],
                               rtol=1e-5, atol=1e-6)


def test_finished_checkpoints_are_not_recomputed(env, full_run, monkeypatch):
  """A rerun over an evaluated checkpoint builds no evaluator and returns the stored row; a
  checkpoint that never appears is reported missing, not waited for (timeout 0)."""
  def refuse(*args, **kwargs):
    raise AssertionError('an evaluator was built for a finished checkpoint')

  for name in ('make_loss_evaluator', 'make_bpd_evaluator'):
    monkeypatch.setattr(evaluate, name, refuse)
  monkeypatch.setattr(eval_samples, 'make_sample_evaluator', refuse)
  monkeypatch.setattr(bound, 'make_elbo_evaluator', refuse)
  config = _config_for(env, enable_loss=True, enable_bpd=True, enable_elbo=True,
                       enable_sampling=True, end_ckpt=2)
  config.training.n_iters = 8
  result = evaluate.evaluate(config, env['workdir'], 'eval')
  assert result.rows == full_run.rows
  assert result.missing_steps == [8]


# ------------------------------------------------------------------------------ early failures
@pytest.fixture
def no_sampling(monkeypatch):
  """Fails the test if a sampler is ever built."""
  def refuse(*args, **kwargs):
    raise AssertionError('sampling started before the inputs were checked')
  monkeypatch.setattr(sampling, 'get_sampler', refuse)


def test_missing_statistics_fail_before_sampling_with_the_command(env, no_sampling, tmp_path):
  """An empty or absent eval.stats_path stops evaluation before anything runs or is written,
  with the dataset_stats command that makes the file."""
  for path, error in (('', ValueError), (str(tmp_path / 'absent.npz'), FileNotFoundError)):
    config = _config_for(env, enable_sampling=True, stats_path=path)
    with pytest.raises(error, match='python -m score_sde.metrics.dataset_stats --config'):
      evaluate.evaluate(config, env['workdir'], 'never')
  assert not os.path.exists(_folder(env, 'never'))


def test_missing_inception_weights_fail_before_sampling(env, no_sampling, monkeypatch, tmp_path):
  """Absent Inception weights give the loader's message (how to get them) before sampling."""
  monkeypatch.setattr(inception_weights, 'load_inception_params', REAL_WEIGHTS_LOADER)
  config = _config_for(env, enable_sampling=True,
                       inception_path=str(tmp_path / 'inception_fid.npz'))
  with pytest.raises(FileNotFoundError, match='No Inception weights'):
    evaluate.evaluate(config, env['workdir'], 'never')
  assert not os.path.exists(_folder(env, 'never'))


def test_folder_refuses_another_config(env, full_run):
  """Results made with one sampler are not mixed with another's: the message names the field."""
  config = _config_for(env, enable_sampling=True)
  config.sampling.snr = 0.2
  with pytest.raises(ValueError, match=r'sampling.snr: 0.16 -> 0.2[\s\S]*--eval_folder'):
    evaluate.evaluate(config, env['workdir'], 'eval')


@pytest.mark.parametrize('field,value', [('is_splits', 0), ('is_splits', 17),
                                         ('wait_for_checkpoint_secs', -1.),
                                         ('elbo_samples', -1), ('elbo_samples', None),
                                         ('elbo_time_sampling', 'log')])
def test_new_eval_fields_are_validated(field, value):
  """Bad evaluation fields are refused by config validation, naming the field."""
  config = _config()
  config.eval[field] = value
  with pytest.raises(ValueError, match=f'config.eval.{field}='):
    validation.validate_config(config, num_devices=8)


def test_elbo_samples_are_checked_against_the_bounds_kind():
  """With eval.enable_elbo, 0 draws (the exact sum) is refused for the continuous bound and
  accepted for a discrete-time VP model's chain, which refuses more draws than its N - 1
  terms; each message names the field and the fix."""
  config = _config()
  config.eval.update(enable_elbo=True, elbo_samples=0)
  with pytest.raises(ValueError, match=r'config.eval.elbo_samples=0 .*continuous-time bound'):
    validation.validate_config(config, num_devices=8)
  assert not elbo.uses_chain(config)
  config.training.update(sde='vpsde', continuous=False)
  config.model.update(scale_by_sigma=False, embedding_type='positional', num_scales=25)
  assert elbo.uses_chain(config)
  validation.validate_config(config, num_devices=8)
  config.eval.elbo_samples = 25
  with pytest.raises(ValueError, match=r'elbo_samples=25 .*24 denoising terms.*use 0'):
    validation.validate_config(config, num_devices=8)


def test_a_record_without_a_field_counts_it_as_its_default():
  """Protects reruns into an eval folder recorded before a field existed: a field the record
  lacks is compared as its default value (what that run computed with), while a recorded
  value that differs from the current config is still reported."""
  config = loop_config.get_config()
  recorded = eval_report.flat_config(config)
  del recorded['eval.elbo_samples']
  assert eval_report.config_differences(recorded, config) == []
  config.eval.elbo_samples = 4
  assert eval_report.config_differences(recorded, config) == ['eval.elbo_samples: 16 -> 4']
