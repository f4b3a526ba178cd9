"""Score evaluations of the probability-flow ODE sampler beside the released code's solver.

The released samplers call ``scipy.integrate.solve_ivp(method='RK45')`` on the flattened batch;
``sampling.get_ode_sampler`` runs the same Dormand-Prince pair inside jit (diffrax, with its own
first step and PID controller). Both are given the same exact score, the same ``x(T)`` and the
same tolerances; this prints the evaluations each took (ours without the final denoising step,
which scipy's solve does not include either) and the KL of the samples (denoised, as
``sampler_error.py`` measures it).

    python benchmarks/ode_nfe.py [--targets gauss64,mixture32] [--batch 1000] [--tol 1e-5]
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate

from score_sde import sampling
from score_sde.sampling import base, ode, schedule
from sampler_error import SDES, kl_metric
from targets import make_target


def scipy_rk45(sde, score_fn, x, eps, tol):
  """The released sampler's solve: ``(x(eps), nfev)``, in float64 on the host."""
  shape = x.shape
  drift = jax.jit(lambda y, t: ode.probability_flow_drift(sde, score_fn, y,
                                                          base.batch_times(t, shape[0])))

  def f(t, y):
    y = jnp.asarray(y.reshape(shape), jnp.float32)
    return np.asarray(drift(y, jnp.float32(t)), np.float64).reshape(-1)

  solution = scipy.integrate.solve_ivp(f, (sde.T, eps), np.asarray(x, np.float64).reshape(-1),
                                       rtol=tol, atol=tol, method='RK45')
  return solution.y[:, -1].reshape(shape), solution.nfev


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--targets', default='gauss64,mixture32')
  parser.add_argument('--sdes', default=','.join(SDES))
  parser.add_argument('--batch', type=int, default=1000)
  parser.add_argument('--tol', type=float, default=1e-5)
  args = parser.parse_args()
  print(f'RK45 at rtol = atol = {args.tol:g}, {args.batch} samples; NFE without denoising')
  print('| target | SDE | NFE, this code | NFE, scipy (released) | KL, this code | KL, scipy |')
  print('|---|---|---|---|---|---|')
  for name in args.targets.split(','):
    target = make_target(name)
    dim = target.rotation.shape[0]
    for sde_name in args.sdes.split(','):
      make_sde, eps = SDES[sde_name]
      sde = make_sde()
      score_fn = target.score_fn(sde)
      shape = (args.batch, dim)
      ours = sampling.get_ode_sampler(sde, shape, sampling.identity,
                                      sampling.get_times(sde, 'ode', eps=eps), denoise=False,
                                      rtol=args.tol, atol=args.tol)
      rng = jax.random.key(0)
      x_ours, nfe = jax.jit(lambda r: ours(r, score_fn))(rng)
      x_scipy, nfev = scipy_rk45(sde, score_fn, sde.prior_sampling(base.prior_key(rng), shape),
                                 eps, args.tol)
      denoise = jax.jit(lambda x: schedule.data_prediction(sde, score_fn, x,
                                                           base.batch_times(eps, shape[0])))
      kls = [kl_metric(target, np.asarray(denoise(jnp.asarray(x, jnp.float32))))
             for x in (x_ours, x_scipy)]
      print(f'| {name} | {sde_name} | {int(nfe)} | {nfev} | {kls[0]:.4f} | {kls[1]:.4f} |',
            flush=True)


if __name__ == '__main__':
  main()
