"""NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020): RefineNet score networks of SMLD.

Models 'ncsn', 'ncsnv2_64', 'ncsnv2_128' and 'ncsnv2_256' estimate ``s(x, sigma_i)`` for the
noise levels of the geometric, descending SMLD ladder ``sigma_0 = sigma_max > ... >
sigma_{L-1} = sigma_min`` (``models.utils.get_sigmas``); the label is the index ``i``, which is
what the SMLD loss trains on and what ``get_score_fn(..., continuous=False)`` passes for a VE SDE.

Both are a ResNet backbone (``refinenet.ResidualBlock``) whose deeper levels are either halved
(``ConvMeanPool``) or dilated, followed by a RefineNet decoder from the deepest level back up
(``refinenet.RefineBlock``):

* NCSN (v1): conditioned on ``i`` through conditional InstanceNorm++ in every block
  (``normalization.ConditionalInstanceNorm2dPlus``, one table row per noise level); its paper
  trains it without ``scale_by_sigma``.
* NCSNv2: no conditioning inside the network; the output is divided by ``sigma_i``
  (``scale_by_sigma=True``, technique 3 of the NCSNv2 paper), so the network is
  ``s(x, sigma) = f(x) / sigma``. The reference picks 'ncsnv2_64' below 96 px (CIFAR-10,
  CelebA 64), '_128' (one more downsampling level) up to 128 px and '_256' (two more) up to
  256 px.

Layout per model (``levels``: ``(channel multiplier, dilation)`` of each level after the first,
dilation 1 meaning downsampling; ``refine_mults``: channel multipliers of the RefineBlocks from
the deepest level up):

    ncsn, ncsnv2_64  levels (2, 1), (2, 2), (2, 4)                   refine (2, 2, 2, 1)
    ncsnv2_128       levels (2, 1), (2, 1), (4, 2), (4, 4)           refine (4, 2, 2, 1, 1)
    ncsnv2_256       levels (2, 1), (2, 1), (2, 1), (4, 2), (4, 4)   refine (4, 2, 2, 2, 1, 1)

The parameter trees are those of the released score_sde code: ``Conv_0``,
``[Conditional]ResidualBlock_<i>``, ``[Cond]RefineBlock_<i>``, the final normalisation
(``InstanceNorm2dPlus_0``, ...) and ``Conv_1``.
"""
from typing import List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.models import normalization as norms, refinenet
from score_sde.models.layers import get_act
from score_sde.models.utils import get_sigmas, models_with, MODELS, sde_class


def _check_inputs(x: jax.Array, labels: jax.Array, factor: int) -> None:
  if x.ndim != 4:
    raise ValueError(f'Model input must be (B, H, W, C) images; got shape {x.shape}.')
  if labels.shape != x.shape[:1]:
    raise ValueError(f'labels must have shape (B,) = {x.shape[:1]}, one noise-level index per '
                     f'image; got {labels.shape}.')
  if any(size % factor for size in x.shape[1:3]):
    raise ValueError(f'Image size {x.shape[1:3]} must be a multiple of {factor} (the network '
                     f'halves it {factor.bit_length() - 1} time(s)).')


