"""Sample error against the number of score evaluations, for every sampler, SDE and target.

    python benchmarks/sampler_error.py [--targets gauss64,mixture32,mixture8] [--batch 20000]
        [--budgets 5,10,15,20,35,50,100] [--sdes vpsde,subvpsde,vesde] [--only REGEX]

Every target has its exact perturbed score (``analytic``), so the error is the sampler's alone,
and every sampler is asked for a sample of the data ``p_0`` (denoised), at the budgets given in
score evaluations (NFE):

* ``gauss64``: a Gaussian in 64 dimensions, randomly rotated, with standard deviations spaced
  geometrically from 0.01 (the order of the SDEs' smallest noise level) to 1. Metric: KL of the
  Gaussian fitted to the samples (mean, full covariance) to the truth, in nats.
* ``mixture32``: 4 Gaussians in 32 dimensions with weights 0.4 / 0.3 / 0.2 / 0.1 and
  per-coordinate stds from 0.02 to 0.5. Metric: per-mode KL, ``sum_k w_k KL(fit_k || p_k)`` with
  the samples assigned to their most responsible mode under ``p_0``, plus the KL of the mode
  frequencies to the weights.
* ``mixture8``: the 3-mode, 8-dimensional mixture of earlier versions of this table.

Every target also prints the sliced 2-Wasserstein distance (64 fixed directions) to as many exact
draws. The noise floor, per target and SDE, is the mean +- std of each metric over 5 sets of exact
draws of the same size: errors within it are indistinguishable from exact sampling. Rows run
jitted on one device, one to five seconds each on a 2-core CPU (15-20 minutes per target over
three SDEs), the adaptive SDE sampler's one to three minutes each.
"""
import argparse
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sampling, sde_lib
from score_sde.sampling import schedule_fit
from targets import Target, make_target

SDES = {
    'vpsde': (lambda: sde_lib.VPSDE(0.1, 20., 1000), 1e-3),
    'subvpsde': (lambda: sde_lib.subVPSDE(0.1, 20., 1000), 1e-3),
    'vesde': (lambda: sde_lib.VESDE(0.01, 50., 1000), 1e-5),
}


def _gaussian_kl(samples, mean, var):
  """KL(N(sample mean, sample covariance) || N(mean, diag(var))), nats."""
  dim = samples.shape[1]
  m = samples.mean(0)
  cov = np.cov(samples, rowvar=False)
  sign, logdet = np.linalg.slogdet(cov)
  if sign <= 0:
    return float('inf')
  diff = m - mean
  return 0.5 * float(np.sum(np.diag(cov) / var) + np.sum(diff ** 2 / var) - dim
                     + np.sum(np.log(var)) - logdet)


def kl_metric(target: Target, x):
  """Per-mode KL (module docstring); for one mode, the fitted Gaussian's KL."""
  z = target.unrotate(x)
  law = target.mixture
  weights, means = np.asarray(law.weights, np.float64), np.asarray(law.means, np.float64)
  variances = np.asarray(law.stds, np.float64) ** 2
  if len(weights) == 1:
    return _gaussian_kl(z, means[0], variances[0])
  mode = np.asarray(jnp.argmax(law.responsibilities(jnp.asarray(z, jnp.float32)), -1))
  freq = np.bincount(mode, minlength=len(weights)) / len(mode)
  total = float(np.sum(np.where(freq > 0, freq * np.log(np.maximum(freq, 1e-30) / weights), 0.)))
  for k, w in enumerate(weights):
    members = z[mode == k]
    if len(members) <= z.shape[1]:
      return float('inf')
    total += w * _gaussian_kl(members, means[k], variances[k])
  return total


def sliced_w2(a, b, directions):
  pa, pb = np.sort(a @ directions, axis=0), np.sort(b @ directions, axis=0)
  return float(np.sqrt(np.mean((pa - pb) ** 2)))


