"""RefineNet building blocks of the NCSN score networks (Song & Ermon 2019, 2020).

The networks are RefineNets (Lin et al. 2017) on a ResNet backbone:

* ``ResidualBlock``: pre-activation residual block ``x + conv(act(norm(conv(act(norm(x))))))``;
  ``resample='down'`` halves the resolution with ``ConvMeanPool`` or, with ``dilation > 1``,
  keeps it and widens the receptive field with dilated convolutions instead (NCSN's choice).
* ``RCUBlock`` (residual conv unit): ``n_blocks`` times ``x <- x + (act, conv)^n_stages (x)``.
* ``CRPBlock`` (chained residual pooling): ``x <- act(x)``, then ``n_stages`` times
  ``p <- conv(pool_5x5(p))``, ``x <- x + p``, with ``p`` starting at ``x``.
* ``MSFBlock`` (multi-resolution fusion): ``sum_i resize(conv(x_i), shape)``.
* ``RefineBlock``: an RCU of two units per input, MSF (unless it is the first, deepest block),
  CRP and an output RCU (three units in the last block, one otherwise).

The ``Cond*`` / ``Conditional*`` variants (NCSN) put a noise-conditional normalisation
``norm()(h, labels)`` before every convolution of the RCUs, MSF and CRP (whose pooling is then a
5x5 mean, not a max) and are called with the labels; the unconditional ones (NCSNv2) have no
normalisation inside the RefineNet. Both share one implementation per block: the helpers below
take ``norm``, a function that creates a fresh normalisation module in the calling module's scope
and applies it.

Convolutions use PyTorch's default initialisation (the NCSN code was PyTorch), except inside
``ConvMeanPool`` / ``MeanPoolConv``, which keep flax's default as the released code does. Module
and parameter names follow the released score_sde code (auto-named in creation order), so the
order of the code below is part of the checkpoint format.
"""
import math
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]
NormFactory = Callable[[], nn.Module]
Norm = Callable[[jax.Array], jax.Array]

# model.interpolation -> jax.image.resize method of the multi-resolution fusion.
INTERPOLATIONS = {'bilinear': 'bilinear', 'nearest_neighbor': 'nearest'}


def _identity(h: jax.Array) -> jax.Array:
  return h


def _uniform_fan_in(fan_in: int) -> Callable[..., jax.Array]:
  bound = 1. / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def ncsn_conv(x: jax.Array, out_ch: int, kernel_size: int = 3, bias: bool = True,
              dilation: int = 1) -> jax.Array:
  """'SAME' stride-1 convolution with PyTorch's default initialisation, created in the caller's
  scope: kernel and bias ``~ U(-1 / sqrt(fan_in), 1 / sqrt(fan_in))``, ``fan_in = k^2 C_in``.

  Args:
    x: ``(B, H, W, C_in)``.
    out_ch: output channels.
    kernel_size: ``k`` of the ``k x k`` kernel (HWIO ``(k, k, C_in, out_ch)``).
    bias: whether the convolution has a bias.
    dilation: kernel dilation (the NCSN backbone uses 1, 2 and 4).
  Returns:
    ``(B, H, W, out_ch)``.
  """
  k = kernel_size
  return nn.Conv(out_ch, (k, k), padding='SAME', use_bias=bias, kernel_dilation=(dilation,) * 2,
                 kernel_init=nn.initializers.variance_scaling(1. / 3., 'fan_in', 'uniform'),
                 bias_init=_uniform_fan_in(k * k * x.shape[-1]))(x)


def mean_pool_2x2(x: jax.Array) -> jax.Array:
  """Mean over non-overlapping 2x2 windows: ``(B, H, W, C) -> (B, H / 2, W / 2, C)``."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'2x2 mean pooling needs an even height and width; got {(h, w)}.')
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class ConvMeanPool(nn.Module):
  """``mean_pool_2x2(conv(x))``, the backbone's downsampling. Parameters: ``Conv_0``."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    return mean_pool_2x2(nn.Conv(self.features, (k, k), padding='SAME',
                                 use_bias=self.use_bias)(x))


