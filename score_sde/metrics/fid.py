"""Sample-quality statistics on Inception features: FID, KID, Inception Score, and stats files.

Everything here is host-side numpy/scipy in float64: the networks run on device, but the
matrix functions of a 2048 x 2048 covariance lose digits in float32 and take well under a second
on a CPU.

References:
  Heusel et al. 2017, "GANs trained by a two time-scale update rule ..." (FID).
  Binkowski et al. 2018, "Demystifying MMD GANs" (KID).
  Salimans et al. 2016, "Improved techniques for training GANs" (Inception Score).
"""
import os
from typing import NamedTuple, Optional, Tuple

import numpy as np
from scipy import special

# Keys of a statistics file. ``pool_3`` (optional) holds raw features for KID, under the name the
# original score_sde statistics files use, so those files load here too.
MU, SIGMA, FEATURES = 'mu', 'sigma', 'pool_3'


def _as_2d(feats, name: str) -> np.ndarray:
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f'{name} must be a (num_examples >= 2, dim) array of features; got shape '
                     f'{feats.shape}. Stack the per-batch features along axis 0.')
  return feats


def feature_statistics(feats) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance of features.

  Args:
    feats: (N, D) array, N >= 2.
  Returns:
    mu: (D,) float64; sigma: (D, D) float64, normalised by N - 1 (as numpy's ``np.cov``).
  """
  feats = _as_2d(feats, 'feats')
  return feats.mean(0), np.cov(feats, rowvar=False)


class Moments(NamedTuple):
  """Running count, mean and centred sum of squares of a stream of feature batches."""
  count: int
  mean: np.ndarray  # (D,) float64
  m2: np.ndarray  # (D, D) float64: sum over examples of (x - mean)(x - mean)^T.


def init_moments(dim: int) -> Moments:
  return Moments(0, np.zeros(dim), np.zeros((dim, dim)))


def update_moments(moments: Moments, feats) -> Moments:
  """Merges a batch into running moments (Chan et al. 1979 pairwise update).

  Merging centred sums, rather than accumulating sum(x x^T), avoids the cancellation of
  ``E[x x^T] - mu mu^T`` when features have a large mean relative to their spread.

  Args:
    moments: the moments so far.
    feats: (B, D) array of new examples; B may be 0.
  """
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[1] != moments.mean.shape[0]:
    raise ValueError(f'Expected features of shape (B, {moments.mean.shape[0]}); '
                     f'got {feats.shape}.')
  b = feats.shape[0]
  if b == 0:
    return moments
  batch_mean = feats.mean(0)
  centred = feats - batch_mean
  n = moments.count + b
  delta = batch_mean - moments.mean
  mean = moments.mean + delta * (b / n)
  m2 = moments.m2 + centred.T @ centred + np.outer(delta, delta) * (moments.count * b / n)
  return Moments(n, mean, m2)


def moments_statistics(moments: Moments) -> Tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) of everything merged so far; sigma normalised by N - 1 like ``np.cov``."""
  if moments.count < 2:
    raise ValueError(f'Need at least 2 examples for a covariance; got {moments.count}.')
  return moments.mean, moments.m2 / (moments.count - 1)


def _psd_sqrt(sym: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix.

  Eigenvalues below d * eps * max eigenvalue are rounding noise around zero; they are set to
  exactly zero, since their square roots (~1e-8 relative) would otherwise add up over the
  thousands of null directions of a covariance estimated from fewer examples than dimensions.
  """
  w, v = np.linalg.eigh(sym)
  tol = max(w.max(), 0.) * sym.shape[0] * np.finfo(np.float64).eps
  return (v * np.sqrt(np.where(w > tol, w, 0.))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
  """Tr((S1 S2)^{1/2}) for symmetric PSD S1, S2, as the nuclear norm of S1^{1/2} S2^{1/2}.

  S1 S2 is not symmetric, so ``scipy.linalg.sqrtm`` of it (a Schur method) can return complex
  values or lose accuracy when the covariances are singular, which they are whenever there are
  fewer examples than feature dimensions. With A = S1^{1/2}, B = S2^{1/2}: S1 S2 = A (A S2 A) A^-1
  is similar to A S2 A = (A B)(A B)^T, so the eigenvalues of (S1 S2)^{1/2} are the singular
  values of A B and the trace is their sum. Two ``eigh`` and one SVD, real by construction, and
  the SVD avoids the squaring of A S2 A, whose rounding the square root would amplify to
  sqrt(eps) relative error.
  """
  a = _psd_sqrt(np.asarray(sigma1, np.float64))
  b = _psd_sqrt(np.asarray(sigma2, np.float64))
  return float(np.linalg.svd(a @ b, compute_uv=False).sum())


def _check_gaussian(mu, sigma, name: str) -> Tuple[np.ndarray, np.ndarray]:
  mu = np.atleast_1d(np.asarray(mu, np.float64))
  sigma = np.atleast_2d(np.asarray(sigma, np.float64))
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f'{name}: mu must be (D,) and sigma (D, D); got {mu.shape} and '
                     f'{sigma.shape}.')
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise ValueError(f'{name}: statistics contain NaN or inf; check the features they came from.')
  return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Frechet distance between N(mu1, S1) and N(mu2, S2) (the FID on Inception pool_3 features).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})      (Heusel et al. 2017)

  Args:
    mu1, mu2: (D,) means. sigma1, sigma2: (D, D) symmetric PSD covariances.
  Returns:
    The squared distance d^2 as a Python float (this is what is reported as "FID").
  """
  mu1, sigma1 = _check_gaussian(mu1, sigma1, 'first statistics')
  mu2, sigma2 = _check_gaussian(mu2, sigma2, 'second statistics')
  if mu1.shape != mu2.shape:
    raise ValueError(f'Feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}. Both sides '
                     'must come from the same Inception layer (pool_3: 2048).')
  diff = mu1 - mu2
  trace = np.trace(sigma1) + np.trace(sigma2) - 2. * trace_sqrt_product(sigma1, sigma2)
  return float(diff @ diff + trace)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """k(x, y) = (x . y / d + 1)^3 for rows of x (n, d) and y (m, d); returns (n, m)."""
  return (x @ y.T / x.shape[1] + 1.) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased estimate of MMD^2 between the laws of rows of x (m, d) and y (n, d).

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
              - 2 sum_{i, j} k(x_i, y_j) / (m n)             (Gretton et al. 2012)
  """
  m, n = x.shape[0], y.shape[0]
  kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
  return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
               + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
               - 2. * kxy.mean())


def kernel_inception_distance(feats1, feats2, num_subsets: int = 100, subset_size: int = 1000,
                              rng: Optional[np.random.Generator] = None) -> Tuple[float, float]:
  """KID: unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets.

  Binkowski et al. 2018 (sec. 3 and their reference code): each of ``num_subsets`` rounds draws
  ``subset_size`` rows of each feature set without replacement and evaluates ``mmd2_unbiased``.
  The estimate is unbiased, so it can be negative when both sets come from one distribution.

  Args:
    feats1, feats2: (N1, D) and (N2, D) features (Inception pool_3 in the paper).
    num_subsets: rounds to average.
    subset_size: rows per set per round; lowered to min(N1, N2) when a set is smaller.
    rng: numpy Generator for the subsets; default ``np.random.default_rng(0)`` (reproducible).
  Returns:
    (mean, std) of the per-subset estimates.
  """
  x, y = _as_2d(feats1, 'feats1'), _as_2d(feats2, 'feats2')
  if x.shape[1] != y.shape[1]:
    raise ValueError(f'Feature dimensions differ: {x.shape[1]} vs {y.shape[1]}.')
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(f'Need num_subsets >= 1 and subset_size >= 2; got {num_subsets}, '
                     f'{subset_size}.')
  rng = np.random.default_rng(0) if rng is None else rng
  size = min(subset_size, x.shape[0], y.shape[0])
  estimates = [
      mmd2_unbiased(x[rng.choice(x.shape[0], size, replace=False)],
                    y[rng.choice(y.shape[0], size, replace=False)])
      for _ in range(num_subsets)]
  return float(np.mean(estimates)), float(np.std(estimates))


def inception_score(predictions, splits: int = 10, from_logits: bool = True
                    ) -> Tuple[float, float]:
  """Inception Score exp(E_x KL(p(y|x) || p(y))), mean and std over ``splits`` equal parts.

  The FID Inception graph (TF 2015-12-05) has 1008 outputs: 1001 ImageNet classes (with a
  background class) and 7 unused ones. As in the reference implementations, the softmax runs over
  all 1008 logits; the unused classes get negligible mass.

  Args:
    predictions: (N, K) logits (``from_logits=True``) or class probabilities summing to one.
    splits: contiguous parts; each part's p(y) is its own mean prediction (Salimans et al. 2016).
    from_logits: whether ``predictions`` are logits.
  Returns:
    (mean, std) over the parts.
  """
  predictions = np.asarray(predictions, np.float64)
  if predictions.ndim != 2 or not 1 <= splits <= predictions.shape[0]:
    raise ValueError(f'Expected (N, K) predictions with N >= splits={splits}; got shape '
                     f'{predictions.shape}.')
  if from_logits:
    log_p = special.log_softmax(predictions, axis=1)
    p = np.exp(log_p)
  else:
    p = predictions
    if np.any(p < 0) or not np.allclose(p.sum(1), 1., atol=1e-4):
      raise ValueError('Probabilities must be non-negative rows summing to 1; pass logits with '
                       'from_logits=True instead.')
  scores = []
  for part in np.array_split(p, splits):
    marginal = part.mean(0, keepdims=True)
    kl = special.rel_entr(part, marginal).sum(1)  # rel_entr(0, q) = 0: empty classes are fine.
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def save_stats(path: str, mu, sigma, features=None, **extra) -> None:
  """Writes an .npz with ``mu`` (D,), ``sigma`` (D, D) and optionally ``pool_3`` (N, D) features.

  The write goes to a temporary name first and is renamed, so an interrupted run never leaves a
  truncated file behind. ``extra`` holds small metadata arrays (e.g. ``num_images``).
  """
  mu, sigma = _check_gaussian(mu, sigma, path)
  arrays = {MU: mu, SIGMA: sigma, **{k: np.asarray(v) for k, v in extra.items()}}
  if features is not None:
    arrays[FEATURES] = np.asarray(features, np.float32)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f'.{os.path.basename(path)}.tmp.npz')
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def load_stats(path: str) -> dict:
  """Reads a statistics file: dict with ``mu``, ``sigma`` and, when stored, ``pool_3``.

  Files holding only ``pool_3`` features (the original score_sde statistics files) get ``mu`` and
  ``sigma`` computed from them.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'No statistics file {path!r}. Make one with `python -m score_sde.metrics.dataset_stats '
        f'--config CONFIG --out {path}`.')
  with np.load(path) as data:
    stats = {k: data[k] for k in data.files}
  if MU not in stats or SIGMA not in stats:
    if FEATURES not in stats:
      raise KeyError(f'{path!r} holds {sorted(stats)}; a statistics file needs {MU!r} and '
                     f'{SIGMA!r} or {FEATURES!r}.')
    stats[MU], stats[SIGMA] = feature_statistics(stats[FEATURES])
  return stats
