"""The DDPM U-Net of Ho et al. (2020), model 'ddpm' (a PixelCNN++ / Wide-ResNet U-Net).

The paper's "DDPM" baselines (and its DDPM cont. / SMLD-with-DDPM-net rows) use this network:
sinusoidal time embedding, two (or more) ``ResnetBlockDDPM`` per resolution with GroupNorm(32),
self-attention (``AttnBlock``) at 16x16, nearest-neighbour ``Upsample`` / strided-conv
``Downsample``. Parameter names are those of the released score_sde checkpoints: ``Dense_0``,
``Dense_1``, ``Conv_0``, ``ResnetBlockDDPM_<i>``, ``AttnBlock_<i>``, ``Downsample_<i>``,
``Upsample_<i>``, ``GroupNorm_0``, ``Conv_1``.
"""
from typing import List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.models import layers
from score_sde.models.utils import (check_image_size, check_model_inputs, class_count, get_sigmas,
                                    MODELS, unet_problems)


@MODELS.register('ddpm')
class DDPM(nn.Module):
  """DDPM's noise-prediction network ``eps(x, t)``.

  Call as ``model.apply({'params': p}, x, labels, train=False, rngs={'dropout': key})``.

  Args (of ``__call__``):
    x: ``(B, H, W, C)`` float32 in [0, 1] (or [-1, 1] with ``centered``).
    labels: ``(B,)`` time labels (fractional allowed), embedded sinusoidally.
    train: enables dropout (rng stream 'dropout').
    class_labels: ``(B,)`` int in ``[0, num_classes]`` when ``num_classes > 0`` (the last is
      the null label).
  Returns:
    ``(B, H, W, C)`` float32; with ``scale_by_sigma`` divided by the SMLD ladder's
    ``sigma[int(label)]`` (ladder descending from ``sigma_max`` to ``sigma_min``).

  All channel counts (``nf * ch_mult`` and their concatenations) must be multiples of
  ``num_groups``.
  """
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  nonlinearity: str = 'swish'
  scale_by_sigma: bool = False
  centered: bool = True
  sigma_min: float = 0.01
  sigma_max: float = 50.
  num_scales: int = 1000
  num_groups: int = 32
  num_classes: int = 0  # > 0: class-conditional (layers.add_class_embedding).
  remat: bool = False  # Rematerialise the residual blocks (layers.rematerialized).

  @classmethod
  def from_config(cls, config) -> 'DDPM':
    """The module described by ``config.model`` and ``config.data.centered``."""
    m = config.model
    if m.get('normalization', 'GroupNorm') != 'GroupNorm':
      raise ValueError(f"ddpm supports only model.normalization='GroupNorm'; "
                       f'got {m.normalization!r}.')
    check_image_size(config.data.image_size, len(m.ch_mult))
    if m.nf % 32:
      raise ValueError(f'ddpm uses GroupNorm with 32 groups; model.nf={m.nf} must be a '
                       'multiple of 32.')
    return cls(
        nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
        attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
        resamp_with_conv=m.resamp_with_conv, conditional=m.conditional,
        nonlinearity=m.nonlinearity, scale_by_sigma=m.scale_by_sigma,
        centered=config.data.centered, sigma_min=m.sigma_min, sigma_max=m.sigma_max,
        num_scales=m.num_scales, num_classes=class_count(config),
        remat=bool(m.get('remat', False)))

  @classmethod
  def config_problems(cls, config) -> List[Tuple[str, str]]:
    """What ``config`` asks of the network that it does not have: ``models.utils.unet_problems``."""
    return unet_problems(config)

  def _resblock(self, out_ch=None) -> nn.Module:
    block = layers.rematerialized(layers.ResnetBlockDDPM) if self.remat else layers.ResnetBlockDDPM
    return block(act=layers.get_act(self.nonlinearity), out_ch=out_ch,
                                  dropout=self.dropout, num_groups=self.num_groups)

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False,
               class_labels: Optional[jax.Array] = None) -> jax.Array:
    check_model_inputs(x, labels, len(self.ch_mult))
    act = layers.get_act(self.nonlinearity)
    temb = None
    if self.conditional:
      temb = layers.get_timestep_embedding(labels, self.nf)
      temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init())(temb)
      temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init())(act(temb))
      # Embedded in float32, then in the compute dtype (bfloat16 under mixed precision).
      temb = layers.add_class_embedding(temb, class_labels, self.num_classes).astype(x.dtype)
    h = x if self.centered else 2 * x - 1.  # The network works on [-1, 1].

    hs = [layers.conv3x3(h, self.nf)]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = self._resblock(self.nf * mult)(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = layers.AttnBlock(num_groups=self.num_groups)(h)
        hs.append(h)
      if level != len(self.ch_mult) - 1:
        hs.append(layers.Downsample(with_conv=self.resamp_with_conv)(hs[-1]))

    h = hs[-1]
    h = self._resblock()(h, temb, train)
    h = layers.AttnBlock(num_groups=self.num_groups)(h)
    h = self._resblock()(h, temb, train)

    for level in reversed(range(len(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = self._resblock(self.nf * self.ch_mult[level])(
            jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = layers.AttnBlock(num_groups=self.num_groups)(h)
      if level != 0:
        h = layers.Upsample(with_conv=self.resamp_with_conv)(h)

    h = act(nn.GroupNorm(num_groups=self.num_groups)(h))
    h = layers.conv3x3(h, x.shape[-1], init_scale=0.)
    if self.scale_by_sigma:
      # The DDPM loss scales by sigma itself; this is for SMLD training of the DDPM net.
      sigmas = get_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
      h = h / sigmas[labels.astype(jnp.int32)][:, None, None, None]
    return h
