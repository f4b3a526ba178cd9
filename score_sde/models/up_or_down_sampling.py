"""FIR-filtered up- and down-sampling of NHWC images (StyleGAN2's ``upfirdn``, Karras et al. 2020).

NCSN++ resamples feature maps with a separable low-pass FIR filter ``k`` (default ``(1, 3, 3, 1)``)
instead of nearest-neighbour / average pooling: anti-aliased resampling is one of the
architecture changes the paper credits for its CIFAR-10 scores (Song et al. 2021, app. H).

Every operation here is one ``upfirdn``: insert ``up - 1`` zeros after each pixel, zero-pad (or
crop, for negative pads) by ``pad0`` / ``pad1`` pixels, convolve with the 2-D filter, keep every
``down``-th pixel. Filters are normalised to sum to ``gain`` (``gain * up^2`` when upsampling, since
zero insertion lowers the mean by ``up^2``), so constant images stay constant away from the border.
"""
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_DN = ('NHWC', 'HWIO', 'NHWC')


def setup_kernel(k: Sequence) -> np.ndarray:
  """A 2-D FIR filter summing to one: ``outer(k, k) / sum`` for a 1-D ``k``, ``k / sum`` for 2-D.

  Raises:
    ValueError: if ``k`` is not 1-D or square 2-D, or sums to zero.
  """
  k = np.asarray(k, dtype=np.float32)
  if k.ndim == 1:
    k = np.outer(k, k)
  if k.ndim != 2 or k.shape[0] != k.shape[1]:
    raise ValueError(f'FIR kernel must be 1-D or square 2-D; got shape {k.shape}.')
  total = k.sum()
  if total == 0:
    raise ValueError('FIR kernel sums to zero; it cannot be normalised.')
  return k / total


def upfirdn_2d(x: jax.Array, k: np.ndarray, up: int = 1, down: int = 1, pad0: int = 0,
               pad1: int = 0) -> jax.Array:
  """Zero-insertion upsampling, padding, FIR filtering and decimation of every channel.

  Equivalent to, per image and channel, ``scipy.signal.upfirdn`` along each axis for a
  separable ``k``: ``y = (pad(insert_zeros(x, up), pad0, pad1) * k)[::down, ::down]`` where ``*``
  is a true (flipped-kernel) 'valid' 2-D convolution.

  Args:
    x: ``(N, H, W, C)`` images.
    k: ``(kh, kw)`` filter (already normalised; see ``setup_kernel``).
    up, down: integer up / down factors (>= 1).
    pad0, pad1: pixels of zero padding before / after along H and W (negative values crop).
  Returns:
    ``(N, H', W', C)`` with ``H' = (H up + pad0 + pad1 - kh) // down + 1``, dtype of ``x``.
  """
  if up < 1 or down < 1:
    raise ValueError(f'up={up} and down={down} must be integers >= 1.')
  k = np.asarray(k, np.float32)
  channels = x.shape[-1]
  # lax.pad's interior padding is zero insertion; the extra (up - 1) after the last pixel makes
  # the upsampled length H * up, and negative edges crop.
  spatial = (pad0, pad1 + up - 1, up - 1)
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), spatial, spatial, (0, 0, 0)])
  # Depthwise filtering: lax convolutions are cross-correlations, so flip k for a convolution.
  w = jnp.asarray(np.tile(k[::-1, ::-1, None, None], (1, 1, 1, channels)), x.dtype)
  return jax.lax.conv_general_dilated(
      x, w, window_strides=(down, down), padding='VALID', dimension_numbers=_DN,
      feature_group_count=channels)