def _multistep(builder, method, **kwargs):
  """A multistep row on ``method``'s own grid that extrapolates to sigma = 0 on every SDE (the
  tables' end; the 'tweedie end' rows and ``final_step.py`` compare the other)."""
  kwargs.setdefault('final', 'extrapolate')
  return lambda sde, shape, eps, nfe: builder(
      sde, shape, sampling.identity,
      sampling.get_times(sde, method, nfe, eps=eps, final=kwargs['final']), **kwargs)


# Fitted grids by (sampler, SDE, eps, steps): a fit depends on neither the target nor the batch.
_GRIDS = {}


def _fitted(builder, method, kwargs):
  """``schedule='fitted'``, fitted once per sampler, SDE and budget for all targets; multistep
  rows extrapolate to sigma = 0."""
  if method != 'heun':
    kwargs = dict(kwargs, final='extrapolate')
  def build(sde, shape, eps, nfe):
    steps = (nfe + 1) // 2 if method == 'heun' else nfe
    if steps < 2:
      return None
    key = (method, tuple(sorted(kwargs.items())), type(sde).__name__, eps, steps)
    if key not in _GRIDS:
      start = time.time()
      entry = sampling.methods.get(method)
      _GRIDS[key] = schedule_fit.fit_grid(entry, sde, entry.levels(steps, kwargs), eps, kwargs)
      print(f'  (fitted the {steps}-step grid in {time.time() - start:.1f} s)', flush=True)
    return builder(sde, shape, sampling.identity, _GRIDS[key], **kwargs)

  return build


