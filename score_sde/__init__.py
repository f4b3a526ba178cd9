"""Score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.

The package in the order its layers depend on each other (each imports only those above it;
``tests/test_layers.py`` holds it to that):

* ``common``: errors, registries, random streams, the device mesh.
* ``io``: a run directory's checkpoints, summaries and files.
* ``sde_lib``: VP, sub-VP and VE SDEs, reverse-time SDEs and probability-flow ODEs;
  ``analytic``: Gaussian-mixture data whose perturbed scores are known in closed form.
* ``data``: datasets as random-access sources and a batch pipeline that is a function of the
  step.
* ``models``: NCSN++ / DDPM++, DDPM, NCSN / NCSNv2 networks and the noise-conditional
  classifier; ``models.utils.get_score_fn`` turns one into a ``score_fn(x, t)``.
* ``losses`` (with ``low_noise``): the DSM, SMLD and DDPM objectives and the train / eval step;
  ``optim``: the optimizer chain and the EMA of the weights.
* ``sampling``: predictor-corrector, probability-flow ODE, Heun (EDM), DPM-Solver++, UniPC,
  DEIS, iPNDM; inpainting / colorization; classifier and classifier-free guidance.
* ``likelihood``: bits/dim through the probability-flow ODE.
* ``metrics``: FID / KID / Inception Score with a Flax Inception-v3.
* ``training``: the training state (``training.train_state``) and loop (``training.train``).
* ``configs``: the experiments as data, their validation and the record a run keeps of its
  config.
* ``evaluation``: resumable evaluation over checkpoints (``evaluation.evaluate``).
* ``conversion``: score_sde's released checkpoints and score_sde_pytorch ``.pth`` files as runs.
* ``pipeline`` (``load(workdir)``): a trained run as one object: ``sample``, ``inpaint``,
  ``colorize``, ``bits_per_dim``, ``encode`` / ``decode``; ``generate``: ``--mode sample``.
* ``cli``: the command line (``main.py``, the ``score-sde`` command).

Every module is imported on first use, so that ``import score_sde`` stays light.
"""
import importlib

__version__ = '0.1.0'
__all__ = [
    'analytic', 'cli', 'common', 'configs', 'conversion', 'data', 'evaluation', 'generate', 'io',
    'likelihood', 'load', 'losses', 'low_noise', 'metrics', 'models', 'optim', 'pipeline',
    'sampling', 'sde_lib', 'training',
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
