"""Accuracy and cost of the probability-flow likelihood on Gaussian mixtures with exact scores.

Prints, per SDE, ODE solver (``--methods``) and tolerance: the ODE's error in bits/dim against
the closed-form log p_eps (the true log p_T(z) in place of the prior, so only the solve is
measured), the bias of using the prior instead (what a perfect model still pays for
p_T != prior), the NFE and the wall time.
Then the per-point table: on the rotated 64-D Gaussian and 32-D mixture of ``targets.py`` (VP,
sub-VP, VE), each estimator's error of one example's bits/dim over probe draws (its spread, its
RMS error, its mean error with standard error, and the bias of the same estimator with the exact
divergence), its NFE and cost in network evaluations (a score or a Jacobian-vector product
each) relative to the reference's one-probe solve, and its wall time. Last, the wall time of
each estimator on the embedded config's network, where a network evaluation dominates. The
``trained`` table (not run by default) is the per-point table on a trained run's own network
(``--workdir``), against that network's bits/dim with the exact divergence.

    python benchmarks/likelihood_error.py [--dim 8] [--batch 256] [--targets gauss64,mixture32]
        [--points 16] [--draws 64] [--tables accuracy,per_point,network] [--methods tsit5,rk45]
    python benchmarks/likelihood_error.py --tables trained --workdir runs/embedded --draws 16
"""
import argparse
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import score_sde
import targets
from score_sde import analytic, data, likelihood, sde_lib
from score_sde.configs import embedded
from score_sde.models import utils as mutils

EPS = 1e-5


def _bits(nats, dim):
  return np.asarray(nats) / (dim * np.log(2.))


def accuracy_table(target, x_by_sde, dim, methods=('rk45',)):
  print(f'{"sde":>8} {"method":>7} {"rtol":>7} {"ode err max":>12} {"ode err mean":>13} '
        f'{"prior bias":>11} {"nfe":>5} {"seconds":>8}')
  for name, sde in SDES.items():
    x = x_by_sde[name]
    log_p = analytic.log_prob_fn(target, sde)
    score = analytic.score_fn(target, sde)
    for method, tol in ((m, t) for m in methods for t in (1e-3, 1e-4, 1e-5)):
      run = jax.jit(lambda v, sde=sde, score=score, tol=tol, method=method:
                    likelihood.flow_to_prior(sde, score, v, None, rtol=tol, atol=tol,
                                             method=method, eps=EPS))
      jax.block_until_ready(run(x))  # Compile outside the timing.
      start = time.perf_counter()
      result = jax.block_until_ready(run(x))
      seconds = time.perf_counter() - start
      t_end = jnp.full((x.shape[0],), sde.T)
      error = _bits(log_p(result.z, t_end) + result.delta_logp[0]
                    - log_p(x, jnp.full((x.shape[0],), EPS)), dim)
      bias = _bits(sde.prior_logp(result.z) - log_p(result.z, t_end), dim)
      print(f'{name:>8} {method:>7} {tol:7.0e} {np.abs(error).max():12.2e} '
            f'{np.abs(error).mean():13.2e} '
            f'{np.abs(bias).mean():11.2e} {int(result.nfe):5d} {seconds:8.3f}')


class Estimator(NamedTuple):
  """A ``get_likelihood_fn`` setting; ``num_nodes = 0`` is the reference's solve."""
  label: str
  num_nodes: int
  num_probes: int
  control_variate: bool = False

  def likelihood_fn(self, sde, inverse_scaler=None, **kwargs):
    return likelihood.get_likelihood_fn(sde, inverse_scaler, num_probes=self.num_probes,
                                        num_nodes=self.num_nodes,
                                        control_variate=self.control_variate, **kwargs)

  def cost(self, nfe):
    """Network-equivalent cost: a score evaluation and a Jacobian-vector product count one each
    (a JVP costs about a forward pass). The reference's solve linearizes at every evaluation;
    the control variate's solve carries one probe, and its nodes one JVP more."""
    if self.num_nodes == 0:
      return nfe * (1 + self.num_probes)
    solve = nfe - self.num_nodes
    if self.control_variate:
      return 2 * solve + self.num_nodes * (2 + self.num_probes)
    return solve + self.num_nodes * (1 + self.num_probes)


ESTIMATORS = {  # By the name --estimators takes.
    'fixed1': Estimator('fixed probe (reference)', 0, 1),
    'fixed4': Estimator('fixed probes', 0, 4),
    'quad32x1': Estimator('quadrature', 32, 1),
    'quad64x1': Estimator('quadrature', 64, 1),
    'quad64x4': Estimator('quadrature', 64, 4),
    'quad96x4': Estimator('quadrature', 96, 4),
    'quad128x4': Estimator('quadrature', 128, 4),
    'cv32x4': Estimator('control variate', 32, 4, True),
    'cv64x4': Estimator('control variate', 64, 4, True),
    'cv96x4': Estimator('control variate', 96, 4, True),
}


