"""Reference Inception statistics of a dataset split, for FID and KID against samples.

    python -m score_sde.metrics.dataset_stats --config configs/ve/cifar10_ncsnpp_continuous.py \
        --out assets/stats/cifar10_train_stats.npz [--split train] [--num_images 0]

Every image of the split (or the first ``--num_images``), at the resolution the model is trained
on (``data.image_size``), as floats in [0, 1], goes through the FID Inception network named by
``config.eval.inception_path``. The .npz holds ``mu`` (2048,), ``sigma`` (2048, 2048), the first
``--kid_features`` ``pool_3`` rows for KID, and ``num_images``. It runs on one host, over all of
its devices.
"""
from typing import Callable, Dict, Iterable, Iterator, Optional

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from score_sde import data
from score_sde.common import parallel
from score_sde.metrics import fid, inception, inception_weights

InceptionFn = Callable[[np.ndarray], Dict[str, jax.Array]]


def source_batches(source, batch_size: int, num_images: int = 0
                   ) -> Iterator[Dict[str, np.ndarray]]:
  """A data source in index order as fixed-size batches for the Inception network.

  The last batch is padded by repeating its final image, so every call has one shape (one
  compilation); ``mask`` marks the real rows.

  Args:
    source: a ``score_sde.data`` source (``len`` and ``get(indices)`` -> uint8 'image').
    batch_size: rows per batch.
    num_images: how many images from the start; 0 means all of them.
  Yields:
    dict(image=float32 (batch_size, H, W, C) in [0, 1], mask=bool (batch_size,)).
  """
  total = len(source) if num_images <= 0 else min(num_images, len(source))
  for start in range(0, total, batch_size):
    stop = min(start + batch_size, total)
    indices = np.arange(start, start + batch_size).clip(max=stop - 1)
    images = source.get(indices)['image'].astype(np.float32) / 255.
    yield {'image': images, 'mask': np.arange(start, start + batch_size) < stop}


def compute_statistics(inception_fn: InceptionFn, batches: Iterable[Dict[str, np.ndarray]],
                       num_features: int = 0) -> Dict[str, np.ndarray]:
  """Mean and covariance of ``pool_3`` over a stream of image batches.

  The moments are merged batch by batch in float64 (``fid.update_moments``), so memory does
  not grow with the number of images beyond the ``num_features`` rows kept for KID.

  Args:
    inception_fn: ``inception.get_inception_fn(params, ...)``, or anything mapping images to
      dict(pool_3=(B, D)).
    batches: dicts with 'image' (B, H, W, C) in [0, 1] and optionally a boolean 'mask' (B,)
      whose False rows (padding) are left out.
    num_features: how many ``pool_3`` rows (the first, in batch order) to keep; 0 keeps none.
  Returns:
    dict(mu=(D,), sigma=(D, D), num_images=() int and, if num_features > 0, pool_3=(n, D)
    float32 with n = min(num_features, num_images)).
  """
  moments, kept = None, []
  num_kept = 0
  for batch in batches:
    feats = np.asarray(inception_fn(batch['image'])['pool_3'], np.float64)
    if 'mask' in batch:
      feats = feats[np.asarray(batch['mask'], bool)]
    if moments is None:
      moments = fid.init_moments(feats.shape[1])
    moments = fid.update_moments(moments, feats)
    if num_kept < num_features:
      kept.append(feats[:num_features - num_kept].astype(np.float32))
      num_kept += len(kept[-1])
  if moments is None:
    raise ValueError('No batches: the dataset split is empty or num_images was 0.')
  mu, sigma = fid.moments_statistics(moments)
  stats = {'mu': mu, 'sigma': sigma, 'num_images': np.asarray(moments.count)}
  if num_features > 0:
    stats[fid.FEATURES] = np.concatenate(kept)
  return stats


def dataset_statistics(config, split: str = 'train', num_images: int = 0,
                       batch_size: Optional[int] = None, num_features: int = 10000,
                       inception_fn: Optional[InceptionFn] = None) -> Dict[str, np.ndarray]:
  """``compute_statistics`` over ``config.data``'s split.

  Args:
    config: the experiment config (reads ``data``, ``eval.batch_size``,
      ``eval.inception_path``).
    split: 'train' or 'test'.
    num_images: images from the start of the split; 0 means all.
    batch_size: global batch; default ``config.eval.batch_size``; a multiple of the device count.
    num_features: ``pool_3`` rows kept for KID.
    inception_fn: default: the FID network with the weights of ``config.eval.inception_path``,
      batch split over all devices.
  """
  batch_size = batch_size or config.eval.batch_size
  if inception_fn is None:
    if jax.process_count() > 1:
      raise ValueError('dataset_stats runs on one host; start it as a single process.')
    mesh = parallel.make_mesh()
    parallel.check_divisible(batch_size, mesh, '--batch_size')
    params = inception_weights.load_inception_params(config.eval.inception_path)
    inception_fn = inception.get_inception_fn(params, mesh)
  source = data.get_dataset(config.data, split)
  return compute_statistics(inception_fn, source_batches(source, batch_size, num_images),
                            num_features)


def _main(argv):
  del argv
  f = flags.FLAGS
  stats = dataset_statistics(f.config, f.split, f.num_images, f.batch_size, f.kid_features)
  fid.save_stats(f.out, stats.pop('mu'), stats.pop('sigma'), stats.pop(fid.FEATURES, None),
                 **stats)
  print(f'Wrote {f.out}: statistics of {int(stats["num_images"])} {f.config.data.dataset} '
        f'{f.split} images.')


def _define_flags():
  """Flags exist only when this file is the program, so importing it defines no global flags."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.DEFINE_string('out', None, 'Output .npz path.')
  flags.DEFINE_enum('split', 'train', ['train', 'test'], 'Dataset split.')
  flags.DEFINE_integer('num_images', 0, 'Images from the start of the split; 0: all.')
  flags.DEFINE_integer('batch_size', None, 'Global batch; default config.eval.batch_size.')
  flags.DEFINE_integer('kid_features', 10000, 'pool_3 rows stored for KID; 0: none.')
  flags.mark_flags_as_required(['config', 'out'])


if __name__ == '__main__':
  _define_flags()
  app.run(_main)