def upsample_2d(x: jax.Array, k: Optional[Sequence] = None, factor: int = 2,
                gain: float = 1.) -> jax.Array:
  """FIR upsampling ``(N, H, W, C) -> (N, H factor, W factor, C)``.

  The default ``k = [1] * factor`` is nearest-neighbour upsampling.
  """
  k = setup_kernel([1] * factor if k is None else k) * (gain * factor ** 2)
  p = k.shape[0] - factor
  return upfirdn_2d(x, k, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x: jax.Array, k: Optional[Sequence] = None, factor: int = 2,
                  gain: float = 1.) -> jax.Array:
  """FIR downsampling ``(N, H, W, C) -> (N, H / factor, W / factor, C)``.

  The default ``k = [1] * factor`` is average pooling.
  """
  k = setup_kernel([1] * factor if k is None else k) * gain
  p = k.shape[0] - factor
  return upfirdn_2d(x, k, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x: jax.Array, w: jax.Array, k: Optional[Sequence] = None, factor: int = 2,
                     gain: float = 1.) -> jax.Array:
  """Fused zero-insertion upsampling, convolution with ``w`` and FIR filtering.

  A stride-``factor`` transposed convolution followed by one FIR pass, so padding happens once.

  Args:
    x: ``(N, H, W, Cin)``.
    w: ``(kw, kw, Cin, Cout)`` HWIO weights, odd square ``kw``.
  Returns:
    ``(N, H factor, W factor, Cout)``.
  """
  kw = w.shape[0]
  if w.ndim != 4 or w.shape[1] != kw:
    raise ValueError(f'Weights must be (k, k, Cin, Cout); got shape {w.shape}.')
  k = setup_kernel([1] * factor if k is None else k) * (gain * factor ** 2)
  p = (k.shape[0] - factor) - (kw - 1)
  # A 'VALID' stride-factor transposed convolution, written as a convolution of the
  # zero-inserted input; it has H factor + max(kw - factor, 0) rows before the FIR pass.
  pad_lo = kw - 1
  pad_hi = factor - 1 + max(kw - factor, 0)
  x = jax.lax.conv_general_dilated(
      x, w.astype(x.dtype), window_strides=(1, 1), padding=[(pad_lo, pad_hi)] * 2,
      lhs_dilation=(factor, factor), dimension_numbers=_DN)
  return upfirdn_2d(x, k, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x: jax.Array, w: jax.Array, k: Optional[Sequence] = None,
                       factor: int = 2, gain: float = 1.) -> jax.Array:
  """Fused FIR filtering and strided convolution with ``w``: ``(N, H, W, Cin) ->
  (N, H / factor, W / factor, Cout)`` for HWIO ``w`` of shape ``(kw, kw, Cin, Cout)``."""
  kw = w.shape[0]
  if w.ndim != 4 or w.shape[1] != kw:
    raise ValueError(f'Weights must be (k, k, Cin, Cout); got shape {w.shape}.')
  k = setup_kernel([1] * factor if k is None else k) * gain
  p = (k.shape[0] - factor) + (kw - 1)
  x = upfirdn_2d(x, k, pad0=(p + 1) // 2, pad1=p // 2)
  return jax.lax.conv_general_dilated(
      x, w.astype(x.dtype), window_strides=(factor, factor), padding='VALID',
      dimension_numbers=_DN)


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling: every pixel repeated ``factor x factor`` times."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
  """Average pooling over non-overlapping ``factor x factor`` windows."""
  n, h, w, c = x.shape
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


class Conv2d(nn.Module):
  """Convolution with optional fused FIR up- or down-sampling (StyleGAN2's ``conv2d_layer``).

  Parameters (released-checkpoint names): ``weight`` ``(kernel, kernel, Cin, fmaps)`` HWIO and,
  with ``use_bias``, ``bias`` ``(fmaps,)``.

  Attributes:
    fmaps: output channels.
    kernel: odd spatial size of the convolution.
    up, down: upsample / downsample by 2 (at most one of them).
    resample_kernel: 1-D FIR filter of the resampling.
    kernel_init: initializer of ``weight``.
  """
  fmaps: int
  kernel: int
  up: bool = False
  down: bool = False
  resample_kernel: Sequence[int] = (1, 3, 3, 1)
  use_bias: bool = True
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.up and self.down:
      raise ValueError('Conv2d: choose at most one of up and down.')
    if self.kernel < 1 or self.kernel % 2 == 0:
      raise ValueError(f'Conv2d: kernel={self.kernel} must be odd and positive.')
    w = self.param('weight', self.kernel_init, (self.kernel, self.kernel, x.shape[-1], self.fmaps))
    if self.up:
      x = upsample_conv_2d(x, w, k=self.resample_kernel)
    elif self.down:
      x = conv_downsample_2d(x, w, k=self.resample_kernel)
    else:
      x = jax.lax.conv_general_dilated(
          x, w.astype(x.dtype), window_strides=(1, 1), padding='SAME', dimension_numbers=_DN)
    if self.use_bias:
      x = x + self.param('bias', nn.initializers.zeros, (self.fmaps,))
    return x
