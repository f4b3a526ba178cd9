"""The low-noise float32 rows of a bfloat16 objective (``score_sde/low_noise.py``).

Protects: the stratified draw estimates the same objective as the plain one (Monte Carlo
against a closed form, and the weights are what makes it so); the low rows are exactly the
noise levels with ``std < below``, continuous and discrete; those rows, and only those, run the
network in float32 (the jaxpr's convolutions); a mixed-precision train step on them gives the
float32 per-example losses of those rows.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from score_sde import losses, low_noise, sde_lib
from score_sde.models import utils as mutils

VP = sde_lib.VPSDE(0.1, 20., 1000)
VE = sde_lib.VESDE(0.01, 50., 1000)
EPS = 1e-5


@pytest.mark.parametrize('rows,prob,every', [(64, 0.058, 16), (64, 0.35, 2), (64, 0.6, 1),
                                             (96, 0.01, 32), (7, 0.1, 1), (64, 0., 0)])
def test_the_low_stratum_gets_at_least_its_share_of_rows(rows, prob, every):
  """The largest power of two dividing the batch with every * prob <= 1: each batch holds at
  least the low levels' share of rows; 1 when no such split exists (all float32)."""
  assert low_noise.rows_every(rows, prob) == every


def test_stratified_dsm_estimates_the_plain_objective():
  """Data 0, score -x: the DSM loss is 0.5 (1 - std^2)^2 |z|^2, of mean 0.5 D E_t (1 - std^2)^2
  over t ~ U(eps, 1) (quadrature). With below = 0.5 the low stratum holds 1/4 of the rows
  against P = 0.165, so the weights matter: without them the mean is off by many standard
  errors."""
  dim, batch, draws = 4, 64, 200
  strata = low_noise.continuous_strata(VP, EPS, 0.5).for_rows(batch)
  assert strata.every == 4 and 0.15 < strata.prob < 0.18
  sampler = low_noise.time_sampler(VP, EPS, 0.5)
  std2 = lambda t: float(VP.marginal_coeffs(jnp.float32(t))[1]) ** 2
  expected = 0.5 * dim * integrate.quad(lambda t: (1 - std2(t)) ** 2, EPS, 1., limit=200)[0] / (
      1 - EPS)
  score_fn = lambda x, t: -x
  data = jnp.zeros((batch, dim))

  @jax.jit
  def weighted_and_not(key):
    t_key, z_key = jax.random.split(key)
    levels = sampler.levels(sampler.draw(t_key, batch))
    loss = losses.dsm_loss(score_fn, VP, data, levels.values, jax.random.normal(z_key, data.shape))
    return loss * levels.weights, loss
  out = [weighted_and_not(k) for k in jax.random.split(jax.random.key(0), draws)]
  weighted = np.concatenate([np.asarray(w) for w, _ in out])
  unweighted = np.concatenate([np.asarray(u) for _, u in out])
  se = weighted.std() / np.sqrt(weighted.size)
  assert abs(weighted.mean() - expected) < 4 * se, (weighted.mean(), expected, se)
  assert abs(unweighted.mean() - expected) > 10 * se


@pytest.mark.parametrize('sde,below', [(VP, 0.2), (VE, 0.2), (VE, 0.05)])
def test_low_rows_draw_exactly_the_levels_below_the_threshold(sde, below):
  """Rows r % every == 0 draw t with std(t) < below, the others std(t) >= below (to the cut's
  grid); the discrete labels likewise by their level's std."""
  batch = 64
  times = low_noise.time_sampler(sde, EPS, below)
  u = times.draw(jax.random.key(1), batch)
  levels = times.levels(u)
  low = np.asarray(low_noise.low_rows(batch, times.strata.for_rows(batch)))
  std = np.asarray(sde.marginal_coeffs(levels.values)[1])
  assert levels.every >= 2 and low.sum() == batch // levels.every
  assert (std[low] < below).all() and (std[~low] >= below * (1 - 1e-4)).all()
  level_stds = (losses.smld_level_stds(sde) if isinstance(sde, sde_lib.VESDE)
                else losses.ddpm_level_stds(sde))
  labels = np.asarray(low_noise.label_sampler(level_stds, below).levels(u).values)
  assert (level_stds[labels[low]] < below).all() and (level_stds[labels[~low]] >= below).all()


