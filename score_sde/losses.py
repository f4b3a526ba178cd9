"""Denoising score-matching objectives and the train / eval step built on them.

Three objectives, each first written on plain callables so they can be checked against closed
forms, then adapted to a Flax model:

* ``dsm_loss``: the continuous-time objective of eq. (7),
  ``E_t E_{x0} E_z [lambda(t) || s(alpha x0 + std z, t) + z / std ||^2]`` with ``t ~ U(eps, T)``.
* ``smld_loss``: the discrete NCSN objective over the ``N`` noise scales of a VE SDE (eq. 1), with
  ``lambda_i = sigma_i^2``.
* ``ddpm_loss``: the discrete DDPM epsilon-prediction objective of a VP SDE (eq. 3).

The weighting (``weighting``, ``training.weighting``) is one of three:

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

A class-conditional network (``model.num_classes = K > 0``) sees each example's label, replaced
by the null label ``K`` with probability ``label_dropout``, so that one network learns both the
conditional and the unconditional score (classifier-free guidance, Ho & Salimans 2022).
``classifier_loss`` is the objective of the noise-conditional classifier of classifier guidance
(Song et al. 2021, app. I.1): cross-entropy of ``p_t(y | x(t))`` on ``x(t)`` drawn from the
perturbation kernel at ``t ~ U(eps, T)``.

Per-example losses are half sums (or means, with ``reduce_mean``) over the data dimensions, as
in the reference code (``0.5 * sum``: the same logged losses and, with ``optim.grad_clip``, the
same clipped updates), or with ``'elbo'`` the bound's nats; the batch loss is their mean. Random
draws use the global batch shape, so a loss does not depend on how the batch is sharded.
"""
from typing import Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde import low_noise, optim, sde_lib
from score_sde.models import utils as mutils
from score_sde.models.parameterization import get_parameterization
from score_sde.sde_lib import batch_mul

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


class MicroBatch(NamedTuple):
  """Which part of the global batch a loss sees under gradient accumulation: micro-batch
  ``index`` (an int, possibly traced) of ``count``, the rows ``index::count`` of the batch."""
  index: jax.Array
  count: int


def _draw(sample: Callable, rng: jax.Array, shape, micro: Optional[MicroBatch]) -> jax.Array:
  """``sample(rng, shape)``; for a micro-batch, its rows of the draw at the global batch shape,
  so that ``k`` micro-batches see exactly the noise of the whole batch in one step."""
  if micro is None:
    return sample(rng, shape)
  rest = tuple(shape[1:])
  full = sample(rng, (shape[0] * micro.count,) + rest).reshape((shape[0], micro.count) + rest)
  return jax.lax.dynamic_index_in_dim(full, micro.index, axis=1, keepdims=False)


def _reduce(x: jax.Array, reduce_mean: bool) -> jax.Array:
  """``(B, ...) -> (B,)``: the mean over the data dimensions, or half their sum (the reference's
  ``reduce_op``, so that every summed objective here is half the squared norm)."""
  x = x.reshape(x.shape[0], -1)
  return jnp.mean(x, axis=-1) if reduce_mean else 0.5 * jnp.sum(x, axis=-1)


# The objective's weighting (training.weighting) and DDPM's two fixed reverse variances
# (model.reverse_variance: beta~, the posterior's, or beta), as the module docstring states.
WEIGHTINGS = ('dsm', 'likelihood', 'elbo')
REVERSE_VARIANCES = ('posterior', 'beta')


def _check_weighting(weighting: str, reduce_mean: bool, continuous: bool) -> None:
  """Raises ValueError, naming the fix, for a weighting the objective does not have."""
  if weighting not in WEIGHTINGS:
    raise ValueError(f'weighting={weighting!r}; choose one of {", ".join(WEIGHTINGS)}.')
  if weighting == 'likelihood' and not continuous:
    raise ValueError("The likelihood weighting applies to the continuous objective only; set "
                     "training.continuous = True or training.weighting = 'dsm'.")
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


