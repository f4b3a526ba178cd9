"""Sample-quality metrics: the FID Inception-v3 network, FID / KID / IS, statistics files.

Typical use (``evaluation/evaluate.py``), with ``from score_sde.metrics import fid, inception,
inception_weights``:

    params = inception_weights.load_inception_params(config.eval.inception_path)
    inception_fn = inception.get_inception_fn(params, mesh)
    out = inception_fn(samples_in_0_1)                   # dict(pool_3, logits)
    ref = fid.load_stats(path)                           # from `python -m ...dataset_stats`
    score = fid.frechet_distance(*fid.feature_statistics(pool_3), ref['mu'], ref['sigma'])
"""
# ``dataset_stats`` and ``inception_weights`` are also commands (``python -m``); importing them here
# would load them twice when run that way, so they are imported by name where needed:
# ``from score_sde.metrics import inception_weights``.
from score_sde.metrics import fid, inception
from score_sde.metrics.fid import (feature_statistics, frechet_distance, inception_score,
                                   kernel_inception_distance, load_stats, save_stats)
from score_sde.metrics.inception import FIDInceptionV3, get_inception_fn, preprocess

__all__ = [
    'fid', 'inception',
    'feature_statistics', 'frechet_distance', 'inception_score', 'kernel_inception_distance',
    'load_stats', 'save_stats',
    'FIDInceptionV3', 'get_inception_fn', 'preprocess',
]
