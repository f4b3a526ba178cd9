"""Gaussian-mixture data whose perturbed densities and scores are known in closed form.

Under any SDE of ``sde_lib`` the kernel is ``N(alpha(t) x0, std(t)^2 I)``, so a mixture with
diagonal covariances stays a mixture at every time:

    p_t(x) = sum_k w_k N(x; alpha(t) mu_k, diag(alpha(t)^2 s_k^2 + std(t)^2)).

Its score and log-density are exact, which makes it the ground truth for samplers (the samples of
``p_eps``) and likelihoods (``log p_0``). Shapes: means and stds are ``(K, *event_shape)``,
weights ``(K,)``; ``x`` is ``(B, *event_shape)`` and ``t`` is ``(B,)``.
"""
from typing import Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib


@flax.struct.dataclass
class GaussianMixture:
  """A mixture of Gaussians with diagonal covariances.

  Attributes:
    weights: ``(K,)`` mixture weights, summing to one.
    means: ``(K, *event_shape)`` component means.
    stds: ``(K, *event_shape)`` per-coordinate component standard deviations (> 0).
  """
  weights: jax.Array
  means: jax.Array
  stds: jax.Array

  @property
  def event_shape(self) -> Tuple[int, ...]:
    return tuple(self.means.shape[1:])

  def sample(self, rng: jax.Array, n: int) -> jax.Array:
    """``n`` draws, float32 ``(n, *event_shape)``."""
    k_rng, z_rng = jax.random.split(rng)
    k = jax.random.choice(k_rng, self.weights.shape[0], (n,), p=self.weights)
    z = jax.random.normal(z_rng, (n,) + self.event_shape, jnp.float32)
    return self.means[k] + self.stds[k] * z

  def _component_log_probs(self, x: jax.Array) -> jax.Array:
    """``log w_k + log N(x; mu_k, s_k^2)`` for every example and component: ``(B, K)``."""
    diff = x[:, None] - self.means[None]
    var = self.stds[None] ** 2
    per_coord = -0.5 * (diff ** 2 / var + jnp.log(2 * jnp.pi * var))
    return jnp.log(self.weights) + jnp.sum(per_coord.reshape(*per_coord.shape[:2], -1), -1)

  def log_prob(self, x: jax.Array) -> jax.Array:
    """``log p(x)`` per example, ``(B,)``."""
    return jax.nn.logsumexp(self._component_log_probs(x), axis=-1)

  def responsibilities(self, x: jax.Array) -> jax.Array:
    """Posterior component probabilities ``p(k | x)``, ``(B, K)``."""
    return jax.nn.softmax(self._component_log_probs(x), axis=-1)

  def score(self, x: jax.Array) -> jax.Array:
    """``grad_x log p(x) = sum_k p(k | x) (mu_k - x) / s_k^2``, shape of ``x``."""
    r = self.responsibilities(x)
    per_component = (self.means[None] - x[:, None]) / self.stds[None] ** 2
    return jnp.einsum('bk,bk...->b...', r, per_component)

  def perturb(self, alpha: jax.Array, std: jax.Array) -> 'GaussianMixture':
    """The law of ``alpha x0 + std z`` for scalar ``alpha`` and ``std``."""
    return GaussianMixture(self.weights, alpha * self.means,
                           jnp.sqrt(alpha ** 2 * self.stds ** 2 + std ** 2))


def marginal(target: GaussianMixture, sde: sde_lib.SDE, t: float) -> GaussianMixture:
  """``p_t`` for data ``target`` under ``sde`` at a single time ``t``."""
  alpha, std = sde.marginal_coeffs(jnp.asarray(t, jnp.float32))
  return target.perturb(alpha, std)


def _per_example(target: GaussianMixture, sde: sde_lib.SDE, t: jax.Array):
  """Each example's own ``p_t``, as a batch of mixtures (vmapped over ``t``)."""
  alpha, std = sde.marginal_coeffs(t)
  return jax.vmap(target.perturb)(alpha, std)


def score_fn(target: GaussianMixture, sde: sde_lib.SDE) -> sde_lib.ScoreFn:
  """The exact ``score_fn(x, t) = grad_x log p_t(x)`` of ``target`` perturbed by ``sde``."""

  def score(x, t):
    mixtures = _per_example(target, sde, t)
    return jax.vmap(lambda m, xi: m.score(xi[None])[0])(mixtures, x)

  return score


def log_prob_fn(target: GaussianMixture, sde: sde_lib.SDE):
  """The exact ``log p_t(x)`` per example, ``(B,)``, as a function of ``(x, t)``."""

  def log_prob(x, t):
    mixtures = _per_example(target, sde, t)
    return jax.vmap(lambda m, xi: m.log_prob(xi[None])[0])(mixtures, x)

  return log_prob


def class_logits_fn(target: GaussianMixture, sde: sde_lib.SDE):
  """The exact noise-conditional classifier of a labelled mixture (class = component):
  ``logits_fn(x, t) -> (B, K)``, ``log w_k + log N(x; alpha mu_k, alpha^2 s_k^2 + std^2)``, whose
  softmax is ``p_t(k | x)``."""

  def logits(x, t):
    mixtures = _per_example(target, sde, t)
    return jax.vmap(lambda m, xi: m._component_log_probs(xi[None])[0])(mixtures, x)

  return logits


def component(target: GaussianMixture, k: int) -> GaussianMixture:
  """Component ``k`` of ``target`` alone: the class-conditional law ``p(x | y = k)``."""
  return GaussianMixture(jnp.ones((1,), jnp.float32), target.means[k:k + 1],
                         target.stds[k:k + 1])


def conditional_score_fn(target: GaussianMixture, sde: sde_lib.SDE, null_label: int):
  """``score_fn(x, t, class_labels)`` of a labelled mixture: the exact class-conditional score
  ``grad log p_t(x | y)`` for ``y < null_label``, and the unconditional ``grad log p_t(x)`` for
  ``y = null_label``; what a perfectly trained class-conditional network with label dropout
  computes (the ground truth for classifier-free guidance)."""
  unconditional = score_fn(target, sde)
  per_class = [score_fn(component(target, k), sde) for k in range(target.weights.shape[0])]

  def score(x, t, class_labels):
    labels = jnp.broadcast_to(jnp.asarray(class_labels, jnp.int32), x.shape[:1])
    scores = jnp.stack([f(x, t) for f in per_class] + [unconditional(x, t)])
    index = jnp.where(labels == null_label, len(per_class), labels)
    return jnp.take_along_axis(scores, index.reshape((1, -1) + (1,) * (x.ndim - 1)), 0)[0]

  return score


def random_mixture(rng: np.random.Generator, num_components: int, event_shape,
                   mean_scale: float = 1., std_range=(0.1, 0.5)) -> GaussianMixture:
  """A reproducible random mixture for tests and benchmarks (float32)."""
  weights = rng.dirichlet(np.full(num_components, 5.))
  means = rng.normal(0., mean_scale, (num_components,) + tuple(event_shape))
  stds = rng.uniform(*std_range, (num_components,) + tuple(event_shape))
  return GaussianMixture(*(jnp.asarray(a, jnp.float32) for a in (weights, means, stds)))
