"""The marginal std near t = 0: ``sqrt(-expm1(2 m))`` (here) against ``sqrt(1 - exp(2 m))``.

score_sde and score_sde_pytorch compute the VP std as ``sqrt(1 - exp(2 m(t)))`` and the sub-VP
std as ``1 - exp(2 m(t))``, ``m(t) = log alpha(t)``. In float32, ``exp(2 m)`` rounds to a
multiple of 6e-8 near 1, so at ``t = 1e-5`` (``1 - exp(2 m) ~ 1e-6``) the naive variance has
lost most of its digits. ``sde_lib`` computes ``1 - exp(2 m)`` as ``-expm1(2 m)``. Three tables,
paper ``beta_min = 0.1``, ``beta_max = 20``, float32 as in training:

* ``std``: per t, each form's relative error against float64 and ``naive / accurate - 1`` of
  the std; with identical network outputs the score ``-output / std`` differs by
  ``accurate / naive - 1``.
* ``loss``: the continuous DSM loss (``losses.dsm_loss``) per weighting with the naive std in
  place of the accurate one, at the same ``t``, ``z`` and network outputs (the trained run's, at
  the accurate ``x_t``), ``naive / accurate - 1`` of the batch mean.
* ``elbo``: ``elbo.get_elbo_fn`` on the trained run's held-out images (dequantized as
  ``benchmarks/elbo.py`` does, same key), with the run's SDE and with a copy whose
  ``marginal_coeffs`` uses the naive form (in the score adapter and the bound alike), per term
  in bits/dim.

    python benchmarks/small_t.py [--workdir runs/embedded] [--images 64]
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

import score_sde
from score_sde import data, elbo, losses, sde_lib
from score_sde.models import utils as mutils
from score_sde.sde_lib import batch_mul

TIMES = (1e-5, 3e-5, 1e-4, 1e-3, 1e-2)
WEIGHTINGS = ('likelihood', 'elbo', 'dsm')


class NaiveVPSDE(sde_lib.VPSDE):
  """The VP SDE with the original code's float32 std, ``sqrt(1 - exp(2 m))``."""

  def marginal_coeffs(self, t):
    m = self.log_mean_coeff(t)
    return jnp.exp(m), jnp.sqrt(1. - jnp.exp(2. * m))


class NaiveSubVPSDE(sde_lib.subVPSDE):
  """The sub-VP SDE with the original code's float32 std, ``1 - exp(2 m)``."""

  def marginal_coeffs(self, t):
    m = self.log_mean_coeff(t)
    return jnp.exp(m), 1. - jnp.exp(2. * m)


def _pairs(beta_min, beta_max):
  """``{name: (accurate, naive)}`` SDEs."""
  return {'vp': (sde_lib.VPSDE(beta_min, beta_max), NaiveVPSDE(beta_min, beta_max)),
          'subvp': (sde_lib.subVPSDE(beta_min, beta_max), NaiveSubVPSDE(beta_min, beta_max))}


def std_table(pairs):
  print('Marginal std, float32: relative error against float64 and naive / accurate - 1')
  print(f'{"sde":6} {"t":>7} {"accurate err":>13} {"naive err":>11} {"std diff":>11} '
        f'{"score diff":>11}')
  t = jnp.asarray(TIMES, jnp.float32)
  for name, (accurate, naive) in pairs.items():
    t64 = np.asarray(t, np.float64)
    m64 = -0.25 * t64 ** 2 * (accurate.beta_1 - accurate.beta_0) - 0.5 * t64 * accurate.beta_0
    var64 = -np.expm1(2. * m64)
    exact = np.sqrt(var64) if name == 'vp' else var64
    std_a = np.asarray(accurate.marginal_coeffs(t)[1], np.float64)
    std_n = np.asarray(naive.marginal_coeffs(t)[1], np.float64)
    for i, ti in enumerate(TIMES):
      print(f'{name:6} {ti:7.0e} {std_a[i] / exact[i] - 1:13.2e} {std_n[i] / exact[i] - 1:11.2e} '
            f'{std_n[i] / std_a[i] - 1:11.2e} {std_a[i] / std_n[i] - 1:11.2e}')


def loss_table(pipe, pairs, images, repeats=4):
  """Losses with identical network outputs: the network runs once at the accurate ``x_t``."""
  print(f'\nContinuous DSM loss, naive std / accurate std - 1: of the mean over {repeats} x '
        f'{images.shape[0]} rows, and the largest |.| of a row; identical network outputs (the '
        f'run\'s, at step {pipe.step})')
  print(f'{"sde":6} {"t":16} ' + ' '.join(f'{w:>11} {"|row| max":>10}' for w in WEIGHTINGS))
  x0 = jnp.tile(images, (repeats, 1, 1, 1))
  rows = x0.shape[0]
  model_fn = mutils.get_model_fn(pipe.model, pipe.params, train=False)
  ranges = [(f'{t:.0e}', jnp.full((rows,), t, jnp.float32)) for t in (1e-5, 1e-4, 1e-3)]
  ranges.append(('U(1e-5, 1e-3)', jax.random.uniform(jax.random.key(3), (rows,),
                                                     minval=1e-5, maxval=1e-3)))
  z = jax.random.normal(jax.random.key(4), x0.shape)

  @jax.jit
  def output(t):
    mean, std = pairs['vp'][0].marginal_prob(x0, t)
    return model_fn(mean + batch_mul(std, z), 999. * t)  # The continuous VP label.

  for name, (accurate, naive) in pairs.items():
    for label, t in ranges:
      out = output(t)
      diffs = []
      for weighting in WEIGHTINGS:
        values = []
        for sde in (accurate, naive):
          # The eps parameterization's score, -output / std, with this SDE's std.
          score_fn = lambda x, tt, sde=sde: batch_mul(-1. / sde.marginal_coeffs(tt)[1], out)
          values.append(np.asarray(losses.dsm_loss(score_fn, sde, x0, t, z, False,
                                                   weighting), np.float64))
        diffs.append(f'{values[1].mean() / values[0].mean() - 1.:11.2e} '
                     f'{np.abs(values[1] / values[0] - 1.).max():10.2e}')
      print(f'{name:6} {label:16} ' + ' '.join(diffs), flush=True)


