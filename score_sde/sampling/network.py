"""The one path from a network to images: ``config.sampling``'s sampler (``get_sampler``) on a
network's EMA weights, guided as the config says, compiled once for a mesh. Training draws its
snapshot grids with it, evaluation its FID samples, and ``Pipeline.sampler`` (``score_sde.load``,
``--mode sample``) its images, so a sampler option reaches all of them at once."""
from typing import Optional

import jax.numpy as jnp
import numpy as np

from score_sde import data, sde_lib
from score_sde.data import images
from score_sde.models import utils as mutils
from score_sde.sampling import guidance, methods, shard
from score_sde.sampling.from_config import get_sampler

QUANTIZATIONS = (None, 'truncate', 'round')


def to_8bit_grid(samples: jnp.ndarray, quantize: Optional[str]) -> jnp.ndarray:
  """Samples in data space -> ``[0, 1]`` images, on the 8-bit grid unless ``quantize`` is None.

  ``'truncate'``: ``floor(255 clip(x, 0, 1)) / 255``, the reference's
  ``np.clip(x * 255, 0, 255).astype(np.uint8)`` before Inception; ``'round'``:
  ``round(255 clip(x, 0, 1)) / 255``, what a PNG of the samples holds.
  """
  pixels = jnp.clip(samples, 0., 1.)
  if quantize is None:
    return pixels
  return {'truncate': jnp.floor, 'round': jnp.round}[quantize](pixels * 255.) / 255.


def sampled_classes(config, model, num_samples: int, classifier=None) -> Optional[np.ndarray]:
  """``int32 (num_samples,)``: the class of each sample ``get_network_sampler`` draws, or None
  when it samples unconditionally.

  Sampling is class-conditional for a class-conditional network (``model.num_classes > 0``:
  classifier-free guidance, ``sampling.cfg_scale``) and for classifier guidance (a
  ``classifier`` and ``sampling.classifier_scale != 0``); the classes are
  ``sampling.class_labels`` in turn, or every class in turn when that is empty.

  Raises:
    ValueError: for ``sampling.class_labels`` with nothing to condition on, or out of range.
  """
  s = config.sampling
  num_classes = getattr(model, 'num_classes', 0)
  if classifier is not None and s.get('classifier_scale', 0.):
    num_classes = num_classes or classifier.num_outputs
  elif not num_classes:
    if tuple(s.get('class_labels', ())):
      raise ValueError(f'sampling.class_labels={tuple(s.class_labels)} but nothing conditions '
                       'on a class: the network is unconditional (model.num_classes = 0) and '
                       'classifier guidance is off (sampling.classifier_scale = 0 or no '
                       'trained classifier).')
    return None
  return guidance.sample_labels(num_samples, s.get('class_labels', ()), num_classes)


def get_network_sampler(config, sde: sde_lib.SDE, model, mesh, num_samples: int,
                        quantize: Optional[str] = None, classifier=None):
  """``sample(params, key) -> (images, nfe)`` with ``config.sampling``'s sampler
  (``sampling.get_sampler``), jitted once for ``mesh`` (``sampling.get_sharded_sampler``).

  Class-conditional (``sampled_classes`` gives each sample's class) for a class-conditional
  network, with ``sampling.cfg_scale``; and with classifier guidance when ``classifier`` is
  given and ``sampling.classifier_scale != 0``: ``params`` is then
  ``{'score': params_ema, 'classifier': classifier_params}``, else the score network's
  ``params_ema``.

  Args:
    config: the experiment config (``sampling``, ``data``, ``training.continuous``).
    sde, model: the run's SDE and network.
    mesh: the device mesh; ``num_samples`` must split over its ``'data'`` axis.
    num_samples: B, the images per call.
    quantize: put the images on the 8-bit grid, as FID's Inception network sees them:
      ``'truncate'`` (``floor(255 x) / 255``, the reference's ``clip(x * 255, 0, 255)
      .astype(uint8)``) or ``'round'`` (``round(255 x) / 255``, what a PNG of the samples holds);
      None leaves them continuous.
    classifier: the noise-conditional classifier module (``models.get_classifier``) of
      classifier guidance, or None.
  Returns:
    ``sample``; ``images`` are ``float32 (B, H, W, C)`` in [0, 1], split over ``'data'``.
  """
  shape = (num_samples,) + images.image_shape(config.data.image_size, config.data.num_channels)
  sampler = get_sampler(config, sde, shape, data.get_data_inverse_scaler(
      config.data.centered), eps=config.sampling.eps)

  if quantize not in QUANTIZATIONS:
    raise ValueError(f'quantize={quantize!r}; use one of {QUANTIZATIONS}.')

  def to_images(rng, score_fn):
    samples, nfe = sampler(rng, score_fn)
    return to_8bit_grid(samples, quantize), nfe

  continuous = config.training.continuous
  if methods.get(config.sampling.method).family == 'ode':
    continuous = mutils.ode_score_continuous(sde, continuous)

  parameterization = mutils.config_parameterization(config, sde)
  labels = sampled_classes(config, model, num_samples, classifier)
  guided_by_classifier = classifier is not None and bool(config.sampling.classifier_scale)

  def make_score_fn(params):
    score_params, classifier_fn = params, None
    if guided_by_classifier:
      score_params = params['score']
      classifier_fn = mutils.get_classifier_fn(sde, classifier, params['classifier'])
    score_fn = mutils.get_score_fn(sde, model, score_params, train=False, continuous=continuous,
                                   parameterization=parameterization)
    return guidance.get_guided_score_fn(
        score_fn, labels, num_classes=getattr(model, 'num_classes', 0),
        cfg_scale=config.sampling.get('cfg_scale', 0.), classifier_fn=classifier_fn,
        classifier_scale=config.sampling.get('classifier_scale', 0.))

  return shard.get_sharded_sampler(to_images, make_score_fn, mesh)
