"""Sample error against the number of score evaluations, for every sampler and SDE.

    python benchmarks/sampler_error.py [--batch 10000] [--dim 8] [--quick]

Target: a centred 3-component Gaussian mixture in ``--dim`` dimensions with its exact perturbed
score (``analytic``), so the error is the sampler's alone. Metric: sliced 2-Wasserstein distance
between the samples and as many exact draws of ``p_eps`` (64 random directions, the same for
every row). The noise floor, printed per SDE, is the mean +- std of the same distance between
independent sets of exact draws: errors within it are indistinguishable from exact sampling.
Each row compiles once (about a second on a CPU) and runs in a few seconds at most; the whole
table takes about two minutes.
"""
import argparse
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import analytic, sampling, sde_lib

SDES = {
    'vpsde': (lambda n: sde_lib.VPSDE(0.1, 20., n), 1e-3),
    'subvpsde': (lambda n: sde_lib.subVPSDE(0.1, 20., n), 1e-3),
    'vesde': (lambda n: sde_lib.VESDE(0.01, 50., n), 1e-5),
}


def _target(dim):
  law = analytic.random_mixture(np.random.default_rng(0), 3, (dim,))
  centre = jnp.einsum('k,k...->...', law.weights, law.means)
  return analytic.GaussianMixture(law.weights, law.means - centre, law.stds)


def _sliced_w2(a, b, directions):
  pa, pb = np.sort(a @ directions, axis=0), np.sort(b @ directions, axis=0)
  return float(np.sqrt(np.mean((pa - pb) ** 2)))


def _rows(shape, quick):
  """(label, steps or tolerance, builder(sde, eps)) for every sampler configuration; PC
  samplers take their own step count (``num_steps``) on the SDE of N = 1000."""
  identity = sampling.identity
  pc_steps = (10, 20, 50, 100) if quick else (10, 20, 50, 100, 1000)
  for n in pc_steps:
    for predictor, corrector in (('euler_maruyama', 'none'), ('reverse_diffusion', 'none'),
                                 ('ancestral_sampling', 'none'),
                                 ('reverse_diffusion', 'langevin'),
                                 ('euler_maruyama', 'ald')):
      if corrector != 'none' and n > 500:
        continue
      yield (f'pc {predictor}+{corrector}', n,
             lambda sde, eps, p=predictor, c=corrector, n=n: sampling.get_pc_sampler(
                 sde, shape, p, c, identity, 0.075, eps=eps, num_steps=n))
    yield ('pc euler (probability flow)', n,
           lambda sde, eps, n=n: sampling.get_pc_sampler(
               sde, shape, 'euler_maruyama', 'none', identity, 0., probability_flow=True,
               eps=eps, num_steps=n))
  for tol in (1e-2, 1e-3, 1e-4, 1e-5):
    yield ('ode RK45', f'tol={tol:g}',
           lambda sde, eps, tol=tol: sampling.get_ode_sampler(sde, shape, identity, True, tol,
                                                              tol, eps=eps))
  for n in (5, 10, 25, 50, 500):
    yield ('heun (EDM)', n,
           lambda sde, eps, n=n: sampling.get_heun_sampler(sde, shape, identity, n, eps=eps))
  for n in (10, 20, 50, 100):
    for order in (2, 3):
      yield (f'dpm_solver++ {order}M', n,
             lambda sde, eps, n=n, order=order: sampling.get_dpm_solver_sampler(
                 sde, shape, identity, n, order=order, eps=eps))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=10000)
  parser.add_argument('--dim', type=int, default=8)
  parser.add_argument('--quick', action='store_true', help='skip the 1000-step PC runs')
  parser.add_argument('--sdes', default=','.join(SDES), help='comma-separated SDE names')
  parser.add_argument('--only', default='', help='regular expression on "label steps": run '
                      'the matching rows only, e.g. "^pc .* (10|20)$"')
  args = parser.parse_args()
  shape = (args.batch, args.dim)
  target = _target(args.dim)
  directions = np.random.default_rng(1).normal(size=(args.dim, 64))
  directions /= np.linalg.norm(directions, axis=0)
  print(f'{"sde":9s} {"sampler":38s} {"steps":>10s} {"nfe":>6s} {"SW2":>9s} {"secs":>5s}')
  for sde_name in args.sdes.split(','):
    make_sde, eps = SDES[sde_name]
    sde = make_sde(1000)
    law = analytic.marginal(target, sde, eps)
    exact = np.asarray(law.sample(jax.random.key(11), args.batch))
    floors = [_sliced_w2(exact, np.asarray(law.sample(jax.random.key(100 + i), args.batch)),
                         directions) for i in range(5)]
    print(f'{sde_name:9s} noise floor (exact vs exact): {np.mean(floors):.4f} +- '
          f'{np.std(floors):.4f}')
    score_fn = analytic.score_fn(target, sde)
    for label, steps, build in _rows(shape, args.quick):
      if args.only and not re.search(args.only, f'{label} {steps}'):
        continue
      start = time.time()
      sampler = build(sde, eps)
      samples, nfe = jax.jit(lambda rng: sampler(rng, score_fn))(jax.random.key(0))
      samples = np.asarray(samples)
      error = (_sliced_w2(samples, exact, directions) if np.isfinite(samples).all()
               else float('nan'))
      print(f'{sde_name:9s} {label:38s} {str(steps):>10s} {int(nfe):6d} {error:9.4f} '
            f'{time.time() - start:5.1f}', flush=True)


if __name__ == '__main__':
  main()
