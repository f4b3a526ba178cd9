"""Class-conditional sampling against a labelled Gaussian mixture whose conditionals, posterior
p_t(y | x) and scores are known in closed form (``score_sde.analytic``; class = component).

Protects: the classifier-free guidance combination (Ho & Salimans 2022, eq. 6), guided samples
of PC and DPM-Solver++ landing in the requested component with its moments, the classifier
objective (a classifier trained by ``losses.get_classifier_step_fn`` reaches the accuracy of the
exact posterior) and guidance by that trained classifier, and label dropout's rate.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import test_sampling_support as support
from score_sde import analytic, losses, sampling
from score_sde.models import utils as mutils
from score_sde.training import train_state

BATCH = 8000
DIM = 4


def _problem(seed=2):
  sde, eps = support.SDES['vpsde'](), support.EPS['vpsde']
  return sde, eps, support.mixture(DIM, components=2, seed=seed)


def _denoise_bias(sde, eps):
  return 3. * float(sde.marginal_coeffs(jnp.float32(eps))[1]) ** 2


def _in_component_fraction(samples, law, labels):
  return float(np.mean(support.most_responsible(law, samples) == labels))


def test_cfg_is_the_conditional_score_plus_w_times_the_classifier_gradient():
  """With exact scores, (1 + w) s(x | y) - w s(x) = s(x | y) + w grad log p_t(y | x) (Bayes),
  the right side computed independently by autodiff of the closed-form posterior; w = 0 is the
  conditional score and w = -1 the unconditional one, bit for bit."""
  sde, _, target = _problem()
  score = analytic.conditional_score_fn(target, sde, null_label=2)
  logits_fn = analytic.class_logits_fn(target, sde)
  x = jax.random.normal(jax.random.key(0), (64, DIM))
  t = jax.random.uniform(jax.random.key(1), (64,), minval=0.05, maxval=1.)
  labels = jnp.arange(64) % 2
  np.testing.assert_array_equal(sampling.get_cfg_score_fn(score, labels, 2, 0.)(x, t),
                                score(x, t, labels))
  np.testing.assert_array_equal(sampling.get_cfg_score_fn(score, labels, 2, -1.)(x, t),
                                analytic.score_fn(target, sde)(x, t))
  log_posterior = lambda x: jnp.sum(jnp.take_along_axis(
      jax.nn.log_softmax(logits_fn(x, t)), labels[:, None], -1))
  for w in (0.5, 3.):
    want = score(x, t, labels) + w * jax.grad(log_posterior)(x)
    np.testing.assert_allclose(sampling.get_cfg_score_fn(score, labels, 2, w)(x, t), want,
                               rtol=1e-4, atol=1e-4)


def test_guided_pc_and_dpm_solver_sample_the_requested_component():
  """Classifier-free guidance at w = 0 on the exact class-conditional score (the network with
  label dropout, perfectly trained): DPM-Solver++ samples match each component's moments, and
  PC (reverse diffusion + Langevin) puts >= 99% of samples in the requested component."""
  sde, eps, target = _problem()
  score = analytic.conditional_score_fn(target, sde, null_label=2)
  labels = sampling.sample_labels(BATCH, (), 2)
  guided = sampling.get_guided_score_fn(score, labels, num_classes=2, cfg_scale=0.)
  law = analytic.marginal(target, sde, eps)
  dpm = sampling.get_dpm_solver_sampler(sde, (BATCH, DIM), sampling.identity,
                                        sampling.get_times(sde, 'dpm_solver', 40, eps=eps))
  samples = np.asarray(jax.jit(lambda r: dpm(r, guided)[0])(jax.random.key(1)))
  assert _in_component_fraction(samples, law, labels) >= 0.99
  for y in range(2):
    support.assert_matches(samples[labels == y], analytic.component(law, y), seed=5 + y,
                           var_bias=_denoise_bias(sde, eps))
  pc = sampling.get_pc_sampler(sde, (BATCH, DIM), sampling.identity,
                               sampling.get_times(sde, 'pc', eps=eps), 'reverse_diffusion',
                               'langevin', snr=0.16)
  samples = np.asarray(jax.jit(lambda r: pc(r, guided)[0])(jax.random.key(2)))
  assert _in_component_fraction(samples, law, labels) >= 0.99


class _NoiseConditionalQuadratic(nn.Module):
  """p_t(y | x) for vectors: logits linear in (1, x, x^2) with coefficients an MLP of
  log sigma predicts; the family holds the exact posterior of a diagonal mixture, so what is
  tested is the objective that fits it, not an architecture's reach."""
  num_outputs: int = 2

  @nn.compact
  def __call__(self, x, sigmas, train=False):
    del train
    features = jnp.concatenate([jnp.ones_like(x[:, :1]), x, x ** 2], -1)
    h = jnp.log(sigmas)[:, None]
    for width in (32, 32):
      h = nn.swish(nn.Dense(width)(h))
    coefficients = nn.Dense(self.num_outputs * features.shape[-1])(h)
    coefficients = coefficients.reshape(x.shape[0], self.num_outputs, features.shape[-1])
    return jnp.einsum('bf,bkf->bk', features, coefficients)