def dsm_loss(score_fn: sde_lib.ScoreFn, sde: sde_lib.SDE, rng: jax.Array, data: jax.Array,
             reduce_mean: bool = False, weighting: str = 'dsm',
             eps: float = 1e-5, micro: Optional[MicroBatch] = None,
             strata: Optional[low_noise.Strata] = None) -> jax.Array:
  """Continuous denoising score matching, eq. (7); returns per-example losses ``(B,)``.

  Args:
    score_fn: ``score_fn(x, t)``, the model's score at perturbed data ``x`` and times ``t (B,)``.
    sde: the forward SDE that perturbs ``data``.
    rng: key for ``t`` and the noise ``z``.
    data: clean data ``x0``, float ``(B, ...)``.
    reduce_mean: mean instead of half the sum over the data dimensions.
    weighting: ``'dsm'`` (``lambda = std^2``), ``'likelihood'`` (``g^2``) or ``'elbo'`` (the
      bound's diffusion term in nats; needs ``reduce_mean=False``), as the module states.
    eps: smallest time sampled (the score diverges as t -> 0).
    micro: the part of the global batch ``data`` is, under gradient accumulation (``t`` and
      ``z`` are then those rows of the whole batch's draws); None: ``data`` is the batch.
    strata: stratified times for mixed precision (``low_noise``, ``every`` set for this batch):
      rows ``r % every == 0`` draw ``t`` below ``strata.cut``, the others above, and each loss
      carries its stratum's weight; ``score_fn`` must run those rows in float32
      (``low_noise.split_rows``). None: ``t ~ U(eps, T)`` for every row.
  """
  t_rng, z_rng = jax.random.split(rng)
  rows = (data.shape[0],)
  if strata is None:
    t = _draw(lambda r, s: jax.random.uniform(r, s, minval=eps, maxval=sde.T), t_rng, rows,
              micro)
  else:
    t = low_noise.stratified_times(_draw(jax.random.uniform, t_rng, rows, micro), strata, eps,
                                   sde.T)
  z = _draw(lambda r, s: jax.random.normal(r, s, data.dtype), z_rng, data.shape, micro)
  loss = dsm_loss_at(score_fn, sde, data, t, z, reduce_mean, weighting, eps)
  return loss if strata is None else loss * low_noise.row_weights(rows[0], strata)


def dsm_loss_at(score_fn: sde_lib.ScoreFn, sde: sde_lib.SDE, data: jax.Array, t: jax.Array,
                z: jax.Array, reduce_mean: bool = False, weighting: str = 'dsm',
                eps: float = 1e-5) -> jax.Array:
  """``dsm_loss`` at given times ``t (B,)`` and noise ``z`` (``data``'s shape), eq. (7):
  ``lambda(t) || s(x_t, t) + z / std(t) ||^2`` with ``x_t = mean(t) + std(t) z``, as ``(B,)``;
  with ``weighting='elbo'``, ``(T - eps) g^2 / (2 std^2) || std s + z ||^2`` (nats), the bound's
  diffusion term estimated at this ``(t, z)`` (``eps``: the lower end of ``t``'s range)."""
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


def _draw_levels(rng: jax.Array, num_levels: int, rows: int, micro: Optional[MicroBatch],
                 strata: Optional[low_noise.Strata], level_stds) -> jax.Array:
  """Labels uniform over ``num_levels``; with ``strata``, stratified by the levels' noise
  (``level_stds``, the std of each label) as ``dsm_loss`` stratifies times."""
  if strata is None:
    return _draw(lambda r, s: jax.random.randint(r, s, 0, num_levels), rng, (rows,), micro)
  order = np.argsort(np.asarray(level_stds), kind='stable')
  return low_noise.stratified_levels(_draw(jax.random.uniform, rng, (rows,), micro), strata,
                                     order)


def _weighted(loss: jax.Array, strata: Optional[low_noise.Strata]) -> jax.Array:
  return loss if strata is None else loss * low_noise.row_weights(loss.shape[0], strata)


def smld_level_stds(sde: sde_lib.VESDE) -> np.ndarray:
  """The noise std of each SMLD label (descending ladder: label 0 is ``sigma_max``)."""
  return np.asarray(sde.discrete_sigmas)[::-1]