def elbo_table(pipe, num_images, num_samples):
  images = data.get_dataset(pipe.config.data, 'test').get(np.arange(num_images))['image']
  noise = np.random.default_rng(0).uniform(size=images.shape)
  y = pipe.scaler(jnp.asarray((images.astype(np.float32) + noise) / 256., jnp.float32))
  m = pipe.config.model
  naive_cls = {sde_lib.VPSDE: NaiveVPSDE, sde_lib.subVPSDE: NaiveSubVPSDE}[type(pipe.sde)]
  sdes = {'accurate': pipe.sde, 'naive': naive_cls(m.beta_min, m.beta_max, m.num_scales)}
  continuous = mutils.ode_score_continuous(pipe.sde, pipe.config.training.continuous)
  print(f'\nVariational bound (bits/dim), {num_images} held-out images, {num_samples} times per '
        'image, same key; mean over images, difference naive - accurate and its standard error '
        'over images')
  print(f'{"times":11} {"std":9} {"bpd":>8} {"prior":>8} {"diffusion":>10} {"recon":>8}')
  for sampling in ('importance', 'uniform'):
    results = {}
    for label, sde in sdes.items():
      score_fn = mutils.get_score_fn(sde, pipe.model, pipe.params, train=False,
                                     continuous=continuous,
                                     parameterization=m.get('parameterization', 'auto'))
      fn = elbo.get_elbo_fn(sde, pipe.inverse_scaler, num_samples=num_samples,
                            time_sampling=sampling)
      bpd, terms = jax.jit(lambda r, v, fn=fn, s=score_fn: fn(r, s, v))(jax.random.key(7), y)
      results[label] = {'bpd': np.asarray(bpd, np.float64),
                        **{k: np.asarray(terms[k], np.float64)
                           for k in ('prior', 'diffusion', 'reconstruction')}}
      r = results[label]
      print(f'{sampling:11} {label:9} {r["bpd"].mean():8.4f} {r["prior"].mean():8.4f} '
            f'{r["diffusion"].mean():10.4f} {r["reconstruction"].mean():8.4f}', flush=True)
    cells = []
    for key, width in (('bpd', 8), ('prior', 8), ('diffusion', 10), ('reconstruction', 8)):
      d = results['naive'][key] - results['accurate'][key]
      cells.append(f'{d.mean():+{width}.4f}')
    print(f'{sampling:11} {"n - a":9} ' + ' '.join(cells))
    cells = []
    for key, width in (('bpd', 8), ('prior', 8), ('diffusion', 10), ('reconstruction', 8)):
      d = results['naive'][key] - results['accurate'][key]
      cells.append(f'{d.std(ddof=1) / np.sqrt(d.size):{width}.4f}')
    print(f'{sampling:11} {"  +-":9} ' + ' '.join(cells))
  t_eps = jnp.full((1,), 1e-5, jnp.float32)
  shift = float(jnp.log2(sdes['naive'].marginal_coeffs(t_eps)[1][0]
                         / sdes['accurate'].marginal_coeffs(t_eps)[1][0]))
  print(f'The decoder\'s normalizer alone, log2(std_naive / std_accurate) at eps = 1e-5: '
        f'{shift:+.4f} bits/dim; the rest of "recon" is the network seeing x_eps moved by '
        '(std_naive - std_accurate) z.')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tables', default='std,loss,elbo')
  parser.add_argument('--workdir', default='runs/embedded')
  parser.add_argument('--images', type=int, default=64)
  parser.add_argument('--samples', type=int, default=16)
  args = parser.parse_args()
  print(f'JAX {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)')
  tables = args.tables.split(',')
  pairs = _pairs(0.1, 20.)
  if 'std' in tables:
    std_table(pairs)
  if 'loss' in tables or 'elbo' in tables:
    pipe = score_sde.load(args.workdir)
    if not isinstance(pipe.sde, sde_lib.VPSDE) or not pipe.config.training.continuous:
      raise SystemExit(f'{args.workdir}: the loss and bound tables need a continuous VP or '
                       'sub-VP run.')
  if 'loss' in tables:
    images = data.get_dataset(pipe.config.data, 'test').get(np.arange(args.images))['image']
    loss_table(pipe, pairs, pipe.scaler(jnp.asarray(images, jnp.float32) / 255.))
  if 'elbo' in tables:
    elbo_table(pipe, args.images, args.samples)


if __name__ == '__main__':
  main()
