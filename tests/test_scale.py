"""Mixed precision, gradient accumulation and rematerialisation.

Protects: bfloat16 compute gives the float32 loss and gradient to a stated tolerance with every
convolution really in bfloat16 (a numpy scalar once promoted whole networks back to float32)
and parameters, gradients and optimizer state in float32, and training in bfloat16 still lowers
the loss; ``k`` micro-batches give the update of the whole batch, on 8 devices, for the
continuous, discrete and classifier objectives (the same noise, times and label drops);
rematerialised blocks keep the released parameter names and give the same gradients; bad
values are config errors naming the fix.
"""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_sde import losses, optim, sde_lib
from score_sde.common import parallel
from score_sde.configs import validation
from score_sde.models import utils as mutils
from score_sde.training import train, train_state


def _config(**model):
  """The smoke network at one resolution with attention, DDPM++ blocks and plain resampling (a
  fraction of the compile time; the FIR path is checked in the dtype test), dropout off."""
  from score_sde.configs import smoke
  config = smoke.get_config()
  fields = dict(ch_mult=(1,), attn_resolutions=(16,), dropout=0., resblock_type='ddpm',
                fir=False, progressive_input='none')
  config.model.update({**fields, **model})
  return config


def _perturbed_params(config, seed=0):
  """Initial parameters moved off the zero-output initialisation, so that every layer has a
  gradient (output layers start at ~1e-10)."""
  params = mutils.init_params(jax.random.key(seed), config)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape)
                                   for p, k in zip(leaves, keys)])


def _flat(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def test_bfloat16_loss_and_gradient_agree_with_float32():
  """Same batch, noise and parameters: the bfloat16 loss within 1% of float32 and the gradient
  within 3% (relative L2; bfloat16 keeps 8 mantissa bits), gradients float32."""
  config = _config()
  net, sde = mutils.get_model(config), sde_lib.get_sde(config)
  params = _perturbed_params(config)
  batch = {'image': jax.random.uniform(jax.random.key(3), (8, 16, 16, 1))}
  out = {}
  for dtype in ('float32', 'bfloat16'):
    loss_fn = losses.get_sde_loss_fn(sde, net, train=True,
                                     settings=losses.StepSettings(compute_dtype=dtype))
    out[dtype] = jax.jit(jax.value_and_grad(loss_fn, argnums=1))(jax.random.key(4), params,
                                                                 batch)
  (loss32, grad32), (loss16, grad16) = out['float32'], out['bfloat16']
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grad16))
  assert float(loss16) == pytest.approx(float(loss32), rel=1e-2)
  g32, g16 = _flat(grad32), _flat(grad16)
  assert float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32)) < 0.03


def _forward_jaxpr(config, dtype):
  """The traced forward pass on abstract parameters (nothing compiled) and its output dtype."""
  net = mutils.get_model(config)

  def forward(params, x, t):
    return mutils.get_model_fn(net, params, dtype=dtype)(x, t)

  args = (mutils.abstract_params(config), jax.ShapeDtypeStruct((2, 16, 16, 1), jnp.float32),
          jax.ShapeDtypeStruct((2,), jnp.float32))
  out = jax.eval_shape(forward, *args)
  return str(jax.make_jaxpr(forward)(*args)), out.dtype


def _conv_dtypes(config, dtype):
  text, _ = _forward_jaxpr(config, dtype)
  return set(re.findall(r':(\w+)\[[\d,]*\] = conv_general_dilated', text))


@pytest.mark.parametrize('model', [dict(fir=True, progressive_input='residual',
                                        resblock_type='biggan'), dict(name='ddpm', nf=32)])
def test_bfloat16_runs_every_convolution_in_bfloat16(model):
  """No float32 constant or embedding promotes the activations back to float32: every
  convolution of the forward pass is bfloat16 (float32 without mixed precision), and the
  output comes back float32. The parameters are cast for the call but NCSN++'s Fourier
  frequencies (N(0, 16^2)): bfloat16 would shift their phases by several percent of a period
  per unit of log sigma."""
  config = _config(**model)
  assert _conv_dtypes(config, 'bfloat16') == {'bf16'}
  assert _conv_dtypes(config, 'float32') == {'f32'}
  assert _forward_jaxpr(config, 'bfloat16')[1] == jnp.float32
  params = mutils.abstract_params(config)
  cast = jax.tree_util.tree_flatten_with_path(
      jax.eval_shape(lambda p: mutils.cast_params(p, jnp.bfloat16), params))[0]
  for path, leaf in cast:
    fourier = 'GaussianFourierProjection' in jax.tree_util.keystr(path)
    assert leaf.dtype == (jnp.float32 if fourier else jnp.bfloat16), path
  assert any('GaussianFourierProjection' in jax.tree_util.keystr(p) for p, _ in cast) == (
      config.model.name == 'ncsnpp')