def _train_classifier(sde, target, steps=1200, batch=512):
  classifier = _NoiseConditionalQuadratic()
  tx = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=0.01))
  params = classifier.init(jax.random.key(0), jnp.zeros((1, DIM)), jnp.ones((1,)))['params']
  state = train_state.create_train_state(params, tx)
  step_fn = jax.jit(losses.get_classifier_step_fn(sde, classifier, train=True, optimizer=tx,
                                                  settings=losses.StepSettings(ema_rate=0.9)))

  def draw(key):
    k_key, z_key = jax.random.split(key)
    labels = jax.random.bernoulli(k_key, target.weights[1], (batch,)).astype(jnp.int32)
    z = jax.random.normal(z_key, (batch, DIM))
    return {'image': target.means[labels] + target.stds[labels] * z, 'label': labels}

  for i in range(steps):
    state, _ = step_fn(state, draw(jax.random.fold_in(jax.random.key(1), i)), jax.random.key(2))
  return classifier, state.params_ema


def test_trained_classifier_reaches_the_posterior_accuracy_and_guides_sampling():
  """A classifier trained by the classifier objective (x(t) from the perturbation kernel, t ~ U)
  is as accurate on fresh (x(t), t, y) as the exact posterior p_t(y | x) (within 1.5 points),
  and guiding the unconditional exact score with it puts >= 99% of DPM-Solver++ samples in the
  requested component, with that component's moments."""
  sde, eps, target = _problem()
  classifier, params = _train_classifier(sde, target)
  logits_fn = mutils.get_classifier_fn(sde, classifier, params)
  exact = analytic.class_logits_fn(target, sde)
  x0 = target.sample(jax.random.key(3), 20000)
  labels = support.most_responsible(target, np.asarray(x0))  # Components barely overlap.
  t_key, z_key = jax.random.split(jax.random.key(4))
  t = jax.random.uniform(t_key, (x0.shape[0],), minval=eps, maxval=sde.T)
  z = jax.random.normal(z_key, x0.shape)
  _, trained_acc = losses.classifier_loss(logits_fn, sde, x0, jnp.asarray(labels), t, z)
  _, bayes_acc = losses.classifier_loss(exact, sde, x0, jnp.asarray(labels), t, z)
  trained_acc, bayes_acc = float(jnp.mean(trained_acc)), float(jnp.mean(bayes_acc))
  assert trained_acc >= bayes_acc - 0.015, (trained_acc, bayes_acc)

  want = sampling.sample_labels(BATCH, (), 2)
  guided = sampling.get_guided_score_fn(
      lambda x, t, class_labels=None: analytic.score_fn(target, sde)(x, t), want,
      classifier_fn=logits_fn, classifier_scale=1.)
  dpm = sampling.get_dpm_solver_sampler(sde, (BATCH, DIM), sampling.identity,
                                        sampling.get_times(sde, 'dpm_solver', 40, eps=eps))
  samples = np.asarray(jax.jit(lambda r: dpm(r, guided)[0])(jax.random.key(5)))
  law = analytic.marginal(target, sde, eps)
  assert _in_component_fraction(samples, law, want) >= 0.99
  for y in range(2):
    support.assert_matches(samples[want == y], analytic.component(law, y), seed=7 + y,
                           var_bias=_denoise_bias(sde, eps))


def test_label_dropout_draws_the_null_label_at_its_rate():
  """Each label becomes the null label K with probability p (within 5 standard errors);
  the others are unchanged."""
  labels = jnp.arange(100000) % 10
  dropped = np.asarray(losses.drop_labels(jax.random.key(0), labels, 10, 0.2))
  rate = np.mean(dropped == 10)
  assert abs(rate - 0.2) < 5 * np.sqrt(0.2 * 0.8 / labels.size)
  kept = dropped != 10
  np.testing.assert_array_equal(dropped[kept], np.asarray(labels)[kept])


def test_sample_labels_cycle_and_reject_unknown_classes():
  """Every class in turn (one per grid column), or the given classes in turn; a class outside
  [0, K) is refused with the range."""
  np.testing.assert_array_equal(sampling.sample_labels(5, (), 3), [0, 1, 2, 0, 1])
  np.testing.assert_array_equal(sampling.sample_labels(3, (7,), 10), [7, 7, 7])
  try:
    sampling.sample_labels(4, (10,), 10)
  except ValueError as e:
    assert '[0, 10)' in str(e)
  else:
    raise AssertionError('class 10 of 10 was accepted')