class _RefineNetScore(nn.Module):
  """Shared body of the NCSN models; subclasses fix the layout and the conditioning.

  Call as ``model.apply({'params': p}, x, labels, train=False)``.

  Args (of ``__call__``):
    x: ``(B, H, W, C)`` float32 in [0, 1] (mapped to [-1, 1] first) or, with ``centered``, in
      [-1, 1]. ``H, W`` divisible by ``2^(number of downsampling levels)``.
    labels: ``(B,)`` indices ``i`` into the descending ladder (0 = ``sigma_max``); ints, or
      floats holding ints.
    train: unused (no dropout); kept for the common model signature.
  Returns:
    ``(B, H, W, C)`` float32; divided by ``sigma_i`` when ``scale_by_sigma``.
  """
  nf: int = 128
  normalization: str = 'InstanceNorm++'
  nonlinearity: str = 'elu'
  interpolation: str = 'bilinear'
  scale_by_sigma: bool = True
  centered: bool = False
  sigma_min: float = 0.01
  sigma_max: float = 50.
  num_scales: int = 232

  conditional = False  # Noise-conditional normalisations (NCSN) or none (NCSNv2).
  levels: Tuple[Tuple[int, int], ...] = ((2, 1), (2, 2), (2, 4))
  refine_mults: Tuple[int, ...] = (2, 2, 2, 1)

  @classmethod
  def from_config(cls, config) -> '_RefineNetScore':
    """The module described by ``config.model`` (and ``config.data.centered``).

    Raises:
      ValueError: for continuous-time training (the networks take a noise-level index, not
        ``sigma(t)``), a normalisation the model lacks, class conditioning, or an image size the
        backbone cannot halve.
    """
    m, name = config.model, config.model.name
    if config.training.continuous:
      raise ValueError(f'{name} is conditioned on the index of an SMLD noise level; set '
                       'training.continuous=False (the SMLD loss) and training.sde=vesde.')
    if m.get('num_classes', 0):
      raise ValueError(f'{name} is not class-conditional; set model.num_classes=0.')
    known = (norms.CONDITIONAL_NORMALIZATIONS if cls.conditional
             else norms.NORMALIZATIONS)
    if m.normalization not in known:
      raise ValueError(f'{name} supports model.normalization in {", ".join(known)}; '
                       f'got {m.normalization!r}.')
    if m.interpolation not in refinenet.INTERPOLATIONS:
      raise ValueError(f'model.interpolation={m.interpolation!r} is not one of '
                       f'{sorted(refinenet.INTERPOLATIONS)}.')
    factor = cls.downsampling_factor()
    if config.data.image_size % factor:
      raise ValueError(f'{name} halves the image {factor.bit_length() - 1} time(s); '
                       f'data.image_size={config.data.image_size} must be a multiple of {factor}.')
    return cls(nf=m.nf, normalization=m.normalization, nonlinearity=m.nonlinearity,
               interpolation=m.interpolation, scale_by_sigma=m.scale_by_sigma,
               centered=config.data.centered, sigma_min=m.sigma_min, sigma_max=m.sigma_max,
               num_scales=m.num_scales)

  @classmethod
  def config_problems(cls, config) -> List[Tuple[str, str]]:
    """What ``config`` asks of the network that it does not have, as ``(field, fix)`` pairs.

    The label is the index of a level of SMLD's ladder, which only discrete VE training (the
    SMLD loss) and the discrete VE score pass. The normalisations are the noise-conditional ones
    (NCSN) or the unconditional ones (NCSNv2), GroupNorm's 32 groups dividing the channels. There
    is no rematerialisation and no class conditioning. The layout is the class's own, so the
    U-Net fields (``model.ch_mult``, ...) are not read.
    """
    m, t, name = config.model, config.training, config.model.name
    problems = []
    sde = sde_class(config)
    if sde is None or not issubclass(sde, sde_lib.VESDE):
      problems.append(('training.sde', f'{name} is an SMLD network conditioned on VE noise '
                                       "levels; set it to 'vesde'"))
    if t.continuous:
      problems.append(('training.continuous', f'{name} takes the index of a noise level, not the '
                                              'sigma(t) of continuous training; set it to False '
                                              '(the SMLD loss)'))
    known = norms.CONDITIONAL_NORMALIZATIONS if cls.conditional else norms.NORMALIZATIONS
    if m.normalization in norms.NORMALIZATIONS and m.normalization not in known:
      problems.append(('model.normalization',
                       f'{name} supports {", ".join(repr(k) for k in known)}'))
    if m.normalization == 'GroupNorm' and not (isinstance(m.nf, int) and m.nf % 32 == 0):
      problems.append(('model.nf', 'GroupNorm has 32 groups, so the channel counts (multiples of '
                                   'nf) must be multiples of 32'))
    if m.remat:
      problems.append(('model.remat', f'rematerialisation is implemented for '
                                      f'{" and ".join(models_with("remat"))}, not {name!r}; set '
                                      'model.remat=False'))
    if m.num_classes:
      problems.append(('model.num_classes', f'class-conditional networks are '
                                            f'{" and ".join(models_with("num_classes"))}, not '
                                            f'{name!r}; set model.num_classes=0'))
    return problems

  @classmethod
  def downsampling_factor(cls) -> int:
    """``2^k`` for the ``k`` levels that halve the resolution (the others are dilated)."""
    return 2 ** sum(1 for _, dilation in cls.levels if dilation == 1)

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
    del train
    _check_inputs(x, labels, self.downsampling_factor())
    labels = labels.astype(jnp.int32)
    act = get_act(self.nonlinearity)
    norm = norms.get_normalization(self.normalization, self.conditional, self.num_scales)

    # Every helper call creates (and so auto-names) one block; their order is the tree's.
    def residual(h, channels, resample=None, dilation=1):
      if self.conditional:
        return refinenet.ConditionalResidualBlock(channels, norm, resample, act, dilation)(
            h, labels)
      return refinenet.ResidualBlock(channels, norm, resample, act, dilation)(h)

    def refine(xs, channels, start, end):
      shape = xs[0].shape[1:3]
      if self.conditional:
        return refinenet.CondRefineBlock(shape, channels, norm, act, self.interpolation,
                                         start, end)(xs, labels)
      return refinenet.RefineBlock(shape, channels, act, self.interpolation, start, end)(xs)

    nf = self.nf
    h = x if self.centered else 2. * x - 1.  # The network works on [-1, 1].
    h = refinenet.ncsn_conv(h, nf)
    h = residual(h, nf)
    skips = [residual(h, nf)]
    for mult, dilation in self.levels:
      h = residual(skips[-1], mult * nf, 'down', dilation)
      skips.append(residual(h, mult * nf, None, dilation))

    h = None
    for depth, (skip, mult) in enumerate(zip(reversed(skips), self.refine_mults)):
      xs = [skip] if h is None else [skip, h]
      h = refine(xs, mult * nf, start=depth == 0, end=depth == len(skips) - 1)

    h = norm()(h, labels) if self.conditional else norm()(h)
    h = refinenet.ncsn_conv(act(h), x.shape[-1])
    if self.scale_by_sigma:
      sigmas = get_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
      h = h / sigmas[labels][:, None, None, None]
    return h


