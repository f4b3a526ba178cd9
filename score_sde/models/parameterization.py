"""What the network's output means: the score, the noise, the clean image or the velocity.

Every SDE here perturbs data with a Gaussian kernel, ``x_t = alpha x0 + std eps`` with
``eps ~ N(0, I)``, so the score, the denoiser ``E[x0 | x_t]`` and the noise ``E[eps | x_t]`` are
affine functions of one another (Tweedie: ``E[x0 | x_t] = (x_t + std^2 score) / alpha``,
``E[eps | x_t] = -std score``). A parameterization names which of them the network outputs:

===========  ====================================  =================================
name         the output ``out`` is                  ``score`` from ``out``
===========  ====================================  =================================
``score``    ``grad_x log p_t(x_t)``                ``out``
``eps``      the noise ``eps``                      ``-out / std``
``x0``       the clean image ``x0``                 ``(alpha out - x_t) / std^2``
``v``        ``alpha eps - std x0``                 ``-eps_hat / std`` with ``eps_hat`` below
===========  ====================================  =================================

``v`` is the velocity of Salimans & Ho (2022), written for any ``alpha, std``:
``x0 = (alpha x_t - std v) / (alpha^2 + std^2)`` and ``eps = (std x_t + alpha v) / (alpha^2 +
std^2)``, their ``v`` on a variance-preserving kernel (``alpha^2 + std^2 = 1``).

``alpha`` and ``std`` are those the network's time label stands for: ``sde.marginal_coeffs(t)``
in continuous time; ``sqrt(alphabar_i)`` and ``sqrt(1 - alphabar_i)`` of the DDPM chain's step
``i``; ``1`` and ``sigma_i`` of the SMLD ladder. ``'auto'`` (``model.parameterization``'s
default) is the released convention: ``eps`` on VP and sub-VP, ``score`` on VE; the conversion to
each SDE's native quantity is then the identity (or ``-out / std``), the arithmetic of the
released code, so paper configs and released checkpoints give the same numbers bit for bit.

A preconditioned denoiser (Karras et al. 2022, EDM: ``D(x; sigma) = c_skip x + c_out
F(c_in x; c_noise)``) is the next entry of ``PARAMETERIZATIONS``. Unlike the four above it also
rescales the network's input and replaces its noise label, so it wraps ``labelled_model_fn`` in
``score_fn_from_model_fn`` (``c_in``, ``c_noise`` on the way in) as well as converting the
output (``c_skip``, ``c_out`` into ``denoised``, then the score by Tweedie).
"""
from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.common import errors
from score_sde.common.registry import Registry
from score_sde.sde_lib import batch_mul

PARAMETERIZATIONS = Registry('parameterization')
# model.parameterization's default: each SDE's released convention (native_name).
AUTO = 'auto'


class Parameterization:
  """One meaning of the network's output and its conversions.

  Every method takes ``x`` (``x_t``, ``(B, ...)`` float32) and the kernel's ``alpha``, ``std``
  (``(B,)`` or scalars) and returns an array of the shape of ``x``. Subclasses define ``score``,
  ``from_score`` and ``target``; ``noise`` and ``denoised`` follow from the score by Tweedie's
  formula unless a subclass has a direct form.
  """
  name = ''

  def score(self, out, x, alpha, std):
    """``grad_x log p_t(x)`` from the network's output ``out``."""
    raise NotImplementedError

  def from_score(self, score, x, alpha, std):
    """The output that gives ``score``: the inverse of ``score``."""
    raise NotImplementedError

  def target(self, x0, noise, alpha, std):
    """The output for clean data ``x0`` and noise ``noise`` (``x = alpha x0 + std noise``): the
    regression target of a denoising loss in this parameterization."""
    raise NotImplementedError

  def noise(self, out, x, alpha, std):
    """``E[eps | x_t] = -std score``."""
    return batch_mul(-std, self.score(out, x, alpha, std))

  def denoised(self, out, x, alpha, std):
    """``E[x0 | x_t] = (x + std^2 score) / alpha``."""
    return batch_mul(1. / alpha, x + batch_mul(std ** 2, self.score(out, x, alpha, std)))

  def __repr__(self):
    return f'Parameterization({self.name!r})'