def rows(budgets):
  """(label, budget, builder(sde, shape, eps, budget) or None where the budget does not fit)."""
  identity = sampling.identity
  tweedie = lambda order, cap: lambda sde, shape, eps, n: (  # The released samplers' end.
      sampling.get_dpm_solver_sampler(
          sde, shape, identity,
          sampling.get_times(sde, 'dpm_solver', n - 1, eps=eps, final='tweedie'), order=order,
          final='tweedie', order3_max_step=cap) if n > 1 else None)
  fixed = {
      'dpm_solver++ 2M, tweedie end, no order-3 cap': tweedie(2, None),
      'dpm_solver++ 3M, tweedie end, no order-3 cap': tweedie(3, None),
      'dpm_solver++ 2M': _multistep(sampling.get_dpm_solver_sampler, 'dpm_solver', order=2),
      'dpm_solver++ 3M': _multistep(sampling.get_dpm_solver_sampler, 'dpm_solver', order=3),
      'unipc bh2 2': _multistep(sampling.get_unipc_sampler, 'unipc', order=2),
      'unipc bh2 3': _multistep(sampling.get_unipc_sampler, 'unipc', order=3),
      'ipndm 3 karras': _multistep(sampling.get_deis_sampler, 'ipndm', order=3,
                                   variable_step=False),
      'lms 4 karras (k-diffusion\'s)': _multistep(sampling.get_deis_sampler, 'deis', order=4),
      'heun (EDM)': lambda sde, shape, eps, n: (
          sampling.get_heun_sampler(sde, shape, identity,
                                    sampling.get_times(sde, 'heun', (n + 1) // 2, eps=eps))
          if n >= 3 else None),
      'unipc bh2 3, eps=1e-5': lambda sde, shape, eps, n: sampling.get_unipc_sampler(
          sde, shape, identity, sampling.get_times(sde, 'unipc', n, eps=1e-5), order=3,
          final='extrapolate'),
      'dpm_solver++ 3M, eps=1e-5': lambda sde, shape, eps, n: sampling.get_dpm_solver_sampler(
          sde, shape, identity, sampling.get_times(sde, 'dpm_solver', n, eps=1e-5), order=3,
          final='extrapolate'),
  }
  fitted = {
      'unipc bh2 2, fitted': (sampling.get_unipc_sampler, 'unipc', dict(order=2)),
      'dpm_solver++ 2M, fitted': (sampling.get_dpm_solver_sampler, 'dpm_solver', dict(order=2)),
      'ipndm 3, fitted': (sampling.get_deis_sampler, 'ipndm',
                          dict(order=3, variable_step=False)),
      'deis 4, fitted': (sampling.get_deis_sampler, 'deis', dict(order=4)),
      'heun (EDM), fitted': (sampling.get_heun_sampler, 'heun', dict()),
  }
  for label, build in fixed.items():
    for n in budgets:
      yield label, n, build
  for label, (builder, method, kwargs) in fitted.items():
    for n in budgets:
      yield label, n, _fitted(builder, method, kwargs)
  for predictor, corrector in (('euler_maruyama', 'none'), ('ancestral_sampling', 'none'),
                               ('reverse_diffusion', 'langevin')):
    per_step = 1 if corrector == 'none' else 2

    def build(sde, shape, eps, n, p=predictor, c=corrector, k=per_step):
      if n // k < 1:
        return None
      return sampling.get_pc_sampler(sde, shape, identity,
                                     sampling.get_times(sde, 'pc', n // k, eps=eps), p, c, 0.075)
    for n in budgets:
      yield f'pc {predictor}+{corrector}', n, build
  for tol in (1e-5,):
    yield 'ode RK45 (denoised)', f'tol={tol:g}', (
        lambda sde, shape, eps, _, tol=tol: sampling.get_ode_sampler(
            sde, shape, identity, sampling.get_times(sde, 'ode', eps=eps), denoise=True,
            rtol=tol, atol=tol))
  for tol in (0.05, 0.01):
    yield 'adaptive SDE (GGF, denoised)', f'rtol={tol:g}', (
        lambda sde, shape, eps, _, tol=tol: sampling.get_adaptive_sampler(
            sde, shape, identity, sampling.get_times(sde, 'adaptive', eps=eps), rel_tol=tol))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--targets', default='gauss64,mixture32')
  parser.add_argument('--batch', type=int, default=20000)
  parser.add_argument('--budgets', default='5,10,15,20,35,50,100')
  parser.add_argument('--sdes', default=','.join(SDES), help='comma-separated SDE names')
  parser.add_argument('--only', default='', help='regular expression on "label budget": run '
                      'the matching rows only, e.g. "^unipc .* (10|20)$"')
  args = parser.parse_args()
  budgets = [int(b) for b in args.budgets.split(',')]
  print(f'{"target":9s} {"sde":8s} {"sampler":40s} {"budget":>9s} {"nfe":>5s} {"KL":>9s} '
        f'{"SW2":>8s} {"secs":>5s}')
  for target_name in args.targets.split(','):
    target = make_target(target_name)
    dim = target.mixture.event_shape[0]
    shape = (args.batch, dim)
    directions = np.random.default_rng(1).normal(size=(dim, 64))
    directions /= np.linalg.norm(directions, axis=0)
    exact = target.sample(jax.random.key(11), args.batch)
    floors = []
    for i in range(5):
      draws = target.sample(jax.random.key(100 + i), args.batch)
      floors.append((kl_metric(target, draws), sliced_w2(draws, exact, directions)))
    mean, std = np.mean(floors, 0), np.std(floors, 0)
    print(f'{target_name:9s} {"any":8s} {"noise floor (exact draws)":40s} {"":>9s} {"":>5s} '
          f'{mean[0]:9.4f} {mean[1]:8.4f}  (std {std[0]:.4f} / {std[1]:.4f})', flush=True)
    for sde_name in args.sdes.split(','):
      make_sde, eps = SDES[sde_name]
      sde = make_sde()
      score_fn = target.score_fn(sde)
      for label, budget, build in rows(budgets):
        if args.only and not re.search(args.only, f'{label} {budget}'):
          continue
        sampler = build(sde, shape, eps, budget)
        if sampler is None:
          continue
        start = time.time()
        samples, nfe = jax.jit(lambda rng: sampler(rng, score_fn))(jax.random.key(0))
        samples = np.asarray(samples, np.float64)
        if np.isfinite(samples).all():
          kl, w2 = kl_metric(target, samples), sliced_w2(samples, exact, directions)
        else:
          kl = w2 = float('nan')
        print(f'{target_name:9s} {sde_name:8s} {label:40s} {str(budget):>9s} {int(nfe):5d} '
              f'{kl:9.4f} {w2:8.4f} {time.time() - start:5.1f}', flush=True)


if __name__ == '__main__':
  main()