def test_a_bfloat16_run_samples_and_scores_in_float32():
  """Under training.compute_dtype='bfloat16' the snapshot sampler (what --mode sample, the
  evaluation rounds and training's snapshots run) and the Pipeline's score convolve in float32:
  at low noise bfloat16 rounds away the noise the score must see (benchmarks/bf16_error.py
  measures 20% relative error at t = 1e-3 on the digits run), so mixed precision stays a
  training-only setting."""
  from score_sde import pipeline, sampling
  config = _config()
  config.training.compute_dtype = 'bfloat16'
  config.sampling.update(method='dpm_solver', num_steps=2)
  net, sde = mutils.get_model(config), sde_lib.get_sde(config)
  params = mutils.abstract_params(config)
  mesh = parallel.make_mesh(jax.devices()[:1])
  snapshot = sampling.get_network_sampler(config, sde, net, mesh, 2)
  pipe = pipeline.Pipeline(config, net, params, 0, mesh)
  x, t = jnp.zeros((2, 16, 16, 1)), jnp.full((2,), 1e-3)
  for fn, args in ((snapshot, (params, jax.random.key(0))),
                   (lambda p, x, t: pipe._score_fn_of(p)(x, t), (params, x, t))):
    text = str(jax.make_jaxpr(fn)(*args))
    assert set(re.findall(r':(\w+)\[[\d,]*\] = conv_general_dilated', text)) == {'f32'}


def _train_step(config, sde, net, mesh, tx):
  """The run's train step of ``config``, jitted for ``mesh`` as training jits it."""
  return train.jit_step(losses.get_step_fn(sde, net, True, tx, losses.step_settings(config)),
                        mesh, train=True)


def test_bfloat16_training_lowers_the_loss_with_float32_state():
  """Twenty Adam steps of the real train step in bfloat16 on one batch: the loss of a fixed
  noise draw falls by more than a third, and parameters, EMA and Adam moments stay float32."""
  config = _config()
  config.training.compute_dtype = 'bfloat16'
  config.optim.update(lr=1e-2, warmup=0)
  mesh = parallel.make_mesh(jax.devices()[:1])
  net, sde = mutils.get_model(config), sde_lib.get_sde(config)
  tx = optim.get_optimizer(config.optim)
  state = jax.jit(train_state.state_factory(config, net, tx))()
  step = _train_step(config, sde, net, mesh, tx)
  batch = {'image': jax.random.uniform(jax.random.key(3), (8, 16, 16, 1)),
           'label': jnp.zeros((8,), jnp.int32)}
  loss_fn = jax.jit(losses.get_sde_loss_fn(
      sde, net, train=False, settings=losses.StepSettings(compute_dtype='bfloat16')))
  before = float(loss_fn(jax.random.key(9), state.params, batch))
  for _ in range(20):
    state, _ = step(state, batch, jax.random.key(1))
  after = float(loss_fn(jax.random.key(9), state.params, batch))
  assert after < 0.67 * before, (before, after)
  floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)


def _one_update(config, batch, k):
  """The new state and metrics of one train step with ``grad_accum_steps = k`` on 8 devices."""
  config.training.grad_accum_steps = k
  mesh = parallel.make_mesh()
  sde, net = sde_lib.get_sde(config), mutils.get_model(config)
  tx = optim.get_optimizer(config.optim)
  init = train_state.state_factory(config, net, tx)
  state = jax.jit(init, out_shardings=parallel.replicated(mesh))()
  step = _train_step(config, sde, net, mesh, tx)
  new_state, metrics = step(state, parallel.to_global(batch, mesh), jax.random.key(5))
  return jax.device_get((new_state, metrics))


