"""EDM's training recipe against the 2021 recipe on the digits: the same network, steps, batch and
learning rate, scored by the digit classifier of ``digit_quality.py``.

    python benchmarks/edm_vs_dsm.py [--seeds 0,1,2,3] [--budgets 10,20,35]
        [--root runs/edm_vs_dsm] [--num_samples 512]

For each seed, one after the other, it trains ``configs/embedded.py`` (the 2021 recipe: VP SDE,
continuous DSM, noise prediction) and ``configs/embedded_edm.py`` (EDM's: preconditioned
denoiser, log-normal noise levels and their weighting, VE SDE from 0.002 to 80) with
``config.seed = seed`` into ``<root>/<recipe>_seed<seed>`` (a finished run there is reused, not
retrained; snapshot grids are skipped: they are not scored). Each run is then sampled at each
budget of network evaluations with each sampler of ``SAMPLERS``, from sample seed ``seed``:

* ``heun``: EDM's second-order sampler on its ``rho = 7`` grid, ``2 N - 1`` evaluations for
  ``N`` steps (the last step only denoises), so it gets the largest odd count within a budget
  (9, 19, 35);
* ``dpm_solver``: DPM-Solver++ 2M on the logSNR grid, one evaluation per step, ending at the
  solver's order (``sampling.final_step`` 'extrapolate', the default for VP and VE).

Each row gives the Frechet distance of the classifier's features to the 500 held-out digits and
the share of samples it labels with probability >= 0.9, as mean +- standard error over the
seeds; then, at each budget, each recipe's best sampler (lowest mean FD) and the paired
difference of FD, EDM minus 2021, over the seeds. The floors are those of ``digit_quality.py``:
as many real training digits against the held-out ones.
"""
import argparse
import os
import time

import numpy as np

import digit_quality

RECIPES = ('embedded', 'embedded_edm')
LABELS = {'embedded': '2021 (VP, DSM)', 'embedded_edm': 'EDM'}
SAMPLERS = ('heun', 'dpm_solver')


def steps_and_nfe(method: str, budget: int):
  """The most steps of ``method`` within ``budget`` network evaluations, and their count."""
  from score_sde.sampling import edm
  if method == 'heun':
    steps = (budget + 1) // 2
    return steps, edm.heun_nfe(steps)
  return budget, budget


def train_run(recipe: str, seed: int, root: str):
  """``(workdir, seconds)`` of ``recipe`` trained with ``seed`` (0 s when it was finished)."""
  import importlib
  from score_sde.training import train
  config = importlib.import_module(f'score_sde.configs.{recipe}').get_config()
  config.seed = seed
  config.training.snapshot_sampling = False
  workdir = os.path.join(root, f'{recipe}_seed{seed}')
  start = time.time()
  train.train_and_evaluate(config, workdir)
  return workdir, time.time() - start


def _mean_se(values):
  values = np.asarray(values, np.float64)
  se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float('nan')
  return values.mean(), se


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--seeds', default='0,1,2,3', help='training and sample seeds')
  parser.add_argument('--budgets', default='10,20,35', help='network evaluations per sample')
  parser.add_argument('--root', default='runs/edm_vs_dsm', help='where the runs are trained')
  parser.add_argument('--num_samples', type=int, default=512)
  parser.add_argument('--epochs', type=int, default=30, help='digit classifier epochs')
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  budgets = [int(b) for b in args.budgets.split(',')]

  from score_sde.common import compile_cache
  compile_cache.enable()  # The second seed's programs are the first's.
  import score_sde

  apply, accuracy, _ = digit_quality.train_classifier(16, args.epochs)
  x_train, _ = digit_quality.digits(16, 'train')
  x_test, _ = digit_quality.digits(16, 'test')
  n = args.num_samples
  order = np.random.default_rng(1).permutation(len(x_train))
  floor = digit_quality.frechet(apply, x_train[order[:n]], x_test)
  print(f'digit classifier held-out accuracy {accuracy:.2%}; FD floor ({n} real training digits '
        f'against the {len(x_test)} held-out): {floor:.2f}; confident share of held-out digits '
        f'{digit_quality.confident_share(apply, x_test):.1%}', flush=True)

  # scores[recipe][method][budget] = ([fd per seed], [confident per seed], nfe)
  scores = {r: {m: {b: ([], [], 0) for b in budgets} for m in SAMPLERS} for r in RECIPES}
  for seed in seeds:
    for recipe in RECIPES:
      workdir, seconds = train_run(recipe, seed, args.root)
      pipe = score_sde.load(workdir)
      print(f'{recipe} seed {seed}: trained in {seconds:.0f} s ({pipe})', flush=True)
      for method in SAMPLERS:
        for budget in budgets:
          steps, nfe = steps_and_nfe(method, budget)
          images = pipe.sample(n, method=method, num_steps=steps, seed=seed)
          fds, confs, _ = scores[recipe][method][budget]
          fds.append(digit_quality.frechet(apply, images, x_test))
          confs.append(digit_quality.confident_share(apply, images))
          scores[recipe][method][budget] = (fds, confs, nfe)
          print(f'  {method:10s} {nfe:3d} NFE: FD {fds[-1]:6.2f}, confident {confs[-1]:.1%}',
                flush=True)

  print(f'\n{len(seeds)} seed(s) {seeds}, {n} samples per row and seed; mean +- standard error')
  print(f'{"recipe":16s} {"sampler":10s} {"budget":>6s} {"NFE":>4s} {"FD":>16s} '
        f'{"confident":>16s}')
  for recipe in RECIPES:
    for method in SAMPLERS:
      for budget in budgets:
        fds, confs, nfe = scores[recipe][method][budget]
        fd, fd_se = _mean_se(fds)
        conf, conf_se = _mean_se(np.multiply(confs, 100.))
        print(f'{LABELS[recipe]:16s} {method:10s} {budget:6d} {nfe:4d} {fd:8.2f} +- {fd_se:5.2f} '
              f'{conf:7.1f}% +- {conf_se:4.1f}')
  print(f'\n{"budget":>6s} {"2021 best":>22s} {"EDM best":>22s} {"FD EDM - 2021 (paired)":>24s}')
  for budget in budgets:
    best = {r: min(SAMPLERS, key=lambda m, r=r: np.mean(scores[r][m][budget][0]))
            for r in RECIPES}
    cells = [f'{best[r]} {np.mean(scores[r][best[r]][budget][0]):.2f}' for r in RECIPES]
    diff, se = _mean_se(np.subtract(scores['embedded_edm'][best['embedded_edm']][budget][0],
                                    scores['embedded'][best['embedded']][budget][0]))
    print(f'{budget:6d} {cells[0]:>22s} {cells[1]:>22s} {diff:+14.2f} +- {se:5.2f}')


if __name__ == '__main__':
  main()
