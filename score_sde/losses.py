"""Denoising score-matching objectives, and the train / eval step built on them.

Each objective is the per-example loss at given noise draws, on plain callables so that it can
be checked against closed forms; drawing the noise is the caller's (``low_noise``'s samplers in
training):

* ``dsm_loss``: the continuous-time objective of eq. (7),
  ``E_t E_{x0} E_z [lambda(t) || s(alpha x0 + std z, t) + z / std ||^2]`` with ``t ~ U(eps, T)``,
  at given ``t`` and ``z``.
* ``smld_loss``: the discrete NCSN objective over the ``N`` noise scales of a VE SDE (eq. 1), with
  ``lambda_i = sigma_i^2``, at given labels ``i`` (uniform in training) and ``z``.
* ``ddpm_loss``: the discrete DDPM epsilon-prediction objective of a VP SDE (eq. 3), likewise.
* ``edm_loss``: EDM's objective (Karras et al. 2022, eq. 8) on a preconditioned denoiser
  ``D(x_hat; sigma)``: ``lambda(sigma) || D(x0 + sigma z; sigma) - x0 ||^2`` at given ``sigma``
  and ``z``, ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``, with
  ``ln sigma ~ N(p_mean, p_std^2)`` for the objective.

The weighting (``weighting``, ``training.weighting``) is one of four:

* ``'dsm'``: ``lambda(t) = std(t)^2`` in continuous time (the loss ``|| std s + z ||^2``); in
  discrete time the SMLD loss and DDPM's simple loss ``|| eps_hat - z ||^2``.
* ``'likelihood'``: ``lambda(t) = g(t)^2`` (Song et al. 2021b), continuous time only: half the
  sum of ``g^2 || s + z / std ||^2`` is the bound's diffusion integrand per unit ``t``.
* ``'elbo'``: the variational bound's diffusion term itself (``elbo.py``), in nats summed over the
  data dimensions (``reduce_mean=False``). Continuous (VP, sub-VP, VE):
  ``(T - eps) g^2 / (2 std^2) || std s + z ||^2``, whose mean over ``t ~ U(eps, T)`` is
  ``1/2 int_eps^T g^2 E_z || s + z / std ||^2 dt``. Discrete DDPM:
  ``N w_i || eps_hat - z ||^2`` with Ho et al.'s eq. 12 weight
  ``w_i = beta_i^2 / (2 sigma_i^2 (1 - beta_i) (1 - abar_i))`` (``sigma_i^2`` the reverse
  variance, ``beta~_i`` or ``beta_i``: ``reverse_variance``), whose mean over uniform labels is
  the chain's denoising sum ``sum_i L_i`` less its network-free constants (``L_0`` as a Gaussian
  decoder). The SMLD ladder has no variational bound, so no ``'elbo'`` weighting.
* ``'edm'``: ``edm_loss`` with its log-normal levels, continuous time, on a network with EDM's
  preconditioning (``model.parameterization`` ``'edm'``, ``'edm_vp'`` or ``'edm_ve'``). EDM's
  ``VPLoss`` and ``VELoss`` are ``'dsm'`` on those networks: on a VP SDE with ``'edm_vp'``,
  ``|| std s + z ||^2 = || D - x0 ||^2 / sigma^2``, VPLoss's weight and error at ``t ~ U(eps, 1)``;
  on a VE SDE with ``'edm_ve'`` the same at VELoss's log-uniform ``sigma(t)``.

A class-conditional network (``model.num_classes = K > 0``) sees each example's label, replaced
by the null label ``K`` with probability ``label_dropout``, so that one network learns both the
conditional and the unconditional score (classifier-free guidance, Ho & Salimans 2022).
``classifier_loss`` is the objective of the noise-conditional classifier of classifier guidance
(Song et al. 2021, app. I.1): cross-entropy of ``p_t(y | x(t))`` on ``x(t)`` drawn from the
perturbation kernel at ``t ~ U(eps, T)``.

Per-example losses are half sums (or means, with ``reduce_mean``) over the data dimensions, as
in the reference code (``0.5 * sum``: the same logged losses and, with ``optim.grad_clip``, the
same clipped updates), or with ``'elbo'`` the bound's nats; the batch loss is their mean.

On a Flax network an objective is an ``Objective`` of two parts: ``draw``, every random draw of
a step at the global batch shape (so that a loss does not depend on how the batch is sharded or
accumulated), and ``loss``, the network and the objective on any rows of the batch with the
same rows of the draws. ``get_step_fn`` (``StepSettings``, ``step_settings(config)``) draws once
per step and, under gradient accumulation, hands each micro-batch its rows of both.
"""
import dataclasses
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde import low_noise, optim, sde_lib
from score_sde.models import utils as mutils
from score_sde.models.parameterization import (Preconditioned, get_parameterization,
                                              sigma_denoiser_fn)
