"""Closed-form benchmark targets, shared by ``sampler_error.py`` and ``likelihood_error.py``.

* ``gauss64``: a Gaussian in 64 dimensions, randomly rotated, with standard deviations spaced
  geometrically from 0.01 (the order of the SDEs' smallest noise level) to 1.
* ``mixture32``: 4 Gaussians in 32 dimensions with weights 0.4 / 0.3 / 0.2 / 0.1 and
  per-coordinate stds from 0.02 to 0.5, randomly rotated.
* ``mixture8``: the 3-mode, 8-dimensional mixture of earlier versions of the sampler table.
"""
import jax.numpy as jnp
import numpy as np

from score_sde import analytic


class Target:
  """A mixture in rotated coordinates: ``x = z R^T`` with ``z ~ mixture``; the samplers are
  rotation-equivariant, the rotation keeps the problem from being diagonal in storage."""

  def __init__(self, mixture: analytic.GaussianMixture, rotation: np.ndarray):
    self.mixture, self.rotation = mixture, jnp.asarray(rotation, jnp.float32)

  def score_fn(self, sde):
    diagonal = analytic.score_fn(self.mixture, sde)
    return lambda x, t: diagonal(x @ self.rotation, t) @ self.rotation.T

  def log_prob_fn(self, sde):
    """``log p_t(x)`` per example (a rotation's Jacobian is one)."""
    diagonal = analytic.log_prob_fn(self.mixture, sde)
    return lambda x, t: diagonal(x @ self.rotation, t)

  def marginal_sample(self, sde, t, rng, n):
    """``n`` draws of ``p_t``, float32 ``(n, D)``."""
    return analytic.marginal(self.mixture, sde, t).sample(rng, n) @ self.rotation.T

  def sample(self, rng, n):
    return np.asarray(self.mixture.sample(rng, n) @ self.rotation.T, np.float64)

  def unrotate(self, x):
    return np.asarray(x, np.float64) @ np.asarray(self.rotation, np.float64)


def _rotation(dim, seed):
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
  return q * np.sign(np.diag(r))


def make_target(name):
  if name == 'gauss64':
    stds = np.geomspace(0.01, 1., 64)[None]
    law = analytic.GaussianMixture(jnp.ones((1,)), jnp.zeros((1, 64)), jnp.asarray(stds))
    return Target(law, _rotation(64, 0))
  if name == 'mixture32':
    rng = np.random.default_rng(2)
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    means = rng.normal(0., 1., (4, 32))
    means -= weights @ means
    stds = np.exp(rng.uniform(np.log(0.02), np.log(0.5), (4, 32)))
    law = analytic.GaussianMixture(*(jnp.asarray(a, jnp.float32) for a in (weights, means, stds)))
    return Target(law, _rotation(32, 1))
  if name == 'mixture8':
    law = analytic.random_mixture(np.random.default_rng(0), 3, (8,))
    centre = jnp.einsum('k,k...->...', law.weights, law.means)
    return Target(analytic.GaussianMixture(law.weights, law.means - centre, law.stds),
                  np.eye(8))
  raise KeyError(f'Unknown target {name!r}; known: gauss64, mixture32, mixture8.')
