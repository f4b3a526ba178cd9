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

EDM's preconditioned denoiser (Karras et al. 2022, eq. 7 and Table 1) is three more entries:
``D(x_hat; sigma) = c_skip(sigma) x_hat + c_out(sigma) F(c_in(sigma) x_hat; c_noise(sigma))``
on the scaled-out state ``x_hat = x_t / alpha`` at noise level ``sigma = std / alpha``. Unlike
the four above they also set the network's input and noise label (``network_input``), and
``denoised`` is ``D`` itself; the score follows by Tweedie, ``(alpha D - x_t) / std^2``, so any
SDE's sampler and likelihood run on them:

===========  ==============================  ===============  ================  ===========================
name         ``c_skip``                      ``c_out``        ``c_in``          ``c_noise``
===========  ==============================  ===============  ================  ===========================
``edm``      ``sd^2 / (sigma^2 + sd^2)``     ``sigma sd /     ``1 / sqrt(       ``ln(sigma) / 4``
                                             sqrt(sigma^2 +   sigma^2 + sd^2)``
                                             sd^2)``
``edm_vp``   ``1``                           ``-sigma``       ``1 / sqrt(       ``(M - 1) sigma_VP^-1(sigma)``
                                                              sigma^2 + 1)``
``edm_ve``   ``1``                           ``sigma``        ``1``             ``ln(sigma / 2)``
===========  ==============================  ===============  ================  ===========================

