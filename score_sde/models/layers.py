"""Layers shared by the DDPM (Ho et al. 2020) and NCSN++ / DDPM++ score networks.

Parameter names follow the released score_sde checkpoints, which were made by Flax linen modules
auto-named in creation order: a convolution made by ``conv3x3`` inside a module is that module's
``Conv_<i>``; ``NIN`` holds ``W`` and ``b``. The helpers ``conv1x1`` / ``conv3x3`` therefore create
their ``nn.Conv`` in the calling module's scope and must be called from a ``@nn.compact`` method.
"""
import functools
import math
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]

# model.nonlinearity -> the activation function.
ACTIVATIONS = {
    'elu': nn.elu,
    'relu': nn.relu,
    'lrelu': functools.partial(nn.leaky_relu, negative_slope=0.2),
    'swish': nn.swish,
}


def get_act(name: str) -> Activation:
  """The nonlinearity named ``name``: 'elu', 'relu', 'lrelu' (slope 0.2) or 'swish'."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(
        f'Unknown nonlinearity {name!r}; use one of {sorted(ACTIVATIONS)}.') from None


@functools.lru_cache(maxsize=None)
def rematerialized(block: type) -> type:
  """``block`` (a residual block called as ``block(x, temb, train)``) with its activations
  recomputed in the backward pass (``nn.remat``), keeping only its inputs: a block boundary's
  activation memory for about one more forward pass. The class keeps ``block``'s name, so
  auto-named parameters (the released checkpoints' names) do not change."""
  remat_block = nn.remat(block, static_argnums=(3,))  # self, x, temb, train (a Python bool).
  remat_block.__name__ = remat_block.__qualname__ = block.__name__
  return remat_block


def default_init(scale: float = 1.) -> Callable[..., jax.Array]:
  """DDPM's initializer: variance scaling, fan-average, uniform; ``scale = 0`` means 1e-10.

  A (nearly) zero scale makes a layer start as (nearly) zero, so residual branches begin as the
  identity; exact zero would stall gradients through products of such layers.
  """
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, 'fan_avg', 'uniform')


def conv1x1(x: jax.Array, out_ch: int, stride: int = 1, bias: bool = True,
            init_scale: float = 1.) -> jax.Array:
  """1x1 convolution with DDPM initialisation, created in the caller's scope. NHWC."""
  return nn.Conv(out_ch, (1, 1), strides=(stride, stride), padding='SAME', use_bias=bias,
                 kernel_init=default_init(init_scale), bias_init=nn.initializers.zeros)(x)


def conv3x3(x: jax.Array, out_ch: int, stride: int = 1, bias: bool = True,
            init_scale: float = 1.) -> jax.Array:
  """3x3 'SAME' convolution with DDPM initialisation, created in the caller's scope. NHWC."""
  return nn.Conv(out_ch, (3, 3), strides=(stride, stride), padding='SAME', use_bias=bias,
                 kernel_init=default_init(init_scale), bias_init=nn.initializers.zeros)(x)