class MeanPoolConv(nn.Module):
  """``conv(mean_pool_2x2(x))``. Parameters: ``Conv_0``."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    return nn.Conv(self.features, (k, k), padding='SAME', use_bias=self.use_bias)(
        mean_pool_2x2(x))


# ------------------------------------------------------------------------ residual blocks

def _residual(x: jax.Array, output_dim: int, resample: Optional[str], dilation: int,
              act: Activation, norm: Norm) -> jax.Array:
  h = act(norm(x))
  if resample == 'down':
    h = act(norm(ncsn_conv(h, x.shape[-1], dilation=dilation)))
    if dilation > 1:  # Same resolution, larger receptive field.
      h = ncsn_conv(h, output_dim, dilation=dilation)
      shortcut = ncsn_conv(x, output_dim, dilation=dilation)
    else:
      h = ConvMeanPool(output_dim)(h)
      shortcut = ConvMeanPool(output_dim, kernel_size=1)(x)
    return h + shortcut
  if resample is not None:
    raise ValueError(f"resample must be None or 'down'; got {resample!r}.")
  # The projection shortcut is created before the residual branch's convolutions.
  if output_dim == x.shape[-1]:
    shortcut = x
  elif dilation > 1:
    shortcut = ncsn_conv(x, output_dim, dilation=dilation)
  else:
    shortcut = ncsn_conv(x, output_dim, kernel_size=1)
  h = act(norm(ncsn_conv(h, output_dim, dilation=dilation)))
  return ncsn_conv(h, output_dim, dilation=dilation) + shortcut


class ResidualBlock(nn.Module):
  """NCSNv2's pre-activation residual block (see the module docstring); ``x`` is ``(B, H, W, C)``.

  Parameters: the normaliser's ``<Norm>_0``, ``<Norm>_1`` and ``Conv_<i>`` (the 1x1 or dilated
  shortcut first when channels change), or ``ConvMeanPool_0`` (branch) and ``ConvMeanPool_1``
  (1x1 shortcut) when downsampling.
  """
  output_dim: int
  normalization: NormFactory
  resample: Optional[str] = None
  act: Activation = nn.elu
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return _residual(x, self.output_dim, self.resample, self.dilation, self.act,
                     lambda h: self.normalization()(h))


class ConditionalResidualBlock(nn.Module):
  """NCSN's residual block: ``ResidualBlock`` with noise-conditional normalisations, called as
  ``block(x, labels)`` with ``labels`` ``(B,)`` int noise-level indices."""
  output_dim: int
  normalization: NormFactory
  resample: Optional[str] = None
  act: Activation = nn.elu
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    return _residual(x, self.output_dim, self.resample, self.dilation, self.act,
                     lambda h: self.normalization()(h, labels))


# ------------------------------------------------------------------------ RefineNet blocks

def _rcu(x: jax.Array, features: int, n_blocks: int, n_stages: int, act: Activation,
         norm: Norm) -> jax.Array:
  for _ in range(n_blocks):
    residual = x
    for _ in range(n_stages):
      x = ncsn_conv(act(norm(x)), features, bias=False)
    x = x + residual
  return x


def _crp(x: jax.Array, features: int, n_stages: int, act: Activation, norm: Norm,
         pool: Callable[[jax.Array], jax.Array]) -> jax.Array:
  x = act(x)
  path = x
  for _ in range(n_stages):
    path = ncsn_conv(pool(norm(path)), features, bias=False)
    x = x + path
  return x


def _max_pool_5x5(h: jax.Array) -> jax.Array:
  return nn.max_pool(h, (5, 5), strides=(1, 1), padding='SAME')


def _mean_pool_5x5(h: jax.Array) -> jax.Array:
  # Zero padding counts in the mean (flax's default), as in the released code.
  return nn.avg_pool(h, (5, 5), strides=(1, 1), padding='SAME', count_include_pad=True)


def _msf(xs: Sequence[jax.Array], shape: Sequence[int], features: int, interpolation: str,
         norm: Norm) -> jax.Array:
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f'interpolation={interpolation!r} is not one of {sorted(INTERPOLATIONS)}.')
  total = None
  for x in xs:
    h = ncsn_conv(norm(x), features)
    h = jax.image.resize(h, (h.shape[0], *shape, features), INTERPOLATIONS[interpolation])
    total = h if total is None else total + h
  return total


class RCUBlock(nn.Module):
  """Residual conv units: ``n_blocks`` times ``x <- x + (act, conv)^n_stages (x)``, bias-free
  3x3 convolutions ``Conv_0 .. Conv_{n_blocks n_stages - 1}``; ``features`` must be ``C``."""
  features: int
  n_blocks: int
  n_stages: int
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return _rcu(x, self.features, self.n_blocks, self.n_stages, self.act, _identity)


class CondRCUBlock(nn.Module):
  """``RCUBlock`` with a noise-conditional normalisation before every activation."""
  features: int
  n_blocks: int
  n_stages: int
  normalizer: NormFactory
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    return _rcu(x, self.features, self.n_blocks, self.n_stages, self.act,
                lambda h: self.normalizer()(h, labels))


class CRPBlock(nn.Module):
  """Chained residual pooling with 5x5 stride-1 max pooling; bias-free ``Conv_<i>``."""
  features: int
  n_stages: int
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return _crp(x, self.features, self.n_stages, self.act, _identity, _max_pool_5x5)


class CondCRPBlock(nn.Module):
  """Chained residual pooling with conditional normalisation and 5x5 mean pooling."""
  features: int
  n_stages: int
  normalizer: NormFactory
  act: Activation = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    return _crp(x, self.features, self.n_stages, self.act,
                lambda h: self.normalizer()(h, labels), _mean_pool_5x5)


class MSFBlock(nn.Module):
  """Multi-resolution fusion ``sum_i resize(conv_i(x_i), shape)`` to ``(B, *shape, features)``;
  ``interpolation`` is 'bilinear' or 'nearest_neighbor'."""
  shape: Sequence[int]
  features: int
  interpolation: str = 'bilinear'

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array]) -> jax.Array:
    return _msf(xs, self.shape, self.features, self.interpolation, _identity)


class CondMSFBlock(nn.Module):
  """``MSFBlock`` with a conditional normalisation of each input before its convolution."""
  shape: Sequence[int]
  features: int
  normalizer: NormFactory
  interpolation: str = 'bilinear'

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], labels: jax.Array) -> jax.Array:
    return _msf(xs, self.shape, self.features, self.interpolation,
                lambda h: self.normalizer()(h, labels))


def _refine(xs: Sequence[jax.Array], features: int, start: bool, end: bool, rcu, msf, crp):
  """RefineBlock: ``rcu(x, features, n_blocks)``, ``msf(hs, features)``, ``crp(h, features)``
  create and apply one block each, in this order."""
  hs = [rcu(x, x.shape[-1], 2) for x in xs]
  h = hs[0] if start else msf(hs, features)
  h = crp(h, features)
  return rcu(h, features, 3 if end else 1)


class RefineBlock(nn.Module):
  """NCSNv2's RefineNet block: ``RCUBlock_<i>`` per input, ``MSFBlock_0`` (unless ``start``),
  ``CRPBlock_0`` and the output ``RCUBlock``.

  ``__call__(xs)``: the skip features first, then the coarser block's output (just the deepest
  features when ``start``); returns ``(B, *output_shape, features)``.
  """
  output_shape: Sequence[int]
  features: int
  act: Activation = nn.relu
  interpolation: str = 'bilinear'
  start: bool = False
  end: bool = False

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array]) -> jax.Array:
    act = self.act
    return _refine(
        xs, self.features, self.start, self.end,
        rcu=lambda x, f, n: RCUBlock(f, n_blocks=n, n_stages=2, act=act)(x),
        msf=lambda hs, f: MSFBlock(self.output_shape, f, self.interpolation)(hs),
        crp=lambda h, f: CRPBlock(f, n_stages=2, act=act)(h))


class CondRefineBlock(nn.Module):
  """NCSN's RefineNet block: ``RefineBlock`` of ``CondRCUBlock``, ``CondMSFBlock`` and
  ``CondCRPBlock``, called as ``block(xs, labels)``."""
  output_shape: Sequence[int]
  features: int
  normalizer: NormFactory
  act: Activation = nn.relu
  interpolation: str = 'bilinear'
  start: bool = False
  end: bool = False

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], labels: jax.Array) -> jax.Array:
    act, norm = self.act, self.normalizer
    return _refine(
        xs, self.features, self.start, self.end,
        rcu=lambda x, f, n: CondRCUBlock(f, n, 2, norm, act)(x, labels),
        msf=lambda hs, f: CondMSFBlock(self.output_shape, f, norm, self.interpolation)(hs,
                                                                                        labels),
        crp=lambda h, f: CondCRPBlock(f, 2, norm, act)(h, labels))
