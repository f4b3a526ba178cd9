"""Sample-quality evaluation of one checkpoint: FID, KID and Inception Score, in resumable rounds.

``eval.num_samples`` samples are drawn in ``R = ceil(num_samples / eval.batch_size)`` rounds of
``eval.batch_size``, each split over the mesh. Round ``r`` of checkpoint ``step`` uses the key
``fold_in(fold_in(key(seed, SAMPLE_STREAM), step), r)``, so a round is the same whenever and on
however many devices it is computed. Samples are put on the 8-bit grid as ``eval.quantization``
says: ``'truncate'`` (the default, ``floor(255 x) / 255``: the reference's
``np.clip(x * 255, 0, 255).astype(np.uint8)`` before Inception) or ``'round'``
(``round(255 x) / 255``, what a PNG of the samples holds; FIDs differ slightly), and go through
the FID Inception network; every
round's ``pool_3`` features and logits are saved atomically to ``ckpt_<step>/round_<r>.npz``. A
killed evaluation therefore loses at most the round in flight: the next run computes only the
rounds without a file. Once all exist, the first ``num_samples`` rows give

* FID (Heusel et al. 2017) between the Gaussian of the sample features and the reference
  statistics ``eval.stats_path``, the moments merged round by round in float64;
* KID (Binkowski et al. 2018) against the reference file's stored features (if it has any),
  on the first ``KID_FEATURES`` sample features;
* IS (Salimans et al. 2016) from the logits, over ``eval.is_splits`` parts.
"""
import os
import time
from typing import Any, Callable, Dict, List

import jax
import numpy as np
from absl import logging
from etils import epath

from score_sde import sampling
from score_sde.common import errors, parallel, rng
from score_sde.evaluation import report as eval_report
from score_sde.io import files, summary
from score_sde.metrics import fid, inception

KID_FEATURES = 10000  # Sample features kept for KID; as dataset_stats' default --kid_features.
GRID_FILE = 'samples.png'  # The first round's first GRID_IMAGES samples, per ckpt_<step>.
GRID_IMAGES = 64


# ------------------------------------------------------------------------------ set-up
def stats_command(config) -> str:
  """The command that makes the missing reference statistics, for error messages."""
  out = f'assets/stats/{str(config.data.dataset).lower()}_train_stats.npz'
  inception_flag = (f' --config.eval.inception_path={config.eval.inception_path}'
                    if config.eval.inception_path else '')
  return (f'python -m score_sde.metrics.dataset_stats --config CONFIG_FILE --out {out} '
          f'--split train{inception_flag}\n(CONFIG_FILE: the config file you evaluate with), '
          f'then pass --config.eval.stats_path={out}')


def load_reference_stats(config) -> Dict[str, np.ndarray]:
  """The dataset statistics FID and KID compare against, checked before anything is sampled.

  Raises:
    ValueError: ``eval.stats_path`` is empty, or the file's features are not pool_3's.
    FileNotFoundError: the file does not exist; both messages give the command that makes it.
  """
  path = config.eval.stats_path
  if not path:
    raise errors.ConfigError('config.eval.stats_path is empty, and FID / KID need the reference '
                             'Inception statistics of the data. Make them once with\n  ' +
                             stats_command(config))
  if not os.path.exists(path):
    raise errors.DataNotFoundError(f'config.eval.stats_path={path!r} does not exist. Make it '
                                   'with\n  ' + stats_command(config))
  stats = fid.load_stats(path)
  if stats[fid.MU].shape != (inception.POOL_DIM,):
    raise errors.BadDataError(f'{path} holds {stats[fid.MU].shape[0]}-dimensional statistics; '
                              f'FID needs the {inception.POOL_DIM} pool_3 features. Remake it '
                              'with\n  ' + stats_command(config))
  return stats


def round_path(ckpt_dir: str, index: int) -> str:
  return os.path.join(ckpt_dir, f'round_{index}.npz')


def samples_path(ckpt_dir: str, index: int) -> str:
  """Where ``eval.save_samples`` keeps round ``index``'s images."""
  return os.path.join(ckpt_dir, f'samples_{index}.npz')


