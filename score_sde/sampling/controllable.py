"""Controllable generation (Song et al. 2021, sec. 5 and appendix I): inpainting, colorization and
class-conditional sampling with a noise-conditional classifier.

Inpainting and colorization both know some linear coordinates ``y = P x`` of the data in an
orthonormal basis ``P`` (pixels themselves; or, for colour, a basis whose first channel is the
grey level) and sample the rest by PC sampling in which, after every step to time ``t``, the known
coordinates are replaced by a fresh forward draw ``alpha(t) y + std(t) z`` (appendix I.2). Two
changes from the released code: the replacement uses the time the step arrived at (it used the
time the step left), and at the end the known coordinates are set to the data EXACTLY while the
unknown ones are denoised like the unconditional sampler's (the released code returned noisy
unknown values next to a scaled copy of the data).
"""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib
from score_sde.sampling import base, pc, schedule

# Orthonormal colour basis: its first column is the grey level (R + G + B) / sqrt(3), the
# others span the colour-difference plane. decouple(x) = x @ M, couple(y) = y @ M^T.
_COLOR_BASIS = np.stack([
    np.array([1., 1., 1.]) / np.sqrt(3.),
    np.array([-2., 1., 1.]) / np.sqrt(6.),
    np.array([0., 1., -1.]) / np.sqrt(2.),
], axis=1).astype(np.float32)


def decouple(x: jax.Array) -> jax.Array:
  """RGB ``(B, H, W, 3)`` -> (grey, colour, colour) coordinates of the same shape."""
  return jnp.einsum('...i,ij->...j', x, _COLOR_BASIS)


def couple(y: jax.Array) -> jax.Array:
  """Inverse of ``decouple`` (its transpose: the basis is orthonormal)."""
  return jnp.einsum('...j,ij->...i', y, _COLOR_BASIS)


def _get_pc_projector(sde, times, predictor, corrector, inverse_scaler, snr, n_steps,
                      probability_flow, denoise, to_basis, from_basis):
  """The PC sampler's loop (``pc.run_pc``) with the coordinates where ``mask`` is 1 (in
  ``to_basis`` space) clamped to a forward draw of ``known`` after every step. Returns
  ``run(rng, score_fn, known, mask)``."""
  times, starts_at_T = schedule.check_times(sde, times, 'PC inpainting')
  sde = pc.sampler_sde(sde, pc.chain_steps(sde, times))
  pc_step, nfe_per_step = pc.get_pc_step(sde, predictor, corrector, snr, n_steps,
                                         probability_flow)

  def forward_draw(rng, known, t):
    mean, std = sde.marginal_prob(known, base.batch_times(t, known.shape[0]))
    return mean + sde_lib.batch_mul(std, jax.random.normal(rng, known.shape, known.dtype))

  def run(rng, score_fn, known, mask):
    if known.ndim < 2:
      raise ValueError(f'data must be batched, (B, ...); got shape {known.shape}.')
    known_mask = jnp.broadcast_to(mask, known.shape) > 0.5

    def clamp(rng, x, t):
      return from_basis(jnp.where(known_mask, forward_draw(rng, known, t), to_basis(x)))

    x = base.start(sde, rng, known.shape, None, starts_at_T)
    x = clamp(jax.random.fold_in(base.noise_key(rng), times.shape[0]), x, times[0])
    x, x_mean = pc.run_pc(pc_step, score_fn, jnp.asarray(times), x, rng, project=clamp)
    out = jnp.where(known_mask, known, to_basis(x_mean if denoise else x))
    return inverse_scaler(from_basis(out)), times.shape[0] * nfe_per_step

  return run


def get_pc_inpainter(sde: sde_lib.SDE, times, predictor: pc.PredictorLike,
                     corrector: pc.CorrectorLike, inverse_scaler: base.InverseScaler, snr: float,
                     n_steps: int = 1, probability_flow: bool = False, denoise: bool = True):
  """Inpainting by PC sampling with the known pixels clamped (appendix I.2).

  Args: as ``pc.get_pc_sampler`` (``times`` its grid from ``T``).
  Returns:
    ``inpainter(rng, score_fn, data, mask) -> (samples, nfe)``: ``data`` ``(B, ...)`` in model
    space, ``mask`` broadcastable to it, 1 where the pixel is known. ``samples`` equal
    ``inverse_scaler(data)`` where ``mask`` is 1, bit for bit.
  """
  return _get_pc_projector(sde, times, predictor, corrector, inverse_scaler, snr, n_steps,
                           probability_flow, denoise, base.identity, base.identity)


def get_pc_colorizer(sde: sde_lib.SDE, times, predictor: pc.PredictorLike,
                     corrector: pc.CorrectorLike, inverse_scaler: base.InverseScaler, snr: float,
                     n_steps: int = 1, probability_flow: bool = False, denoise: bool = True):
  """Colorization: inpainting of the colour coordinates of ``decouple`` (appendix I.3).

  Returns:
    ``colorizer(rng, score_fn, gray_scale_img) -> (samples, nfe)`` for grey images
    ``(B, H, W, 3)`` with equal R, G, B (model space). The samples' channel mean equals the
    input grey level up to float32 rounding of the basis change.
  """
  run = _get_pc_projector(sde, times, predictor, corrector, inverse_scaler, snr, n_steps,
                          probability_flow, denoise, decouple, couple)

  def colorizer(rng, score_fn, gray_scale_img):
    if gray_scale_img.ndim != 4 or gray_scale_img.shape[-1] != 3:
      raise ValueError(f'gray_scale_img must be (B, H, W, 3) with equal channels; got shape '
                       f'{gray_scale_img.shape}. Repeat a one-channel image 3 times.')
    mask = jnp.zeros((3,), jnp.float32).at[0].set(1.)
    return run(rng, score_fn, decouple(gray_scale_img), mask)

  return colorizer


def get_conditional_score_fn(score_fn: sde_lib.ScoreFn,
                             classifier_fn: Callable[[jax.Array, jax.Array], jax.Array],
                             labels: jax.Array, scale: float = 1.) -> sde_lib.ScoreFn:
  """Classifier guidance (sec. 5, eq. 14): ``grad_x log p_t(x | y) = grad_x log p_t(x) +
  grad_x log p_t(y | x)``, with ``scale`` multiplying the second term (1 is exact Bayes).

  Args:
    score_fn: the unconditional ``score_fn(x, t)``.
    classifier_fn: ``classifier_fn(x, t) -> logits (B, K)`` of the noise-conditional classifier
      ``p_t(y | x)``; examples must not interact (no batch statistics).
    labels: ``(B,)`` int class of each sample.
    scale: guidance weight.
  Returns:
    A score function usable by every sampler; each call is one evaluation of ``score_fn`` and
    one forward and backward pass of the classifier.
  """
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f'labels must be (B,) integers, one per sample; got shape {labels.shape}.')

  def log_likelihood(x, t):
    log_probs = jax.nn.log_softmax(classifier_fn(x, t), axis=-1)
    # Summed over the batch: each example's gradient only sees its own term.
    return jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))

  def conditional_score_fn(x, t):
    return score_fn(x, t) + scale * jax.grad(log_likelihood)(x, t)

  return conditional_score_fn
