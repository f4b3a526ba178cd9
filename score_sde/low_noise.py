"""The noise levels an objective draws, and the low-noise float32 rows of a bfloat16 objective.

``TimeSampler`` (continuous ``t``), ``LabelSampler`` (discrete labels) and ``LogNormalSampler``
(EDM's ``ln sigma ~ N(p_mean, p_std^2)``) draw each row's noise level in two parts, so that a step drawing for the whole batch can hand the rows of one network
call to the second: ``draw(rng, rows)``, the random numbers at the global batch shape, and
``levels(u)``, the levels and row weights of the rows one network call sees. Without strata
``draw`` gives the levels themselves (``t ~ U(eps, T)``, labels uniform over the ``N`` levels)
and ``levels`` weights every row 1; with strata (mixed precision, below) ``draw`` gives
``u ~ U(0, 1)`` and ``levels`` stratifies them by the rows it is given.

At noise level ``std`` the perturbed image ``x_t = alpha x_0 + std z`` carries ``z`` at relative
size ``std``, while bfloat16 rounds every activation to ``2^-9`` relative: at VP ``t = 1e-3``
(``std = 0.01``) the network's input has lost a fifth of the noise it must predict
(``benchmarks/bf16_error.py``; figures in ``docs/precision.md``). A mixed-precision objective
therefore evaluates the network in float32 wherever ``std < below`` and in bfloat16 elsewhere,
without evaluating anything twice and without rows of data-dependent size:

* Stratified draws: in the ``B`` rows of one network call, rows ``r % every == 0`` (the low
  stratum, ``B / every`` rows) draw their noise level from the low-noise levels,
  ``std < below``, and the other rows from the rest, each uniformly as the objective would.
  Each row's loss is weighted by ``P(stratum) / share of rows``, so the batch mean is an
  unbiased estimate of the same objective (stratified sampling; with ``every ~ 1 / P(low)`` its
  variance is no larger). Under gradient accumulation each micro-batch is one network call,
  stratified by its own rows.
* Split evaluation: the low rows go through the float32 network, the others through the
  bfloat16 one, as two static-shape calls; on a device mesh each device holds its share of both
  when its rows are a multiple of ``every``.

``every`` is the largest power of two that divides ``B`` and is at most ``1 / P(low)``; 1 (an
odd batch, or ``P(low) > 1/2``) runs every row in float32, 0 (no level below ``below``) none.
"""
import dataclasses
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib

# Points of the time grid the continuous cut is read from: any cut keeps the estimate unbiased;
# this one lies within T / 2^17 of the time where std reaches ``below``.
_GRID = 2 ** 17


class Strata(NamedTuple):
  """Rows ``r % every == 0`` take the low-noise levels (probability ``prob`` under the
  objective's own draw); ``cut`` is the time (continuous) or label count (discrete) where the
  strata meet. Built without ``every`` (the rows are not known yet); ``for_rows`` sets it."""
  prob: float
  cut: float
  every: int = 0

  def for_rows(self, batch_rows: int) -> 'Strata':
    return self._replace(every=rows_every(batch_rows, self.prob))


def rows_every(batch_rows: int, prob: float) -> int:
  """The low stratum's period: the largest power of two ``m`` dividing ``batch_rows`` with
  ``m * prob <= 1`` and ``m >= 2``; 1 if there is none (every row float32); 0 for ``prob == 0``."""
  if prob <= 0.:
    return 0
  every = 1
  while batch_rows % (2 * every) == 0 and 2 * every * prob <= 1.:
    every *= 2
  return every


def continuous_strata(sde: sde_lib.SDE, eps: float, below: float) -> Optional[Strata]:
  """The strata of ``t ~ U(eps, T)``: low times ``[eps, cut)`` with ``std(t) < below``; None
  when ``below <= 0`` (all bfloat16)."""
  if below <= 0.:
    return None
  t = np.linspace(eps, sde.T, _GRID)
  with jax.ensure_compile_time_eval():  # Concrete even when called under a trace.
    std = np.asarray(sde.marginal_coeffs(jnp.asarray(t, jnp.float32))[1])
  low = np.nonzero(std < below)[0]  # std(t) increases in t for every SDE here.
  cut = float(t[low[-1]]) if len(low) else eps
  prob = (cut - eps) / (sde.T - eps)
  return Strata(prob, cut)


def discrete_strata(level_stds: np.ndarray, below: float) -> Optional[Strata]:
  """The strata of a label uniform over ``len(level_stds)`` discrete levels; ``cut`` is the
  number of levels with ``std < below``. None when ``below <= 0``."""
  if below <= 0.:
    return None
  num_low = int(np.sum(np.asarray(level_stds) < below))
  prob = num_low / len(level_stds)
  return Strata(prob, num_low)