def ddpm_level_stds(sde: sde_lib.VPSDE) -> np.ndarray:
  """The noise std ``sqrt(1 - alphabar_i)`` of each DDPM label ``i``."""
  return np.asarray(sde.sqrt_1m_alphas_cumprod)


def smld_loss(model_fn: ModelFn, sde: sde_lib.VESDE, rng: jax.Array, data: jax.Array,
              reduce_mean: bool = False, micro: Optional[MicroBatch] = None,
              strata: Optional[low_noise.Strata] = None,
              parameterization: str = 'auto') -> jax.Array:
  """The discrete SMLD / NCSN objective, per example ``(B,)``.

  A noise level ``sigma_i`` is drawn uniformly from the ``N`` discrete scales; the network is
  called with label ``i`` indexing the scales in *descending* order (label 0 is ``sigma_max``,
  the released NCSN++ convention) and its output ``s`` is the score (or, with another
  ``parameterization``, converted to it with ``alpha = 1``, ``std = sigma_i``); the loss is
  ``sigma_i^2 || s - (-noise / sigma_i^2) ||^2``. ``micro`` and ``strata`` (over the labels,
  ``cut`` the number of low-noise ones) as for ``dsm_loss``.
  """
  if not isinstance(sde, sde_lib.VESDE):
    raise ValueError(f'The SMLD loss needs a VESDE, got {type(sde).__name__}; set '
                     'training.sde = "vesde" or training.continuous = True.')
  label_rng, z_rng = jax.random.split(rng)
  labels = _draw_levels(label_rng, sde.N, data.shape[0], micro, strata, smld_level_stds(sde))
  z = _draw(lambda r, s: jax.random.normal(r, s, data.dtype), z_rng, data.shape, micro)
  return _weighted(smld_loss_at(model_fn, sde, data, labels, z, reduce_mean, parameterization),
                   strata)


def smld_loss_at(model_fn: ModelFn, sde: sde_lib.VESDE, data: jax.Array, labels: jax.Array,
                 z: jax.Array, reduce_mean: bool = False,
                 parameterization: str = 'auto') -> jax.Array:
  """``smld_loss`` at given labels ``(B,)`` int and standard noise ``z``; ``(B,)``."""
  sigmas = sde.discrete_sigmas[::-1][labels]
  noise = batch_mul(sigmas, z)
  perturbed = data + noise
  score = get_parameterization(parameterization, sde).score(
      model_fn(perturbed, labels), perturbed, jnp.ones_like(sigmas), sigmas)
  target = -batch_mul(1. / sigmas ** 2, noise)
  return _reduce(jnp.square(score - target), reduce_mean) * sigmas ** 2


def ddpm_loss(model_fn: ModelFn, sde: sde_lib.VPSDE, rng: jax.Array, data: jax.Array,
              reduce_mean: bool = False, micro: Optional[MicroBatch] = None,
              strata: Optional[low_noise.Strata] = None,
              parameterization: str = 'auto', weighting: str = 'dsm',
              reverse_variance: str = 'posterior') -> jax.Array:
  """The discrete DDPM objective ``|| eps_theta(sqrt(abar_i) x0 + sqrt(1 - abar_i) z, i) - z ||^2``
  per example ``(B,)``, with ``i`` uniform over the ``N`` steps of the chain; ``eps_theta`` is
  the output, or with another ``parameterization`` the noise it gives with ``alpha =
  sqrt(abar_i)``, ``std = sqrt(1 - abar_i)``. ``micro`` and ``strata`` as for ``smld_loss``.
  ``weighting='elbo'``: ``N w_i || eps_theta - z ||^2`` (nats; ``w = ddpm_elbo_weights(sde,
  reverse_variance)``, needs ``reduce_mean=False``), the chain's KL term ``L_i`` up to its
  network-free constant, times ``N`` so that the mean over labels is their sum."""
  if type(sde) is not sde_lib.VPSDE:  # A sub-VP SDE has no discrete chain.
    raise ValueError(f'The DDPM loss needs a VPSDE, got {type(sde).__name__}; set '
                     'training.sde = "vpsde" or training.continuous = True.')
  label_rng, z_rng = jax.random.split(rng)
  labels = _draw_levels(label_rng, sde.N, data.shape[0], micro, strata, ddpm_level_stds(sde))
  z = _draw(lambda r, s: jax.random.normal(r, s, data.dtype), z_rng, data.shape, micro)
  return _weighted(ddpm_loss_at(model_fn, sde, data, labels, z, reduce_mean, parameterization,
                                weighting, reverse_variance), strata)


