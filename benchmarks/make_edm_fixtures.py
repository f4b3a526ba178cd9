"""Writes tests/fixtures/edm_sampler.npz: EDM's own sampler (NVlabs/edm ``generate.py``,
``edm_sampler``: Algorithms 1 and 2 of Karras et al. 2022) run on a Gaussian whose denoiser is
exact, from this package's prior draw and with this package's churn noise, so that
``tests/test_edm_sampler.py`` can hold ``sampling.get_heun_sampler`` to it without torch.

Run once, with torch and a checkout of NVlabs/edm (commit 008a4e5 made the committed file):

    python benchmarks/make_edm_fixtures.py --edm_dir /path/to/edm

Cases: EDM's deterministic sampler (``S_churn = 0``) and its stochastic one with the ImageNet-64
settings (``S_churn = 40, S_min = 0.05, S_max = 50, S_noise = 1.003``), 18 steps, sigma from 80
down to the VE SDE's ``sigma(eps)``. EDM computes in float64; the JAX side is float32.
"""
import argparse
import sys

import jax
import numpy as np

from score_sde import sampling, sde_lib
from score_sde.sampling import base

SHAPE = (16, 8)
NUM_STEPS = 18
SIGMA_MIN, SIGMA_MAX, EPS = 0.002, 80., 1e-5
CASES = {'deterministic': dict(S_churn=0., S_min=0., S_max=float('inf'), S_noise=1.),
         'stochastic': dict(S_churn=40., S_min=0.05, S_max=50., S_noise=1.003)}
SEED = 7


def gaussian():
  """Per-coordinate data mean and std (float64 ``(D,)``)."""
  rng = np.random.default_rng(0)
  return rng.uniform(-1., 1., SHAPE[1]), rng.uniform(0.2, 0.8, SHAPE[1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--edm_dir', required=True, help='a checkout of NVlabs/edm')
  parser.add_argument('--out', default='tests/fixtures/edm_sampler.npz')
  args = parser.parse_args()
  sys.path.insert(0, args.edm_dir)
  import torch  # pylint: disable=g-import-not-at-top
  from generate import edm_sampler  # pylint: disable=g-import-not-at-top

  sde = sde_lib.VESDE(SIGMA_MIN, SIGMA_MAX, N=NUM_STEPS)
  sigma_eps = float(sampling.schedule.sigma(sde, np.float32(EPS)))
  mean, std = gaussian()
  rng = jax.random.key(SEED)
  latents = np.asarray(sde.prior_sampling(base.prior_key(rng), SHAPE), np.float64) / SIGMA_MAX
  noises = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(base.noise_key(rng), i),
                                                  SHAPE), np.float64)
                     for i in range(NUM_STEPS)])

  class Net:
    """EDM's network interface on the exact denoiser of N(mean, std^2)."""
    sigma_min, sigma_max = 0., float('inf')

    def round_sigma(self, sigma):
      return torch.as_tensor(sigma)

    def __call__(self, x, sigma, class_labels=None):
      m, s2 = torch.as_tensor(mean), torch.as_tensor(std) ** 2
      return m + s2 / (s2 + sigma.to(torch.float64) ** 2) * (x - m)

  out = {'mean': mean, 'std': std, 'latents': latents, 'sigma_eps': sigma_eps, 'seed': SEED,
         'eps': EPS, 'num_steps': NUM_STEPS}
  for name, settings in CASES.items():
    draws = iter(torch.as_tensor(noises))
    samples = edm_sampler(Net(), torch.as_tensor(latents), randn_like=lambda x: next(draws),
                          num_steps=NUM_STEPS, sigma_min=sigma_eps, sigma_max=SIGMA_MAX, rho=7,
                          **settings)
    out[name] = samples.numpy()
    out[f'{name}_settings'] = np.asarray([settings[k] for k in ('S_churn', 'S_min', 'S_max',
                                                                 'S_noise')])
  np.savez(args.out, **out)
  print(f'wrote {args.out}: ' + ', '.join(f'{k} {np.shape(v)}' for k, v in out.items()))


if __name__ == '__main__':
  main()
