"""The checks ``Pipeline``'s methods run on their arguments before anything is compiled or solved.

Images, masks, latents, class labels and image counts are checked for dtype, shape, finite
values and range (images in ``[0, 1]`` or uint8, masks of 0 and 1, labels among the classes of
what is sampled); a bad one raises ``InputError`` naming the argument, the images at fault and
what is expected. One bad image is refused up front because the ODE solvers share their step
sizes across a batch: a NaN in one image would spoil the others after the whole solve. The
checks are plain functions of the arguments and the network's image shape, apart from the
facade, so that ``pipeline`` reads as adapters over the samplers and the likelihood.
"""
from typing import Optional, Tuple

import ml_collections
import numpy as np

from score_sde.common import errors

# Float images may stray this far outside [0, 1]: half an 8-bit level, float rounding (decode's
# output, say), never a different picture.
RANGE_SLACK = .5 / 255.
# 8-bit images as floats may stray this many levels from k / 255: float rounding of x / 255.
GRID_SLACK = 1e-2


class InputError(errors.UserError, ValueError):
  """An argument of a ``Pipeline`` method is not what it takes: the message names the argument,
  the images at fault and the expected dtype, shape or range."""


def checked_images_shape(images, name: str, image_shape: Tuple[int, int, int],
                         channels: Optional[Tuple[int, ...]] = None) -> Tuple[int, ...]:
  """The shape of ``images``, after checking it is ``(N >= 1, H, W, C)`` for a network of
  ``image_shape`` ``(H, W, C)``; ``channels``: the ``C`` accepted instead of the network's."""
  shape = np.shape(images)
  h, w, c = image_shape
  ok = channels or (c,)
  if len(shape) != 4 or shape[0] < 1 or shape[1:3] != (h, w) or shape[-1] not in ok:
    raise InputError(f'{name} has shape {shape}; this network takes (N, {h}, {w}, '
                     f'{"|".join(map(str, ok))}) with N >= 1, in [0, 1] or uint8.')
  return tuple(shape)


def checked_images(images, name: str, image_shape: Tuple[int, int, int],
                   channels: Optional[Tuple[int, ...]] = None,
                   known: Optional[np.ndarray] = None) -> np.ndarray:
  """``images`` as float32 in ``[0, 1]``, after checking their dtype (uint8, read as
  ``x / 255``, or floats), shape (``checked_images_shape``), finiteness and range
  (``RANGE_SLACK`` allowed). ``known``: a bool array of their shape; only those pixels are
  checked and the others are set to 0."""
  checked_images_shape(images, name, image_shape, channels)
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.
  if images.dtype.kind != 'f':
    raise InputError(f'{name} has dtype {images.dtype}; pass uint8 (0 to 255) or floats in '
                     '[0, 1].')
  x = images.astype(np.float32)
  known = np.ones(x.shape, bool) if known is None else known
  finite = np.isfinite(x)
  _refuse_images(name, np.any(known & ~finite, axis=(1, 2, 3)), 'hold NaN or infinite values',
                 'every image must be finite')
  x = np.where(known, x, 0.)
  outside = known & ((x < -RANGE_SLACK) | (x > 1. + RANGE_SLACK))
  if np.any(outside):
    lo, hi = float(x[known].min()), float(x[known].max())
    hint = ('expected [0, 1]' + (': 0-255 data is passed as uint8, or divided by 255'
                                 if hi > 1.5 else '')
            + ('; data in [-1, 1] is passed as (x + 1) / 2' if lo < -.5 else ''))
    _refuse_images(name, np.any(outside, axis=(1, 2, 3)),
                   f'have values outside [0, 1] (from {lo:.4g} to {hi:.4g})', hint)
  return x.astype(np.float32)


def checked_8bit(images: np.ndarray, name: str) -> np.ndarray:
  """``images`` (``checked_images``' output, float32 in ``[0, 1]``) snapped to the 8-bit grid
  ``k / 255``, after checking each value lies within ``GRID_SLACK`` levels of it: a bound on
  the probability of 8-bit images (the DDPM chain's) is not defined between the levels."""
  scaled = images.astype(np.float64) * 255.
  levels = np.clip(np.round(scaled), 0., 255.)
  off = np.abs(scaled - levels) > GRID_SLACK
  if np.any(off):
    worst = float(np.max(np.abs(scaled - levels)))
    _refuse_images(name, np.any(off, axis=(1, 2, 3)),
                   f'are not on the 8-bit grid k / 255 (up to {worst:.3g} levels off)',
                   'pass uint8 images or their values / 255, not dequantized or resized ones')
  return (levels / 255.).astype(np.float32)