def ddpm_loss_at(model_fn: ModelFn, sde: sde_lib.VPSDE, data: jax.Array, labels: jax.Array,
                 z: jax.Array, reduce_mean: bool = False,
                 parameterization: str = 'auto', weighting: str = 'dsm',
                 reverse_variance: str = 'posterior') -> jax.Array:
  """``ddpm_loss`` at given steps ``labels (B,)`` int and noise ``z``; ``(B,)``."""
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


def drop_labels(rng: jax.Array, labels: jax.Array, num_classes: int,
                label_dropout: float, micro: Optional[MicroBatch] = None) -> jax.Array:
  """``labels (B,)`` with each replaced by the null label ``num_classes`` with probability
  ``label_dropout`` (independently, drawn at the global batch shape)."""
  if not 0. <= label_dropout <= 1.:
    raise ValueError(f'label_dropout must be a probability in [0, 1]; got {label_dropout}.')
  drop = _draw(lambda r, s: jax.random.bernoulli(r, label_dropout, s), rng, labels.shape, micro)
  return jnp.where(drop, num_classes, labels).astype(jnp.int32)


def get_per_example_loss_fn(sde: sde_lib.SDE, model, train: bool, reduce_mean: bool = False,
                            continuous: bool = True, weighting: str = 'dsm',
                            eps: float = 1e-5, label_dropout: float = 0.,
                            compute_dtype: str = 'float32', float32_below_std: float = 0.,
                            parameterization: str = 'auto', reverse_variance: str = 'posterior'):
  """The training objective per example, ``loss_fn(rng, params, batch, micro=None) -> (B,)``.

  ``continuous`` selects eq. (7) (``dsm_loss``); otherwise the discrete objective that matches the
  SDE (``smld_loss`` for VE, ``ddpm_loss`` for VP), each with ``weighting`` (``'dsm'``,
  ``'likelihood'`` or ``'elbo'``, as the module states; ``reverse_variance``, ``'posterior'`` or
  ``'beta'``, is read by DDPM's ``'elbo'``). ``batch['image']`` is the scaled data
  ``(B, H, W, C)``; ``rng`` also drives dropout when ``train``. Per example so that evaluation
  can mask the padding rows of a split's last batch. A class-conditional ``model`` also reads
  ``batch['label']`` (``(B,)`` int in ``[0, K)``), dropped to the null label with probability
  ``label_dropout`` when ``train`` (evaluation scores the conditional model).

  ``compute_dtype`` (``'float32'`` or ``'bfloat16'``) is the network's (``get_model_fn``); the
  perturbation, the loss and its reduction stay float32. With bfloat16 and
  ``float32_below_std > 0`` the noise levels with ``std < float32_below_std`` run in float32
  (``low_noise``: stratified levels, rows ``r % every == 0`` of each batch in float32, weighted
  to the same objective), where bfloat16 would round away the noise the network must predict.
  ``micro`` (a ``MicroBatch``) says which
  rows of the global batch ``batch`` holds under gradient accumulation: the noise, times and
  label drops are then those rows of the whole batch's draws, and dropout uses
  ``fold_in(key, micro.index)`` (the one draw that differs from an unaccumulated step).
  ``parameterization`` says what the network outputs (``models.parameterization``); each
  objective converts it to the quantity it compares, so the objective is the same for every
  choice.
  """

  _check_weighting(weighting, reduce_mean, continuous)
  if weighting == 'elbo' and not continuous and isinstance(sde, sde_lib.VESDE):
    raise ValueError("The SMLD objective has no variational bound; set training.weighting = "
                     "'dsm' or training.continuous = True.")

  conditional = mutils.is_class_conditional(model)

  mutils.compute_dtype(compute_dtype)  # Fails early on an unknown name.
  strata = None
  if compute_dtype != 'float32' and float32_below_std > 0.:
    if continuous:
      strata = low_noise.continuous_strata(sde, eps, float32_below_std)
    else:
      level_stds = (smld_level_stds(sde) if isinstance(sde, sde_lib.VESDE)
                    else ddpm_level_stds(sde))
      strata = low_noise.discrete_strata(level_stds, float32_below_std)

  def network(fn_of, class_labels, batch_strata):
    """``fn_of(dtype, class_labels)``, or its float32 / bfloat16 split over the strata."""
    if batch_strata is None:
      return fn_of(compute_dtype, class_labels)
    return low_noise.split_rows(
        lambda x, t, class_labels: fn_of('float32', class_labels)(x, t),
        lambda x, t, class_labels: fn_of(compute_dtype, class_labels)(x, t),
        batch_strata.every, class_labels)

  def loss_fn(rng, params, batch, micro: Optional[MicroBatch] = None):
    loss_rng, dropout_rng = jax.random.split(rng)
    if micro is not None:
      dropout_rng = jax.random.fold_in(dropout_rng, micro.index)
    data = batch['image']
    class_labels = None
    if conditional:
      class_labels = batch['label']
      if train and label_dropout:
        # A stream of its own: the noise and dropout draws stay those of an unconditional run.
        class_labels = drop_labels(jax.random.fold_in(rng, 2), class_labels, model.num_classes,
                                   label_dropout, micro)
    batch_strata = None if strata is None else strata.for_rows(data.shape[0])
    if continuous:
      score_fn = network(
          lambda dtype, labels: mutils.get_score_fn(sde, model, params, train=train,
                                                    continuous=True, rng=dropout_rng,
                                                    class_labels=labels, dtype=dtype,
                                                    parameterization=parameterization),
          class_labels, batch_strata)
      return dsm_loss(score_fn, sde, loss_rng, data, reduce_mean, weighting, eps, micro,
                      batch_strata)
    model_fn = network(
        lambda dtype, labels: mutils.get_model_fn(model, params, train=train, rng=dropout_rng,
                                                  class_labels=labels, dtype=dtype),
        class_labels, batch_strata)
    if isinstance(sde, sde_lib.VESDE):
      return smld_loss(model_fn, sde, loss_rng, data, reduce_mean, micro, batch_strata,
                       parameterization)
    return ddpm_loss(model_fn, sde, loss_rng, data, reduce_mean, micro, batch_strata,
                     parameterization, weighting, reverse_variance)

  return loss_fn


