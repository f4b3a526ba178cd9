"""Score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.

The public modules, each imported on first use so that ``import score_sde`` stays light:

* ``sde_lib``: VP, sub-VP and VE SDEs, reverse-time SDEs and probability-flow ODEs.
* ``losses``: continuous DSM, SMLD and DDPM objectives, the noise-conditional classifier's
  cross-entropy; train / eval steps.
* ``models``: NCSN++ / DDPM++ and DDPM networks (optionally class-conditional), the
  noise-conditional Wide-ResNet classifier, ``models.utils.get_score_fn``.
* ``sampling``: predictor-corrector, probability-flow ODE, Heun (EDM), DPM-Solver++,
  inpainting / colorization, classifier and classifier-free guidance.
* ``generate``: samples from a trained run's newest checkpoint (``--mode sample``).
* ``load(workdir)`` (``pipeline``): a trained run as one object for notebooks: ``sample``,
  ``inpaint``, ``colorize``, ``bits_per_dim``, ``encode`` / ``decode``.
* ``likelihood``: bits/dim through the probability-flow ODE (solved by ``ode_solve``).
* ``metrics``: FID / KID / Inception Score with a Flax Inception-v3.
* ``training``: the training loop (``training.train``), its state (``training.train_state``)
  and optimizer (``training.optim``).
* ``evaluation``: resumable evaluation over checkpoints (``evaluation.evaluate``).
* ``data``, ``checkpoint``, ``released_checkpoints``, ``analytic`` (closed-form Gaussian-mixture
  targets), ``sharding``, ``summary``, ``config_validation``, ``registry``.

The modules that moved into ``training`` and ``evaluation`` keep their earlier names
(``score_sde.train``, ``train_state``, ``optim``, ``evaluate``), for ``import`` and for
``from score_sde import ...`` alike: both give the moved module itself.
"""
import importlib
import importlib.abc
import importlib.util
import sys

__version__ = '0.1.0'
__all__ = [
    'analytic', 'checkpoint', 'config_validation', 'data', 'evaluate', 'evaluation', 'generate',
    'likelihood', 'losses', 'metrics', 'models', 'ode_solve', 'optim', 'pipeline', 'registry',
    'released_checkpoints', 'sampling', 'sde_lib', 'sharding', 'summary', 'train', 'train_state',
    'training',
]
# Earlier top-level names of modules now in a sub-package.
MOVED = {
    'train': 'training.train',
    'train_state': 'training.train_state',
    'optim': 'training.optim',
    'evaluate': 'evaluation.evaluate',
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Makes ``import score_sde.train`` (and ``from score_sde.train import ...``) give the module
  ``score_sde.training.train`` itself, so that both names share one module object and state."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    prefix, _, name = fullname.rpartition('.')
    if prefix == __name__ and name in MOVED:
      return importlib.util.spec_from_loader(fullname, self)
    return None

  def create_module(self, spec):
    module = importlib.import_module(f'{__name__}.{MOVED[spec.name.rpartition(".")[2]]}')
    spec.loader_state = module.__spec__  # The import machinery overwrites it with this spec.
    return module

  def exec_module(self, module):
    # Already executed under its new name; give it back its own spec.
    module.__spec__ = module.__spec__.loader_state


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
  sys.meta_path.append(_MovedModuleFinder())


def load(workdir, step=None, config=None, mesh=None):
  """``pipeline.load``: the run in ``workdir`` (newest readable checkpoint, or ``step``) as a
  ``pipeline.Pipeline``."""
  from score_sde import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.load(workdir, step=step, config=config, mesh=mesh)


def __getattr__(name):
  if name in MOVED:
    return importlib.import_module(f'{__name__}.{MOVED[name]}')
  if name in __all__:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