@PARAMETERIZATIONS.register('score')
class Score(Parameterization):
  """The output is the score itself (SMLD, NCSN++ on VE: ``scale_by_sigma`` makes the network
  output ``F(x) / sigma``)."""
  name = 'score'

  def score(self, out, x, alpha, std):
    return out

  def from_score(self, score, x, alpha, std):
    return score

  def target(self, x0, noise, alpha, std):
    return batch_mul(-1. / std, noise)


@PARAMETERIZATIONS.register('eps')
class Eps(Parameterization):
  """The output is the noise ``eps`` (DDPM, Ho et al. 2020): ``score = -out / std``."""
  name = 'eps'

  def score(self, out, x, alpha, std):
    return batch_mul(-1. / std, out)  # The released VP arithmetic, kept bit for bit.

  def from_score(self, score, x, alpha, std):
    return batch_mul(-std, score)

  def target(self, x0, noise, alpha, std):
    return noise

  def noise(self, out, x, alpha, std):
    return out


@PARAMETERIZATIONS.register('x0')
class X0(Parameterization):
  """The output is the clean image ``E[x0 | x_t]``: ``score = (alpha out - x) / std^2``."""
  name = 'x0'

  def score(self, out, x, alpha, std):
    return batch_mul(1. / std ** 2, batch_mul(alpha, out) - x)

  def from_score(self, score, x, alpha, std):
    return batch_mul(1. / alpha, x + batch_mul(std ** 2, score))

  def target(self, x0, noise, alpha, std):
    return x0

  def denoised(self, out, x, alpha, std):
    return out


@PARAMETERIZATIONS.register('v')
class V(Parameterization):
  """The output is the velocity ``v = alpha eps - std x0`` (Salimans & Ho 2022)."""
  name = 'v'

  def score(self, out, x, alpha, std):
    return batch_mul(-1. / std, self.noise(out, x, alpha, std))

  def from_score(self, score, x, alpha, std):
    noise = batch_mul(-std, score)
    x0 = batch_mul(1. / alpha, x - batch_mul(std, noise))
    return self.target(x0, noise, alpha, std)

  def target(self, x0, noise, alpha, std):
    return batch_mul(alpha, noise) - batch_mul(std, x0)

  def noise(self, out, x, alpha, std):
    return batch_mul(1. / (alpha ** 2 + std ** 2), batch_mul(std, x) + batch_mul(alpha, out))

  def denoised(self, out, x, alpha, std):
    return batch_mul(1. / (alpha ** 2 + std ** 2), batch_mul(alpha, x) - batch_mul(std, out))


def choices() -> Tuple[str, ...]:
  """The values ``model.parameterization`` takes: ``'auto'`` and every registered name."""
  return (AUTO,) + tuple(PARAMETERIZATIONS.names())


def native_name(sde: sde_lib.SDE) -> str:
  """The released convention of ``sde``: ``'eps'`` for VP and sub-VP, ``'score'`` for VE."""
  if isinstance(sde, sde_lib.VPSDE):  # subVPSDE included.
    return 'eps'
  if isinstance(sde, sde_lib.VESDE):
    return 'score'
  raise ValueError(f'No score parameterisation for SDE {type(sde).__name__}; '
                   'use VPSDE, subVPSDE or VESDE.')


def get_parameterization(name: str, sde: sde_lib.SDE) -> Parameterization:
  """The parameterization ``name`` (``'auto'``: ``native_name(sde)``).

  Raises:
    errors.ConfigError: for an unknown name, listing the choices.
  """
  name = str(name).lower()
  if name == AUTO:
    name = native_name(sde)
  if name not in PARAMETERIZATIONS:
    raise errors.ConfigError(f'model.parameterization={name!r} is not supported; use one of '
                             f'{", ".join(repr(c) for c in choices())}.')
  return PARAMETERIZATIONS.get(name)()