def get_sde_loss_fn(sde: sde_lib.SDE, model, train: bool, reduce_mean: bool = False,
                    continuous: bool = True, weighting: str = 'dsm',
                    eps: float = 1e-5, label_dropout: float = 0.,
                    compute_dtype: str = 'float32', float32_below_std: float = 0.,
                    parameterization: str = 'auto', reverse_variance: str = 'posterior'):
  """The training objective for a Flax ``model``, as ``loss_fn(rng, params, batch, micro=None)
  -> loss``: the mean over the (micro-)batch of ``get_per_example_loss_fn``'s losses (same
  arguments)."""
  per_example = get_per_example_loss_fn(sde, model, train, reduce_mean, continuous,
                                        weighting, eps, label_dropout, compute_dtype,
                                        float32_below_std, parameterization=parameterization,
                                        reverse_variance=reverse_variance)
  return lambda rng, params, batch, micro=None: jnp.mean(per_example(rng, params, batch, micro))


def get_step_fn(sde: sde_lib.SDE, model, train: bool,
                optimizer: Optional[optax.GradientTransformation] = None,
                ema_rate: float = 0.999, reduce_mean: bool = False, continuous: bool = True,
                weighting: str = 'dsm', eps: float = 1e-5,
                label_dropout: float = 0., ema_warmup: bool = False,
                compute_dtype: str = 'float32', grad_accum_steps: int = 1,
                float32_below_std: float = 0., parameterization: str = 'auto',
                reverse_variance: str = 'posterior'):
  """One training or evaluation step, ``step_fn(state, batch, key) -> (state, metrics)``.

  The step's randomness is ``fold_in(key, state.step)``: a pure function of the run's key and the
  step, so a resumed run draws what the uninterrupted one would. Training differentiates the
  loss of ``state.params``, applies ``optimizer`` and updates the EMA; evaluation returns the
  loss of ``state.params_ema`` and the state unchanged. The EMA rate is
  ``optim.ema_rate_at(ema_rate, step, ema_warmup)``. ``state`` is a
  ``training.train_state.TrainState`` (or any struct with its fields and ``replace``). Jit it at
  the call site with the state replicated and the batch split over devices; XLA then averages
  the gradient over the global batch with one all-reduce.

  ``weighting``, ``compute_dtype``, ``float32_below_std``, ``parameterization`` and
  ``reverse_variance`` as for ``get_per_example_loss_fn``.
  ``grad_accum_steps = k`` splits the batch into ``k`` micro-batches (rows ``j::k``, each
  still split over the devices), whose gradients are summed in a ``lax.scan`` before the one
  optimizer update: activation memory of ``B / k`` examples, the update of the whole batch (the
  same noise; only dropout masks differ). The batch must split into ``k`` equal micro-batches.

  Returns:
    ``(new_state, {'loss': scalar, 'grad_norm': scalar})`` (no grad norm when evaluating).
  """
  loss_fn = get_sde_loss_fn(sde, model, train, reduce_mean, continuous, weighting,
                            eps, label_dropout, compute_dtype, float32_below_std,
                            parameterization=parameterization, reverse_variance=reverse_variance)
  return _get_step_fn(loss_fn, train, optimizer, ema_rate, ema_warmup=ema_warmup,
                      grad_accum_steps=grad_accum_steps)


