"""The variational bound (``score_sde.elbo``) against the exact log-likelihood and the ODE bits/dim.

Two tables:

* ``targets``: on the closed-form targets of ``targets.py`` (VP, sub-VP, VE, exact scores), the
  continuous bound's mean over points minus the exact ``-log p_0`` (nats per dimension, with its
  standard error), the mean per-point standard error the bound reports and the spread of one
  point's estimate over repeated draws (what that error estimates), for uniform and log-SNR
  (importance)
  times, with and without the control variate. With the exact score the bound's mean exceeds
  ``-log p`` only by the prior mismatch and the decoder's gap at ``eps``.
* ``trained``: on a trained run (``--workdir``, the digits default of README), held-out images:
  the bound and its three terms in bits/dim (dataset mean and standard error over images), the
  mean per-image standard error, network evaluations and seconds per image, beside the
  probability-flow ODE's bits/dim (one Hutchinson probe, the paper's estimator) on the same
  dequantized images.

    python benchmarks/elbo.py [--tables targets,trained] [--workdir runs/embedded]
        [--images 256] [--samples 16] [--points 256]
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import score_sde
import targets
from score_sde import data, elbo, likelihood, sde_lib
from score_sde.models import utils as mutils

SDES = {'vp': sde_lib.VPSDE(), 'subvp': sde_lib.subVPSDE(), 've': sde_lib.VESDE()}
VARIANTS = (('uniform', False), ('uniform', True), ('importance', False), ('importance', True))


def targets_table(num_points, num_samples, num_repeats=8):
  print(f'Continuous bound minus exact -log p_0 (nats/dim), {num_points} points, '
        f'{num_samples} times each, exact scores:')
  print(f'{"target":10} {"sde":6} {"times":11} {"cv":3} {"bound - nll":>12} {"+-":>8} '
        f'{"point se":>9} {"spread":>9}')
  for name in ('gauss64', 'mixture32'):
    target = targets.make_target(name)
    x = jnp.asarray(target.sample(jax.random.key(0), num_points), jnp.float32)
    dim = x.shape[1]
    for sde_name, sde in SDES.items():
      nll = -np.asarray(target.log_prob_fn(sde)(x, jnp.zeros(x.shape[:1])), np.float64)
      for sampling, cv in VARIANTS:
        fn = elbo.get_elbo_fn(sde, units='nats', num_samples=num_samples,
                              time_sampling=sampling, control_variate=cv)
        jitted = jax.jit(lambda r, v: fn(r, target.score_fn(sde), v))
        runs = [jitted(jax.random.key(1 + r), x) for r in range(num_repeats)]
        bounds = np.stack([np.asarray(b, np.float64) for b, _ in runs])  # (R, points)
        gap = (bounds[0] - nll) / dim
        spread = bounds.std(axis=0, ddof=1).mean() / dim
        print(f'{name:10} {sde_name:6} {sampling:11} {"on" if cv else "off":3} '
              f'{gap.mean():12.4f} {gap.std(ddof=1) / np.sqrt(gap.size):8.4f} '
              f'{np.mean(runs[0][1]["diffusion_stderr"]) / dim:9.4f} {spread:9.4f}', flush=True)


def trained_table(workdir, num_images, num_samples, batch):
  pipe = score_sde.load(workdir)
  images = data.get_dataset(pipe.config.data, 'test').get(np.arange(num_images))['image']
  noise = np.random.default_rng(0).uniform(size=images.shape)
  y = pipe.scaler(jnp.asarray((images.astype(np.float32) + noise) / 256., jnp.float32))
  score = pipe.score_fn(mutils.ode_score_continuous(pipe.sde, pipe.config.training.continuous))
  batches = [y[i:i + batch] for i in range(0, num_images, batch)]

  def run(fn):
    """Per-image outputs over the batches, and seconds per image of the batches after the
    first (which compiles)."""
    jitted = jax.jit(lambda r, v: fn(r, score, v))
    outs, seconds = [], 0.
    for i, b in enumerate(batches):
      start = time.perf_counter()
      outs.append(jax.block_until_ready(jitted(jax.random.key(10 + i), b)))
      seconds += (time.perf_counter() - start) if i else 0.
    return outs, seconds / max(num_images - batches[0].shape[0], 1)

  print(f'\nBits/dim of {num_images} held-out images under {workdir} (step {pipe.step}), '
        f'{num_samples} times per image for the bound:')
  print(f'{"estimator":28} {"bpd":>7} {"+-":>6} {"prior":>7} {"diffusion":>9} {"recon":>7} '
        f'{"image se":>8} {"nfe":>5} {"s/image":>8}')
  ode = likelihood.get_likelihood_fn(pipe.sde, pipe.inverse_scaler)
  outs, seconds = run(ode)
  bpd = np.concatenate([np.asarray(o[0]) for o in outs])
  print(f'{"ODE (1 probe, rk45 1e-5)":28} {bpd.mean():7.4f} '
        f'{bpd.std(ddof=1) / np.sqrt(bpd.size):6.4f} {"":7} {"":9} {"":7} {"":8} '
        f'{np.mean([int(o[2]) for o in outs]):5.0f} {seconds:8.3f}', flush=True)
  for sampling, cv in VARIANTS:
    fn = elbo.get_elbo_fn(pipe.sde, pipe.inverse_scaler, num_samples=num_samples,
                          time_sampling=sampling, control_variate=cv)
    outs, seconds = run(fn)
    cat = lambda key: np.concatenate([np.asarray(o[1][key]) for o in outs])
    bound = np.concatenate([np.asarray(o[0]) for o in outs])
    label = f'bound, {sampling} t, cv {"on" if cv else "off"}'
    print(f'{label:28} {bound.mean():7.4f} {bound.std(ddof=1) / np.sqrt(bound.size):6.4f} '
          f'{cat("prior").mean():7.4f} {cat("diffusion").mean():9.4f} '
          f'{cat("reconstruction").mean():7.4f} {cat("diffusion_stderr").mean():8.4f} '
          f'{int(outs[0][1]["nfe"]):5d} {seconds:8.3f}', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tables', default='targets,trained')
  parser.add_argument('--workdir', default='runs/embedded')
  parser.add_argument('--images', type=int, default=256)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--samples', type=int, default=16)
  parser.add_argument('--points', type=int, default=256)
  args = parser.parse_args()
  print(f'JAX {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)')
  tables = args.tables.split(',')
  if 'targets' in tables:
    targets_table(args.points, args.samples)
  if 'trained' in tables:
    trained_table(args.workdir, args.images, args.samples, args.batch)


if __name__ == '__main__':
  main()
