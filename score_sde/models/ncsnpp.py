"""NCSN++ and DDPM++ (Song et al. 2021, sec. 4.4 and app. H): one U-Net family, model 'ncsnpp'.

The paper's two CIFAR-10 architectures are settings of this module:

* NCSN++ (VE): ``resblock_type='biggan'``, ``fir=True``, ``progressive_input='residual'``,
  ``embedding_type='fourier'`` (noise level ``sigma`` embedded as ``log sigma``),
  ``scale_by_sigma=True``;
* DDPM++ (VP / sub-VP): ``resblock_type='biggan'``, ``fir=False``, no progressive growing,
  ``embedding_type='positional'`` (time label ``999 t``), ``scale_by_sigma=False``;

with 4 (or 8, "deep") residual blocks per resolution, attention at 16x16, skip rescaling by
``1/sqrt(2)`` and zero-initialised residual branches (``init_scale=0``).

EDM's ``SongUNet`` (Karras et al. 2022, NVlabs/edm ``training/networks.py``), its DDPM++ and
NCSN++, computes the same function for ``resblock_type='biggan'``, ``skip_rescale``,
``progressive='none'`` and ``progressive_input`` 'none' (its encoder 'standard') or 'residual'
(FIR ``fir_kernel=(1, 3, 3, 1)``), with two settings of its own: ``embed_log_sigma=False``
(the Fourier embedding reads the label itself, EDM's ``c_noise``, already a log) and
``class_embedding='noise'`` (the class embedding is added to the noise embedding before the two
dense layers, EDM's ``map_label``). ``conversion.edm_checkpoints`` maps its parameters
(docs/edm.md).

The module reproduces the released score_sde code operation by operation, and its parameter tree
(names, nesting, shapes, HWIO kernels) is that of the released checkpoints' ``params_ema``:
``GaussianFourierProjection_0/W``, ``Dense_0``, ``Dense_1``, ``Conv_0``,
``ResnetBlockBigGANpp_<i>``, ``AttnBlockpp_<i>``, ``Downsample_<i>/Conv2d_0``, ``Combine_<i>``,
..., ``GroupNorm_0``, ``Conv_1``.
Submodules are auto-named in creation order, so the order of the code below is part of the format.
"""
from typing import List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.models import layerspp
from score_sde.models.layers import (add_class_embedding, conv3x3, default_init, get_act,
                                     get_timestep_embedding, group_norm, rematerialized,
                                     residual_sum)
from score_sde.models.utils import (check_image_size, check_model_inputs, class_count, get_sigmas,
                                    MODELS, unet_problems)

# The module's string fields (model.<field> of the config) -> the values it branches on.
CHOICES = {
    'resblock_type': ('ddpm', 'biggan'),
    'progressive': ('none', 'output_skip', 'residual'),
    'progressive_input': ('none', 'input_skip', 'residual'),
    'progressive_combine': ('sum', 'cat'),
    'embedding_type': ('fourier', 'positional'),
    'class_embedding': ('time', 'noise'),
}
# model.attention_type: DDPM's self-attention, the one kind the reference implements.
ATTENTION_TYPES = ('ddpm',)


def _check_choice(field: str, value: str) -> str:
  if value not in CHOICES[field]:
    raise ValueError(f'model.{field}={value!r} is not one of {CHOICES[field]}.')
  return value