def accumulated_value_and_grad(fn: Callable, grad_accum_steps: int) -> Callable:
  """``fn(rng, params, batch, micro) -> (loss, aux)`` to ``(rng, params, batch) -> ((loss, aux),
  grads)``, the mean over ``grad_accum_steps`` micro-batches (rows ``j::k`` of every leaf of
  ``batch``) of ``jax.value_and_grad(fn)`` on each: equal to one call on the whole batch when
  ``fn`` is a mean over rows, at the activation memory of one micro-batch."""
  k = int(grad_accum_steps)
  if k < 1:
    raise ValueError(f'grad_accum_steps must be a positive integer; got {grad_accum_steps}.')
  value_and_grad = jax.value_and_grad(fn, argnums=1, has_aux=True)
  if k == 1:
    return lambda rng, params, batch: value_and_grad(rng, params, batch, None)

  def accumulated(rng, params, batch):
    def split(x):
      if x.shape[0] % k:
        raise ValueError(f'A batch of {x.shape[0]} does not split into grad_accum_steps={k} '
                         'equal micro-batches.')
      # Rows j::k form micro-batch j, so every device holds its share of each micro-batch.
      return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)

    micro_batches = jax.tree.map(split, batch)

    def body(total, inputs):
      index, micro_batch = inputs
      out = value_and_grad(rng, params, micro_batch, MicroBatch(index, k))
      return jax.tree.map(jnp.add, total, out), None

    first = jax.tree.map(lambda x: x[0], micro_batches)
    shapes = jax.eval_shape(lambda r, p, b: value_and_grad(r, p, b, MicroBatch(0, k)), rng,
                            params, first)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro_batches))
    return jax.tree.map(lambda x: x / k, total)

  return accumulated


