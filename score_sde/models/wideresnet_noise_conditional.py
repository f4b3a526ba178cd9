"""The noise-conditional Wide-ResNet classifier ``p_t(y | x)`` of class-conditional sampling
(Song et al. 2021, sec. 5 and app. I.1): classifier 'wideresnet_noise_conditional'.

A WRN-(6n+4)-k (Zagoruyko & Komodakis 2016) whose residual blocks each add a projection of a
noise-level embedding, as the score networks do: ``log sigma`` through a Gaussian Fourier
projection and two dense layers. GroupNorm stands where WRN has batch norm, so each example's
logits depend on that example alone (guidance differentiates them per example). Inputs are
standardised per example first, which makes the network indifferent to the data's scale.

The parameter tree is the reference's ``models/wideresnet_noise_conditional.py``:
``GaussianFourierProjection_0/W``, ``Dense_0``, ``Dense_1`` (the embedding), ``init_conv``,
``WideResnetGroup_{0,1,2}/WideResnetBlock_<i>/{init_bn, conv1, Dense_0, bn_2, conv2}``,
``pre-pool-bn`` and the output ``Dense_2``. The paper's CIFAR-10 classifier is WRN-28-10
(``blocks_per_group=4``, ``channel_multiplier=10``).
"""
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde.models import layerspp
from score_sde.models.utils import CLASSIFIERS

# He initialisation over the fan-out (WRN's), for every convolution.
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _output_init(key, shape, dtype=jnp.float32):
  """``U[-1, 1) / sqrt(num_outputs)`` for the logits layer, WRN's choice (autoaugment)."""
  return jax.random.uniform(key, shape, dtype, -1.) / np.sqrt(shape[1])


def _norm_act(x: jax.Array, name: str, relu: bool = True) -> jax.Array:
  """GroupNorm with ``min(C / 4, 32)`` groups, then ReLU."""
  x = nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), epsilon=1e-5, name=name)(x)
  return nn.relu(x) if relu else x


def _add_shortcut(block: jax.Array, shortcut: jax.Array) -> jax.Array:
  """``block + shortcut``; a strided, narrower shortcut is average-pooled and zero-padded in
  channels (WRN's parameter-free skip)."""
  if block.shape[-1] != shortcut.shape[-1]:
    stride = shortcut.shape[-2] // block.shape[-2]
    shortcut = nn.avg_pool(shortcut, (stride, stride), (stride, stride))
    extra = block.shape[-1] - shortcut.shape[-1]
    shortcut = jnp.pad(shortcut, [(0, 0), (0, 0), (0, 0), (0, extra)])
  return block + shortcut


class WideResnetBlock(nn.Module):
  """Pre-activation residual block with the noise embedding added after the first conv."""
  channels: int
  strides: Tuple[int, int] = (1, 1)
  activate_before_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
    if self.activate_before_residual:
      x = _norm_act(x, 'init_bn')  # The shortcut then carries the normalised input too.
      h = x
    else:
      h = _norm_act(x, 'init_bn')
    h = nn.Conv(self.channels, (3, 3), self.strides, padding='SAME', use_bias=False,
                kernel_init=_CONV_INIT, name='conv1')(h)
    h = h + nn.Dense(self.channels)(nn.swish(temb))[:, None, None, :]
    h = _norm_act(h, 'bn_2')
    h = nn.Conv(self.channels, (3, 3), padding='SAME', use_bias=False, kernel_init=_CONV_INIT,
                name='conv2')(h)
    return _add_shortcut(h, x)


class WideResnetGroup(nn.Module):
  """``blocks_per_group`` blocks of one width; the first one strides."""
  blocks_per_group: int
  channels: int
  strides: Tuple[int, int] = (1, 1)
  activate_before_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
    for i in range(self.blocks_per_group):
      x = WideResnetBlock(self.channels, self.strides if i == 0 else (1, 1),
                          self.activate_before_residual and i == 0)(x, temb)
    return x


@CLASSIFIERS.register('wideresnet_noise_conditional')
class WideResnet(nn.Module):
  """Logits ``(B, num_outputs)`` of ``p_t(y | x)``.

  Call as ``model.apply({'params': p}, x, sigmas)``.

  Args (of ``__call__``):
    x: ``(B, H, W, C)`` float32 perturbed data, any scale (standardised per example).
    sigmas: ``(B,)`` positive noise level of each example (the perturbation kernel's std).
    train: accepted for the common model signature; the network has no dropout or batch
      statistics, so it changes nothing.
  """
  blocks_per_group: int = 4
  channel_multiplier: int = 10
  num_outputs: int = 10
  embedding_size: int = 128
  fourier_scale: float = 16.

  @classmethod
  def from_config(cls, config) -> 'WideResnet':
    """The classifier ``config.classifier`` describes; ``classifier.num_classes`` logits."""
    c = config.classifier
    return cls(blocks_per_group=c.blocks_per_group, channel_multiplier=c.channel_multiplier,
               num_outputs=c.num_classes)

  @nn.compact
  def __call__(self, x: jax.Array, sigmas: jax.Array, train: bool = False) -> jax.Array:
    del train
    if x.ndim != 4 or sigmas.shape != x.shape[:1]:
      raise ValueError(f'The classifier takes x (B, H, W, C) and sigmas (B,); got {x.shape} '
                       f'and {sigmas.shape}.')
    size = np.prod(x.shape[1:])
    std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
    # The floor keeps a constant image finite: 1 / sqrt(D) is the std of one unit pixel.
    x = (x - jnp.mean(x, axis=(1, 2, 3), keepdims=True)) / jnp.maximum(std, 1. / np.sqrt(size))
    width = 4 * self.embedding_size
    temb = layerspp.GaussianFourierProjection(embedding_size=self.embedding_size,
                                              scale=self.fourier_scale)(jnp.log(sigmas))
    temb = nn.Dense(width)(temb)
    temb = nn.Dense(width)(nn.swish(temb))

    h = nn.Conv(16, (3, 3), padding='SAME', use_bias=False, kernel_init=_CONV_INIT,
                name='init_conv')(x)
    k = self.channel_multiplier
    h = WideResnetGroup(self.blocks_per_group, 16 * k, activate_before_residual=True)(h, temb)
    h = WideResnetGroup(self.blocks_per_group, 32 * k, (2, 2))(h, temb)
    h = WideResnetGroup(self.blocks_per_group, 64 * k, (2, 2))(h, temb)
    h = _norm_act(h, 'pre-pool-bn')
    h = jnp.mean(h, axis=(1, 2))  # Global average pooling.
    return nn.Dense(self.num_outputs, kernel_init=_output_init)(h)