from score_sde.sde_lib import batch_mul

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def _reduce(x: jax.Array, reduce_mean: bool) -> jax.Array:
  """``(B, ...) -> (B,)``: the mean over the data dimensions, or half their sum (the reference's
  ``reduce_op``, so that every summed objective here is half the squared norm)."""
  x = x.reshape(x.shape[0], -1)
  return jnp.mean(x, axis=-1) if reduce_mean else 0.5 * jnp.sum(x, axis=-1)


# The objective's weighting (training.weighting) and DDPM's two fixed reverse variances
# (model.reverse_variance: beta~, the posterior's, or beta), as the module docstring states.
WEIGHTINGS = ('dsm', 'likelihood', 'elbo', 'edm')
REVERSE_VARIANCES = ('posterior', 'beta')


def _check_weighting(weighting: str, reduce_mean: bool, continuous: bool) -> None:
  """Raises ValueError, naming the fix, for a weighting the objective does not have."""
  if weighting not in WEIGHTINGS:
    raise ValueError(f'weighting={weighting!r}; choose one of {", ".join(WEIGHTINGS)}.')
  if weighting in ('likelihood', 'edm') and not continuous:
    raise ValueError(f"The {weighting!r} weighting applies to the continuous objective only; "
                     "set training.continuous = True or training.weighting = 'dsm'.")
  if weighting == 'elbo' and reduce_mean:
    raise ValueError("The 'elbo' weighting is the bound's sum over the data dimensions; set "
                     'training.reduce_mean = False.')


def ddpm_elbo_weights(sde: sde_lib.VPSDE, reverse_variance: str = 'posterior') -> np.ndarray:
  """``(N,)`` float64 weights ``w_i`` of the DDPM chain's KL terms on the noise error,
  ``L_i = w_i || eps - eps_hat ||^2 + c_i`` (Ho et al. eq. 12):
  ``w_i = beta_i^2 / (2 sigma_i^2 (1 - beta_i) (1 - abar_i))``.

  ``sigma_i^2`` is the reverse variance: ``beta~_i = (1 - abar_{i-1}) beta_i / (1 - abar_i)``
  (``'posterior'``) or ``beta_i`` (``'beta'``); the first step's is ``beta~_1`` under both
  (``beta~_0 = 0``), as in DDPM's code, which makes ``w_0`` the weight of a Gaussian decoder of
  that variance. ``elbo.ddpm_kl_weights`` gives them in the clean-image unit too.
  """
  if reverse_variance not in REVERSE_VARIANCES:
    raise ValueError(f'reverse_variance={reverse_variance!r}; choose one of '
                     f'{", ".join(REVERSE_VARIANCES)} (DDPM\'s beta~ or beta).')
  betas = np.asarray(sde.chain_betas, np.float64)
  abar = np.cumprod(1. - betas)
  posterior = betas[1:] * (1. - abar[:-1]) / (1. - abar[1:])
  var = np.append(posterior[0], posterior if reverse_variance == 'posterior' else betas[1:])
  return betas ** 2 / (2. * var * (1. - betas) * (1. - abar))