def _timed(fn, *args, repeats=5):
  jax.block_until_ready(fn(*args))  # Compile outside the timing.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def per_point_table(target_names, num_points, num_draws, estimators):
  """Error of one example's bits/dim, against the closed-form ``log p_eps``, over probe draws."""
  print(f'\nPer-point bits/dim over {num_draws} probe draws of {num_points} points of p_eps '
        '(the true log p_T(z) in place of the prior); cost in network evaluations (score or '
        'JVP), relative to the reference row:')
  print(f'{"target":9} {"sde":6} {"estimator":24} {"M":>4} {"P":>2} {"spread":>7} {"rms err":>8} '
        f'{"bias":>8} {"+-":>6} {"exact-div bias":>14} {"nfe":>5} {"cost":>5} {"seconds":>8}')
  for target_name in target_names:
    target = targets.make_target(target_name)
    dim = target.mixture.event_shape[0]
    for name, sde in SDES.items():
      x = target.marginal_sample(sde, EPS, jax.random.key(1), num_points)
      truth = _bits(target.log_prob_fn(sde)(x, jnp.full((num_points,), EPS)), dim)
      log_p_end = target.log_prob_fn(sde)
      score = target.score_fn(sde)
      reference_cost = None
      for est in estimators:
        def estimate(rng, v, kind, est=est):
          fn = est.likelihood_fn(sde, hutchinson_type=kind, eps=EPS, units='nats')
          nll, z, nfe = fn(rng, score, v)
          # Swap the prior for the true p_T: only the solve and the divergence are measured.
          nll = nll + sde.prior_logp(z) - log_p_end(z, jnp.full((v.shape[0],), sde.T))
          return -nll, nfe
        run = jax.jit(lambda rng, v, estimate=estimate: estimate(rng, v, 'rademacher'))
        exact, _ = jax.jit(lambda v, estimate=estimate: estimate(jax.random.key(0), v, 'exact'))(x)
        draws = np.stack([np.asarray(run(jax.random.key(100 + r), x)[0])
                          for r in range(num_draws)])
        errors = _bits(draws, dim) - truth[None]
        nfe = int(run(jax.random.key(0), x)[1])
        cost = est.cost(nfe)
        reference_cost = reference_cost or cost
        seconds = _timed(run, jax.random.key(0), x)
        print(f'{target_name:9} {name:6} {est.label:24} {est.num_nodes:4d} {est.num_probes:2d} '
              f'{errors.std(0, ddof=1).mean():7.4f} {np.sqrt(np.mean(errors ** 2)):8.4f} '
              f'{errors.mean():8.4f} {errors.std(ddof=1) / np.sqrt(errors.size):6.4f} '
              f'{np.abs(_bits(exact, dim) - truth).mean():14.4f} {nfe:5d} '
              f'{cost / reference_cost:5.2f} {seconds:8.3f}', flush=True)


def network_cost_table(batch, estimators):
  """Wall time of each estimator on the embedded config's network (random weights: the time of
  a network evaluation, not its accuracy, is what is measured here)."""
  config = embedded.get_config()
  sde = sde_lib.VPSDE(config.model.beta_min, config.model.beta_max, config.model.num_scales)
  model = mutils.get_model(config)
  params = mutils.init_params(jax.random.key(0), config)
  score = mutils.get_score_fn(sde, model, params, continuous=True)
  shape = (batch, config.data.image_size, config.data.image_size, config.data.num_channels)
  x = jax.random.uniform(jax.random.key(1), shape)
  print(f'\nWall time on the embedded config\'s network ({mutils.count_params(params):,} '
        f'parameters, random weights), batch {shape}:')
  print(f'{"estimator":24} {"M":>4} {"P":>2} {"nfe":>5} {"seconds":>8} {"x reference":>11}')
  reference = None
  for est in estimators:
    fn = est.likelihood_fn(sde)
    run = jax.jit(lambda rng, v, fn=fn: fn(rng, score, v))
    seconds = _timed(run, jax.random.key(0), x, repeats=3)
    reference = reference or seconds
    print(f'{est.label:24} {est.num_nodes:4d} {est.num_probes:2d} '
          f'{int(run(jax.random.key(0), x)[2]):5d} '
          f'{seconds:8.3f} {seconds / reference:11.2f}', flush=True)


