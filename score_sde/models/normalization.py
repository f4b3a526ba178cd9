"""Normalisations of the NCSN family (Song & Ermon 2019, 2020), keyed by ``model.normalization``.

All act on ``(B, H, W, C)`` images per example and channel, with the spatial statistics
``mu_bc = mean_hw x_bhwc`` and ``s2_bc = var_hw x_bhwc`` and ``eps = 1e-5``:

* ``'InstanceNorm'``: ``scale_c (x - mu_bc) / sqrt(s2_bc + eps) + bias_c``.
* ``'VarianceNorm'``: ``scale_c x / sqrt(s2_bc + eps)`` (no centring, no bias).
* ``'InstanceNorm++'`` (Song & Ermon 2019, architecture appendix): instance norm that keeps
  what instance norm removes, the spread of the channel means. With
  ``mu+_bc = (mu_bc - m_b) / sqrt(v_b + eps)``, ``m_b``, ``v_b`` the mean and variance of
  ``mu_b.`` over channels,

      y = gamma_c ((x - mu_bc) / sqrt(s2_bc + eps) + alpha_c mu+_bc) + beta_c.

  Its conditional form (NCSN) reads ``gamma, alpha, beta`` from a table indexed by the noise
  level ``y`` (the row ``[gamma | alpha | beta]`` of ``Embed_0/embedding``, ``(L, 3C)``).
* ``'GroupNorm'``: flax's GroupNorm with 32 groups (``ncsnv2_*`` only).

Class names and parameter names (``scale``, ``bias``, ``alpha``, ``gamma``, ``beta``, all
``(1, 1, 1, C)``; ``Embed_0/embedding``) are those of the released score_sde NCSN code, so its
checkpoints load unchanged. BatchNorm, which the reference lists nowhere for these models, is not
provided.
"""
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

_EPS = 1e-5



def _one_plus_normal(key, shape, dtype=jnp.float32):
  """``1 + N(0, 0.02^2)``: the NCSN initialisation of multiplicative normalisation parameters."""
  return 1. + 0.02 * jax.random.normal(key, shape, dtype)


def _spatial_moments(x: jax.Array):
  """Per-example, per-channel mean and variance over H, W: two ``(B, 1, 1, C)`` float32 arrays
  (reduced in float32 whatever the compute dtype, as flax's GroupNorm)."""
  x = x.astype(jnp.float32)
  return jnp.mean(x, axis=(1, 2), keepdims=True), jnp.var(x, axis=(1, 2), keepdims=True)


def _standardize(x: jax.Array, mean, var) -> jax.Array:
  """``(x - mean) / sqrt(var + eps)`` in float32, returned in ``x``'s dtype."""
  return ((x.astype(jnp.float32) - mean) / jnp.sqrt(var + _EPS)).astype(x.dtype)


def _instance_norm_plus_terms(x: jax.Array):
  """``((x - mu) / sqrt(s2 + eps), mu+)`` of InstanceNorm++, shapes ``x.shape`` and
  ``(B, 1, 1, C)``."""
  mean, var = _spatial_moments(x)
  normed = _standardize(x, mean, var)
  across = jnp.mean(mean, axis=-1, keepdims=True), jnp.var(mean, axis=-1, keepdims=True)
  mean_plus = (mean - across[0]) / jnp.sqrt(across[1] + _EPS)
  return normed, mean_plus.astype(x.dtype)


class InstanceNorm2d(nn.Module):
  """Instance normalisation ``scale (x - mu) / sqrt(s2 + eps) + bias``; ``scale`` starts at 1."""
  bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (1, 1, 1, x.shape[-1])
    mean, var = _spatial_moments(x)
    h = _standardize(x, mean, var) * self.param('scale', nn.initializers.ones, shape)
    if self.bias:
      h = h + self.param('bias', nn.initializers.zeros, shape)
    return h