def low_rows(batch_rows: int, strata: Strata) -> jax.Array:
  """``(B,)`` bool: the rows of the low stratum."""
  return jnp.arange(batch_rows) % max(strata.every, 1) == 0


def row_weights(batch_rows: int, strata: Strata) -> jax.Array:
  """``(B,)`` float32: ``P(stratum) / share of rows``, the weights that keep the mean unbiased."""
  m = strata.every
  if m <= 1:
    return jnp.ones((batch_rows,), jnp.float32)
  return jnp.where(low_rows(batch_rows, strata), strata.prob * m,
                   (1. - strata.prob) * m / (m - 1)).astype(jnp.float32)


def stratified_times(u: jax.Array, strata: Strata, eps: float, T: float) -> jax.Array:
  """``u ~ U(0, 1)`` ``(B,)`` to times: low rows uniform on ``[eps, cut)``, others on
  ``[cut, T)``; with ``every <= 1`` plain ``U(eps, T)``."""
  if strata.every <= 1:
    return eps + (T - eps) * u
  return jnp.where(low_rows(u.shape[0], strata), eps + (strata.cut - eps) * u,
                   strata.cut + (T - strata.cut) * u)


def stratified_levels(u: jax.Array, strata: Strata, order: Sequence[int]) -> jax.Array:
  """``u ~ U(0, 1)`` ``(B,)`` to discrete labels; ``order`` lists the labels by increasing std,
  so its first ``cut`` are the low levels. Low rows draw uniformly among them, the others among
  the rest; with ``every <= 1`` uniformly among all."""
  n, num_low = len(order), int(strata.cut)
  if strata.every <= 1:
    index = jnp.floor(u * n)
  else:
    index = jnp.where(low_rows(u.shape[0], strata), jnp.floor(u * num_low),
                      num_low + jnp.floor(u * (n - num_low)))
  return jnp.asarray(order, jnp.int32)[jnp.clip(index.astype(jnp.int32), 0, n - 1)]