def num_rounds(num_samples: int, batch_size: int) -> int:
  return -(-int(num_samples) // int(batch_size))


def round_key(seed: int, step: int, index: int) -> jax.Array:
  """The sampler's key of round ``index`` of checkpoint ``step``."""
  stream = rng.stream_key(seed, rng.SAMPLE_STREAM)
  return jax.random.fold_in(jax.random.fold_in(stream, step), index)


# ------------------------------------------------------------------------------ sampling
def make_round_fn(config, sde, model, mesh, inception_fn: Callable, classifier=None
                  ) -> Callable[..., Dict[str, Any]]:
  """``round_fn(params, key, with_images=False) -> dict(pool_3, logits, nfe[, images])``: one
  round, sharded over ``mesh``. Class-conditional as ``sampling.get_network_sampler`` says;
  ``classifier`` is ``(module, params)`` for classifier guidance (``sampling.classifier_scale``).

  ``pool_3`` (B, 2048) and ``logits`` (B, 1008) are float32 numpy on every host, ``nfe`` an int;
  with ``with_images`` also ``images``, (B, H, W, C) float32 on the 8-bit grid in [0, 1] (only
  the round that makes the PNG grid pays for gathering them).
  """
  module, classifier_params = classifier or (None, None)
  sample = sampling.get_network_sampler(config, sde, model, mesh, config.eval.batch_size,
                                        quantize=config.eval.quantization, classifier=module)

  def round_fn(params, key, with_images: bool = False):
    if module is not None and config.sampling.classifier_scale:
      params = {'score': params, 'classifier': classifier_params}
    images, nfe = sample(params, key)
    features = inception_fn(images)
    result = {'pool_3': parallel.gather_rows(features['pool_3']),
              'logits': parallel.gather_rows(features['logits']),
              'nfe': int(np.asarray(nfe))}
    if with_images:
      result['images'] = parallel.gather_rows(images)
    return result

  return round_fn


def save_round(path: str, result: Dict[str, Any]) -> None:
  """Writes one round's features, logits and NFE (process 0 only, atomically)."""
  if jax.process_index() == 0:
    files.save_npz(path, pool_3=result['pool_3'].astype(np.float32),
                   logits=result['logits'].astype(np.float32),
                   nfe=np.asarray(result['nfe'], np.int64))


def compute_rounds(round_fn: Callable, params, seed: int, step: int, ckpt_dir: str,
                   rounds: int, writer=None, save_samples: bool = False) -> List[int]:
  """Computes and saves every round of checkpoint ``step`` that has no file yet.

  The first ``GRID_IMAGES`` images of round 0 are also written as a PNG grid (``GRID_FILE``)
  and to TensorBoard. With ``save_samples`` every round's images are kept too, in
  ``samples_<r>.npz`` (``images``: uint8 ``(B, H, W, C)``, the 8-bit values Inception saw), for
  cross-checking FIDs with other tools (pytorch-fid, clean-fid); a round on disk without its
  images is computed again (the same key gives the same samples and features).

  Returns:
    The round indices computed by this call.
  """
  def on_disk(r):
    paths = [round_path(ckpt_dir, r)] + ([samples_path(ckpt_dir, r)] if save_samples else [])
    return all(epath.Path(p).exists() for p in paths)

  exists = np.array([on_disk(r) for r in range(rounds)])
  missing = np.flatnonzero(~eval_report.host0_view(exists)).tolist()
  if len(missing) < rounds:
    logging.info('step %d: %d of %d sample rounds are on disk; computing the other %d.', step,
                 rounds - len(missing), rounds, len(missing))
  start = time.time()
  for done, index in enumerate(missing, 1):
    result = round_fn(params, round_key(seed, step, index),
                      with_images=index == 0 or save_samples)
    if index == 0:
      grid = summary.image_grid(result['images'][:GRID_IMAGES])
      if jax.process_index() == 0:
        summary.save_png(os.path.join(ckpt_dir, GRID_FILE), grid)
      if writer is not None:
        writer.image('eval/samples', grid, step)
    if save_samples and jax.process_index() == 0:
      files.save_npz(samples_path(ckpt_dir, index), images=np.clip(
          np.round(result['images'] * 255.), 0, 255).astype(np.uint8))
    save_round(round_path(ckpt_dir, index), result)
    logging.info('step %d: sample round %d done (%d score evaluations); %s', step, index + 1,
                 result['nfe'], summary.countdown(done, len(missing), time.time() - start))
  return missing


# ------------------------------------------------------------------------------ metrics
def sample_metrics(paths: List[str], num_samples: int, reference: Dict[str, np.ndarray],
                   is_splits: int = 1) -> Dict[str, Any]:
  """FID, KID and IS of the first ``num_samples`` rows of the round files ``paths`` (in order).

  Returns:
    dict(fid, kid, kid_std, is, is_std, num_samples, nfe) with Python numbers; kid and kid_std
    are None when ``reference`` holds no pool_3 features. nfe is the mean per round.
  """
  moments, logits, kid_rows, nfes = fid.init_moments(inception.POOL_DIM), [], [], []
  for path in paths:
    left = num_samples - moments.count
    if left <= 0:
      break
    arrays = files.load_npz(path)
    pool_3 = arrays['pool_3'][:left]
    moments = fid.update_moments(moments, pool_3)
    logits.append(arrays['logits'][:left])
    kid_rows.append(pool_3[:max(KID_FEATURES - sum(map(len, kid_rows)), 0)])
    nfes.append(int(arrays['nfe']))
  if moments.count != num_samples:
    raise ValueError(f'The round files hold {moments.count} samples, not {num_samples}.')
  mu, sigma = fid.moments_statistics(moments)
  values = {'fid': fid.frechet_distance(mu, sigma, reference[fid.MU], reference[fid.SIGMA]),
            'kid': None, 'kid_std': None, 'num_samples': int(num_samples),
            'nfe': float(np.mean(nfes))}
  if fid.FEATURES in reference:
    values['kid'], values['kid_std'] = fid.kernel_inception_distance(
        np.concatenate(kid_rows), reference[fid.FEATURES])
  else:
    logging.warning('The reference statistics hold no pool_3 features; KID is not computed. '
                    'Remake them with dataset_stats --kid_features 10000.')
  values['is'], values['is_std'] = fid.inception_score(np.concatenate(logits), splits=is_splits)
  return values


def make_sample_evaluator(config, sde, model, mesh, inception_fn: Callable,
                          reference: Dict[str, np.ndarray], classifier=None):
  """``evaluate_samples(params, step, ckpt_dir, writer) -> report columns`` (see module doc).

  The sampler is compiled once, at the first call, and reused for every checkpoint. The returned
  columns are those of ``sample_metrics`` on process 0 and empty elsewhere (only process 0 has
  the round files).
  """
  round_fn = make_round_fn(config, sde, model, mesh, inception_fn, classifier)
  e = config.eval
  rounds = num_rounds(e.num_samples, e.batch_size)

  def evaluate_samples(params, step: int, ckpt_dir: str, writer=None) -> Dict[str, Any]:
    compute_rounds(round_fn, params, config.seed, step, ckpt_dir, rounds, writer,
                   save_samples=e.save_samples)
    if jax.process_index() != 0:
      return {}
    paths = [round_path(ckpt_dir, r) for r in range(rounds)]
    return sample_metrics(paths, e.num_samples, reference, e.is_splits)

  return evaluate_samples