def dsm_loss(score_fn: sde_lib.ScoreFn, sde: sde_lib.SDE, data: jax.Array, t: jax.Array,
             z: jax.Array, reduce_mean: bool = False, weighting: str = 'dsm',
             eps: float = 1e-5) -> jax.Array:
  """Continuous denoising score matching, eq. (7), at times ``t`` and noise ``z``; ``(B,)``.

  ``lambda(t) || s(x_t, t) + z / std(t) ||^2`` with ``x_t = mean(t) + std(t) z``; with
  ``weighting='elbo'``, ``(T - eps) g^2 / (2 std^2) || std s + z ||^2`` (nats), the bound's
  diffusion term estimated at this ``(t, z)``.

  Args:
    score_fn: ``score_fn(x, t)``, the model's score at perturbed data ``x`` and times ``t (B,)``.
    sde: the forward SDE that perturbs ``data``.
    data: clean data ``x0``, float ``(B, ...)``.
    t: ``(B,)`` float32 times; ``U(eps, T)`` for the objective (``low_noise.TimeSampler``).
    z: standard normal noise of ``data``'s shape and dtype.
    reduce_mean: mean instead of half the sum over the data dimensions.
    weighting: ``'dsm'`` (``lambda = std^2``), ``'likelihood'`` (``g^2``) or ``'elbo'`` (the
      bound's diffusion term in nats; needs ``reduce_mean=False``), as the module states.
    eps: the lower end of ``t``'s range (the score diverges as t -> 0), read by ``'elbo'``.
  """
  _check_weighting(weighting, reduce_mean, continuous=True)
  mean, std = sde.marginal_prob(data, t)
  score = score_fn(mean + batch_mul(std, z), t)
  if weighting == 'likelihood':
    g2 = sde.sde(jnp.zeros_like(data), t)[1] ** 2
    return _reduce(jnp.square(score + batch_mul(1. / std, z)), reduce_mean) * g2
  loss = _reduce(jnp.square(batch_mul(std, score) + z), reduce_mean)
  if weighting == 'elbo':  # Half the sum times g^2 / std^2: g^2 / (2 std^2) times the sum.
    g2 = sde.sde(jnp.zeros_like(data), t)[1] ** 2
    return loss * ((sde.T - eps) * g2 / std ** 2)
  return loss


def edm_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
  """EDM's loss weight ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``, the
  inverse of the denoiser target's variance ``c_out(sigma)^2`` (Karras et al. 2022, eq. 8)."""
  return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_loss(denoiser_fn: Callable[[jax.Array, jax.Array], jax.Array], data: jax.Array,
             sigma: jax.Array, z: jax.Array, sigma_data: float = 0.5,
             reduce_mean: bool = False) -> jax.Array:
  """EDM's objective at noise levels ``sigma (B,)`` and noise ``z``; ``(B,)``:
  ``lambda(sigma) || D(x0 + sigma z; sigma) - x0 ||^2`` (``edm_weight``), the half sum (or the
  mean) over the data dimensions as every objective here: half of EDM's ``EDMLoss`` summed over
  an image.

  Args:
    denoiser_fn: ``denoiser_fn(x_hat, sigma) -> D`` (``parameterization.sigma_denoiser_fn``).
    data: clean data ``x0``, float ``(B, ...)``.
    sigma: ``(B,)`` float32 noise levels; ``ln sigma ~ N(p_mean, p_std^2)`` for the objective.
    z: standard normal noise of ``data``'s shape and dtype.
    sigma_data: the data's standard deviation of ``lambda``.
    reduce_mean: the mean instead of half the sum over the data dimensions.
  """
  denoised = denoiser_fn(data + batch_mul(sigma, z), sigma)
  return _reduce(jnp.square(denoised - data), reduce_mean) * edm_weight(sigma, sigma_data)


def smld_level_stds(sde: sde_lib.VESDE) -> np.ndarray:
  """The noise std of each SMLD label (descending ladder: label 0 is ``sigma_max``)."""
  return np.asarray(sde.discrete_sigmas)[::-1]


def ddpm_level_stds(sde: sde_lib.VPSDE) -> np.ndarray:
  """The noise std ``sqrt(1 - alphabar_i)`` of each DDPM label ``i``."""
  return np.asarray(sde.sqrt_1m_alphas_cumprod)


def smld_loss(model_fn: ModelFn, sde: sde_lib.VESDE, data: jax.Array, labels: jax.Array,
              z: jax.Array, reduce_mean: bool = False,
              parameterization='auto') -> jax.Array:
  """The discrete SMLD / NCSN objective at labels ``(B,)`` int and noise ``z``; ``(B,)``.

  Label ``i`` (uniform over the ``N`` discrete scales for the objective) indexes the scales in
  *descending* order (label 0 is ``sigma_max``, the released NCSN++ convention); the network is
  called with it, and its output ``s`` is the score (or, with another ``parameterization``,
  converted to it with ``alpha = 1``, ``std = sigma_i``); the loss is
  ``sigma_i^2 || s - (-noise / sigma_i^2) ||^2`` with ``noise = sigma_i z``.
  """
  if not isinstance(sde, sde_lib.VESDE):
    raise ValueError(f'The SMLD loss needs a VESDE, got {type(sde).__name__}; set '
                     'training.sde = "vesde" or training.continuous = True.')
  sigmas = sde.discrete_sigmas[::-1][labels]
  noise = batch_mul(sigmas, z)
  perturbed = data + noise
  score = get_parameterization(parameterization, sde).score(
      model_fn(perturbed, labels), perturbed, jnp.ones_like(sigmas), sigmas)
  target = -batch_mul(1. / sigmas ** 2, noise)
  return _reduce(jnp.square(score - target), reduce_mean) * sigmas ** 2


