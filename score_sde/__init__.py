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
* ``data``, ``train``, ``evaluate``, ``checkpoint``, ``released_checkpoints``, ``analytic``
  (closed-form Gaussian-mixture targets), ``sharding``, ``optim``, ``train_state``, ``summary``,
  ``config_validation``, ``registry``.
"""
import importlib

__version__ = '0.1.0'
__all__ = [
    'analytic', 'checkpoint', 'config_validation', 'data', 'evaluate', 'generate', 'likelihood',
    'losses',
    'ode_solve',
    'metrics', 'models', 'optim', 'pipeline', 'registry', 'released_checkpoints', 'sampling',
    'sde_lib', 'sharding', 'summary', 'train', 'train_state',
]


def load(workdir, step=None, config=None, mesh=None):
  """``pipeline.load``: the run in ``workdir`` (newest readable checkpoint, or ``step``) as a
  ``pipeline.Pipeline``."""
  from score_sde import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.load(workdir, step=step, config=config, mesh=mesh)


def __getattr__(name):
  if name in __all__:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