class VarianceNorm2d(nn.Module):
  """Variance normalisation ``scale x / sqrt(s2 + eps)`` (+ ``bias``); ``scale ~ 1 + N(0, .02^2)``.
  """
  bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (1, 1, 1, x.shape[-1])
    _, var = _spatial_moments(x)
    h = _standardize(x, 0., var) * self.param('scale', _one_plus_normal, shape)
    if self.bias:
      h = h + self.param('bias', nn.initializers.zeros, shape)
    return h


class InstanceNorm2dPlus(nn.Module):
  """InstanceNorm++ ``gamma (x_hat + alpha mu+) + beta`` (see the module docstring);
  ``alpha, gamma ~ 1 + N(0, .02^2)``, ``beta = 0`` at initialisation."""
  bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (1, 1, 1, x.shape[-1])
    normed, mean_plus = _instance_norm_plus_terms(x)
    h = normed + mean_plus * self.param('alpha', _one_plus_normal, shape)
    h = h * self.param('gamma', _one_plus_normal, shape)
    if self.bias:
      h = h + self.param('beta', nn.initializers.zeros, shape)
    return h


class ConditionalInstanceNorm2dPlus(nn.Module):
  """Noise-conditional InstanceNorm++ (NCSN): ``gamma_y (x_hat + alpha_y mu+) + beta_y``.

  Attributes:
    num_scales: rows of the table, one per noise level ``L``.
    bias: whether there is a ``beta`` (the table is ``(L, 3C)``, else ``(L, 2C)``).

  ``__call__(x (B, H, W, C), labels (B,) int in [0, L))``. The table starts at
  ``gamma, alpha ~ 1 + N(0, .02^2)``, ``beta = 0``.
  """
  num_scales: int
  bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    c = x.shape[-1]
    parts = 3 if self.bias else 2

    def init(key, shape, dtype=jnp.float32):
      table = _one_plus_normal(key, shape, dtype)
      return table.at[:, 2 * c:].set(0.)  # beta, when present, starts at zero.

    rows = nn.Embed(self.num_scales, parts * c, embedding_init=init)(labels.astype(jnp.int32))
    coeffs = jnp.split(rows[:, None, None, :], parts, axis=-1)
    normed, mean_plus = _instance_norm_plus_terms(x)
    h = coeffs[0] * (normed + mean_plus * coeffs[1])
    return h + coeffs[2] if self.bias else h


# ``model.normalization`` -> module class (or factory) of the unconditional normalisations ...
NORMALIZATIONS = {
    'InstanceNorm': InstanceNorm2d,
    'InstanceNorm++': InstanceNorm2dPlus,
    'VarianceNorm': VarianceNorm2d,
    'GroupNorm': functools.partial(nn.GroupNorm, num_groups=32),
}
# ... and of the noise-conditional ones, called as ``norm(x, labels)``.
CONDITIONAL_NORMALIZATIONS = {'InstanceNorm++': ConditionalInstanceNorm2dPlus}


def get_normalization(name: str, conditional: bool = False,
                      num_scales: int = 0) -> Callable[[], nn.Module]:
  """A factory of fresh normalisation modules: each call makes (and so auto-names) a new one.

  Args:
    name: ``model.normalization``: 'InstanceNorm', 'InstanceNorm++', 'VarianceNorm' or
      'GroupNorm'; only 'InstanceNorm++' has a conditional form.
    conditional: the noise-conditional form, called as ``norm()(x, labels)``.
    num_scales: number of noise levels (rows of the conditional table).
  Raises:
    ValueError: for a name without such a normalisation, listing the known ones.
  """
  known = CONDITIONAL_NORMALIZATIONS if conditional else NORMALIZATIONS
  if name not in known:
    kind = 'conditional normalisations' if conditional else 'normalisations'
    raise ValueError(f'Unknown model.normalization={name!r}; the {kind} are '
                     f'{", ".join(known)}.')
  if conditional:
    return functools.partial(known[name], num_scales=num_scales)
  return known[name]