def ddpm_loss(model_fn: ModelFn, sde: sde_lib.VPSDE, data: jax.Array, labels: jax.Array,
              z: jax.Array, reduce_mean: bool = False, parameterization='auto',
              weighting: str = 'dsm', reverse_variance: str = 'posterior') -> jax.Array:
  """The discrete DDPM objective ``|| eps_theta(sqrt(abar_i) x0 + sqrt(1 - abar_i) z, i) - z ||^2``
  at steps ``labels (B,)`` int (uniform over the ``N`` steps of the chain for the objective)
  and noise ``z``; ``(B,)``. ``eps_theta`` is the output, or with another ``parameterization``
  the noise it gives with ``alpha = sqrt(abar_i)``, ``std = sqrt(1 - abar_i)``.
  ``weighting='elbo'``: ``N w_i || eps_theta - z ||^2`` (nats; ``w = ddpm_elbo_weights(sde,
  reverse_variance)``, needs ``reduce_mean=False``), the chain's KL term ``L_i`` up to its
  network-free constant, times ``N`` so that the mean over labels is their sum."""
  if type(sde) is not sde_lib.VPSDE:  # A sub-VP SDE has no discrete chain.
    raise ValueError(f'The DDPM loss needs a VPSDE, got {type(sde).__name__}; set '
                     'training.sde = "vpsde" or training.continuous = True.')
  _check_weighting(weighting, reduce_mean, continuous=False)
  alpha, std = sde.sqrt_alphas_cumprod[labels], sde.sqrt_1m_alphas_cumprod[labels]
  perturbed = batch_mul(alpha, data) + batch_mul(std, z)
  noise = get_parameterization(parameterization, sde).noise(
      model_fn(perturbed, labels), perturbed, alpha, std)
  loss = _reduce(jnp.square(noise - z), reduce_mean)
  if weighting == 'elbo':  # N w_i times the whole sum: 2 N w_i times the half sum.
    weights = jnp.asarray(2. * sde.N * ddpm_elbo_weights(sde, reverse_variance), jnp.float32)
    return loss * weights[labels]
  return loss