def _assert_same_update(a, b, rtol=2e-5):
  """Equal to float rounding: relative to each array's own scale (Adam's moments of a
  parameter span orders of magnitude, and sums in another order round differently)."""
  (state_a, metrics_a), (state_b, metrics_b) = a, b
  assert metrics_a.keys() == metrics_b.keys()
  for key in metrics_a:
    np.testing.assert_allclose(metrics_a[key], metrics_b[key], rtol=rtol)
  for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    scale = float(np.max(np.abs(y))) if np.size(y) else 0.
    np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-4 * scale + 1e-12)


def _batch(n=16, seed=0, classes=10):
  rng = np.random.default_rng(seed)
  return {'image': rng.uniform(size=(n, 16, 16, 1)).astype(np.float32),
          'label': rng.integers(0, classes, n).astype(np.int32)}


def test_accumulated_micro_batches_give_the_whole_batch_update():
  """The real train step, batch 16 on 8 devices in 2 micro-batches (one row per device each):
  the loss, the gradient norm, the parameters, the EMA and Adam's moments after the step equal
  one step on the whole batch."""
  config = _config()
  _assert_same_update(_one_update(config, _batch(), 2), _one_update(config, _batch(), 1))


class _Affine(nn.Module):
  """A class-conditional network that compiles in a moment: ``w x + b[label] + c time``."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, time_cond, train=False, class_labels=None):
    del train
    w = self.param('w', nn.initializers.constant(0.5), ())
    b = self.param('b', nn.initializers.normal(1.), (self.num_classes + 1,))
    c = self.param('c', nn.initializers.constant(0.1), ())
    shift = b[class_labels] + c * time_cond
    return w * x + shift.reshape((-1,) + (1,) * (x.ndim - 1))


class _Logits(nn.Module):
  """A noise-conditional classifier as small: logits linear in the pixels and the noise std."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, std, train=False):
    del train
    flat = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes)(flat) * (1. + std[:, None])


def _objectives():
  """Every objective on the small networks, with label drops: ``name -> (objective, params)``."""
  ve, vp = sde_lib.VESDE(N=50), sde_lib.VPSDE(N=50)
  x, t, labels = jnp.zeros((1, 4, 4, 1)), jnp.ones((1,)), jnp.zeros((1,), jnp.int32)
  net, classifier = _Affine(), _Logits()
  params = net.init(jax.random.key(1), x, t, class_labels=labels)['params']
  settings = losses.StepSettings(label_dropout=0.5)
  discrete = losses.StepSettings(continuous=False, label_dropout=0.5)
  return {
      'dsm': (losses.score_objective(vp, net, True, settings), params),
      'smld': (losses.score_objective(ve, net, True, discrete), params),
      'ddpm': (losses.score_objective(vp, net, True, discrete), params),
      'classifier': (losses.classifier_objective(vp, classifier),
                     classifier.init(jax.random.key(1), x, t)['params']),
  }


