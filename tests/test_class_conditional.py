"""Class-conditional networks, the noise-conditional classifier, and the modes that use them, end
to end on the smoke config (embedded MNIST, labelled 0-9).

Protects: the classifier's parameter tree is the reference's ``wideresnet_noise_conditional``
layout; a class-conditional network adds only its label table to the released tree and its
output depends on the label; ``--mode train_classifier`` trains, logs accuracy and resumes;
``--mode sample`` draws class-conditional grids with classifier-free and classifier guidance;
unlabelled data and a missing classifier fail with messages that name the fix.
"""
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loop_config
from event_files import read_events, tensorboard_view
from score_sde import generate, models
from score_sde.common import errors, parallel
from score_sde.models import utils as mutils
from score_sde.training import train


def _flat_shapes(tree):
  return {'/'.join(k.key for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _tiny_classifier(config):
  config.classifier.blocks_per_group = 1
  config.classifier.channel_multiplier = 1
  config.classifier.n_iters = 4
  return config


def test_classifier_tree_is_the_reference_layout(smoke_config):
  """WRN with one block per group, width 1: every path and HWIO shape of the reference's
  noise-conditional Wide-ResNet (its GroupNorms named init_bn / bn_2 / pre-pool-bn)."""
  config = _tiny_classifier(smoke_config)
  shapes = _flat_shapes(models.abstract_params(models.get_classifier(config), (16, 16, 1)))

  def block(cin, c, prefix):
    return {f'{prefix}/init_bn/scale': (cin,), f'{prefix}/init_bn/bias': (cin,),
            f'{prefix}/conv1/kernel': (3, 3, cin, c), f'{prefix}/Dense_0/kernel': (512, c),
            f'{prefix}/Dense_0/bias': (c,), f'{prefix}/bn_2/scale': (c,),
            f'{prefix}/bn_2/bias': (c,), f'{prefix}/conv2/kernel': (3, 3, c, c)}

  want = {'GaussianFourierProjection_0/W': (128,), 'Dense_0/kernel': (256, 512),
          'Dense_0/bias': (512,), 'Dense_1/kernel': (512, 512), 'Dense_1/bias': (512,),
          'init_conv/kernel': (3, 3, 1, 16), 'pre-pool-bn/scale': (64,),
          'pre-pool-bn/bias': (64,), 'Dense_2/kernel': (64, 10), 'Dense_2/bias': (10,)}
  for i, (cin, c) in enumerate([(16, 16), (16, 32), (32, 64)]):
    want.update(block(cin, c, f'WideResnetGroup_{i}/WideResnetBlock_0'))
  assert shapes == want


def test_class_conditional_network_adds_only_its_label_table(smoke_config):
  """num_classes = 10: the unconditional tree plus ClassEmbed/embedding (11, 4 nf), the 11th row
  the null label; different labels give different outputs for the same input."""
  plain = _flat_shapes(models.abstract_params(smoke_config))
  smoke_config.model.num_classes = 10
  conditional = _flat_shapes(models.abstract_params(smoke_config))
  assert conditional == {**plain, 'ClassEmbed/embedding': (11, 4 * smoke_config.model.nf)}
  model = models.get_model(smoke_config)
  rng = np.random.default_rng(0)  # Random weights: zero-initialised output layers hide labels.
  params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32),
                        models.abstract_params(smoke_config))
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
  sigma = jnp.full((2,), 3.)
  apply = jax.jit(lambda y: model.apply({'params': params}, x, sigma, class_labels=y))
  out = [apply(jnp.full((2,), y)) for y in (0, 10)]
  assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-2 * float(jnp.max(jnp.abs(out[0])))
  with pytest.raises(ValueError, match='class_labels'):
    model.apply({'params': params}, x, sigma)


def test_labels_outside_the_classes_stop_training_with_the_fix():
  """Unlabelled data (label -1) for a class-conditional network is refused by name."""
  with pytest.raises(errors.DataError, match='no class labels'):
    train.check_labels(np.array([3, -1]), 10, 'score model')
  with pytest.raises(errors.DataError, match='more than 10 classes'):
    train.check_labels(np.array([10]), 10, 'classifier')


@pytest.fixture(scope='module')
def conditional_run(tmp_path_factory):
  """A class-conditional score model (4 steps) and its classifier (4 steps), on one device."""
  from score_sde.configs import smoke
  config = _tiny_classifier(smoke.get_config())
  config.model.num_classes = 10
  config.training.n_iters = 4
  config.training.snapshot_freq_for_preemption = 4
  # The loop tests' network: the labels' path is the same, in a fraction of the compile time.
  config.model.update(loop_config.NET)
  workdir = str(tmp_path_factory.mktemp('conditional'))
  mesh = parallel.make_mesh(jax.devices()[:1])
  train.train_and_evaluate(config, workdir, mesh=mesh)
  train.train_classifier(config, workdir, mesh=mesh)
  return config, workdir, mesh