def classifier_loss(logits_fn: Callable[[jax.Array, jax.Array], jax.Array], sde: sde_lib.SDE,
                    data: jax.Array, labels: jax.Array, t: jax.Array,
                    z: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Cross-entropy of a noise-conditional classifier on perturbed data (app. I.1).

  ``x(t) = alpha(t) x0 + std(t) z`` with ``t ~ U(eps, T)`` for the objective, the kernel the
  score model is trained on, so that the classifier knows ``p_t(y | x)`` at every time a
  sampler visits.

  Args:
    logits_fn: ``logits_fn(x, t) -> (B, K)`` (``models.utils.get_classifier_fn``).
    sde: the forward SDE.
    data: clean data ``(B, ...)``; labels: ``(B,)`` int classes.
    t: ``(B,)`` float32 times; z: standard normal noise of ``data``'s shape.
  Returns:
    ``(B,)`` per-example cross-entropies (nats) and ``(B,)`` float 0/1 correctness of the argmax.
  """
  mean, std = sde.marginal_prob(data, t)
  log_probs = jax.nn.log_softmax(logits_fn(mean + batch_mul(std, z), t), axis=-1)
  labels = labels.astype(jnp.int32)
  nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  correct = (jnp.argmax(log_probs, axis=-1) == labels).astype(jnp.float32)
  return nll, correct


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """What a train / eval step and its objective are built from; ``step_settings(config)`` reads
  them from a config. The defaults: eq. (7) in float32, the paper's EMA, no accumulation.

  Attributes:
    continuous: eq. (7) (``dsm_loss``), or the discrete objective of the SDE (``smld_loss`` for
      VE, ``ddpm_loss`` for VP).
    weighting: ``'dsm'``, ``'likelihood'``, ``'elbo'`` or ``'edm'``, as the module states.
    reduce_mean: the mean over the data dimensions instead of half their sum.
    eps: the smallest time drawn, ``t ~ U(eps, T)`` (the score diverges as t -> 0).
    reverse_variance: DDPM's ``'posterior'`` (``beta~``) or ``'beta'``, read by its ``'elbo'``.
    parameterization: what the network outputs (``models.parameterization``); each objective
      converts it to the quantity it compares, so the objective is the same for every choice.
    sigma_data: EDM's data standard deviation, of its preconditioning and loss weight.
    p_mean, p_std: the mean and std of ``ln sigma`` in ``'edm'``'s draws.
    label_dropout: the probability that a class-conditional network sees the null label while
      training.
    compute_dtype: the network's, ``'float32'`` or ``'bfloat16'`` (``get_model_fn``); the
      perturbation, the loss and its reduction stay float32.
    float32_below_std: with bfloat16, the noise levels of std below it run in float32
      (``low_noise``); 0: none.
    ema_rate, ema_warmup: the EMA of the weights, ``optim.ema_rate_at``.
    ema_halflife_kimg, ema_rampup_ratio, batch_size: the EMA by its half-life in images instead
      (EDM's; ``ema_halflife_kimg > 0``), ``optim.ema_halflife_rate`` at the global batch size.
    grad_accum_steps: micro-batches per update (``accumulated_value_and_grad``).
  """
  continuous: bool = True
  weighting: str = 'dsm'
  reduce_mean: bool = False
  eps: float = 1e-5
  reverse_variance: str = 'posterior'
  parameterization: str = 'auto'
  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2
  label_dropout: float = 0.
  compute_dtype: str = 'float32'
  float32_below_std: float = 0.
  ema_rate: float = 0.999
  ema_warmup: bool = False
  ema_halflife_kimg: float = 0.
  ema_rampup_ratio: float = 0.
  batch_size: int = 0
  grad_accum_steps: int = 1


def step_settings(config) -> StepSettings:
  """The score model's step as ``config.training`` and ``config.model`` state it."""
  training, model = config.training, config.model
  return StepSettings(
      continuous=training.continuous, weighting=training.weighting,
      reduce_mean=training.reduce_mean, eps=training.eps,
      reverse_variance=model.reverse_variance,
      parameterization=model.get('parameterization', 'auto'),
      sigma_data=model.get('sigma_data', 0.5), p_mean=training.get('p_mean', -1.2),
      p_std=training.get('p_std', 1.2),
      label_dropout=training.label_dropout, compute_dtype=training.compute_dtype,
      float32_below_std=training.get('float32_below_std', 0.), ema_rate=model.ema_rate,
      ema_warmup=model.ema_warmup, ema_halflife_kimg=model.get('ema_halflife_kimg', 0.),
      ema_rampup_ratio=model.get('ema_rampup_ratio', 0.), batch_size=training.batch_size,
      grad_accum_steps=training.grad_accum_steps)


def network_key(rng: jax.Array) -> jax.Array:
  """The network's (dropout) key of a step's key ``rng``: the second half of its split, the
  first being the score objective's for its noise."""
  return jax.random.split(rng)[1]


class Objective(NamedTuple):
  """A per-example objective on a network, in the two parts that a step separates.

  Attributes:
    draw: ``draw(rng, batch) -> noise``: every random draw for ``batch`` from the step's key,
      at the global batch shape; a dict of ``(B, ...)`` arrays, row ``i`` example ``i``'s.
    loss: ``loss(rng, params, batch, noise) -> {'loss': (B,), ...}``: per-example losses (and
      metrics, as ``'accuracy'``) on any rows of ``batch`` with the same rows of ``noise``;
      ``rng`` is the network's key (``network_key`` of the step's).
  """
  draw: Callable
  loss: Callable

  def __call__(self, rng: jax.Array, params, batch) -> Dict[str, jax.Array]:
    """Both parts on the whole batch from the step's key ``rng``."""
    return self.loss(network_key(rng), params, batch, self.draw(rng, batch))


def drop_labels(rng: jax.Array, labels: jax.Array, num_classes: int,
                label_dropout: float) -> jax.Array:
  """``labels (B,)`` as int32, each replaced by the null label ``num_classes`` with probability
  ``label_dropout`` (independently)."""
  if not 0. <= label_dropout <= 1.:
    raise ValueError(f'label_dropout must be a probability in [0, 1]; got {label_dropout}.')
  drop = jax.random.bernoulli(rng, label_dropout, labels.shape)
  return jnp.where(drop, num_classes, labels).astype(jnp.int32)


def score_objective(sde: sde_lib.SDE, model, train: bool,
                    settings: StepSettings = StepSettings()) -> Objective:
  """The training objective of the score network ``model`` that ``settings`` states.

  ``batch['image']`` is the scaled data ``(B, H, W, C)``; dropout applies when ``train``. A
  class-conditional ``model`` also reads ``batch['label']`` (``(B,)`` int in ``[0, K)``),
  dropped to the null label with probability ``label_dropout`` when ``train`` (evaluation
  scores the conditional model). The levels are ``t ~ U(eps, T)`` (``settings.continuous``),
  labels uniform over the ``N`` levels, or with ``'edm'`` noise levels ``ln sigma ~ N(p_mean,
  p_std^2)``; with bfloat16 and ``float32_below_std > 0`` they are
  drawn stratified (``low_noise``): rows ``r % every == 0`` of each network call take the
  levels of std below it and run the network in float32, each row's loss weighted so that the
  mean estimates the same objective.

  ``draw`` gives ``{'levels': (B,), 'z': (B, H, W, C)[, 'class_labels': (B,) int32]}``: the
  levels and ``z`` from ``split(split(rng)[0])``, the labels after ``drop_labels`` from
  ``fold_in(rng, 2)`` (a stream of their own, so that the other draws are those of an
  unconditional run).
  """
  s = settings
  _check_weighting(s.weighting, s.reduce_mean, s.continuous)
  if s.weighting == 'elbo' and not s.continuous and isinstance(sde, sde_lib.VESDE):
    raise ValueError("The SMLD objective has no variational bound; set training.weighting = "
                     "'dsm' or training.continuous = True.")
  param = get_parameterization(s.parameterization, sde, s.sigma_data)
  if isinstance(param, Preconditioned) and not s.continuous:
    raise ValueError(f'model.parameterization={param.name!r} (EDM\'s preconditioning) labels the '
                     'network by its noise level, which the discrete objectives do not; set '
                     'training.continuous = True.')
  mutils.compute_dtype(s.compute_dtype)  # Fails early on an unknown name.
  below = s.float32_below_std if s.compute_dtype != 'float32' else 0.
  if s.weighting == 'edm':
    sigma_denoiser_fn(param, None)  # Fails early for a network labelled by time.
    sampler = low_noise.lognormal_sampler(s.p_mean, s.p_std, below)
  elif s.continuous:
    sampler = low_noise.time_sampler(sde, s.eps, below)
  elif isinstance(sde, sde_lib.VESDE):
    sampler = low_noise.label_sampler(smld_level_stds(sde), below)
  else:
    sampler = low_noise.label_sampler(ddpm_level_stds(sde), below)
  conditional = mutils.is_class_conditional(model)
  drops = conditional and train and bool(s.label_dropout)

  def draw(rng, batch):
    data = batch['image']
    level_rng, z_rng = jax.random.split(jax.random.split(rng)[0])
    noise = {'levels': sampler.draw(level_rng, data.shape[0]),
             'z': jax.random.normal(z_rng, data.shape, data.dtype)}
    if drops:
      noise['class_labels'] = drop_labels(jax.random.fold_in(rng, 2), batch['label'],
                                          model.num_classes, s.label_dropout)
    return noise

  def loss(rng, params, batch, noise):
    data, class_labels = batch['image'], None
    if conditional:
      class_labels = noise['class_labels'] if drops else batch['label']
    levels = sampler.levels(noise['levels'])

    def network(dtype):
      def model_fn(class_labels):
        return mutils.get_model_fn(model, params, train=train, rng=rng,
                                   class_labels=class_labels, dtype=dtype)
      if s.weighting == 'edm':
        return lambda x, sigma, class_labels: sigma_denoiser_fn(
            param, model_fn(class_labels))(x, sigma)
      if s.continuous:
        return lambda x, t, class_labels: mutils.score_fn_from_model_fn(
            sde, model_fn(class_labels), True, param)(x, t)
      return lambda x, labels, class_labels: model_fn(class_labels)(x, labels)

    fn = low_noise.split_rows(network('float32'), network(s.compute_dtype), levels.every,
                              class_labels)
    if s.weighting == 'edm':
      per_example = edm_loss(fn, data, levels.values, noise['z'], s.sigma_data, s.reduce_mean)
    elif s.continuous:
      per_example = dsm_loss(fn, sde, data, levels.values, noise['z'], s.reduce_mean,
                             s.weighting, s.eps)
    elif isinstance(sde, sde_lib.VESDE):
      per_example = smld_loss(fn, sde, data, levels.values, noise['z'], s.reduce_mean, param)
    else:
      per_example = ddpm_loss(fn, sde, data, levels.values, noise['z'], s.reduce_mean, param,
                              s.weighting, s.reverse_variance)
    return {'loss': per_example * levels.weights}

  return Objective(draw, loss)


def get_per_example_loss_fn(sde: sde_lib.SDE, model, train: bool,
                            settings: StepSettings = StepSettings()):
  """``loss_fn(rng, params, batch) -> (B,)``: ``score_objective``'s per-example losses on the
  whole batch from the key ``rng`` (per example so that evaluation can mask the padding rows of
  a split's last batch)."""
  objective = score_objective(sde, model, train, settings)
  return lambda rng, params, batch: objective(rng, params, batch)['loss']


def get_sde_loss_fn(sde: sde_lib.SDE, model, train: bool,
                    settings: StepSettings = StepSettings()):
  """The training objective for a Flax ``model``, ``loss_fn(rng, params, batch) -> loss``: the
  mean over the batch of ``get_per_example_loss_fn``'s losses."""
  per_example = get_per_example_loss_fn(sde, model, train, settings)
  return lambda rng, params, batch: jnp.mean(per_example(rng, params, batch))


def classifier_objective(sde: sde_lib.SDE, classifier, eps: float = 1e-5) -> Objective:
  """The noise-conditional classifier's objective, ``classifier_loss`` at ``t ~ U(eps, T)``:
  per-example cross-entropy ``'loss'`` and 0/1 ``'accuracy'``. ``batch`` holds ``'image'``
  (scaled) and ``'label'``; ``draw`` gives ``{'t', 'z'}`` from ``split(rng)``. The classifier
  computes in float32, without dropout."""
  times = low_noise.time_sampler(sde, eps)

  def draw(rng, batch):
    data = batch['image']
    t_rng, z_rng = jax.random.split(rng)
    return {'t': times.draw(t_rng, data.shape[0]),
            'z': jax.random.normal(z_rng, data.shape, data.dtype)}

  def loss(rng, params, batch, noise):
    del rng  # No dropout.
    logits_fn = mutils.get_classifier_fn(sde, classifier, params)
    nll, correct = classifier_loss(logits_fn, sde, batch['image'], batch['label'], noise['t'],
                                   noise['z'])
    return {'loss': nll, 'accuracy': correct}

  return Objective(draw, loss)


def accumulated_value_and_grad(fn: Callable, grad_accum_steps: int) -> Callable:
  """``fn(rng, params, rows) -> (loss, aux)`` to ``(rng, params, rows) -> ((loss, aux), grads)``.

  With ``k = grad_accum_steps``: the mean over micro-batches ``j < k`` of
  ``jax.value_and_grad(fn)`` on rows ``j::k`` of every leaf of ``rows`` (a pytree of arrays with
  the batch's rows first) with the key ``fold_in(rng, j)``; ``k = 1``: one call on all rows with
  ``rng``. Equal to one call on all rows when ``fn`` is a mean over rows whose draws come in
  ``rows`` (only what ``fn`` draws from ``rng``, as dropout masks, differs), at the activation
  memory of one micro-batch. Rows ``j::k``, so that each micro-batch is split over the devices
  as the batch is."""
  k = int(grad_accum_steps)
  if k < 1:
    raise ValueError(f'grad_accum_steps must be a positive integer; got {grad_accum_steps}.')
  value_and_grad = jax.value_and_grad(fn, argnums=1, has_aux=True)
  if k == 1:
    return value_and_grad

  def accumulated(rng, params, rows):
    def split(x):
      if x.shape[0] % k:
        raise ValueError(f'A batch of {x.shape[0]} does not split into grad_accum_steps={k} '
                         'equal micro-batches.')
      return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)

    micro_batches = jax.tree.map(split, rows)

    def body(total, inputs):
      index, micro_batch = inputs
      out = value_and_grad(jax.random.fold_in(rng, index), params, micro_batch)
      return jax.tree.map(jnp.add, total, out), None

    first = jax.tree.map(lambda x: x[0], micro_batches)
    shapes = jax.eval_shape(value_and_grad, rng, params, first)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro_batches))
    return jax.tree.map(lambda x: x / k, total)

  return accumulated


