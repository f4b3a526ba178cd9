"""Trained networks read back for use: the EMA parameters of a run's score model or of its
noise-conditional classifier, without the rest of the training state.

Sampling, ``score_sde.load`` and ``--mode eval`` use only the EMA weights, so only those are read
(``checkpoint.restore_params_ema``, an orbax partial restore): a quarter of a checkpoint's bytes
(the parameters, their EMA and Adam's two moments are each one copy of the network), and nothing
of the optimizer needs to agree with the config. Their structure and their CRC-32s are checked
as a whole state's are. Training's resume reads the whole state (``checkpoint.Checkpointer``).
"""
from typing import Any, NamedTuple, Optional, Tuple

import jax

from score_sde.common import errors, parallel
from score_sde.data import images
from score_sde.io import checkpoint, workdir as workdir_lib
from score_sde.models import utils as mutils


class Network(NamedTuple):
  """A restored network: the Flax ``module``, its EMA ``params`` (replicated over the mesh), the
  training ``step`` they are from and the run ``directory`` they were read from."""
  module: Any
  params: Any
  step: int
  directory: str


def abstract_params_ema(config, model, mesh) -> Any:
  """Shapes, dtypes and replicated shardings of ``model``'s parameters on ``config.data``'s
  images (``jax.ShapeDtypeStruct`` leaves; nothing computed): what the EMA weights restore onto.
  """
  shape = images.image_shape(config.data.image_size, config.data.num_channels)
  rep = parallel.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                      mutils.abstract_params(model, shape))


def restore_network(config, model, workdir: str, mesh, what: str,
                    step: Optional[int] = None) -> Tuple[Any, int]:
  """``(params_ema, step)`` of ``model`` (on ``config.data``'s images) from checkpoint ``step``
  of ``workdir`` (None: the newest readable one), replicated over ``mesh``; read-only, only the
  EMA weights read. Raises as ``checkpoint.restore_params_ema``."""
  return checkpoint.restore_params_ema(workdir, abstract_params_ema(config, model, mesh), what,
                                       step)


def load_classifier(config, workdir: str, mesh) -> Network:
  """The noise-conditional classifier of classifier guidance, from the newest checkpoint in
  ``workdir.classifier_workdir(config, workdir)``.

  Raises:
    errors.WorkdirError: when no classifier was trained there, naming the command that trains it.
    checkpoint.StructureMismatchError: the classifier saved there is another network than
      ``config.classifier`` describes.
  """
  classifier = mutils.get_classifier(config)
  directory = workdir_lib.classifier_workdir(config, workdir)
  try:
    params, step = restore_network(config, classifier, directory, mesh, 'classifier')
  except errors.WorkdirError as e:
    raise errors.WorkdirError(
        f'{e} sampling.classifier_scale={config.sampling.classifier_scale} needs a trained '
        'noise-conditional classifier: run main.py --mode train_classifier with this config '
        'and workdir first, or set sampling.classifier_workdir, or sampling.classifier_scale=0.'
    ) from None
  return Network(classifier, params, int(step), directory)
