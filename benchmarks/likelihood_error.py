"""Accuracy and cost of the probability-flow likelihood on Gaussian mixtures with exact scores.

Prints, per SDE and tolerance: the ODE's error in bits/dim against the closed-form log p_eps
(the true log p_T(z) in place of the prior, so only the solve is measured), the bias of using the
prior instead (what a perfect model still pays for p_T != prior), the NFE and the wall time.
Then the spread of the Hutchinson estimate: the standard deviation of one example's bits/dim over
probe draws, for Rademacher and Gaussian probes.

    python benchmarks/likelihood_error.py [--dim 8] [--batch 256]
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import analytic, likelihood, sde_lib

EPS = 1e-5


def _bits(nats, dim):
  return np.asarray(nats) / (dim * np.log(2.))


def accuracy_table(target, x_by_sde, dim):
  print(f'{"sde":>8} {"rtol":>7} {"ode err max":>12} {"ode err mean":>13} {"prior bias":>11} '
        f'{"nfe":>5} {"seconds":>8}')
  for name, sde in SDES.items():
    x = x_by_sde[name]
    log_p = analytic.log_prob_fn(target, sde)
    score = analytic.score_fn(target, sde)
    for tol in (1e-3, 1e-4, 1e-5):
      run = jax.jit(lambda v, sde=sde, score=score, tol=tol: likelihood.flow_to_prior(
          sde, score, v, None, rtol=tol, atol=tol, eps=EPS))
      jax.block_until_ready(run(x))  # Compile outside the timing.
      start = time.perf_counter()
      result = jax.block_until_ready(run(x))
      seconds = time.perf_counter() - start
      t_end = jnp.full((x.shape[0],), sde.T)
      error = _bits(log_p(result.z, t_end) + result.delta_logp[0]
                    - log_p(x, jnp.full((x.shape[0],), EPS)), dim)
      bias = _bits(sde.prior_logp(result.z) - log_p(result.z, t_end), dim)
      print(f'{name:>8} {tol:7.0e} {np.abs(error).max():12.2e} {np.abs(error).mean():13.2e} '
            f'{np.abs(bias).mean():11.2e} {int(result.nfe):5d} {seconds:8.3f}')


def hutchinson_table(target, x, dim, num_draws=64):
  sde = SDES['vp']
  score = analytic.score_fn(target, sde)
  run = jax.jit(lambda v, probes: likelihood.flow_to_prior(sde, score, v, probes, eps=EPS))
  exact = np.asarray(run(x, None).delta_logp[0])
  print(f'\nHutchinson spread (VP, D={dim}), bits/dim of one example over {num_draws} probes:')
  print(f'{"probes":>11} {"std, 1 probe":>13} {"|mean - exact|":>15}')
  for kind in ('rademacher', 'gaussian'):
    probes = likelihood.sample_probes(jax.random.key(5), x.shape, kind, num_draws)
    estimates = _bits(run(x, probes).delta_logp, dim)
    std = estimates.std(0, ddof=1).mean()
    bias = np.abs(estimates.mean(0) - _bits(exact, dim)).mean()
    print(f'{kind:>11} {std:13.2e} {bias:15.2e}')


SDES = {'vp': sde_lib.VPSDE(), 'subvp': sde_lib.subVPSDE(), 've': sde_lib.VESDE()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dim', type=int, default=8)
  parser.add_argument('--batch', type=int, default=256)
  args = parser.parse_args()
  target = analytic.random_mixture(np.random.default_rng(0), 4, (args.dim,))
  x_by_sde = {name: analytic.marginal(target, sde, EPS).sample(jax.random.key(1), args.batch)
              for name, sde in SDES.items()}
  print(f'{jax.devices()[0].platform}, D={args.dim}, batch={args.batch}, eps={EPS}')
  accuracy_table(target, x_by_sde, args.dim)
  hutchinson_table(target, x_by_sde['vp'][:16], args.dim)


if __name__ == '__main__':
  main()
