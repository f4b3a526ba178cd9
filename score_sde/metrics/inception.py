"""The Inception-v3 network of the standard FID, in Flax linen (NHWC, inference only).

This is the TF 2015-12-05 Inception graph that TTUR's FID, TF-GAN and pytorch-fid all evaluate,
with the quirks that distinguish it from torchvision's Inception-v3 (Szegedy et al. 2016):

* the 3x3 average pools inside the A, C and first E blocks ignore padded zeros
  (``count_include_pad=False``, TensorFlow's SAME average pool);
* the last E block (``Mixed_7c``) pools its side branch with a 3x3 *max* pool;
* 1008 output classes, no auxiliary head;
* every convolution is followed by a frozen BatchNorm with epsilon 1e-3 and a ReLU.

The BatchNorm is folded into a per-channel affine map after the convolution,
``relu(conv(x, W) * scale + bias)`` with ``scale = gamma / sqrt(var + 1e-3)`` and
``bias = beta - mean * scale`` (see ``inception_weights``), so the parameters are one plain
``params`` collection. Module and parameter names follow pytorch-fid's state dict
(``Mixed_6b/branch7x7_2/kernel`` for ``Mixed_6b.branch7x7_2.conv.weight``).

Images go through ``preprocess`` (grey -> RGB, bilinear resize to 299x299 with half-pixel centres
and no antialiasing, as ``torch.nn.functional.interpolate(align_corners=False)``; [0, 1] -> [-1, 1])
and then the network, whose outputs are ``pool_3`` (B, 2048), the final spatial average that FID
and KID use, and ``logits`` (B, 1008) for the Inception Score.
"""
from typing import Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from score_sde.common import parallel

INPUT_SIZE = 299
MIN_INPUT_SIZE = 75  # Smallest input for which every VALID convolution and pool has an output.
NUM_CLASSES = 1008
POOL_DIM = 2048
BN_EPSILON = 1e-3  # Of every (frozen) BatchNorm of the graph; folded in by inception_weights.
HIGHEST = jax.lax.Precision.HIGHEST

Padding = Tuple[Tuple[int, int], Tuple[int, int]]


class ConvBN(nn.Module):
  """Convolution without bias, folded frozen BatchNorm, ReLU: ``relu(conv(x) * scale + bias)``.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: one stride for both spatial axes.
    padding: explicit ((top, bottom), (left, right)) zero padding, as the torch port pads.
    precision: matmul precision; HIGHEST keeps GPUs off TF32 so features match a float32 reference.
  """
  features: int
  kernel_size: Tuple[int, int] = (1, 1)
  strides: int = 1
  padding: Padding = ((0, 0), (0, 0))
  precision: jax.lax.Precision = HIGHEST

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.he_normal(),
                        (*self.kernel_size, x.shape[-1], self.features))
    scale = self.param('scale', nn.initializers.ones_init(), (self.features,))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    y = jax.lax.conv_general_dilated(
        x, kernel, (self.strides, self.strides), self.padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=self.precision)
    return nn.relu(y * scale + bias)


def _pad(kh: int, kw: int) -> Padding:
  """'Same' padding of an odd stride-1 kernel."""
  return ((kh // 2, kh // 2), (kw // 2, kw // 2))


def _avg_pool_same(x):
  # TensorFlow's SAME average pool divides by the number of real (unpadded) inputs.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_same(x):
  # Pads with -inf, as TensorFlow's SAME max pool: a zero pad would win over negative inputs.
  return nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))


def _max_pool_valid(x, stride: int = 2):
  return nn.max_pool(x, (3, 3), (stride, stride), 'VALID')