@pytest.mark.parametrize('objective', ['dsm', 'smld', 'ddpm', 'classifier'])
@pytest.mark.parametrize('k', [2, 4])
def test_micro_batches_see_the_whole_batchs_draws(objective, k):
  """Every objective's step in k micro-batches gives the loss, metrics and update of one step
  on the whole batch: micro-batch j gets rows j::k of the batch and of the whole batch's draws
  (times, noise levels, noise, label drops), what makes accumulation exact."""
  objective, params = _objectives()[objective]
  batch = {'image': jax.random.normal(jax.random.key(0), (16, 4, 4, 1)),
           'label': jnp.arange(16) % 10}
  tx = optax.sgd(0.1)
  state = train_state.create_train_state(params, tx)
  out = []
  for steps in (k, 1):
    step = losses.get_objective_step_fn(objective, True, tx,
                                        losses.StepSettings(grad_accum_steps=steps))
    out.append(jax.device_get(jax.jit(step)(state, batch, jax.random.key(2))))
  (accumulated, metrics), (whole, whole_metrics) = out
  assert metrics.keys() == whole_metrics.keys()
  for name in whole_metrics:
    np.testing.assert_allclose(metrics[name], whole_metrics[name], rtol=1e-6)
  for x, y in zip(jax.tree.leaves(accumulated), jax.tree.leaves(whole)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_accumulation_averages_gradients_of_a_row_mean():
  """On a closed form: the mean over rows of (w . x_i - y_i)^2, in 3 micro-batches, gives the
  value and gradient of the whole batch."""
  rows = jax.random.normal(jax.random.key(0), (12, 3))
  targets = jnp.arange(12.)

  def loss(rng, w, batch):
    del rng
    return jnp.mean((batch['x'] @ w - batch['y']) ** 2), {}

  w = jnp.asarray([0.5, -1., 2.])
  batch = {'x': rows, 'y': targets}
  key = jax.random.key(0)
  (value, _), grad = losses.accumulated_value_and_grad(loss, 3)(key, w, batch)
  np.testing.assert_allclose(value, jnp.mean((rows @ w - targets) ** 2), rtol=1e-6)
  np.testing.assert_allclose(grad, 2 * rows.T @ (rows @ w - targets) / 12, rtol=1e-5)
  with pytest.raises(ValueError, match='does not split into grad_accum_steps=5'):
    losses.accumulated_value_and_grad(loss, 5)(key, w, batch)


@pytest.mark.parametrize('model', [dict(name='ddpm', nf=32), dict(resblock_type='ddpm')])
def test_remat_keeps_parameter_names(model):
  """``model.remat`` on the DDPM network and NCSN++ with DDPM++ blocks: the parameter tree (the
  released checkpoints' names) is unchanged and the traced gradient rematerialises."""
  trees = []
  for remat in (False, True):
    config = _config(remat=remat, **model)
    trees.append(jax.tree.structure(mutils.abstract_params(config)))
    net, sde = mutils.get_model(config), sde_lib.get_sde(config)
    loss_fn = losses.get_sde_loss_fn(sde, net, train=False)
    batch = {'image': jax.ShapeDtypeStruct((2, 16, 16, 1), jnp.float32)}
    jaxpr = str(jax.make_jaxpr(jax.grad(loss_fn, argnums=1))(
        jax.random.key(4), mutils.abstract_params(config), batch))
    assert ('checkpoint' in jaxpr or 'remat' in jaxpr) == remat
  assert trees[0] == trees[1]


def test_remat_gives_the_same_gradients():
  """``model.remat`` on NCSN++ with BigGAN blocks: the same parameter tree, loss and gradients
  with dropout on (the recomputed blocks draw the same masks)."""
  out = {}
  for remat in (False, True):
    config = _config(remat=remat, resblock_type='biggan')
    config.model.dropout = 0.1
    net, sde = mutils.get_model(config), sde_lib.get_sde(config)
    params = _perturbed_params(config)
    loss_fn = losses.get_sde_loss_fn(sde, net, train=True)
    batch = {'image': jax.random.uniform(jax.random.key(3), (4, 16, 16, 1))}
    out[remat] = jax.jit(jax.value_and_grad(loss_fn, argnums=1))(jax.random.key(4), params,
                                                                 batch)
  (loss0, grad0), (loss1, grad1) = out[False], out[True]
  assert jax.tree.structure(grad0) == jax.tree.structure(grad1)
  np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
  g0, g1 = _flat(grad0), _flat(grad1)
  np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(g0))))


def test_bad_scale_settings_are_config_errors_naming_the_fix():
  """An unknown compute dtype, accumulation that does not split the batch over the devices,
  and remat on a network without it: one problem each, with the values that work."""
  config = _config()
  config.training.update(compute_dtype='float16', grad_accum_steps=3)
  config.model.name = 'ncsn'
  problems = '\n'.join(validation.config_problems(config, num_devices=8))
  assert "compute_dtype='float16' is invalid: use 'float32' or 'bfloat16'" in problems
  assert 'batch_size=8 does not split evenly over 24' in problems
  assert 'e.g. 24 or 48' in problems
  config = _config(remat=True)
  config.model.name = 'ncsn'
  problems = '\n'.join(validation.config_problems(config, num_devices=1))
  assert 'rematerialisation is implemented for ddpm and ncsnpp' in problems
  with pytest.raises(ValueError, match='grad_accum_steps must be a positive integer'):
    losses.accumulated_value_and_grad(lambda *a: (0., {}), 0)