def get_objective_step_fn(objective: Objective, train: bool,
                          optimizer: Optional[optax.GradientTransformation] = None,
                          settings: StepSettings = StepSettings()):
  """One training or evaluation step of ``objective``, ``step_fn(state, batch, key) -> (state,
  metrics)``.

  The step's key is ``rng = fold_in(key, state.step)``: a pure function of the run's key and the
  step, so a resumed run draws what the uninterrupted one would. ``objective.draw(rng, batch)``
  draws for the whole (global) batch once; the network gets ``network_key(rng)``. Training
  differentiates the mean loss of ``state.params``, applies ``optimizer`` and updates the EMA
  at rate ``optim.ema_rate_at(settings.ema_rate, step, settings.ema_warmup)``; evaluation
  returns the mean loss of ``state.params_ema`` and the state unchanged. ``state`` is a
  ``training.train_state.TrainState`` (or any struct with its fields and ``replace``). Jit it
  at the call site with the state replicated and the batch split over devices; XLA then
  averages the gradient over the global batch with one all-reduce.

  ``settings.grad_accum_steps = k`` splits the batch and its draws into ``k`` micro-batches
  (``accumulated_value_and_grad``: rows ``j::k``, each still split over the devices), whose
  gradients are summed in a ``lax.scan`` before the one optimizer update: activation memory of
  ``B / k`` examples, the update of the whole batch (the same draws; only dropout masks
  differ, and with mixed precision each micro-batch is stratified by its own rows). The batch
  must split into ``k`` equal micro-batches. With ``settings.ema_halflife_kimg > 0`` the EMA
  rate is ``optim.ema_halflife_rate`` instead (EDM's).

  Returns:
    ``(new_state, {'loss': scalar, 'grad_norm': scalar, ...})``: the means over the batch of
    the objective's losses and metrics (no grad norm when evaluating).
  """
  if train and optimizer is None:
    raise ValueError('A training step needs an optax optimizer.')

  def mean_loss(rng, params, rows):
    batch, noise = rows
    means = {name: jnp.mean(v) for name, v in objective.loss(rng, params, batch, noise).items()}
    return means.pop('loss'), means

  grads_of = accumulated_value_and_grad(mean_loss, settings.grad_accum_steps)

  def step_fn(state, batch, key: jax.Array) -> Tuple[object, dict]:
    rng = jax.random.fold_in(key, state.step)
    rows = (batch, objective.draw(rng, batch))
    if not train:
      loss, metrics = mean_loss(network_key(rng), state.params_ema, rows)
      return state, {'loss': loss, **metrics}
    (loss, metrics), grads = grads_of(network_key(rng), state.params, rows)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if settings.ema_halflife_kimg > 0:
      rate = optim.ema_halflife_rate(state.step, settings.batch_size,
                                     settings.ema_halflife_kimg, settings.ema_rampup_ratio)
    else:
      rate = optim.ema_rate_at(settings.ema_rate, state.step, settings.ema_warmup)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              params_ema=optim.ema_update(state.params_ema, params, rate))
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), **metrics}

  return step_fn


def get_step_fn(sde: sde_lib.SDE, model, train: bool,
                optimizer: Optional[optax.GradientTransformation] = None,
                settings: StepSettings = StepSettings()):
  """The score model's train (``train``, with ``optimizer``) or eval step,
  ``step_fn(state, batch, key) -> (state, {'loss'[, 'grad_norm']})``: ``get_objective_step_fn``
  of ``score_objective(sde, model, train, settings)``."""
  return get_objective_step_fn(score_objective(sde, model, train, settings), train, optimizer,
                               settings)


def get_classifier_step_fn(sde: sde_lib.SDE, classifier, train: bool,
                           optimizer: Optional[optax.GradientTransformation] = None,
                           settings: StepSettings = StepSettings()):
  """A train / eval step of the noise-conditional classifier, as ``get_step_fn`` for the score
  model: ``step_fn(state, batch, key) -> (state, {'loss', 'accuracy'[, 'grad_norm']})``, the
  mean cross-entropy and accuracy over the batch (``classifier_objective`` at
  ``settings.eps``; of ``settings`` the step reads also the EMA and ``grad_accum_steps``)."""
  return get_objective_step_fn(classifier_objective(sde, classifier, settings.eps), train,
                               optimizer, settings)