def checked_grey(grey, image_shape: Tuple[int, int, int]) -> np.ndarray:
  """``grey`` as float32 ``(N, H, W, 1 | 3)`` in ``[0, 1]``, after checking that the network of
  ``image_shape`` makes RGB images and that ``grey`` is images (``checked_images``) with one
  channel or three equal ones (within ``2 * RANGE_SLACK``)."""
  if image_shape[-1] != 3:
    raise InputError(f'colorize needs an RGB network; this one makes {image_shape[-1]}-channel '
                     'images (data.num_channels).')
  grey = checked_images(grey, 'grey', image_shape, channels=(1, 3))
  if grey.shape[-1] == 3:
    spread = np.max(np.ptp(grey, axis=-1), axis=(1, 2))
    _refuse_images('grey', spread > 2 * RANGE_SLACK, 'have unequal R, G and B',
                   'pass (N, H, W, 1), or 3 equal channels')
  return grey


def checked_latents(z, image_shape: Tuple[int, int, int]) -> np.ndarray:
  """``z`` as float32 ``(N, H, W, C)``, after checking its dtype, its shape (``image_shape`` is
  ``(H, W, C)``) and finiteness."""
  shape = np.shape(z)
  if len(shape) != 4 or shape[0] < 1 or tuple(shape[1:]) != tuple(image_shape):
    raise InputError(f'z has shape {shape}; this network\'s latents are (N, '
                     f'{", ".join(map(str, image_shape))}) with N >= 1 (encode\'s output).')
  z = np.asarray(z)
  if z.dtype.kind not in 'fiu':
    raise InputError(f'z has dtype {z.dtype}; latents are real numbers (float32).')
  z = z.astype(np.float32)
  _refuse_images('z', ~np.all(np.isfinite(z), axis=(1, 2, 3)), 'hold NaN or infinite values',
                 'every latent must be finite')
  return z


def checked_count(n) -> int:
  """``n`` as an int, after checking it is a positive whole number (a number of images)."""
  if isinstance(n, bool) or not isinstance(n, (int, float, np.number)) or not (
      np.isfinite(n) and n == int(n) and n >= 1):
    raise InputError(f'n={n!r} must be a positive integer: the number of images.')
  return int(n)


def checked_mask(mask, shape: Tuple[int, ...]) -> np.ndarray:
  """``mask`` as float32 of ``shape``, after checking it broadcasts to it and holds 0 and 1."""
  mask = np.asarray(mask)
  h, w = shape[1:3]
  try:
    fits = mask.ndim <= 4 and np.broadcast_shapes(mask.shape, shape) == shape
  except ValueError:
    fits = False
  if not fits:
    raise InputError(f'mask has shape {mask.shape}, which does not broadcast to the images\' '
                     f'{shape}; pass ({h}, {w}, 1) for every image, or {shape}, 1 where a pixel '
                     'is known.')
  if mask.dtype.kind not in 'biuf':
    raise InputError(f'mask has dtype {mask.dtype}; pass bool, or numbers 0 and 1.')
  values = mask.astype(np.float64)
  other = ~((values == 0.) | (values == 1.))
  if np.any(other):
    raise InputError(f'mask holds {int(other.sum())} values other than 0 and 1 (e.g. '
                     f'{values[other].flat[0]:.4g}); it marks each pixel as known (1) or to '
                     'fill (0): threshold a soft mask, e.g. mask > 0.5.')
  return np.broadcast_to(values.astype(np.float32), shape)


def checked_labels(class_labels, config: ml_collections.ConfigDict) -> Tuple[int, ...]:
  """``class_labels`` as a tuple of ints, after checking they are classes of what ``config``
  samples with (``sampling.class_labels`` of ``sampling.sampled_classes``)."""
  try:
    labels = np.ravel(np.asarray(class_labels))
  except ValueError:
    labels = np.asarray(['?'])
  if labels.size and (labels.dtype.kind not in 'iuf' or not np.all(np.isfinite(labels))
                      or np.any(labels != np.round(labels))):
    raise InputError(f'class_labels={class_labels!r} must be integer classes.')
  classes = config.model.num_classes or (
      config.classifier.num_classes if config.sampling.classifier_scale else 0)
  if labels.size and not classes:
    raise InputError(f'class_labels={class_labels!r}, but nothing conditions on a class: the '
                     'network is unconditional (model.num_classes = 0) and classifier guidance '
                     'is off (classifier_scale = 0). Drop class_labels, or pass classifier_scale.')
  bad = (labels < 0) | (labels >= classes)
  if np.any(bad):
    raise InputError(f'class_labels at positions {np.flatnonzero(bad)[:8].tolist()} '
                     f'({labels[bad][:8].tolist()}) are not classes: they are integers in '
                     f'[0, {classes}).')
  return tuple(int(c) for c in labels)


def _refuse_images(name: str, bad: np.ndarray, what: str, expected: str) -> None:
  """Raises ``InputError`` naming the images of ``name`` where ``bad`` (bool ``(N,)``) holds."""
  if not np.any(bad):
    return
  where = np.flatnonzero(bad)
  listed = ', '.join(map(str, where[:8])) + (f' and {len(where) - 8} more'
                                              if len(where) > 8 else '')
  raise InputError(f'{name}: {len(where)} of {len(bad)} ({name}[{listed}]) {what}; {expected}. '
                   'Nothing was computed.')
