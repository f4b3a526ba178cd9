"""Class-conditional scores for every sampler: classifier-free guidance and classifier guidance.

Both turn a class label ``y`` into a plain ``score_fn(x, t)``, so PC, the ODE, Heun and
DPM-Solver++ sample ``p(x | y)`` unchanged:

* classifier-free guidance (Ho & Salimans 2022, eq. 6): one network trained with and without
  its label (the null label ``K`` of ``K`` classes, drawn with probability
  ``training.label_dropout``) gives
  ``s_w(x, t, y) = (1 + w) s(x, t, y) - w s(x, t, null)``; ``w = 0`` is the conditional score,
  ``w > 0`` sharpens towards the class (the score of ``p_t(x | y) p_t(y | x)^w`` when both
  scores are exact) and ``w = -1`` is the unconditional score (to guide it by a classifier).
* classifier guidance (Song et al. 2021, eq. 14; Dhariwal & Nichol 2021 for ``scale != 1``):
  ``s(x, t) + scale grad_x log p_t(y | x)`` with a noise-conditional classifier
  (``sampling.controllable.get_conditional_score_fn``).

``sample_labels`` fixes which class each sample of a batch is drawn from.
"""
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib
from score_sde.sampling.controllable import get_conditional_score_fn

# score_fn(x, t, class_labels) of a class-conditional network (models.utils.get_score_fn).
LabelledScoreFn = Callable[..., jax.Array]


def get_cfg_score_fn(score_fn: LabelledScoreFn, class_labels: jax.Array, null_label: int,
                     scale: float) -> sde_lib.ScoreFn:
  """Classifier-free guidance, ``(1 + w) s(x, t, y) - w s(x, t, null)`` with ``w = scale``.

  Args:
    score_fn: ``score_fn(x, t, class_labels=...)`` of a class-conditional network.
    class_labels: ``(B,)`` int classes in ``[0, K)``.
    null_label: ``K``, the label the network was trained with when its class was dropped.
    scale: guidance weight ``w >= -1``; 0 is the conditional score and -1 the unconditional
      one (one network call per evaluation each); otherwise both halves are computed in one
      call on a doubled batch.
  Returns:
    ``score_fn(x (B, ...), t (B,)) -> (B, ...)``.
  """
  class_labels = jnp.asarray(class_labels, jnp.int32)
  if class_labels.ndim != 1:
    raise ValueError(f'class_labels must be (B,) ints; got shape {class_labels.shape}.')
  null = jnp.full_like(class_labels, null_label)
  if scale == 0:
    return lambda x, t: score_fn(x, t, class_labels=class_labels)
  if scale == -1:
    return lambda x, t: score_fn(x, t, class_labels=null)

  def guided(x, t):
    both = score_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                    class_labels=jnp.concatenate([class_labels, null]))
    conditional, unconditional = jnp.split(both, 2)
    return conditional + scale * (conditional - unconditional)

  return guided


def sample_labels(num_samples: int, class_labels: Sequence[int], num_classes: int) -> np.ndarray:
  """``int32 (num_samples,)``: the class of every sample, ``class_labels`` repeated in turn
  (empty: ``0, 1, ..., K - 1, 0, 1, ...``, so a grid of ``K`` columns has one class per column).

  Raises:
    ValueError: for a label outside ``[0, num_classes)``.
  """
  labels = np.asarray(tuple(class_labels) or range(num_classes), np.int64)
  if labels.size == 0 or labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f'sampling.class_labels={tuple(class_labels)} must be classes in '
                     f'[0, {num_classes}) ({num_classes} classes); () samples every class.')
  return np.resize(labels, num_samples).astype(np.int32)


def get_guided_score_fn(score_fn: LabelledScoreFn, class_labels: Optional[jax.Array], *,
                        num_classes: int = 0, cfg_scale: float = 0.,
                        classifier_fn: Optional[Callable[[jax.Array, jax.Array], jax.Array]]
                        = None, classifier_scale: float = 0.) -> sde_lib.ScoreFn:
  """The score a sampler follows, from the settings of ``config.sampling``.

  Args:
    score_fn: ``score_fn(x, t, class_labels=None)`` of the score network.
    class_labels: ``(B,)`` classes to sample, or None for unconditional sampling.
    num_classes: K of a class-conditional network (its null label), 0 for an unconditional one.
    cfg_scale: classifier-free guidance weight (class-conditional network only).
    classifier_fn: ``logits_fn(x, t) -> (B, K)`` of a noise-conditional classifier.
    classifier_scale: classifier guidance weight; 0 (or no classifier) leaves it off.
  Returns:
    ``score_fn(x, t)``; with both guidances, classifier guidance is added to the
    classifier-free guided score.
  """
  if class_labels is None:
    if num_classes:
      raise ValueError('A class-conditional network samples given classes; pass class_labels.')
    return lambda x, t: score_fn(x, t)
  if num_classes:
    guided = get_cfg_score_fn(score_fn, class_labels, num_classes, cfg_scale)
  else:
    if cfg_scale:
      raise ValueError('sampling.cfg_scale needs a class-conditional network '
                       '(model.num_classes > 0); this one is unconditional.')
    guided = lambda x, t: score_fn(x, t)
  if classifier_fn is not None and classifier_scale:
    guided = get_conditional_score_fn(guided, classifier_fn, class_labels, classifier_scale)
  return guided
