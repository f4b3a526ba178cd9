"""The configured sampler on a network's EMA weights, compiled once for a mesh: what training
draws its snapshot grids with and evaluation its FID samples."""
import jax.numpy as jnp

from score_sde import data, sde_lib
from score_sde.data import images
from score_sde.models import utils as mutils
from score_sde.sampling import shard


def get_snapshot_sampler(config, sde: sde_lib.SDE, model, mesh, num_samples: int,
                         quantize: bool = False):
  """``sample(params_ema, key) -> (images, nfe)`` with ``config.sampling``'s sampler
  (``sampling.get_sampler``), jitted once for ``mesh`` (``sampling.get_sharded_sampler``).

  Args:
    config: the experiment config (``sampling``, ``data``, ``training.continuous``).
    sde, model: the run's SDE and network.
    mesh: the device mesh; ``num_samples`` must split over its ``'data'`` axis.
    num_samples: B, the images per call.
    quantize: round to the 8-bit grid, as images saved to disk are (what FID sees).
  Returns:
    ``sample``; ``images`` are ``float32 (B, H, W, C)`` in [0, 1], split over ``'data'``.
  """
  from score_sde import sampling  # The package imports this module.
  shape = (num_samples,) + images.image_shape(config.data.image_size, config.data.num_channels)
  sampler = sampling.get_sampler(config, sde, shape, data.get_data_inverse_scaler(
      config.data.centered), eps=config.sampling.eps)

  def to_images(rng, score_fn):
    samples, nfe = sampler(rng, score_fn)
    pixels = jnp.clip(samples, 0., 1.)
    return (jnp.round(pixels * 255.) / 255. if quantize else pixels), nfe

  def make_score_fn(params):
    return mutils.get_score_fn(sde, model, params, train=False,
                               continuous=config.training.continuous)

  return shard.get_sharded_sampler(to_images, make_score_fn, mesh)
