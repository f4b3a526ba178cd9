"""The configured sampler on a network's EMA weights, compiled once for a mesh: what training
draws its snapshot grids with and evaluation its FID samples."""
from typing import Optional

import jax.numpy as jnp

from score_sde import data, sde_lib
from score_sde.data import images
from score_sde.models import utils as mutils
from score_sde.sampling import shard

QUANTIZATIONS = (None, 'truncate', 'round')
# Methods that integrate the probability-flow ODE (``models.utils.ode_score_continuous``).
ODE_METHODS = ('ode', 'heun', 'dpm_solver')


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


def get_snapshot_sampler(config, sde: sde_lib.SDE, model, mesh, num_samples: int,
                         quantize: Optional[str] = None):
  """``sample(params_ema, key) -> (images, nfe)`` with ``config.sampling``'s sampler
  (``sampling.get_sampler``), jitted once for ``mesh`` (``sampling.get_sharded_sampler``).

  Args:
    config: the experiment config (``sampling``, ``data``, ``training.continuous``).
    sde, model: the run's SDE and network.
    mesh: the device mesh; ``num_samples`` must split over its ``'data'`` axis.
    num_samples: B, the images per call.
    quantize: put the images on the 8-bit grid, as FID's Inception network sees them:
      ``'truncate'`` (``floor(255 x) / 255``, the reference's ``clip(x * 255, 0, 255)
      .astype(uint8)``) or ``'round'`` (``round(255 x) / 255``, what a PNG of the samples holds);
      None leaves them continuous.
  Returns:
    ``sample``; ``images`` are ``float32 (B, H, W, C)`` in [0, 1], split over ``'data'``.
  """
  from score_sde import sampling  # The package imports this module.
  shape = (num_samples,) + images.image_shape(config.data.image_size, config.data.num_channels)
  sampler = sampling.get_sampler(config, sde, shape, data.get_data_inverse_scaler(
      config.data.centered), eps=config.sampling.eps)

  if quantize not in QUANTIZATIONS:
    raise ValueError(f'quantize={quantize!r}; use one of {QUANTIZATIONS}.')

  def to_images(rng, score_fn):
    samples, nfe = sampler(rng, score_fn)
    return to_8bit_grid(samples, quantize), nfe

  continuous = config.training.continuous
  if str(config.sampling.method).lower() in ODE_METHODS:
    continuous = mutils.ode_score_continuous(sde, continuous)

  def make_score_fn(params):
    return mutils.get_score_fn(sde, model, params, train=False, continuous=continuous)

  return shard.get_sharded_sampler(to_images, make_score_fn, mesh)
