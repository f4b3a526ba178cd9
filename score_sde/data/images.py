"""Crop, resize and channel conversion of single uint8 images, with PIL.

Every function takes and returns one ``uint8`` array of shape ``(H, W, C)`` with ``C`` in
``{1, 3}``. Resizing goes through PIL, whose filters widen with the scale factor when shrinking
(antialiased), like the reference's ``tf.image.resize(..., antialias=True)``. Results are rounded
back to ``uint8``: sources hand out 8-bit images, and the pipeline turns them into floats.
"""
from typing import Tuple

import numpy as np
from PIL import Image

NUM_CHANNELS = (1, 3)  # data.num_channels: grey or RGB.
RESAMPLE = {
    'box': Image.Resampling.BOX,  # Area average: exact means for integer shrink factors.
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
}


def _check_image(image: np.ndarray) -> None:
  if image.ndim != 3 or image.shape[-1] not in NUM_CHANNELS or image.dtype != np.uint8:
    raise ValueError(
        f'Expected a uint8 image of shape (H, W, 1 or 3); got {image.dtype} {image.shape}.')


def to_pil(image: np.ndarray) -> Image.Image:
  """``(H, W, 1 | 3) uint8`` -> a PIL image in mode ``'L'`` or ``'RGB'``."""
  _check_image(image)
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def from_pil(image: Image.Image, num_channels: int) -> np.ndarray:
  """A PIL image of any mode -> ``(H, W, num_channels) uint8`` (grey via ITU-R 601 luma)."""
  if num_channels not in NUM_CHANNELS:
    raise ValueError(f'num_channels must be 1 or 3, got {num_channels}.')
  array = np.asarray(image.convert('L' if num_channels == 1 else 'RGB'), dtype=np.uint8)
  return array[..., None] if num_channels == 1 else array


def to_channels(image: np.ndarray, num_channels: int) -> np.ndarray:
  """Converts ``(H, W, C) uint8`` to ``num_channels`` channels (grey <-> RGB); no-op if equal."""
  _check_image(image)
  if image.shape[-1] == num_channels:
    return image
  return from_pil(to_pil(image), num_channels)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """The central ``(height, width)`` window; its top-left pixel is ``((H - height) // 2,
  (W - width) // 2)``, as in ``tf.image.crop_to_bounding_box`` of the reference's central crop.
  """
  h, w = image.shape[:2]
  if not (0 < height <= h and 0 < width <= w):
    raise ValueError(f'Cannot crop {height}x{width} out of a {h}x{w} image.')
  top, left = (h - height) // 2, (w - width) // 2
  return image[top:top + height, left:left + width]


def center_crop_square(image: np.ndarray) -> np.ndarray:
  """The largest central square, ``min(H, W)`` on a side."""
  side = min(image.shape[:2])
  return center_crop(image, side, side)


def resize(image: np.ndarray, height: int, width: int, method: str = 'bilinear') -> np.ndarray:
  """Resizes ``(H, W, C) uint8`` to ``(height, width, C) uint8``; a no-op when the size matches.

  Args:
    image: ``(H, W, C) uint8``.
    height, width: output size in pixels.
    method: ``'box'`` (area average), ``'bilinear'`` or ``'bicubic'``; antialiased when shrinking.
  """
  _check_image(image)
  if method not in RESAMPLE:
    raise ValueError(f'Unknown resize method {method!r}; use one of {sorted(RESAMPLE)}.')
  if image.shape[:2] == (height, width):
    return image
  resized = to_pil(image).resize((width, height), resample=RESAMPLE[method])
  return from_pil(resized, image.shape[-1])


def resize_short_side(image: np.ndarray, size: int, method: str = 'bilinear') -> np.ndarray:
  """Scales so that the shorter side is ``size``, keeping the aspect ratio (sides rounded)."""
  h, w = image.shape[:2]
  ratio = size / min(h, w)
  return resize(image, int(round(h * ratio)), int(round(w * ratio)), method)


def crop_resize(image: np.ndarray, size: int, method: str = 'bicubic') -> np.ndarray:
  """Central square crop, then resize to ``(size, size)``: the reference's ``crop_resize``."""
  return resize(center_crop_square(image), size, size, method)


def image_shape(image_size: int, num_channels: int) -> Tuple[int, int, int]:
  """``(image_size, image_size, num_channels)``, after checking both values."""
  if int(image_size) != image_size or image_size <= 0:
    raise ValueError(f'data.image_size must be a positive integer, got {image_size!r}.')
  if num_channels not in NUM_CHANNELS:
    raise ValueError(f'data.num_channels must be 1 (grey) or 3 (RGB), got {num_channels!r}.')
  return int(image_size), int(image_size), int(num_channels)
