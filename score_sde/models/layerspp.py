"""The layers of NCSN++ and DDPM++ (Song et al. 2021, app. H).

Module and parameter names match the released score_sde checkpoints (see ``layers``): e.g.
``GaussianFourierProjection_0/W``, ``AttnBlockpp_0/{GroupNorm_0, NIN_0..NIN_3}``,
``ResnetBlockBigGANpp_0/{GroupNorm_0, Conv_0, Dense_0, GroupNorm_1, Conv_1, Conv_2}``,
``Downsample_0/Conv2d_0/{weight, bias}``, ``Combine_0/Conv_0``.
"""
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.models import up_or_down_sampling as updown
from score_sde.models.layers import (Activation, conv1x1, conv3x3, default_init, group_norm, NIN,
                                     residual_sum, spatial_attention)


class GaussianFourierProjection(nn.Module):
  """Random Fourier features of a scalar (Tancik et al. 2020), the NCSN++ noise-level embedding.

  ``emb = [sin(2 pi x W), cos(2 pi x W)]`` with fixed ``W ~ N(0, scale^2 I)``, ``W`` of shape
  ``(embedding_size,)``; NCSN++ feeds ``x = log sigma``, EDM's NCSN++ its label ``c_noise``
  (its ``FourierEmbedding`` of ``2 embedding_size`` channels, a buffer ``freqs = W``, in this
  sin-then-cos order after its flip). ``W`` is a parameter (so checkpoints carry it) that
  receives no gradient.

  Returns:
    ``(B, 2 embedding_size)`` for ``x`` of shape ``(B,)``.
  """
  embedding_size: int = 256
  scale: float = 1.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.param('W', nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
    proj = x[:, None] * jax.lax.stop_gradient(w)[None, :] * (2 * jnp.pi)
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class Combine(nn.Module):
  """Merges the progressive-input pyramid ``x`` into features ``y``: ``Conv_0`` (1x1) maps ``x``
  to ``y``'s channels, then 'sum' adds and 'cat' concatenates (channels ``2 C_y``)."""
  method: str = 'cat'

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    if self.method not in ('cat', 'sum'):
      raise ValueError(f"Combine method {self.method!r} unknown; use 'cat' or 'sum'.")
    h = conv1x1(x, y.shape[-1])
    return jnp.concatenate([h, y], axis=-1) if self.method == 'cat' else h + y


class AttnBlockpp(nn.Module):
  """DDPM self-attention with ``min(C / 4, 32)`` GroupNorm groups and optional skip rescaling.

  ``(x + NIN_3(attention(GN(x)))) / sqrt(2)`` (without the division if not ``skip_rescale``).
  """
  skip_rescale: bool = False
  init_scale: float = 0.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    h = group_norm(c)(x)
    h = spatial_attention(h, NIN(c), NIN(c), NIN(c))
    return residual_sum(x, NIN(c, init_scale=self.init_scale)(h), self.skip_rescale)


class Upsample(nn.Module):
  """2x upsampling to ``out_ch`` channels (default: unchanged).

  ``fir``: FIR upsampling, fused with a 3x3 conv (``Conv2d_0``) when ``with_conv``. Otherwise
  nearest-neighbour, then a 3x3 conv (``Conv_0``) when ``with_conv``.
  """
  out_ch: Optional[int] = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    out_ch = self.out_ch or c
    if out_ch != c and not self.with_conv:
      raise ValueError(f'Upsample without a conv cannot change channels ({c} -> {out_ch}).')
    if self.fir:
      if self.with_conv:
        return updown.Conv2d(out_ch, kernel=3, up=True, resample_kernel=self.fir_kernel,
                             kernel_init=default_init())(x)
      return updown.upsample_2d(x, self.fir_kernel, factor=2)
    x = jax.image.resize(x, (b, 2 * h, 2 * w, c), 'nearest')
    return conv3x3(x, out_ch) if self.with_conv else x


class Downsample(nn.Module):
  """2x downsampling to ``out_ch`` channels (default: unchanged).

  ``fir``: FIR downsampling, fused with a 3x3 conv (``Conv2d_0``) when ``with_conv``. Otherwise a
  stride-2 3x3 conv (``Conv_0``) when ``with_conv``, else 2x2 average pooling.
  """
  out_ch: Optional[int] = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    out_ch = self.out_ch or c
    if out_ch != c and not self.with_conv:
      raise ValueError(f'Downsample without a conv cannot change channels ({c} -> {out_ch}).')
    if self.fir:
      if self.with_conv:
        return updown.Conv2d(out_ch, kernel=3, down=True, resample_kernel=self.fir_kernel,
                             kernel_init=default_init())(x)
      return updown.downsample_2d(x, self.fir_kernel, factor=2)
    if self.with_conv:
      return conv3x3(x, out_ch, stride=2)
    return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding='SAME')


class ResnetBlockDDPMpp(nn.Module):
  """DDPM's residual block with ``min(C / 4, 32)`` groups, ``init_scale`` and skip rescaling.

  Parameters: ``GroupNorm_0``, ``Conv_0``, ``Dense_0`` (with ``temb``), ``GroupNorm_1``,
  ``Conv_1`` and, when channels change, ``NIN_0`` (or ``Conv_2`` with ``conv_shortcut``).
  """
  act: Activation
  out_ch: Optional[int] = None
  conv_shortcut: bool = False
  dropout: float = 0.1
  skip_rescale: bool = False
  init_scale: float = 0.

  @nn.compact
  def __call__(self, x: jax.Array, temb: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    c = x.shape[-1]
    out_ch = self.out_ch or c
    h = self.act(group_norm(c)(x))
    h = conv3x3(h, out_ch)
    if temb is not None:
      h = h + nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(out_ch)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale)
    if c != out_ch:
      x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
    return residual_sum(x, h, self.skip_rescale)


class ResnetBlockBigGANpp(nn.Module):
  """BigGAN's residual block (Brock et al. 2019) with optional 2x up- or down-sampling.

  Both branches are resampled (FIR with ``fir``, else nearest / average) right after the first
  norm-activation; the shortcut gets a 1x1 conv (``Conv_2``) when channels or resolution change.

  Parameters: ``GroupNorm_0``, ``Conv_0``, ``Dense_0`` (with ``temb``), ``GroupNorm_1``,
  ``Conv_1``, ``Conv_2`` (shortcut).
  """
  act: Activation
  up: bool = False
  down: bool = False
  out_ch: Optional[int] = None
  dropout: float = 0.1
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.

  def _resample(self, x: jax.Array) -> jax.Array:
    if self.up:
      if self.fir:
        return updown.upsample_2d(x, self.fir_kernel, factor=2)
      return updown.naive_upsample_2d(x, factor=2)
    if self.down:
      if self.fir:
        return updown.downsample_2d(x, self.fir_kernel, factor=2)
      return updown.naive_downsample_2d(x, factor=2)
    return x

  @nn.compact
  def __call__(self, x: jax.Array, temb: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    if self.up and self.down:
      raise ValueError('ResnetBlockBigGANpp: choose at most one of up and down.')
    c = x.shape[-1]
    out_ch = self.out_ch or c
    h = self.act(group_norm(c)(x))
    h, x = self._resample(h), self._resample(x)
    h = conv3x3(h, out_ch)
    if temb is not None:
      h = h + nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(out_ch)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale)
    if c != out_ch or self.up or self.down:
      x = conv1x1(x, out_ch)
    return residual_sum(x, h, self.skip_rescale)