@MODELS.register('ncsnpp')
class NCSNpp(nn.Module):
  """The NCSN++ / DDPM++ score network ``s(x, t)``.

  Call as ``model.apply({'params': p}, x, time_cond, train=False, rngs={'dropout': key})``.

  Args (of ``__call__``):
    x: ``(B, H, W, C)`` float32 images, in [0, 1] (mapped to [-1, 1] first) or, with
      ``centered``, already in [-1, 1]. ``H = W`` divisible by ``2^(len(ch_mult) - 1)``.
    time_cond: ``(B,)`` float: the noise level ``sigma`` for ``embedding_type='fourier'`` (any
      real label without ``embed_log_sigma``, e.g. EDM's ``c_noise``), or a time step label
      (in ``[0, num_scales - 1]`` for ``scale_by_sigma``) for ``'positional'``.
    train: enables dropout (then an rng stream named 'dropout' is needed).
    class_labels: ``(B,)`` int in ``[0, num_classes]`` for a class-conditional network
      (``num_classes > 0``; ``num_classes`` itself is the null label); else unused.
  Returns:
    ``(B, H, W, C)`` float32; divided by ``sigma`` when ``scale_by_sigma`` (for positional labels
    ``sigma`` is the label's entry of the geometric SMLD ladder from ``sigma_max`` down to
    ``sigma_min``).
  """
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  resblock_type: str = 'biggan'
  progressive: str = 'none'
  progressive_input: str = 'residual'
  progressive_combine: str = 'sum'
  init_scale: float = 0.
  embedding_type: str = 'fourier'
  fourier_scale: float = 16.
  embed_log_sigma: bool = True  # Fourier features of log(time_cond) (True) or of time_cond.
  nonlinearity: str = 'swish'
  scale_by_sigma: bool = True
  centered: bool = False
  sigma_min: float = 0.01
  sigma_max: float = 50.
  num_scales: int = 1000
  num_classes: int = 0  # > 0: class-conditional (layers.add_class_embedding).
  # Where the class embedding is added: 'time' after the two dense layers, 'noise' before them.
  class_embedding: str = 'time'
  remat: bool = False  # Rematerialise the residual blocks (layers.rematerialized).

  @classmethod
  def from_config(cls, config) -> 'NCSNpp':
    """The module described by ``config.model`` (and ``config.data.centered``).

    Raises:
      ValueError: for options the architecture does not have, for Fourier embeddings with
        discrete-time training (they embed a continuous ``sigma``), or for an image size the
        U-Net cannot halve ``len(ch_mult) - 1`` times.
    """
    m = config.model
    if m.get('normalization', 'GroupNorm') != 'GroupNorm':
      raise ValueError(f"ncsnpp supports only model.normalization='GroupNorm'; "
                       f'got {m.normalization!r}.')
    if m.get('attention_type', 'ddpm') not in ATTENTION_TYPES:
      raise ValueError(f'ncsnpp supports model.attention_type in {ATTENTION_TYPES}; '
                       f'got {m.attention_type!r}.')
    if m.get('conv_size', 3) != 3:
      raise ValueError(f'ncsnpp supports only model.conv_size=3; got {m.conv_size}.')
    if m.embedding_type == 'fourier' and not config.training.continuous:
      raise ValueError("model.embedding_type='fourier' embeds a continuous noise level; set "
                       "training.continuous=True or use embedding_type='positional'.")
    check_image_size(config.data.image_size, len(m.ch_mult))
    return cls(
        nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
        attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
        resamp_with_conv=m.resamp_with_conv, conditional=m.conditional, fir=m.fir,
        fir_kernel=tuple(m.fir_kernel), skip_rescale=m.skip_rescale,
        resblock_type=_check_choice('resblock_type', m.resblock_type),
        progressive=_check_choice('progressive', m.progressive),
        progressive_input=_check_choice('progressive_input', m.progressive_input),
        progressive_combine=_check_choice('progressive_combine', m.progressive_combine),
        init_scale=m.init_scale,
        embedding_type=_check_choice('embedding_type', m.embedding_type),
        fourier_scale=m.fourier_scale, embed_log_sigma=bool(m.embed_log_sigma),
        nonlinearity=m.nonlinearity,
        scale_by_sigma=m.scale_by_sigma, centered=config.data.centered, sigma_min=m.sigma_min,
        sigma_max=m.sigma_max, num_scales=m.num_scales,
        num_classes=class_count(config),
        class_embedding=_check_choice('class_embedding', m.class_embedding),
        remat=bool(m.get('remat', False)))

  @classmethod
  def config_problems(cls, config) -> List[Tuple[str, str]]:
    """What ``config`` asks of the network that it does not have: ``models.utils.unet_problems``."""
    return unet_problems(config)

  # Factories for the repeated blocks; each call creates (and so auto-names) a new submodule.
  def _resblock(self, **kwargs) -> nn.Module:
    common = dict(act=get_act(self.nonlinearity), dropout=self.dropout,
                  init_scale=self.init_scale, skip_rescale=self.skip_rescale)
    if self.resblock_type == 'ddpm':
      block, extra = layerspp.ResnetBlockDDPMpp, {}
    else:
      block, extra = layerspp.ResnetBlockBigGANpp, dict(fir=self.fir, fir_kernel=self.fir_kernel)
    return (rematerialized(block) if self.remat else block)(**extra, **common, **kwargs)

  def _attn(self) -> nn.Module:
    return layerspp.AttnBlockpp(init_scale=self.init_scale, skip_rescale=self.skip_rescale)

  def _embed(self, time_cond: jax.Array, class_labels: Optional[jax.Array], dtype
             ) -> Tuple[Optional[jax.Array], jax.Array]:
    """Time (and class) embedding ``(B, 4 nf)`` in ``dtype`` (None if unconditional), computed
    in float32, and the per-example sigma ``(B,)`` float32.

    The noise embedding (``2 nf`` Fourier features, or ``nf`` sinusoids) passes through
    ``Dense_0``, the activation and ``Dense_1``; the class embedding is added to its output
    (``class_embedding='time'``) or to the noise embedding (``'noise'``).
    """
    if self.embedding_type == 'fourier':
      sigmas = time_cond
      temb = layerspp.GaussianFourierProjection(embedding_size=self.nf, scale=self.fourier_scale)(
          jnp.log(sigmas) if self.embed_log_sigma else time_cond)
    else:
      ladder = get_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
      sigmas = ladder[time_cond.astype(jnp.int32)]
      temb = get_timestep_embedding(time_cond, self.nf)
    if self.class_embedding == 'noise':
      temb = add_class_embedding(temb, class_labels, self.num_classes)
    if not self.conditional:
      return None, sigmas
    act = get_act(self.nonlinearity)
    temb = nn.Dense(self.nf * 4, kernel_init=default_init())(temb)
    temb = nn.Dense(self.nf * 4, kernel_init=default_init())(act(temb))
    if self.class_embedding == 'time':
      temb = add_class_embedding(temb, class_labels, self.num_classes)
    return temb.astype(dtype), sigmas

  def _encode(self, x: jax.Array, temb, train: bool) -> list:
    """The downsampling path; returns every skip activation, the last being the bottleneck input.

    ``progressive_input`` feeds a pyramid of downsampled inputs into every level: 'input_skip'
    combines it with the features, 'residual' adds the features into the pyramid.
    """
    pyramid = x
    hs = [conv3x3(x, self.nf)]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = self._resblock(out_ch=self.nf * mult)(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = self._attn()(h)
        hs.append(h)
      if level == len(self.ch_mult) - 1:
        break
      if self.resblock_type == 'ddpm':
        h = layerspp.Downsample(with_conv=self.resamp_with_conv, fir=self.fir,
                                fir_kernel=self.fir_kernel)(hs[-1])
      else:
        h = self._resblock(down=True)(hs[-1], temb, train)
      if self.progressive_input == 'input_skip':
        pyramid = layerspp.Downsample(fir=self.fir, fir_kernel=self.fir_kernel)(pyramid)
        h = layerspp.Combine(method=self.progressive_combine)(pyramid, h)
      elif self.progressive_input == 'residual':
        pyramid = layerspp.Downsample(out_ch=h.shape[-1], with_conv=True, fir=self.fir,
                                      fir_kernel=self.fir_kernel)(pyramid)
        pyramid = h = residual_sum(pyramid, h, self.skip_rescale)
      hs.append(h)
    return hs

  def _progressive_output(self, h, pyramid, out_channels: int, first: bool):
    """One level of the output pyramid; returns ``(h, pyramid)``.

    'output_skip' sums upsampled per-level RGB predictions; 'residual' adds the features into an
    upsampled feature pyramid, which then replaces them.
    """
    act = get_act(self.nonlinearity)
    c = h.shape[-1]
    if self.progressive == 'output_skip':
      out = conv3x3(act(group_norm(c)(h)), out_channels, init_scale=self.init_scale)
      if first:
        return h, out
      pyramid = layerspp.Upsample(fir=self.fir, fir_kernel=self.fir_kernel)(pyramid)
      return h, pyramid + out
    if first:
      # Unlike output_skip, this projection keeps the default init scale, as released.
      return h, conv3x3(act(group_norm(c)(h)), c)
    pyramid = layerspp.Upsample(out_ch=c, with_conv=True, fir=self.fir,
                                fir_kernel=self.fir_kernel)(pyramid)
    pyramid = residual_sum(pyramid, h, self.skip_rescale)
    return pyramid, pyramid

  def _decode(self, h: jax.Array, hs: list, temb, train: bool, out_channels: int):
    """The upsampling path; consumes ``hs`` and returns the pre-output features or pyramid."""
    pyramid = None
    for level in reversed(range(len(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = self._resblock(out_ch=self.nf * self.ch_mult[level])(
            jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = self._attn()(h)
      if self.progressive != 'none':
        first = level == len(self.ch_mult) - 1
        h, pyramid = self._progressive_output(h, pyramid, out_channels, first)
      if level != 0:
        if self.resblock_type == 'ddpm':
          h = layerspp.Upsample(with_conv=self.resamp_with_conv, fir=self.fir,
                                fir_kernel=self.fir_kernel)(h)
        else:
          h = self._resblock(up=True)(h, temb, train)
    return pyramid if self.progressive == 'output_skip' else h

  @nn.compact
  def __call__(self, x: jax.Array, time_cond: jax.Array, train: bool = False,
               class_labels: Optional[jax.Array] = None) -> jax.Array:
    for field in CHOICES:
      _check_choice(field, getattr(self, field))
    check_model_inputs(x, time_cond, len(self.ch_mult))
    temb, sigmas = self._embed(time_cond, class_labels, x.dtype)
    if not self.centered:
      x = 2 * x - 1.  # Data in [0, 1]; the network works on [-1, 1].
    hs = self._encode(x, temb, train)
    h = hs[-1]
    h = self._resblock()(h, temb, train)
    h = self._attn()(h)
    h = self._resblock()(h, temb, train)
    h = self._decode(h, hs, temb, train, x.shape[-1])
    if self.progressive != 'output_skip':
      act = get_act(self.nonlinearity)
      h = conv3x3(act(group_norm(h.shape[-1])(h)), x.shape[-1], init_scale=self.init_scale)
    if self.scale_by_sigma:
      h = h / sigmas[:, None, None, None]
    return h

