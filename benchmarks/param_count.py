"""Parameter counts of the paper's networks, from ``jax.eval_shape`` (nothing is allocated).

    python benchmarks/param_count.py              # every configs/{ve,vp,subvp}/**/*.py
    python benchmarks/param_count.py --only cifar10

Prints, per experiment config, the model and its size in millions and, for three CIFAR-10
networks, a published size: Karras et al. (2022, Table 7) list the released NCSN++ cont. (VE) at
62.8M and DDPM++ cont. (VP) at 61.8M; Ho et al. (2020) give 35.7M for their TensorFlow DDPM;
the score_sde 'ddpm' port reproduced here counts 35.2M.
"""
import importlib
import pathlib
import time

from absl import app, flags

from score_sde import models

_ONLY = flags.DEFINE_string('only', '', 'Count only configs whose path contains this string.')

_CONFIG_ROOT = pathlib.Path(__file__).resolve().parent.parent / 'configs'
# Published sizes, in millions, of the released CIFAR-10 networks (see the module docstring).
_REPORTED = {
    'configs.ve.cifar10_ncsnpp_continuous': 62.8,
    'configs.vp.cifar10_ddpmpp_continuous': 61.8,
    'configs.vp.cifar10_ddpm': 35.7,
}


def _experiment_modules():
  """Module names of the experiment configs, e.g. 'configs.ve.cifar10_ncsnpp_continuous' or
  'configs.ve.ncsnv2.cifar10' (sub-directories included)."""
  for sde_dir in ('ve', 'vp', 'subvp'):
    for path in sorted((_CONFIG_ROOT / sde_dir).rglob('*.py')):
      if not path.stem.startswith('_'):
        yield '.'.join(('configs',) + path.relative_to(_CONFIG_ROOT).with_suffix('').parts)


def main(_):
  print(f"{'config':48s} {'model':10s} {'params':>14s} {'M':>8s} {'reported M':>11s} "
        f"{'trace s':>8s}")
  for name in _experiment_modules():
    if _ONLY.value not in name:
      continue
    config = importlib.import_module(name).get_config()
    start = time.perf_counter()
    count = models.count_params(models.abstract_params(config))
    seconds = time.perf_counter() - start
    reported = _REPORTED.get(name)
    reported = f'{reported:.1f}' if reported else '-'
    print(f'{name:48s} {config.model.name:10s} {count:14,d} {count / 1e6:8.2f} {reported:>11s} '
          f'{seconds:8.1f}', flush=True)


if __name__ == '__main__':
  app.run(main)