def _get_step_fn(loss_fn, train: bool, optimizer, ema_rate: float, has_aux: bool = False,
                 ema_warmup: bool = False, grad_accum_steps: int = 1):
  """The train / eval step around ``loss_fn(rng, params, batch, micro=None) -> loss`` (or
  ``(loss, metrics)`` with ``has_aux``), as ``get_step_fn`` describes."""

  def metrics_of(rng, params, batch, micro=None):
    # A loss that takes no ``micro`` works without accumulation.
    out = loss_fn(rng, params, batch) if micro is None else loss_fn(rng, params, batch, micro)
    return out if has_aux else (out, {})

  if train and optimizer is None:
    raise ValueError('A training step needs an optax optimizer.')
  grads_of = accumulated_value_and_grad(metrics_of, grad_accum_steps)

  def step_fn(state, batch, key: jax.Array) -> Tuple[object, dict]:
    rng = jax.random.fold_in(key, state.step)
    if not train:
      loss, metrics = metrics_of(rng, state.params_ema, batch)
      return state, {'loss': loss, **metrics}
    (loss, metrics), grads = grads_of(rng, state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state,
        params_ema=optim.ema_update(
            state.params_ema, params, optim.ema_rate_at(ema_rate, state.step, ema_warmup)))
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), **metrics}

  return step_fn


def classifier_loss(logits_fn: Callable[[jax.Array, jax.Array], jax.Array], sde: sde_lib.SDE,
                    rng: jax.Array, data: jax.Array, labels: jax.Array,
                    eps: float = 1e-5, micro: Optional[MicroBatch] = None
                    ) -> Tuple[jax.Array, jax.Array]:
  """Cross-entropy of a noise-conditional classifier on perturbed data (app. I.1).

  ``x(t) = alpha(t) x0 + std(t) z`` with ``t ~ U(eps, T)``, the kernel the score model is trained
  on, so that the classifier knows ``p_t(y | x)`` at every time a sampler visits.

  Args:
    logits_fn: ``logits_fn(x, t) -> (B, K)`` (``models.utils.get_classifier_fn``).
    sde: the forward SDE.
    rng: key for ``t`` and ``z``.
    data: clean data ``(B, ...)``; labels: ``(B,)`` int classes.
    eps: smallest time.
    micro: as for ``dsm_loss``.
  Returns:
    ``(B,)`` per-example cross-entropies (nats) and ``(B,)`` float 0/1 correctness of the argmax.
  """
  t_rng, z_rng = jax.random.split(rng)
  t = _draw(lambda r, s: jax.random.uniform(r, s, minval=eps, maxval=sde.T), t_rng,
            (data.shape[0],), micro)
  mean, std = sde.marginal_prob(data, t)
  x = mean + batch_mul(std, _draw(lambda r, s: jax.random.normal(r, s, data.dtype), z_rng,
                                  data.shape, micro))
  log_probs = jax.nn.log_softmax(logits_fn(x, t), axis=-1)
  labels = labels.astype(jnp.int32)
  nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  correct = (jnp.argmax(log_probs, axis=-1) == labels).astype(jnp.float32)
  return nll, correct


def get_classifier_step_fn(sde: sde_lib.SDE, classifier, train: bool,
                           optimizer: Optional[optax.GradientTransformation] = None,
                           ema_rate: float = 0.999, eps: float = 1e-5,
                           grad_accum_steps: int = 1):
  """A train / eval step of the noise-conditional classifier, as ``get_step_fn`` for the score
  model: ``step_fn(state, batch, key) -> (state, {'loss', 'accuracy'[, 'grad_norm']})``, the
  mean cross-entropy and accuracy over the global batch; ``batch`` holds ``'image'`` (scaled)
  and ``'label'``. ``grad_accum_steps`` as for ``get_step_fn``; the classifier computes in
  float32."""

  def loss_fn(rng, params, batch, micro=None):
    logits_fn = mutils.get_classifier_fn(sde, classifier, params)
    nll, correct = classifier_loss(logits_fn, sde, rng, batch['image'], batch['label'], eps,
                                   micro)
    return jnp.mean(nll), {'accuracy': jnp.mean(correct)}

  return _get_step_fn(loss_fn, train, optimizer, ema_rate, has_aux=True,
                      grad_accum_steps=grad_accum_steps)