def test_split_rows_reassembles_rows_and_class_labels_in_order():
  """Low rows through the first function, the rest through the second, in the batch's order,
  with each row's own class label."""
  every, batch = 4, 16
  x = jnp.arange(batch, dtype=jnp.float32)[:, None]
  labels = jnp.arange(batch) * 10
  fn32 = lambda x, t, class_labels: jnp.stack([x[:, 0], 0 * x[:, 0] + 32., class_labels], 1)
  fn16 = lambda x, t, class_labels: jnp.stack([x[:, 0], 0 * x[:, 0] + 16., class_labels], 1)
  out = np.asarray(low_noise.split_rows(fn32, fn16, every, labels)(x, jnp.zeros(batch)))
  np.testing.assert_array_equal(out[:, 0], np.arange(batch))
  np.testing.assert_array_equal(out[:, 1], np.where(np.arange(batch) % every == 0, 32., 16.))
  np.testing.assert_array_equal(out[:, 2], np.arange(batch) * 10)


def _smoke(**training):
  from score_sde.configs import smoke
  config = smoke.get_config()
  config.model.update(ch_mult=(1,), attn_resolutions=(16,), dropout=0., resblock_type='ddpm',
                      fir=False, progressive_input='none')
  config.training.update(training)
  return config


@pytest.mark.parametrize('continuous', [True, False])
def test_mixed_precision_runs_the_low_rows_in_float32(continuous):
  """bfloat16 with float32_below_std: the forward pass has float32 convolutions on the low rows
  (batch / every) and bfloat16 ones on the rest; those low rows' per-example losses equal the
  float32 objective's at the same draws (a second computation, all float32)."""
  config = _smoke(sde='vpsde', continuous=continuous)
  config.model.update(embedding_type='positional', scale_by_sigma=False)
  net, sde = mutils.get_model(config), sde_lib.get_sde(config)
  params = mutils.init_params(jax.random.key(0), config)
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape),
                        params)
  batch = {'image': jax.random.uniform(jax.random.key(2), (16, 16, 16, 1)) * 2 - 1}
  settings = losses.StepSettings(continuous=continuous, compute_dtype='bfloat16',
                                 float32_below_std=0.3)
  mixed = losses.get_per_example_loss_fn(sde, net, train=False, settings=settings)
  text = str(jax.make_jaxpr(mixed)(jax.random.key(3), params, batch))
  shapes = set(re.findall(r':(\w+)\[(\d+),[\d,]*\] = conv_general_dilated', text))
  every = 8  # P(std < 0.3) = 0.092, in t and over the 1000 labels: 1/8 of the rows.
  assert shapes == {('f32', str(16 // every)), ('bf16', str(16 - 16 // every))}
  # The same draws all in float32: split the rows between two float32 networks.
  noise = losses.score_objective(sde, net, False, settings).draw(jax.random.key(3), batch)
  sampler = (low_noise.time_sampler(sde, 1e-5, 0.3) if continuous else
             low_noise.label_sampler(losses.ddpm_level_stds(sde), 0.3))
  levels = sampler.levels(noise['levels'])
  assert levels.every == every
  if continuous:
    score32 = lambda x, t, class_labels=None: mutils.get_score_fn(
        sde, net, params, continuous=True)(x, t)
    reference = losses.dsm_loss(low_noise.split_rows(score32, score32, every), sde,
                                batch['image'], levels.values, noise['z'])
  else:
    model32 = lambda x, t, class_labels=None: mutils.get_model_fn(net, params)(x, t)
    reference = losses.ddpm_loss(low_noise.split_rows(model32, model32, every), sde,
                                 batch['image'], levels.values, noise['z'])
  reference = reference * levels.weights
  got = mixed(jax.random.key(3), params, batch)
  low = np.arange(16) % every == 0
  np.testing.assert_allclose(got[low], reference[low], rtol=1e-5)
  assert not np.allclose(got[~low], reference[~low], rtol=1e-5)


def test_mixed_precision_loss_is_the_same_on_eight_devices():
  """The batch split over 8 devices (2 rows each, fewer than a stratum's period of 8): the
  per-example losses equal one device's, so the strided strata survive any sharding."""
  from score_sde.common import parallel
  config = _smoke(sde='vpsde', continuous=True)
  config.model.update(embedding_type='positional', scale_by_sigma=False)
  net, sde = mutils.get_model(config), sde_lib.get_sde(config)
  params = mutils.init_params(jax.random.key(0), config)
  batch = {'image': jax.random.uniform(jax.random.key(2), (16, 16, 16, 1)) * 2 - 1}
  loss_fn = losses.get_per_example_loss_fn(
      sde, net, train=False,
      settings=losses.StepSettings(compute_dtype='bfloat16', float32_below_std=0.3))
  one = jax.jit(loss_fn)(jax.random.key(3), params, batch)
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 8
  rep, split = parallel.replicated(mesh), parallel.data_sharding(mesh)
  eight = jax.jit(loss_fn, in_shardings=(rep, rep, split))(jax.random.key(3), params, batch)
  np.testing.assert_allclose(eight, one, rtol=2e-3)