def trained_table(workdir, num_points, num_draws, estimators):
  """Error of one image's bits/dim under a trained network, against the same network's bits/dim
  with the exact divergence (``D`` JVPs per evaluation: the model's own density, up to the ODE
  solve's ~1e-4 bits/dim), over probe draws: what a per-image user of that run gets."""
  pipe = score_sde.load(workdir)
  images = data.get_dataset(pipe.config.data, 'test').get(np.arange(num_points))['image']
  noise = np.random.default_rng(0).uniform(size=images.shape)
  y = pipe.scaler(jnp.asarray((images.astype(np.float32) + noise) / 256., jnp.float32))
  score = pipe.score_fn(mutils.ode_score_continuous(pipe.sde, pipe.config.training.continuous))

  def jitted(est, kind='rademacher'):
    fn = est.likelihood_fn(pipe.sde, pipe.inverse_scaler, hutchinson_type=kind)
    return jax.jit(lambda rng, v: fn(rng, score, v))

  start = time.perf_counter()
  exact_bpd, _, exact_nfe = jitted(ESTIMATORS['fixed1'], 'exact')(jax.random.key(0), y)
  exact_bpd = np.asarray(exact_bpd)
  print(f'\nPer-image bits/dim of {num_points} held-out images under the trained run {workdir} '
        f'(step {pipe.step}, {pipe!r}), over {num_draws} probe draws, against its exact-divergence '
        f'bits/dim (mean {exact_bpd.mean():.4f}, {int(exact_nfe)} evaluations, '
        f'{time.perf_counter() - start:.0f} s):')
  print(f'{"estimator":24} {"M":>4} {"P":>2} {"spread":>7} {"rms err":>8} {"max err":>8} '
        f'{"bias":>8} {"+-":>6} {"nfe":>5} {"seconds":>8} {"x reference":>11}')
  reference = None
  for est in estimators:
    run = jitted(est)
    results = [run(jax.random.key(100 + r), y) for r in range(num_draws)]
    errors = np.stack([np.asarray(bpd) for bpd, _, _ in results]) - exact_bpd[None]
    seconds = _timed(run, jax.random.key(0), y, repeats=3)
    reference = reference or seconds
    print(f'{est.label:24} {est.num_nodes:4d} {est.num_probes:2d} '
          f'{errors.std(0, ddof=1).mean():7.4f} {np.sqrt(np.mean(errors ** 2)):8.4f} '
          f'{np.abs(errors).max():8.4f} {errors.mean():8.4f} '
          f'{errors.std(ddof=1) / np.sqrt(errors.size):6.4f} '
          f'{int(results[0][2]):5d} {seconds:8.3f} {seconds / reference:11.2f}',
          flush=True)


SDES = {'vp': sde_lib.VPSDE(), 'subvp': sde_lib.subVPSDE(), 've': sde_lib.VESDE()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dim', type=int, default=8)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--targets', default='gauss64,mixture32')
  parser.add_argument('--points', type=int, default=16)
  parser.add_argument('--draws', type=int, default=64)
  parser.add_argument('--network-batch', type=int, default=16)
  parser.add_argument('--tables', default='accuracy,per_point,network',
                      help='any of accuracy, per_point, network, trained (needs --workdir)')
  parser.add_argument('--workdir', default='runs/embedded',
                      help='a trained run, for the trained table')
  parser.add_argument('--estimators', default=','.join(ESTIMATORS),
                      help=f'rows of the per-point, network and trained tables, of '
                           f'{", ".join(ESTIMATORS)}; the first is the time reference')
  parser.add_argument('--methods', default='tsit5,rk45',
                      help='ODE solvers of the accuracy table (ode_solve.SOLVERS names)')
  args = parser.parse_args()
  tables = args.tables.split(',')
  unknown = set(args.estimators.split(',')) - set(ESTIMATORS)
  if unknown:
    parser.error(f'unknown estimators {sorted(unknown)}; choose from {", ".join(ESTIMATORS)}')
  estimators = [ESTIMATORS[name] for name in args.estimators.split(',')]
  target = analytic.random_mixture(np.random.default_rng(0), 4, (args.dim,))
  x_by_sde = {name: analytic.marginal(target, sde, EPS).sample(jax.random.key(1), args.batch)
              for name, sde in SDES.items()}
  print(f'{jax.devices()[0].platform}, D={args.dim}, batch={args.batch}, eps={EPS}')
  if 'accuracy' in tables:
    accuracy_table(target, x_by_sde, args.dim, args.methods.split(','))
  if 'per_point' in tables:
    per_point_table(args.targets.split(','), args.points, args.draws, estimators)
  if 'network' in tables:
    network_cost_table(args.network_batch, estimators)
  if 'trained' in tables:
    trained_table(args.workdir, args.points, args.draws, estimators)


if __name__ == '__main__':
  main()