(``sd``: ``model.sigma_data``; ``edm_vp``'s inverse of ``sigma(t) = sqrt(exp(beta_d t^2 / 2 +
beta_min t) - 1)`` with the VP SDE's betas and ``M = 1000``: its label is the VP model's ``999 t``
and its output the noise, so ``edm_vp`` on a VP SDE is the ``eps`` network of DDPM++, and
``edm_ve`` on VE the ``score`` network times ``-sigma`` with the label ``ln(sigma / 2)``.)
"""
from typing import Callable, Tuple, Union

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

  @classmethod
  def create(cls, sde: sde_lib.SDE, sigma_data: float = 0.5) -> 'Parameterization':
    """The parameterization for ``sde`` (``model.sigma_data`` for EDM's); most take neither."""
    del sde, sigma_data
    return cls()

  def network_input(self, x, labels, alpha, std):
    """What the network is called with at ``x`` and its time ``labels``: ``(x, labels)``,
    or a preconditioned denoiser's ``(c_in x_hat, c_noise)``."""
    del alpha, std
    return x, labels

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


class Preconditioned(Parameterization):
  """EDM's preconditioned denoiser ``D(x_hat; sigma) = c_skip x_hat + c_out F(c_in x_hat;
  c_noise)`` (Karras et al. 2022, eq. 7), ``x_hat = x / alpha``, ``sigma = std / alpha``; the
  network's output ``out`` is ``F``. Subclasses give ``coefficients(sigma)``."""

  def coefficients(self, sigma: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(c_skip, c_out, c_in, c_noise)`` at ``sigma (B,)``, each ``(B,)`` float32."""
    raise NotImplementedError

  def network_input(self, x, labels, alpha, std):
    del labels  # c_noise replaces the SDE's time label.
    _, _, c_in, c_noise = self.coefficients(std / alpha)
    return batch_mul(c_in / alpha, x), c_noise

  def denoised(self, out, x, alpha, std):
    c_skip, c_out, _, _ = self.coefficients(std / alpha)
    return batch_mul(c_skip / alpha, x) + batch_mul(c_out, out)

  def score(self, out, x, alpha, std):
    return batch_mul(1. / std ** 2, batch_mul(alpha, self.denoised(out, x, alpha, std)) - x)

  def from_score(self, score, x, alpha, std):
    c_skip, c_out, _, _ = self.coefficients(std / alpha)
    denoised = batch_mul(1. / alpha, x + batch_mul(std ** 2, score))
    return batch_mul(1. / c_out, denoised - batch_mul(c_skip / alpha, x))

  def target(self, x0, noise, alpha, std):
    """``(x0 - c_skip x_hat) / c_out`` with ``x_hat = x0 + sigma noise``: EDM's effective
    training target of ``F`` (eq. 8)."""
    sigma = std / alpha
    c_skip, c_out, _, _ = self.coefficients(sigma)
    x_hat = x0 + batch_mul(sigma, noise)
    return batch_mul(1. / c_out, x0 - batch_mul(c_skip, x_hat))


@PARAMETERIZATIONS.register('edm')
class EDMPreconditioning(Preconditioned):
  """EDM's own preconditioning (``EDMPrecond``), unit-variance input and target at every sigma
  for data of standard deviation ``sigma_data``."""
  name = 'edm'

  def __init__(self, sigma_data: float = 0.5):
    if not sigma_data > 0:
      raise errors.ConfigError(f'model.sigma_data={sigma_data} must be positive: the data\'s '
                               'standard deviation (EDM: 0.5 for images in [-1, 1]).')
    self.sigma_data = float(sigma_data)

  @classmethod
  def create(cls, sde, sigma_data=0.5):
    del sde
    return cls(sigma_data)

  def coefficients(self, sigma):
    sd2 = self.sigma_data ** 2
    return (sd2 / (sigma ** 2 + sd2), sigma * self.sigma_data * jax.lax.rsqrt(sigma ** 2 + sd2),
            jax.lax.rsqrt(sigma ** 2 + sd2), jnp.log(sigma) / 4)


@PARAMETERIZATIONS.register('edm_vp')
class VPPreconditioning(Preconditioned):
  """EDM's ``VPPrecond``: DDPM++'s noise prediction on the VP SDE of betas ``beta_min``,
  ``beta_min + beta_d``, label ``(M - 1) t(sigma)``."""
  name = 'edm_vp'
  M = 1000

  def __init__(self, beta_min: float = 0.1, beta_d: float = 19.9):
    self.beta_min, self.beta_d = float(beta_min), float(beta_d)

  @classmethod
  def create(cls, sde, sigma_data=0.5):
    del sigma_data
    if not isinstance(sde, sde_lib.VPSDE):
      raise errors.ConfigError("model.parameterization='edm_vp' (EDM's VPPrecond) reads the VP "
                               "SDE's betas; set training.sde='vpsde', or use "
                               "model.parameterization='edm' on any SDE.")
    return cls(sde.beta_0, sde.beta_1 - sde.beta_0)

  def sigma_inv(self, sigma: jax.Array) -> jax.Array:
    """The time ``t`` of noise level ``sigma``: the inverse of
    ``sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)``."""
    root = jnp.sqrt(self.beta_min ** 2 + 2 * self.beta_d * jnp.log1p(sigma ** 2))
    return (root - self.beta_min) / self.beta_d

  def coefficients(self, sigma):
    return (jnp.ones_like(sigma), -sigma, jax.lax.rsqrt(sigma ** 2 + 1),
            (self.M - 1) * self.sigma_inv(sigma))


@PARAMETERIZATIONS.register('edm_ve')
class VEPreconditioning(Preconditioned):
  """EDM's ``VEPrecond``: NCSN++'s score network, ``F = -sigma score``, label ``ln(sigma / 2)``."""
  name = 'edm_ve'

  def coefficients(self, sigma):
    return jnp.ones_like(sigma), sigma, jnp.ones_like(sigma), jnp.log(0.5 * sigma)


def choices() -> Tuple[str, ...]:
  """The values ``model.parameterization`` takes: ``'auto'`` and every registered name."""
  return (AUTO,) + tuple(PARAMETERIZATIONS.names())


def preconditioned_names() -> Tuple[str, ...]:
  """The registered names of EDM's preconditionings (``Preconditioned`` entries), which label
  the network by ``c_noise(sigma)`` and so train in continuous time only."""
  return tuple(name for name in PARAMETERIZATIONS.names()
               if issubclass(PARAMETERIZATIONS.get(name), Preconditioned))


def native_name(sde: sde_lib.SDE) -> str:
  """The released convention of ``sde``: ``'eps'`` for VP and sub-VP, ``'score'`` for VE."""
  if isinstance(sde, sde_lib.VPSDE):  # subVPSDE included.
    return 'eps'
  if isinstance(sde, sde_lib.VESDE):
    return 'score'
  raise ValueError(f'No score parameterisation for SDE {type(sde).__name__}; '
                   'use VPSDE, subVPSDE or VESDE.')


def get_parameterization(name: Union[str, Parameterization], sde: sde_lib.SDE,
                         sigma_data: float = 0.5) -> Parameterization:
  """The parameterization ``name`` (``'auto'``: ``native_name(sde)``) for ``sde``, with EDM's
  ``sigma_data`` where it takes one; a ``Parameterization`` is returned as it is.

  Raises:
    errors.ConfigError: for an unknown name, listing the choices, or one that ``sde`` or
      ``sigma_data`` does not fit.
  """
  if isinstance(name, Parameterization):
    return name
  name = str(name).lower()
  if name == AUTO:
    name = native_name(sde)
  if name not in PARAMETERIZATIONS:
    raise errors.ConfigError(f'model.parameterization={name!r} is not supported; use one of '
                             f'{", ".join(repr(c) for c in choices())}.')
  return PARAMETERIZATIONS.get(name).create(sde, sigma_data)


def config_parameterization(config, sde: sde_lib.SDE) -> Parameterization:
  """``config.model.parameterization`` (with ``model.sigma_data``) for ``sde``."""
  return get_parameterization(config.model.get('parameterization', AUTO), sde,
                              config.model.get('sigma_data', 0.5))


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
                           parameterization: Union[str, Parameterization] = AUTO
                           ) -> sde_lib.ScoreFn:
  """``score_fn(x, t, class_labels=None) ~ grad_x log p_t(x)`` around a network already bound to
  its parameters, ``labelled_model_fn(x, labels, class_labels=None) -> output``
  (``models.utils.get_model_fn``): the time label and ``(alpha, std)`` of
  ``labels_and_coeffs``, the output read as ``parameterization`` (``'auto'``: the SDE's released
  convention, ``-output / std`` on VP and sub-VP, the output itself on VE; a preconditioned one
  also sets the network's input and label, ``network_input``).

  Raises:
    errors.ConfigError: for an unknown ``parameterization``.
    ValueError: for an SDE without a Gaussian kernel here.
  """
  param = get_parameterization(parameterization, sde)

  def score_fn(x, t, class_labels=None):
    labels, alpha, std = labels_and_coeffs(sde, t, continuous)
    inputs, labels = param.network_input(x, labels, alpha, std)
    return param.score(labelled_model_fn(inputs, labels, class_labels=class_labels), x, alpha,
                       std)

  return score_fn


def sigma_denoiser_fn(param: Preconditioned, labelled_model_fn: Callable) -> Callable:
  """``denoiser(x_hat, sigma, class_labels=None) = D(x_hat; sigma)`` (Karras et al. eq. 7) of a
  preconditioned network bound to its parameters: ``x_hat (B, ...)`` the data plus noise of std
  ``sigma (B,)``, with no SDE or time in between (EDM's objective draws ``sigma`` itself).

  Raises:
    errors.ConfigError: for a parameterization that is not preconditioned (its label is a time).
  """
  if not isinstance(param, Preconditioned):
    raise errors.ConfigError(
        f'A denoiser of the noise level alone needs a preconditioned model.parameterization '
        f"('edm', 'edm_vp', 'edm_ve'); got {param.name!r}, whose network is labelled by time.")

  def denoiser(x_hat, sigma, class_labels=None):
    one = jnp.ones_like(sigma)
    inputs, labels = param.network_input(x_hat, None, one, sigma)
    return param.denoised(labelled_model_fn(inputs, labels, class_labels=class_labels), x_hat,
                          one, sigma)

  return denoiser


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


__all__ = ['AUTO', 'EDMPreconditioning', 'PARAMETERIZATIONS', 'Parameterization',
           'Preconditioned', 'VEPreconditioning', 'VPPreconditioning', 'choices',
           'config_parameterization', 'get_denoiser_fn', 'get_parameterization',
           'labels_and_coeffs', 'native_name', 'ode_score_continuous', 'preconditioned_names',
           'score_fn_from_model_fn', 'sigma_denoiser_fn']
