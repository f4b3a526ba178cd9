"""Shared ground truth for the sampler tests: Gaussian-mixture targets, their exact scores, and a
two-sample moment check whose tolerance is a noise floor measured on fresh exact samples.

The helpers are imported by the other ``test_sampling_*`` files; the tests here check the check
itself: it accepts exact samples and rejects slightly wrong ones.
"""
import jax
import jax.numpy as jnp
import numpy as np

from score_sde import analytic, sde_lib

SDES = {
    'vpsde': lambda n=100: sde_lib.VPSDE(0.1, 20., n),
    'subvpsde': lambda n=100: sde_lib.subVPSDE(0.1, 20., n),
    'vesde': lambda n=100: sde_lib.VESDE(0.01, 50., n),
}
EPS = {'vpsde': 1e-3, 'subvpsde': 1e-3, 'vesde': 1e-5}


def mixture(dim: int = 8, components: int = 3, seed: int = 0) -> analytic.GaussianMixture:
  """A well-separated random mixture with component stds in [0.1, 0.5], centred (zero mean).

  Centring makes the priors' zero mean exact: otherwise VE's ``N(0, sigma_max^2)`` misses
  ``p_T``'s mean, an error the deterministic samplers carry to ``p_eps`` scaled by
  ``s_k / sigma_max`` (several standard errors at 10^4 samples), which is not what is tested.
  """
  law = analytic.random_mixture(np.random.default_rng(seed), components, (dim,))
  centre = jnp.einsum('k,k...->...', law.weights, law.means)
  return analytic.GaussianMixture(law.weights, law.means - centre, law.stds)


def counting(score_fn):
  """``score_fn`` that also counts its evaluations at run time (a host callback per call).

  Returns:
    ``(counted_score_fn, calls)`` where ``calls[0]`` is the number of evaluations so far.
  """
  calls = [0]

  def bump(_):
    calls[0] += 1

  def counted(x, t):
    jax.debug.callback(bump, t[0])
    return score_fn(x, t)

  return counted, calls


def exact_draws(law: analytic.GaussianMixture, n: int, seed: int) -> np.ndarray:
  """``n`` draws of ``law`` with numpy's generator (independent of the code under test)."""
  rng = np.random.default_rng(seed)
  weights = np.asarray(law.weights, np.float64)
  k = rng.choice(len(weights), size=n, p=weights / weights.sum())
  means, stds = np.asarray(law.means, np.float64), np.asarray(law.stds, np.float64)
  return means[k] + stds[k] * rng.standard_normal((n,) + means.shape[1:])


def most_responsible(law: analytic.GaussianMixture, x: np.ndarray) -> np.ndarray:
  """Index of the component with the largest ``w_k N(x; mu_k, s_k^2)``, in float64 numpy."""
  means, stds = np.asarray(law.means, np.float64), np.asarray(law.stds, np.float64)
  x = x.reshape(len(x), 1, -1)
  means, stds = means.reshape(1, len(means), -1), stds.reshape(1, len(stds), -1)
  log_p = np.log(np.asarray(law.weights, np.float64)) - np.sum(
      0.5 * ((x - means) / stds) ** 2 + np.log(stds), axis=-1)
  return np.argmax(log_p, axis=-1)


def _moments(x: np.ndarray, labels: np.ndarray, k: int):
  """Mode fractions (by most responsible component) and each mode's per-coordinate mean and
  variance, with the per-sample variances that give their standard errors. float64."""
  n = len(labels)
  weights = np.bincount(labels, minlength=k) / n
  stats, per_sample_var, counts = [weights], [weights * (1 - weights)], [np.full(k, n)]
  for j in range(k):
    xj = x[labels == j]
    mean, var = xj.mean(0), xj.var(0)
    m4 = ((xj - mean) ** 4).mean(0)
    stats += [mean, var]
    per_sample_var += [var, m4 - var ** 2]
    counts += [np.full_like(mean, len(xj))] * 2
  return np.concatenate(stats), np.concatenate(per_sample_var), np.concatenate(counts)


def _names(k: int, dim: int):
  names = [f'weight[{j}]' for j in range(k)]
  for j in range(k):
    names += [f'mean[{j}][{i}]' for i in range(dim)] + [f'var[{j}][{i}]' for i in range(dim)]
  return names


def moment_gaps(samples, law: analytic.GaussianMixture, seed: int = 0, n_ref: int = None):
  """How far ``samples`` are from ``law``, with the two-sample noise floor of each statistic.

  Statistics: the fraction of samples whose most responsible component (under ``law``) is
  ``j``, and each such mode's per-coordinate mean and variance. The same statistics of
  ``n_ref`` fresh exact draws from ``law`` (numpy, ``seed``) give the reference values and,
  through their per-sample variances ``v``, the standard error ``sqrt(v (1/n + 1/n_ref))`` of
  the difference (``n``: samples in the mode).

  Returns:
    ``(gap, se, names)``: absolute differences and standard errors (float64), and labels.
  """
  samples = np.asarray(samples, np.float64).reshape(len(samples), -1)
  n_ref = n_ref or len(samples)
  ref = exact_draws(law, n_ref, seed).reshape(n_ref, -1)
  k = law.weights.shape[0]
  got, _, n_got = _moments(samples, most_responsible(law, samples), k)
  want, per_sample_var, n_want = _moments(ref, most_responsible(law, ref), k)
  se = np.sqrt(per_sample_var * (1. / np.maximum(n_got, 1) + 1. / n_want))
  return np.abs(got - want), se, _names(k, samples.shape[1])


def assert_matches(samples, law, seed=0, k_se: float = 5., var_bias: float = 0., n_ref=None):
  """Asserts every moment gap is below ``k_se`` standard errors plus, for variances, a known
  bias ``var_bias`` (absolute). Five standard errors over ~70 statistics fail by chance with
  probability ~4e-5."""
  assert np.isfinite(np.asarray(samples)).all(), 'non-finite samples'
  gap, se, names = moment_gaps(samples, law, seed, n_ref)
  bias = np.array([var_bias if name.startswith('var') else 0. for name in names])
  bad = gap > k_se * se + bias
  assert not bad.any(), 'moment gaps (gap > k*se + bias): ' + ', '.join(
      f'{names[i]}: {gap[i]:.4g} > {k_se * se[i] + bias[i]:.4g}' for i in np.flatnonzero(bad))


def test_moment_check_accepts_exact_and_rejects_wrong_samples():
  """The tolerance machinery: fresh exact draws of p_eps pass; draws of p_t at t = 0.02 (VP),
  whose variance is ~4% larger, and draws with mode weights moved by 0.03 both fail."""
  target = mixture()
  sde = SDES['vpsde']()
  law = analytic.marginal(target, sde, EPS['vpsde'])
  n = 20000
  assert_matches(exact_draws(law, n, seed=1), law, seed=2)

  blurred = exact_draws(analytic.marginal(target, sde, 0.02), n, seed=3)
  gap, se, _ = moment_gaps(blurred, law, seed=2)
  assert (gap > 5 * se).any()

  weights = np.asarray(law.weights, np.float64) + np.array([0.03, -0.03, 0.])
  reweighted = analytic.GaussianMixture(jnp.asarray(weights, jnp.float32), law.means, law.stds)
  gap, se, _ = moment_gaps(exact_draws(reweighted, n, seed=4), law, seed=2)
  assert (gap > 5 * se).any()