def labels_and_coeffs(sde: sde_lib.SDE, t: jax.Array, continuous: bool
                      ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """The network's time label and the kernel's ``(alpha, std)`` at ``t (B,)``, each ``(B,)``.

  * VP and sub-VP: continuous-time (and every sub-VP) model: label ``999 t``, ``(alpha, std)``
    the SDE's ``marginal_coeffs``. Discrete DDPM model: label ``t (N - 1)``, ``(sqrt(alphabar_i),
    sqrt(1 - alphabar_i))`` at ``i = int(label)``.
  * VE: continuous: label ``sigma(t)``, ``(1, sigma(t))``. Discrete SMLD: label
    ``round((T - t)(N - 1))``, the index into the descending sigma ladder (0 = largest noise),
    ``(1, sigma_label)``.
  """
  if isinstance(sde, sde_lib.VPSDE):  # subVPSDE included.
    if continuous or isinstance(sde, sde_lib.subVPSDE):
      alpha, std = sde.marginal_coeffs(t)
      return t * 999, alpha, std
    labels = t * (sde.N - 1)
    i = labels.astype(jnp.int32)
    return labels, sde.sqrt_alphas_cumprod[i], sde.sqrt_1m_alphas_cumprod[i]
  if isinstance(sde, sde_lib.VESDE):
    if continuous:
      alpha, std = sde.marginal_coeffs(t)
      return std, alpha, std
    labels = jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32)
    return labels, jnp.ones_like(t), sde.discrete_sigmas[::-1][labels]
  native_name(sde)  # Raises, naming the SDEs that have a kernel here.
  raise AssertionError('unreachable')


def score_fn_from_model_fn(sde: sde_lib.SDE, labelled_model_fn: Callable,
                           continuous: bool = False,
                           parameterization: str = AUTO) -> sde_lib.ScoreFn:
  """``score_fn(x, t, class_labels=None) ~ grad_x log p_t(x)`` around a network already bound to
  its parameters, ``labelled_model_fn(x, labels, class_labels=None) -> output``
  (``models.utils.get_model_fn``): the time label and ``(alpha, std)`` of
  ``labels_and_coeffs``, the output read as ``parameterization`` (``'auto'``: the SDE's released
  convention, ``-output / std`` on VP and sub-VP, the output itself on VE).

  Raises:
    errors.ConfigError: for an unknown ``parameterization``.
    ValueError: for an SDE without a Gaussian kernel here.
  """
  param = get_parameterization(parameterization, sde)

  def score_fn(x, t, class_labels=None):
    labels, alpha, std = labels_and_coeffs(sde, t, continuous)
    return param.score(labelled_model_fn(x, labels, class_labels=class_labels), x, alpha, std)

  return score_fn


def get_denoiser_fn(sde: sde_lib.SDE, score_fn: sde_lib.ScoreFn, continuous: bool = True
                    ) -> Callable[..., jax.Array]:
  """``denoiser_fn(x, t, **kwargs) = E[x0 | x_t = x] = (x + std^2 score_fn(x, t)) / alpha``
  (Tweedie's formula), the input of denoiser-based samplers; ``(alpha, std)`` those of
  ``labels_and_coeffs(sde, t, continuous)``, so pass the ``continuous`` that ``score_fn`` was
  built with. ``x (B, ...)``, ``t (B,)``; the output has the shape of ``x``."""

  def denoiser_fn(x, t, **kwargs):
    _, alpha, std = labels_and_coeffs(sde, t, continuous)
    return batch_mul(1. / alpha, x + batch_mul(std ** 2, score_fn(x, t, **kwargs)))

  return denoiser_fn


def ode_score_continuous(sde: sde_lib.SDE, trained_continuous: bool) -> bool:
  """The ``continuous`` argument of ``get_score_fn`` for a score that an ODE solver integrates:
  the probability-flow ODE sampler and its denoising step, the likelihood (bits/dim), and the
  Heun and DPM-Solver++ samplers.

  VP / sub-VP: always True, as the reference builds these scores (``continuous=True`` in its
  ``get_ode_sampler`` and ``get_likelihood_fn`` whatever the training). A DDPM-trained network
  then gets the label ``999 t`` (its training labels ``t (N - 1)``, not rounded) and is divided by
  the SDE's marginal std; the discrete chain's ``sqrt(1 - alphabar_i)`` is a staircase over
  ``t`` that is 10x the marginal std at ``t = 1e-5``, where the likelihood solve starts.

  VE: the training convention (``trained_continuous``). Here the reference's ``continuous=True``
  would feed ``sigma(t)`` (0.01 to 50) as the label of a network trained on ladder indices
  0..N-1, which that network never saw; the SMLD label ``round((T - t)(N - 1))`` is the one it
  was trained on.
  """
  return True if isinstance(sde, sde_lib.VPSDE) else bool(trained_continuous)


__all__ = ['AUTO', 'PARAMETERIZATIONS', 'Parameterization', 'choices', 'get_denoiser_fn',
           'get_parameterization', 'labels_and_coeffs', 'native_name', 'ode_score_continuous',
           'score_fn_from_model_fn']