class InceptionA(nn.Module):
  """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1; 224 + pool_features channels."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = ConvBN(64, name='branch1x1')(x)
    b5 = ConvBN(48, name='branch5x5_1')(x)
    b5 = ConvBN(64, (5, 5), padding=_pad(5, 5), name='branch5x5_2')(b5)
    b3 = ConvBN(64, name='branch3x3dbl_1')(x)
    b3 = ConvBN(96, (3, 3), padding=_pad(3, 3), name='branch3x3dbl_2')(b3)
    b3 = ConvBN(96, (3, 3), padding=_pad(3, 3), name='branch3x3dbl_3')(b3)
    bp = ConvBN(self.pool_features, name='branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(384, (3, 3), strides=2, name='branch3x3')(x)
    bd = ConvBN(64, name='branch3x3dbl_1')(x)
    bd = ConvBN(96, (3, 3), padding=_pad(3, 3), name='branch3x3dbl_2')(bd)
    bd = ConvBN(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_valid(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convolutions (1x7 then 7x1); 768 channels out."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = ConvBN(192, name='branch1x1')(x)
    b7 = ConvBN(c7, name='branch7x7_1')(x)
    b7 = ConvBN(c7, (1, 7), padding=_pad(1, 7), name='branch7x7_2')(b7)
    b7 = ConvBN(192, (7, 1), padding=_pad(7, 1), name='branch7x7_3')(b7)
    bd = ConvBN(c7, name='branch7x7dbl_1')(x)
    bd = ConvBN(c7, (7, 1), padding=_pad(7, 1), name='branch7x7dbl_2')(bd)
    bd = ConvBN(c7, (1, 7), padding=_pad(1, 7), name='branch7x7dbl_3')(bd)
    bd = ConvBN(c7, (7, 1), padding=_pad(7, 1), name='branch7x7dbl_4')(bd)
    bd = ConvBN(192, (1, 7), padding=_pad(1, 7), name='branch7x7dbl_5')(bd)
    bp = ConvBN(192, name='branch_pool')(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(192, name='branch3x3_1')(x)
    b3 = ConvBN(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = ConvBN(192, name='branch7x7x3_1')(x)
    b7 = ConvBN(192, (1, 7), padding=_pad(1, 7), name='branch7x7x3_2')(b7)
    b7 = ConvBN(192, (7, 1), padding=_pad(7, 1), name='branch7x7x3_3')(b7)
    b7 = ConvBN(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3 / 3x1 heads; 2048 channels out.

  Attributes:
    pool: 'avg' (``Mixed_7b``) or 'max' (``Mixed_7c``: the FID graph's max pool).
  """
  pool: str = 'avg'

  @nn.compact
  def __call__(self, x):
    b1 = ConvBN(320, name='branch1x1')(x)
    b3 = ConvBN(384, name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        ConvBN(384, (1, 3), padding=_pad(1, 3), name='branch3x3_2a')(b3),
        ConvBN(384, (3, 1), padding=_pad(3, 1), name='branch3x3_2b')(b3)], axis=-1)
    bd = ConvBN(448, name='branch3x3dbl_1')(x)
    bd = ConvBN(384, (3, 3), padding=_pad(3, 3), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        ConvBN(384, (1, 3), padding=_pad(1, 3), name='branch3x3dbl_3a')(bd),
        ConvBN(384, (3, 1), padding=_pad(3, 1), name='branch3x3dbl_3b')(bd)], axis=-1)
    if self.pool == 'avg':
      pooled = _avg_pool_same(x)
    elif self.pool == 'max':
      pooled = _max_pool_same(x)
    else:
      raise ValueError(f"InceptionE pool must be 'avg' or 'max'; got {self.pool!r}.")
    bp = ConvBN(192, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """Inception-v3 of the FID, taking preprocessed images.

  Call with x: (B, H, W, 3) float32 in [-1, 1], H, W >= 75 (299 for the standard statistics).
  Returns dict(pool_3=(B, 2048), logits=(B, 1008)), both float32.
  """

  @nn.compact
  def __call__(self, x) -> Dict[str, jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(f'FIDInceptionV3 takes (B, H, W, 3) with H, W >= {MIN_INPUT_SIZE}; got '
                       f'{x.shape}. Run images through inception.preprocess first.')
    x = ConvBN(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)
    x = ConvBN(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = ConvBN(64, (3, 3), padding=_pad(3, 3), name='Conv2d_2b_3x3')(x)
    x = _max_pool_valid(x)
    x = ConvBN(80, name='Conv2d_3b_1x1')(x)
    x = ConvBN(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_valid(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE('avg', name='Mixed_7b')(x)
    x = InceptionE('max', name='Mixed_7c')(x)
    pool_3 = x.mean(axis=(1, 2))
    logits = nn.Dense(NUM_CLASSES, precision=HIGHEST, name='fc')(pool_3)
    return {'pool_3': pool_3, 'logits': logits}


def preprocess(images, size: int = INPUT_SIZE) -> jax.Array:
  """Images in [0, 1] -> the network's input.

  Args:
    images: (B, H, W, C) float in [0, 1], C = 1 (grey, replicated to RGB) or 3.
    size: output height and width.
  Returns:
    (B, size, size, 3) float32 in [-1, 1]: bilinear resize with half-pixel centres, edge-clamped
    and without antialiasing (torch ``interpolate(mode='bilinear', align_corners=False)``, which
    pytorch-fid uses), then x -> 2 x - 1.
  """
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'Expected images (B, H, W, C) with C in {{1, 3}}; got {images.shape}.')
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  resized = jax.image.resize(images, (images.shape[0], size, size, 3), 'bilinear',
                             antialias=False)
  return 2. * resized - 1.


def init_random_params(seed: int = 0) -> dict:
  """Random parameters (He-normal kernels, unit scales, zero biases) as float32 numpy arrays.

  For tests and shape checks only, never for reported scores. Drawn with numpy from
  ``param_shapes()``: compiling ``model.init`` for this network takes far longer than this.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(2. / fan_in)).astype(np.float32)
    return np.full(leaf.shape, 1. if name == 'scale' else 0., np.float32)

  return jax.tree.map_with_path(draw, param_shapes())


def param_shapes() -> dict:
  """The parameter tree as ``jax.ShapeDtypeStruct``s, without computing anything."""
  x = jax.ShapeDtypeStruct((1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), x)['params']


def get_inception_fn(params, mesh: Optional[Mesh] = None, size: int = INPUT_SIZE
                     ) -> Callable[[jax.Array], Dict[str, jax.Array]]:
  """A compiled ``images -> dict(pool_3, logits)`` with the parameters bound.

  Preprocessing and the network are compiled separately, so inputs of several resolutions share
  one compilation of the (expensive) 299x299 network. The parameters are passed as an argument,
  not closed over, so they do not become constants folded into the program.

  Args:
    params: the ``params`` collection of ``FIDInceptionV3`` (see ``inception_weights``).
    mesh: when given, the batch is split over its ``'data'`` axis and the parameters replicated;
      the global batch must then be a multiple of the device count. On several hosts, pass a
      global ``jax.Array`` (``parallel.to_global``).
    size: the network's input resolution (299 for comparable statistics).
  Returns:
    fn(images) with images (B, H, W, C) float in [0, 1], C in {1, 3}, returning
    dict(pool_3=(B, 2048) float32, logits=(B, 1008) float32).
  """
  model = FIDInceptionV3()

  def apply(p, x):
    return model.apply({'params': p}, x)

  if mesh is None:
    prep, net = jax.jit(preprocess, static_argnums=1), jax.jit(apply)
    params = jax.device_put(params)  # Once, rather than a host copy on every call.
    in_sharding = None
  else:
    data, repl = parallel.data_sharding(mesh), parallel.replicated(mesh)
    prep = jax.jit(preprocess, static_argnums=1, in_shardings=data, out_shardings=data)
    net = jax.jit(apply, in_shardings=(repl, data), out_shardings=data)
    params = parallel.replicate(params, mesh)
    in_sharding = data

  def inception_fn(images) -> Dict[str, jax.Array]:
    if mesh is not None:
      parallel.check_divisible(images.shape[0], mesh, 'inception batch size')
      images = jax.device_put(images, in_sharding)  # No-op when already split this way.
    return net(params, prep(images, size))

  return inception_fn

