"""FIR-filtered up- and down-sampling of NHWC images (StyleGAN2's ``upfirdn``, Karras et al. 2020).

NCSN++ resamples feature maps with a separable low-pass FIR filter ``k`` (default ``(1, 3, 3, 1)``)
instead of nearest-neighbour / average pooling: anti-aliased resampling is one of the
architecture changes the paper credits for its CIFAR-10 scores (Song et al. 2021, app. H).

Every operation here is one ``upfirdn``: insert ``up - 1`` zeros after each pixel, zero-pad (or
crop, for negative pads) by ``pad0`` / ``pad1`` pixels, convolve with the 2-D filter, keep every
``down``-th pixel. Filters are normalised to sum to ``gain`` (``gain * up^2`` when upsampling, since
zero insertion lowers the mean by ``up^2``), so constant images stay constant away from the border.

Two implementations of the same linear maps. ``upfirdn_2d`` is the definition: one depthwise
convolution of the zero-inserted image. It is the reference in tests and the path for
non-separable 2-D filters. For the 1-D (separable) filters every NCSN++ config uses, the layers
run a polyphase form instead: zero insertion followed by a filter is, per output phase, a
shorter filter on the original grid (Vaidyanathan 1990, "Multirate digital filters"), so no
multiplication touches an inserted zero and each axis is a few shifted multiply-adds. The
upsampling convolution is likewise ``factor^2`` small convolutions on the coarse grid in one
``conv_general_dilated`` call. Depthwise and input-dilated convolutions are slow kernels on
XLA:CPU (and their gradients more so); the polyphase forms are elementwise work and plain
convolutions, which XLA fuses and runs on its fast paths on every backend.
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


def _separable_taps(k: Sequence) -> Optional[np.ndarray]:
  """The normalised 1-D factor of a separable FIR filter given as 1-D taps; None for 2-D."""
  k = np.asarray(k, dtype=np.float64)
  if k.ndim != 1:
    return None
  if k.sum() == 0:
    raise ValueError('FIR kernel sums to zero; it cannot be normalised.')
  return k / k.sum()


def _pad_axis(x: jax.Array, axis: int, lo: int, hi: int) -> jax.Array:
  """Zero-pads (negative: crops) ``x`` by ``lo`` / ``hi`` entries along ``axis``."""
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (lo, hi, 0)
  return jax.lax.pad(x, jnp.zeros((), x.dtype), config)


def _polyphase(taps: int, up: int, pad0: int, n_in: int, n_out: int):
  """Index plan of ``y = correlate(pad(insert_zeros(x, up), pad0, .), kernel)[:n_out]``.

  Output ``y[up q + r]`` (phase ``r``) only meets the kernel taps ``a = (pad0 - r) mod up (+ up
  t)``, which land on ``x[q + d_r + t]``. With every phase's taps aligned on one window of
  ``window`` inputs starting at ``x[q + first]``, phase ``r``'s output is
  ``sum_s kernel[index[s, r]] x_pad[q + s]`` over the entries with ``index[s, r] >= 0``.

  Returns:
    ``(index, lo, hi, per_phase)``: ``index`` an int ``(window, up)`` array of kernel taps (-1:
    none); ``lo`` / ``hi`` the padding of ``x`` (negative: cropping) that makes ``x_pad[q + s]``
    valid for ``q < per_phase = ceil(n_out / up)``.
  """
  starts, lists = [], []
  for r in range(up):
    a0 = (pad0 - r) % up
    lists.append(list(range(a0, taps, up)))
    starts.append((r + a0 - pad0) // up)
  first = min(starts)
  window = max(d + len(t) for d, t in zip(starts, lists)) - first
  index = np.full((window, up), -1, np.int64)
  for r, (d, t) in enumerate(zip(starts, lists)):
    index[d - first:d - first + len(t), r] = t
  per_phase = -(-n_out // up)
  return index, -first, per_phase + first + window - 1 - n_in, per_phase


def _interleave(y: jax.Array, up: int, axis: int, n_out: int) -> jax.Array:
  """``(..., Q, ..., up, ...)`` phases (phase axis right after ``axis``) -> ``n_out`` samples."""
  shape = list(y.shape)
  shape[axis:axis + 2] = [shape[axis] * up]
  return jax.lax.slice_in_dim(y.reshape(shape), 0, n_out, axis=axis)


def _fir_1d(x: jax.Array, taps: np.ndarray, axis: int, up: int, down: int, pad0: int,
            pad1: int) -> jax.Array:
  """``upfirdn`` along one axis: ``(pad(insert_zeros(x, up), pad0, pad1) * taps)[::down]``.

  ``*`` is a true convolution with the 1-D ``taps``; the result equals ``upfirdn_2d`` with the
  filter ``outer(taps, other axis's taps)`` applied one axis at a time.
  """
  kern = [float(c) for c in taps[::-1]]  # Python floats keep x's dtype (bfloat16 stays so)
  n = x.shape[axis]
  n_out = n * up + pad0 + pad1 - len(kern) + 1
  if n_out < 1:
    raise ValueError(f'upfirdn: {n} samples give no output with up={up}, pads {pad0}/{pad1} '
                     f'and {len(kern)} taps.')
  index, lo, hi, per_phase = _polyphase(len(kern), up, pad0, n, n_out)
  x = _pad_axis(x, axis, lo, hi)
  phases = []
  for r in range(up):
    terms = [kern[a] * jax.lax.slice_in_dim(x, s, s + per_phase, axis=axis)
             for s, a in enumerate(index[:, r]) if a >= 0]
    if not terms:  # a filter shorter than ``up`` leaves this phase zero
      terms = [jnp.zeros_like(jax.lax.slice_in_dim(x, 0, per_phase, axis=axis))]
    phases.append(sum(terms[1:], terms[0]))
  y = phases[0] if up == 1 else _interleave(jnp.stack(phases, axis + 1), up, axis, n_out)
  if down > 1:
    y = jax.lax.slice_in_dim(y, 0, None, stride=down, axis=axis)
  return y


def _fir_2d(x: jax.Array, taps: np.ndarray, up: int = 1, down: int = 1, pad0: int = 0,
            pad1: int = 0, gain: float = 1.) -> jax.Array:
  """``upfirdn_2d`` with the separable filter ``gain * outer(taps, taps)``, in polyphase form."""
  x = _fir_1d(x, taps * gain, 1, up, down, pad0, pad1)
  return _fir_1d(x, taps, 2, up, down, pad0, pad1)


def _fir(x: jax.Array, k: Sequence, gain: float, **upfirdn) -> jax.Array:
  """``upfirdn_2d`` with the filter ``k`` normalised to sum to ``gain``: polyphase for 1-D
  (separable) taps, the depthwise definition for a 2-D filter."""
  taps = _separable_taps(k)
  if taps is not None:
    return _fir_2d(x, taps, gain=gain, **upfirdn)
  return upfirdn_2d(x, setup_kernel(k) * gain, **upfirdn)


def _transposed_conv(x: jax.Array, w: jax.Array, factor: int) -> jax.Array:
  """Correlation of the zero-inserted image with ``w``, every output that touches a pixel.

  Equals ``conv_general_dilated(x, w, lhs_dilation=(factor, factor), padding=(kw - 1,
  factor - 1 + max(kw - factor, 0)))``: ``(N, H, W, Cin) -> (N, H f + max(kw - f, 0),
  W f + max(kw - f, 0), Cout)``, computed as ``factor^2`` phase kernels on the coarse grid,
  stacked on the output channels of one stride-1 convolution.
  """
  n, cin, kw, cout = x.shape[0], x.shape[-1], w.shape[0], w.shape[-1]
  # The tap plan depends on the axis length only through the padding and the output count.
  sizes = [x.shape[axis] * factor + max(kw - factor, 0) for axis in (1, 2)]
  plans = [_polyphase(kw, factor, kw - 1, x.shape[axis], size)
           for axis, size in zip((1, 2), sizes)]
  index, window = plans[0][0], plans[0][0].shape[0]
  # index -1 picks the appended zero tap.
  w_pad = jnp.pad(w, ((0, 1), (0, 1), (0, 0), (0, 0)))
  phase_w = w_pad[index[:, None, :, None], index[None, :, None, :]]  # (s, s, r, r, Cin, Cout)
  phase_w = jnp.transpose(phase_w, (0, 1, 4, 2, 3, 5)).reshape(
      window, window, cin, factor * factor * cout)
  x = jax.lax.pad(x, jnp.zeros((), x.dtype),
                  [(0, 0, 0)] + [(lo, hi, 0) for _, lo, hi, _ in plans] + [(0, 0, 0)])
  y = jax.lax.conv_general_dilated(x, phase_w.astype(x.dtype), (1, 1), 'VALID',
                                   dimension_numbers=_DN)
  (_, _, _, rows), (_, _, _, cols) = plans
  y = y.reshape(n, rows, cols, factor, factor, cout)
  y = jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(n, rows * factor, cols * factor, cout)
  return y[:, :sizes[0], :sizes[1]]


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
  k = [1] * factor if k is None else k
  p = len(k) - factor
  return _fir(x, k, gain * factor ** 2, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x: jax.Array, k: Optional[Sequence] = None, factor: int = 2,
                  gain: float = 1.) -> jax.Array:
  """FIR downsampling ``(N, H, W, C) -> (N, H / factor, W / factor, C)``.

  The default ``k = [1] * factor`` is average pooling.
  """
  k = [1] * factor if k is None else k
  p = len(k) - factor
  return _fir(x, k, gain, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x: jax.Array, w: jax.Array, k: Optional[Sequence] = None, factor: int = 2,
                     gain: float = 1.) -> jax.Array:
  """Fused zero-insertion upsampling, convolution with ``w`` and FIR filtering.

  A stride-``factor`` transposed convolution (``factor^2`` phase kernels in one convolution on
  the coarse grid) followed by one FIR pass, so padding happens once.

  Args:
    x: ``(N, H, W, Cin)``.
    w: ``(kw, kw, Cin, Cout)`` HWIO weights, odd square ``kw``.
  Returns:
    ``(N, H factor, W factor, Cout)``.
  """
  kw = w.shape[0]
  if w.ndim != 4 or w.shape[1] != kw:
    raise ValueError(f'Weights must be (k, k, Cin, Cout); got shape {w.shape}.')
  k = [1] * factor if k is None else k
  p = (len(k) - factor) - (kw - 1)
  return _fir(_transposed_conv(x, w, factor), k, gain * factor ** 2,
              pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x: jax.Array, w: jax.Array, k: Optional[Sequence] = None,
                       factor: int = 2, gain: float = 1.) -> jax.Array:
  """Fused FIR filtering and strided convolution with ``w``: ``(N, H, W, Cin) ->
  (N, H / factor, W / factor, Cout)`` for HWIO ``w`` of shape ``(kw, kw, Cin, Cout)``."""
  kw = w.shape[0]
  if w.ndim != 4 or w.shape[1] != kw:
    raise ValueError(f'Weights must be (k, k, Cin, Cout); got shape {w.shape}.')
  k = [1] * factor if k is None else k
  p = (len(k) - factor) + (kw - 1)
  x = _fir(x, k, gain, pad0=(p + 1) // 2, pad1=p // 2)
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