@MODELS.register('ncsn')
class NCSN(_RefineNetScore):
  """NCSN (Song & Ermon 2019): the noise-conditional RefineNet, conditional InstanceNorm++."""
  conditional = True
  scale_by_sigma: bool = False
  sigma_max: float = 1.
  num_scales: int = 10


@MODELS.register('ncsnv2_64')
class NCSNv2(_RefineNetScore):
  """NCSNv2 (Song & Ermon 2020) for images below 96 px; output divided by ``sigma_i``."""


@MODELS.register('ncsnv2_128')
class NCSNv2_128(_RefineNetScore):  # pylint: disable=invalid-name
  """NCSNv2 for 96-128 px images: one more downsampling level, 4 nf at the two deepest."""
  levels: Tuple[Tuple[int, int], ...] = ((2, 1), (2, 1), (4, 2), (4, 4))
  refine_mults: Tuple[int, ...] = (4, 2, 2, 1, 1)


@MODELS.register('ncsnv2_256')
class NCSNv2_256(_RefineNetScore):  # pylint: disable=invalid-name
  """NCSNv2 for 256 px images: two more downsampling levels than ``NCSNv2``."""
  levels: Tuple[Tuple[int, int], ...] = ((2, 1), (2, 1), (2, 1), (4, 2), (4, 4))
  refine_mults: Tuple[int, ...] = (4, 2, 2, 2, 1, 1)


__all__ = ['NCSN', 'NCSNv2', 'NCSNv2_128', 'NCSNv2_256']