def test_train_classifier_logs_accuracy_and_resumes(conditional_run):
  """The classifier has its own checkpoints and TensorBoard under <workdir>/classifier, logs
  training and held-out accuracy, and a second call resumes (finds it finished)."""
  config, workdir, mesh = conditional_run
  folder = os.path.join(workdir, 'classifier')
  assert sorted(os.listdir(os.path.join(folder, 'checkpoints'))) == ['4']
  tags = set(tensorboard_view(read_events(pathlib.Path(folder) / 'tensorboard')))
  assert {'training_loss', 'training_accuracy', 'eval_loss', 'eval_accuracy'} <= tags
  state = train.train_classifier(config, workdir, mesh=mesh)
  assert int(state.step) == 4


def test_sample_mode_draws_the_requested_classes_with_both_guidances(conditional_run):
  """--mode sample: the labels cycle through sampling.class_labels, images are in [0, 1] and
  written as PNG + npz; classifier-free (cfg_scale) and classifier guidance (classifier_scale)
  both run from the config."""
  config, workdir, mesh = conditional_run
  config.sampling.batch_size = 6
  config.sampling.class_labels = (3, 7)
  config.sampling.cfg_scale = 2.
  config.sampling.classifier_scale = 1.
  first = generate.generate(config, workdir, mesh=mesh)
  np.testing.assert_array_equal(first['labels'], [3, 7, 3, 7, 3, 7])
  assert first['images'].shape == (6, 16, 16, 1) and first['step'] == 4
  assert 0. <= first['images'].min() and first['images'].max() <= 1.
  saved = np.load(os.path.join(os.path.dirname(first['path']), 'samples.npz'))
  np.testing.assert_array_equal(saved['labels'], first['labels'])
  assert saved['images'].shape == (6, 16, 16, 1) and saved['images'].dtype == np.uint8


def test_classifier_guidance_without_a_classifier_names_the_command(conditional_run, tmp_path):
  """classifier_scale > 0 with no trained classifier: one message naming --mode
  train_classifier, and nothing written; a sample folder that is one of the run's own
  directories is refused."""
  config, workdir, mesh = conditional_run
  config.sampling.classifier_scale = 1.
  config.sampling.classifier_workdir = str(tmp_path / 'nowhere')
  with pytest.raises(errors.WorkdirError, match='train_classifier'):
    generate.generate(config, workdir, mesh=mesh)
  assert not os.path.exists(tmp_path / 'nowhere')
  with pytest.raises(errors.WorkdirError, match="run's own directories"):
    generate.generate(config, workdir, out_folder='classifier', mesh=mesh)


def test_load_samples_both_guidances_from_their_definitions(conditional_run):
  """score_sde.load on a class-conditional run: classifier-free guidance and classifier guidance
  by the run's trained classifier (read from workdir/classifier) draw what the plain sampler
  (``sampling.get_sampler``) draws, for the same key, on the guided score written out from its
  definition: ``(1 + w) s(x, t, y) - w s(x, t, null)`` (Ho & Salimans 2022, eq. 6) and
  ``s(x, t) + scale grad_x log p_t(y | x)`` (eq. 14), the gradient by ``jax.grad`` of the
  classifier's log-softmax."""
  import score_sde
  from score_sde import data, sampling
  from score_sde.training import restore
  _, workdir, mesh = conditional_run
  pipe = score_sde.load(workdir, mesh=mesh)
  sde, labels, null = pipe.sde, jnp.array([3, 7, 3, 7]), jnp.full((4,), 10)
  assert pipe.config.sampling.method == 'pc'
  score = mutils.get_score_fn(sde, pipe.model, pipe.params, train=False,
                              continuous=pipe.config.training.continuous)
  net = restore.load_classifier(pipe.config, workdir, mesh)
  logits_fn = mutils.get_classifier_fn(sde, net.module, net.params)

  def log_p_y(x, t):
    return jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits_fn(x, t)), labels[:, None], 1))

  def cfg(x, t):  # w = 2.
    return 3. * score(x, t, class_labels=labels) - 2. * score(x, t, class_labels=null)

  def classifier_guided(x, t):  # w = -1 (the unconditional score), classifier scale 1.
    return score(x, t, class_labels=null) + jax.grad(log_p_y)(x, t)

  sampler = sampling.get_sampler(pipe.config, sde, (4,) + pipe.shape,
                                 data.get_data_inverse_scaler(pipe.config.data.centered),
                                 eps=pipe.config.sampling.eps)
  for fields, score_fn in (({'cfg_scale': 2.}, cfg),
                           ({'cfg_scale': -1., 'classifier_scale': 1.}, classifier_guided)):
    got = pipe.sample(4, class_labels=[3, 7], seed=5, **fields)
    wanted, _ = jax.jit(lambda key, f=score_fn: sampler(key, f))(jax.random.key(5))
    np.testing.assert_allclose(got, np.clip(np.asarray(wanted), 0., 1.), atol=1e-4)