def split_rows(float32_fn: Callable, compute_fn: Callable, every: int,
               class_labels: Optional[jax.Array] = None) -> Callable:
  """``fn(x (B, ...), labels (B,)) -> (B, ...)``: rows ``r % every == 0`` through
  ``float32_fn``, the others through ``compute_fn`` (the network in its compute dtype; each
  ``f(x, labels, class_labels=...)``), reassembled in row order; ``class_labels (B,)`` split the
  same way. ``every`` 1: all ``float32_fn``; 0: all ``compute_fn``."""
  if every == 1:
    return lambda x, labels: float32_fn(x, labels, class_labels=class_labels)
  if every == 0:
    return lambda x, labels: compute_fn(x, labels, class_labels=class_labels)

  def low(a):
    return a.reshape((a.shape[0] // every, every) + a.shape[1:])[:, 0]

  def high(a):
    rest = a.reshape((a.shape[0] // every, every) + a.shape[1:])[:, 1:]
    return rest.reshape((-1,) + a.shape[1:])

  def fn(x, labels):
    parts = [None if class_labels is None else f(class_labels) for f in (low, high)]
    out_low = float32_fn(low(x), low(labels), class_labels=parts[0])
    out_high = compute_fn(high(x), high(labels), class_labels=parts[1])
    rows = x.shape[0] // every
    out = jnp.concatenate([out_low[:, None], out_high.reshape((rows, every - 1)
                                                              + out_high.shape[1:])], axis=1)
    return out.reshape((x.shape[0],) + out.shape[2:])
  return fn


class Levels(NamedTuple):
  """The noise levels of the rows one network call sees."""
  values: jax.Array  # (B,) float32 times, or int32 labels.
  weights: jax.Array  # (B,) float32: each row's loss weight, P(stratum) / share of rows; or 1.
  every: int  # Rows r % every == 0 run the network in float32 (split_rows): 0 none, 1 all.


@dataclasses.dataclass(frozen=True)
class TimeSampler:
  """Times ``t ~ U(eps, T)``; with ``strata`` (``continuous_strata``), rows ``r % every == 0``
  of a network call on ``[eps, cut)``, the others on ``[cut, T)``, weighted to the same mean."""
  eps: float
  T: float
  strata: Optional[Strata] = None

  def draw(self, rng: jax.Array, rows: int) -> jax.Array:
    """``(rows,)`` float32: the times, or with strata ``u ~ U(0, 1)`` for ``levels``."""
    if self.strata is None:
      return jax.random.uniform(rng, (rows,), minval=self.eps, maxval=self.T)
    return jax.random.uniform(rng, (rows,))

  def levels(self, u: jax.Array) -> Levels:
    """``draw``'s rows of one network call as times, weights and the float32 rows."""
    if self.strata is None:
      return Levels(u, jnp.ones(u.shape, jnp.float32), 0)
    strata = self.strata.for_rows(u.shape[0])
    return Levels(stratified_times(u, strata, self.eps, self.T), row_weights(u.shape[0], strata),
                  strata.every)


@dataclasses.dataclass(frozen=True)
class LabelSampler:
  """Labels uniform over ``num_levels`` discrete levels; with ``strata`` (``discrete_strata``),
  rows ``r % every == 0`` of a network call among the ``strata.cut`` levels of least std, the
  others among the rest, weighted to the same mean. ``order``: the labels by increasing std."""
  num_levels: int
  strata: Optional[Strata] = None
  order: Tuple[int, ...] = ()

  def draw(self, rng: jax.Array, rows: int) -> jax.Array:
    """``(rows,)``: int32 labels, or with strata float32 ``u ~ U(0, 1)`` for ``levels``."""
    if self.strata is None:
      return jax.random.randint(rng, (rows,), 0, self.num_levels)
    return jax.random.uniform(rng, (rows,))

  def levels(self, u: jax.Array) -> Levels:
    """``draw``'s rows of one network call as labels, weights and the float32 rows."""
    if self.strata is None:
      return Levels(u, jnp.ones(u.shape, jnp.float32), 0)
    strata = self.strata.for_rows(u.shape[0])
    return Levels(stratified_levels(u, strata, self.order), row_weights(u.shape[0], strata),
                  strata.every)


@dataclasses.dataclass(frozen=True)
class LogNormalSampler:
  """Noise levels ``sigma = exp(p_mean + p_std n)``, ``n ~ N(0, 1)`` (EDM's training levels);
  with ``strata`` (``cut`` the normal CDF at ``sigma = below``), rows ``r % every == 0`` of a
  network call below ``below``, the others above, weighted to the same mean: ``n`` is then the
  normal quantile of a stratified uniform."""
  p_mean: float
  p_std: float
  strata: Optional[Strata] = None

  def draw(self, rng: jax.Array, rows: int) -> jax.Array:
    """``(rows,)`` float32: ``n ~ N(0, 1)``, or with strata ``u ~ U(0, 1)`` for ``levels``."""
    if self.strata is None:
      return jax.random.normal(rng, (rows,))
    return jax.random.uniform(rng, (rows,))

  def levels(self, u: jax.Array) -> Levels:
    """``draw``'s rows of one network call as noise levels ``sigma``, weights, float32 rows."""
    if self.strata is None:
      return Levels(jnp.exp(self.p_mean + self.p_std * u), jnp.ones(u.shape, jnp.float32), 0)
    strata = self.strata.for_rows(u.shape[0])
    tiny = jnp.finfo(jnp.float32).tiny  # ndtri(0) is -inf: sigma would be 0.
    q = jnp.clip(stratified_times(u, strata, 0., 1.), tiny, 1. - 2 ** -24)
    sigma = jnp.exp(self.p_mean + self.p_std * jax.scipy.special.ndtri(q))
    return Levels(sigma, row_weights(u.shape[0], strata), strata.every)


def lognormal_sampler(p_mean: float, p_std: float, below: float = 0.) -> LogNormalSampler:
  """``ln sigma ~ N(p_mean, p_std^2)``, stratified at ``sigma = below`` when ``below > 0``."""
  if not p_std > 0:
    raise ValueError(f'training.p_std={p_std} must be positive: the std of ln sigma.')
  strata = None
  if below > 0.:
    prob = float(jax.scipy.stats.norm.cdf((np.log(below) - p_mean) / p_std))
    strata = Strata(prob, prob)
  return LogNormalSampler(float(p_mean), float(p_std), strata)


def time_sampler(sde: sde_lib.SDE, eps: float, below: float = 0.) -> TimeSampler:
  """``t ~ U(eps, T)``, stratified at ``std(t) = below`` when ``below > 0``."""
  return TimeSampler(eps, sde.T, continuous_strata(sde, eps, below))


def label_sampler(level_stds: np.ndarray, below: float = 0.) -> LabelSampler:
  """Labels uniform over the levels of std ``level_stds`` (``(N,)``, label ``i``'s at ``i``),
  stratified at ``below`` when ``below > 0``."""
  level_stds = np.asarray(level_stds)
  order = tuple(int(i) for i in np.argsort(level_stds, kind='stable'))
  return LabelSampler(len(level_stds), discrete_strata(level_stds, below), order)