def group_norm(num_channels: int) -> nn.GroupNorm:
  """GroupNorm with ``min(C / 4, 32)`` groups, the NCSN++ choice that also fits narrow layers."""
  return nn.GroupNorm(num_groups=min(num_channels // 4, 32))


def get_timestep_embedding(timesteps: jax.Array, embedding_dim: int,
                           max_positions: int = 10000) -> jax.Array:
  """Sinusoidal embedding of (possibly fractional) time steps (Vaswani et al. 2017; DDPM).

  ``emb[b] = [sin(t_b w_0), ..., sin(t_b w_{h-1}), cos(t_b w_0), ..., cos(t_b w_{h-1})]`` with
  ``h = embedding_dim // 2`` and ``w_j = max_positions^(-j / (h - 1))``; zero-padded to an odd
  ``embedding_dim``.

  Args:
    timesteps: ``(B,)``.
  Returns:
    ``(B, embedding_dim)`` float32.
  """
  if timesteps.ndim != 1:
    raise ValueError(f'timesteps must have shape (B,); got {timesteps.shape}.')
  half = embedding_dim // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(max_positions) / (half - 1)))
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
  if embedding_dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def add_class_embedding(temb: jax.Array, class_labels: Optional[jax.Array],
                        num_classes: int) -> jax.Array:
  """The time embedding plus a learnt class embedding, for class-conditional networks that
  classifier-free guidance samples (Ho & Salimans 2022): ``temb + E[y]``.

  NCSN++ adds it to the time embedding or, as EDM's ``SongUNet`` (``map_label``), to the noise
  embedding before the dense layers (``ncsnpp.NCSNpp.class_embedding``). EDM's bias-carrying
  linear map of the one-hot label times ``sqrt(K)`` is such a table: row ``k`` is
  ``sqrt(K) W[:, k] + b``, and the all-zero label of its label dropout, the null row, is ``b``.

  Args:
    temb: ``(B, D)`` time (or noise) embedding.
    class_labels: ``(B,)`` int in ``[0, num_classes]``; ``num_classes`` is the null label
      ("no class"), which label dropout trains and the unconditional half of guidance uses.
    num_classes: number of real classes K; 0 returns ``temb`` unchanged (no parameters, so an
      unconditional network keeps the released tree).
  Returns:
    ``(B, D)``. The embedding table is the parameter ``ClassEmbed/embedding``, ``(K + 1, D)``.
  """
  if num_classes <= 0:
    return temb
  if class_labels is None or class_labels.shape != temb.shape[:1]:
    raise ValueError(f'A class-conditional network (num_classes={num_classes}) needs '
                     f'class_labels of shape {temb.shape[:1]}, one int per image in '
                     f'[0, {num_classes}] ({num_classes} is "no class"); got '
                     f'{None if class_labels is None else class_labels.shape}.')
  table = nn.Embed(num_classes + 1, temb.shape[-1], name='ClassEmbed',
                   embedding_init=nn.initializers.normal(stddev=1.))
  return temb + table(class_labels.astype(jnp.int32))


class NIN(nn.Module):
  """Network-in-network: a per-pixel dense layer ``y = x W + b`` on the last axis.

  Parameters: ``W`` ``(C_in, num_units)``, ``b`` ``(num_units,)``.
  """
  num_units: int
  init_scale: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.param('W', default_init(self.init_scale), (x.shape[-1], self.num_units))
    b = self.param('b', nn.initializers.zeros, (self.num_units,))
    return jnp.tensordot(x, w, axes=1) + b


def spatial_attention(h: jax.Array, q_layer: nn.Module, k_layer: nn.Module,
                      v_layer: nn.Module) -> jax.Array:
  """Single-head dot-product self-attention over the ``H W`` pixels of ``h`` ``(B, H, W, C)``.

  ``softmax_j(q_i . k_j / sqrt(C)) v_j`` for every pixel ``i``; returns ``(B, H, W, C)``.
  """
  b, height, width, c = h.shape
  q, k, v = q_layer(h), k_layer(h), v_layer(h)
  logits = jnp.einsum('bhwc,bHWc->bhwHW', q, k) * (c ** -0.5)
  # The softmax in float32 whatever the compute dtype: bfloat16 logits lose the small weights.
  weights = jax.nn.softmax(logits.reshape(b, height, width, height * width).astype(jnp.float32),
                           axis=-1).astype(v.dtype)
  return jnp.einsum('bhwHW,bHWc->bhwc', weights.reshape(logits.shape), v)


class AttnBlock(nn.Module):
  """DDPM's self-attention block ``x + NIN(attention(GroupNorm(x)))``; last NIN starts at 0.

  Parameters: ``GroupNorm_0``, ``NIN_0..2`` (q, k, v), ``NIN_3`` (output).
  """
  num_groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    h = nn.GroupNorm(num_groups=self.num_groups)(x)
    h = spatial_attention(h, NIN(c), NIN(c), NIN(c))
    return x + NIN(c, init_scale=0.)(h)


class Upsample(nn.Module):
  """Nearest-neighbour 2x upsampling, then (``with_conv``) a 3x3 convolution: ``Conv_0``."""
  with_conv: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    x = jax.image.resize(x, (b, 2 * h, 2 * w, c), 'nearest')
    return conv3x3(x, c) if self.with_conv else x


class Downsample(nn.Module):
  """2x downsampling: a stride-2 3x3 convolution (``Conv_0``) or 2x2 average pooling."""
  with_conv: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.with_conv:
      return conv3x3(x, x.shape[-1], stride=2)
    return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding='SAME')


class ResnetBlockDDPM(nn.Module):
  """DDPM's residual block with a time-embedding bias (Ho et al. 2020, app. B).

  ``h = conv(act(GN(x))) + Dense(act(temb)); h = conv0(dropout(act(GN(h)))); x' = x + h``, where
  ``conv0`` starts at zero and the shortcut is ``NIN_0`` (or a 3x3 conv) when channels change.

  Parameters: ``GroupNorm_0``, ``Conv_0``, ``Dense_0`` (with ``temb``), ``GroupNorm_1``,
  ``Conv_1``, and ``NIN_0`` / ``Conv_2`` for the shortcut.
  """
  act: Activation
  out_ch: Optional[int] = None
  conv_shortcut: bool = False
  dropout: float = 0.1
  num_groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array, temb: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    c = x.shape[-1]
    out_ch = self.out_ch or c
    h = self.act(nn.GroupNorm(num_groups=self.num_groups)(x))
    h = conv3x3(h, out_ch)
    if temb is not None:
      h = h + nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
    h = self.act(nn.GroupNorm(num_groups=self.num_groups)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=0.)
    if c != out_ch:
      x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
    return x + h


def residual_sum(x: jax.Array, h: jax.Array, skip_rescale: bool) -> jax.Array:
  """``x + h``, divided by ``sqrt(2)`` with ``skip_rescale`` to keep the variance constant."""
  # A Python float (weakly typed): a numpy scalar would promote bfloat16 activations to float32.
  return (x + h) / math.sqrt(2.) if skip_rescale else x + h

