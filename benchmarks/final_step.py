"""The last step of the multistep samplers: extrapolation to sigma = 0 against a Tweedie step.

    python benchmarks/final_step.py [--targets gauss64,mixture32] [--sdes vpsde,subvpsde,vesde]
        [--budgets 10,20,50] [--batch 20000]
    python benchmarks/final_step.py --workdir runs/embedded --targets '' [--budgets 10,20]

``sampling.final_step`` (``sampling/multistep.py``) ends DPM-Solver++, UniPC, DEIS and iPNDM
either by stepping from the last noise level to sigma = 0 at the solver's order through the last
data predictions (``'extrapolate'``: ``num_steps`` evaluations), or by stopping at ``eps`` and
taking one Tweedie step ``x + std^2 s(x, eps)`` (``'tweedie'``, the released samplers' end: one
evaluation more). Rows compare the two at the same number of score evaluations (NFE): the Tweedie
end gets ``NFE - 1`` solver steps on the method's own grid ending at ``eps``.

* Exact scores (``--targets``): the targets of ``sampler_error.py`` (per-mode KL of fitted
  Gaussians and sliced W2 to exact draws, both against ``p_0``), on each SDE at its released
  ``eps`` (VP, sub-VP 1e-3; VE 1e-5).
* A trained run (``--workdir``): the digit classifier of ``digit_quality.py`` scores
  ``--num_samples`` samples of each sampler (Frechet distance of its features to the held-out
  digits, and the share it labels confidently) at each of ``--seeds``; both ends start from the
  same noise, so the paired difference of their FD (mean +- standard error over seeds) is the
  comparison.
"""
import argparse

import jax
import numpy as np

from score_sde import sampling
from sampler_error import SDES, kl_metric, sliced_w2
from targets import make_target

# (label, builder, its keyword arguments, config fields) of every multistep method at its
# defaults; the grid is the method's own (``fields['method']``).
METHODS = (
    ('dpm_solver++ 2M', sampling.get_dpm_solver_sampler, dict(order=2),
     dict(method='dpm_solver', order=2)),
    ('dpm_solver++ 3M', sampling.get_dpm_solver_sampler, dict(order=3),
     dict(method='dpm_solver', order=3)),
    ('unipc bh2 2', sampling.get_unipc_sampler, dict(order=2), dict(method='unipc', order=2)),
    ('unipc bh2 3', sampling.get_unipc_sampler, dict(order=3), dict(method='unipc', order=3)),
    ('deis 4 (karras)', sampling.get_deis_sampler, dict(order=4),
     dict(method='deis', order=4)),
    ('ipndm 3 (karras)', sampling.get_deis_sampler, dict(order=3, variable_step=False),
     dict(method='ipndm', order=3)),
)
FINALS = ('extrapolate', 'tweedie')


def steps_for(nfe: int, final: str) -> int:
  """Solver steps that spend ``nfe`` score evaluations with the given end (``multistep.nfe``)."""
  return nfe - 1 if final == 'tweedie' else nfe


def exact_score_rows(targets, sdes, budgets, batch):
  print(f'{"target":9s} {"sde":8s} {"sampler":18s} {"nfe":>4s} '
        + ' '.join(f'{f + " KL":>15s} {f + " SW2":>15s}' for f in FINALS))
  for target_name in targets:
    target = make_target(target_name)
    dim = target.mixture.event_shape[0]
    directions = np.random.default_rng(1).normal(size=(dim, 64))
    directions /= np.linalg.norm(directions, axis=0)
    exact = target.sample(jax.random.key(11), batch)
    for sde_name in sdes:
      make_sde, eps = SDES[sde_name]
      sde = make_sde()
      score_fn = target.score_fn(sde)
      for label, builder, kwargs, fields in METHODS:
        for nfe in budgets:
          cells = []
          for final in FINALS:
            times = sampling.get_times(sde, fields['method'], steps_for(nfe, final), eps=eps,
                                       final=final)
            sampler = builder(sde, (batch, dim), sampling.identity, times, final=final, **kwargs)
            samples, used = jax.jit(lambda rng, s=sampler: s(rng, score_fn))(jax.random.key(0))
            assert int(used) == nfe, (label, final, int(used))
            samples = np.asarray(samples, np.float64)
            if np.isfinite(samples).all():
              cells += [kl_metric(target, samples), sliced_w2(samples, exact, directions)]
            else:
              cells += [float('nan')] * 2
          print(f'{target_name:9s} {sde_name:8s} {label:18s} {nfe:4d} '
                + ' '.join(f'{c:15.4f}' for c in cells), flush=True)


def trained_rows(workdir, budgets, num_samples, epochs, seeds):
  import score_sde
  import digit_quality
  pipe = score_sde.load(workdir)
  size = pipe.config.data.image_size
  apply, accuracy, _ = digit_quality.train_classifier(size, epochs)
  x_test, _ = digit_quality.digits(size, 'test')
  print(f'{workdir} ({pipe}); digit classifier held-out accuracy {accuracy:.2%}; '
        f'{num_samples} samples per row and seed, seeds {seeds} (the same initial noise for '
        'both ends)')
  print(f'{"sampler":18s} {"nfe":>4s} {"extrapolate FD":>15s} {"tweedie FD":>15s} '
        f'{"paired diff":>18s} {"extrap. conf":>13s} {"tweedie conf":>13s}')
  for label, _, _, fields in METHODS:
    for nfe in budgets:
      fd, conf = {f: [] for f in FINALS}, {f: [] for f in FINALS}
      for final in FINALS:
        for seed in seeds:
          images = pipe.sample(num_samples, num_steps=steps_for(nfe, final), seed=seed,
                               final_step=final, **fields)
          fd[final].append(digit_quality.frechet(apply, images, x_test))
          conf[final].append(digit_quality.confident_share(apply, images))
      diff = np.subtract(fd['extrapolate'], fd['tweedie'])
      se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float('nan')
      print(f'{label:18s} {nfe:4d} {np.mean(fd["extrapolate"]):15.2f} '
            f'{np.mean(fd["tweedie"]):15.2f} {diff.mean():+9.2f} +- {se:5.2f} '
            f'{np.mean(conf["extrapolate"]):13.3f} {np.mean(conf["tweedie"]):13.3f}', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--targets', default='gauss64,mixture32')
  parser.add_argument('--sdes', default='vpsde,subvpsde,vesde')
  parser.add_argument('--budgets', default='10,20,50')
  parser.add_argument('--batch', type=int, default=20000)
  parser.add_argument('--workdir', default='', help='a trained digits run to score as well')
  parser.add_argument('--num_samples', type=int, default=512)
  parser.add_argument('--epochs', type=int, default=30, help='digit classifier epochs')
  parser.add_argument('--seeds', default='0,1,2,3', help='sample seeds of the trained rows')
  args = parser.parse_args()
  budgets = [int(b) for b in args.budgets.split(',')]
  if args.targets:
    exact_score_rows(args.targets.split(','), args.sdes.split(','), budgets, args.batch)
  if args.workdir:
    trained_rows(args.workdir, budgets, args.num_samples, args.epochs,
                 [int(x) for x in args.seeds.split(',')])


if __name__ == '__main__':
  main()
