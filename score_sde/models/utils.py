"""Model registry, construction, initialisation, and the network -> score-function adapter.

``MODELS`` maps ``config.model.name`` to a linen module class with a ``from_config(config)``
constructor and a ``config_problems(config)`` classmethod (what the config asks of the network
that it does not have, as ``(field, fix)`` pairs that ``configs.validation`` words); importing
``score_sde.models`` fills it. ``get_score_fn`` turns a network into the ``score_fn(x, t)`` that
samplers and likelihoods take, through ``models.parameterization`` (time labels, and what the
output means: score, noise, clean image or velocity).
"""
import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_sde import sde_lib
from score_sde.common.registry import Registry
from score_sde.models import normalization
# The score conversion lives in models.parameterization; its names stay importable from here.
from score_sde.models.parameterization import (config_parameterization, ode_score_continuous,
                                              preconditioned_names, score_fn_from_model_fn)

MODELS = Registry('model')
# Noise-conditional classifiers p_t(y | x) for classifier guidance, named by config.classifier.name.
CLASSIFIERS = Registry('classifier')

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def get_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> jax.Array:
  """The SMLD noise ladder, geometric and DESCENDING: ``sigma_i = sigma_max (sigma_min /
  sigma_max)^(i / (num_scales - 1))``, shape ``(num_scales,)`` float32.

  Index 0 is the largest noise, matching the discrete VE time label ``round((T - t)(N - 1))``.
  """
  return jnp.exp(jnp.linspace(np.log(sigma_max), np.log(sigma_min), num_scales,
                              dtype=jnp.float32))


def check_image_size(image_size: int, num_resolutions: int) -> None:
  """Fails unless a U-Net with ``num_resolutions`` levels can halve ``image_size`` evenly."""
  factor = 2 ** (num_resolutions - 1)
  if image_size < factor or image_size % factor:
    raise ValueError(f'Image size {image_size} must be a multiple of {factor} = '
                     f'2^(len(ch_mult) - 1) for {num_resolutions} resolutions.')


def check_model_inputs(x: jax.Array, time_cond: jax.Array, num_resolutions: int) -> None:
  """Fails at trace time unless ``x`` is ``(B, H, W, C)`` and ``time_cond`` is ``(B,)``."""
  if x.ndim != 4:
    raise ValueError(f'Model input must be (B, H, W, C) images; got shape {x.shape}.')
  if time_cond.shape != x.shape[:1]:
    raise ValueError(f'time_cond must have shape (B,) = {x.shape[:1]}; got {time_cond.shape}. '
                     'Pass one time / noise level per image.')
  for size in x.shape[1:3]:
    check_image_size(size, num_resolutions)


def models_with(field: str) -> List[str]:
  """Registered model names whose module has the attribute ``field`` (``'remat'``,
  ``'num_classes'``): the networks that a ``config.model.<field>`` switch reaches."""
  return [name for name in MODELS
          if field in {f.name for f in dataclasses.fields(MODELS.get(name))}]


def sde_class(config: ml_collections.ConfigDict) -> Optional[type]:
  """The SDE class that ``config.training.sde`` names; None for an unregistered name."""
  name = config.training.sde
  return sde_lib.SDES.get(name) if name in sde_lib.SDES else None


def _preconditioned(config: ml_collections.ConfigDict) -> bool:
  """Whether ``model.parameterization`` is one of EDM's preconditionings
  (``parameterization.Preconditioned``), which label the network by ``c_noise(sigma)``."""
  return str(config.model.get('parameterization', 'auto')).lower() in preconditioned_names()


def unet_problems(config: ml_collections.ConfigDict) -> List[Tuple[str, str]]:
  """``config_problems`` of the U-Nets (NCSN++ / DDPM++, DDPM), as ``(field, fix)`` pairs.

  Their resolutions are ``data.image_size`` halved ``len(ch_mult) - 1`` times, and attention runs
  at some of them; the FIR kernel has positive taps. The time embedding matches what training
  passes: the Fourier embedding reads ``log sigma(t)``, which only continuous training passes,
  and continuous VE training passes ``sigma(t)``, which only it reads. A preconditioned
  parameterization passes EDM's ``c_noise`` instead, already a log (negative below
  ``sigma = 1``), which either embedding takes and the Fourier one reads as it is
  (``model.embed_log_sigma=False``). ``scale_by_sigma`` divides by the VE noise level (VP /
  sub-VP scores are divided by the marginal std when the score is formed). Normalisation is
  GroupNorm. The class embedding goes to the noise embedding only in a network that has that
  option (``class_embedding``).
  """
  m, problems = config.model, []
  ch_mult = tuple(m.ch_mult)
  ok_mult = bool(ch_mult) and all(isinstance(k, int) and k > 0 for k in ch_mult)
  if not ok_mult:
    problems.append(('model.ch_mult',
                     'use a non-empty tuple of positive integers, one per resolution'))
  size = config.data.image_size
  if ok_mult and isinstance(size, int) and size > 0:
    factor = 2 ** (len(ch_mult) - 1)
    if size % factor:
      problems.append(('model.ch_mult', f'{len(ch_mult)} resolutions halve data.image_size={size} '
                                        f'{len(ch_mult) - 1} times, which needs a multiple of '
                                        f'{factor}; use fewer entries or larger images'))
    else:
      reachable = [size // 2 ** i for i in range(len(ch_mult))]
      bad = [r for r in m.attn_resolutions if r not in reachable]
      if bad:
        problems.append(('model.attn_resolutions',
                         f'{bad} is never reached; the network runs at {reachable}'))
  if m.fir:
    kernel = tuple(m.fir_kernel)
    if not (kernel and all(k > 0 for k in kernel)):
      problems.append(('model.fir_kernel',
                       'use a non-empty sequence of positive taps, e.g. (1, 3, 3, 1)'))
  continuous, sde = config.training.continuous, sde_class(config)
  labelled_by_c_noise = _preconditioned(config)
  if m.embedding_type == 'fourier':
    if labelled_by_c_noise and m.embed_log_sigma:
      problems.append(('model.embed_log_sigma',
                       f'model.parameterization={m.parameterization!r} labels the network by '
                       "EDM's c_noise, already a log and negative below sigma = 1; set it to "
                       'False'))
    if not continuous:
      problems.append(('model.embedding_type', 'the Fourier embedding reads log sigma(t), which '
                                               "discrete training does not pass; use "
                                               "'positional' or training.continuous=True"))
    if not m.fourier_scale > 0:
      problems.append(('model.fourier_scale',
                       'use a positive scale of the random frequencies, e.g. 16'))
  elif (sde is not None and issubclass(sde, sde_lib.VESDE) and continuous
        and not labelled_by_c_noise):
    problems.append(('model.embedding_type', 'continuous VE training conditions the network on '
                                             "sigma(t); use 'fourier'"))
  if m.scale_by_sigma and sde is not None and issubclass(sde, sde_lib.VPSDE):
    problems.append(('model.scale_by_sigma',
                     f'{str(config.training.sde).lower()} scores are already divided by the '
                     'marginal std; set it to False (True is for vesde only)'))
  if m.normalization in normalization.NORMALIZATIONS and m.normalization != 'GroupNorm':
    problems.append(('model.normalization', f"{m.name} supports 'GroupNorm'"))
  if m.class_embedding != 'time' and m.name not in models_with('class_embedding'):
    problems.append(('model.class_embedding', f"{m.name} adds the class embedding to the time "
                                              f"embedding; use 'time' (or model.name in "
                                              f"{models_with('class_embedding')})"))
  return problems


def class_count(config: ml_collections.ConfigDict) -> int:
  """``config.model.num_classes``: K > 0 for a class-conditional score network, 0 otherwise.

  Raises:
    ValueError: for a negative count, or classes on a network without a time embedding (the
      class embedding is added to it).
  """
  num_classes = int(config.model.get('num_classes', 0))
  if num_classes < 0:
    raise ValueError(f'model.num_classes must be >= 0 (0: unconditional); got {num_classes}.')
  if num_classes and not config.model.get('conditional', True):
    raise ValueError('A class-conditional network adds its class embedding to the time '
                     'embedding; set model.conditional=True or model.num_classes=0.')
  return num_classes


def is_class_conditional(model: nn.Module) -> bool:
  """Whether ``model`` takes ``class_labels`` (a network built with ``num_classes > 0``)."""
  return getattr(model, 'num_classes', 0) > 0


def get_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The module named by ``config.model.name``, built by its class's ``from_config``.

  Raises:
    KeyError: for an unknown name, listing the registered ones.
  """
  return MODELS.get(config.model.name).from_config(config)


def get_classifier(config: ml_collections.ConfigDict) -> nn.Module:
  """The noise-conditional classifier named by ``config.classifier.name``."""
  return CLASSIFIERS.get(config.classifier.name).from_config(config)


def _model_and_shape(config_or_model, image_shape):
  if isinstance(config_or_model, nn.Module):
    model = config_or_model
    if image_shape is None:
      raise ValueError('Pass image_shape=(H, W, C) when initialising a module directly '
                       '(only a config knows its data shape).')
  else:
    model = get_model(config_or_model)
    data = config_or_model.data
    if image_shape is None:
      image_shape = (data.image_size, data.image_size, data.num_channels)
  image_shape = tuple(image_shape)
  if len(image_shape) == 3:
    image_shape = (1,) + image_shape
  if len(image_shape) != 4:
    raise ValueError(f'image_shape must be (H, W, C) or (B, H, W, C); got {image_shape}.')
  return model, image_shape


def _init_fn(model: nn.Module, image_shape: Sequence[int]):
  def init(rng):
    x = jnp.zeros(image_shape, jnp.float32)
    # Label 1 is valid for every embedding (a positive sigma, a step index); values don't matter.
    labels = jnp.ones(image_shape[:1], jnp.float32)
    kwargs = ({'class_labels': jnp.zeros(image_shape[:1], jnp.int32)}
              if is_class_conditional(model) else {})
    return model.init({'params': rng}, x, labels, train=False, **kwargs)['params']
  return init


def init_params(rng: jax.Array, config_or_model: Union[ml_collections.ConfigDict, nn.Module],
                image_shape: Optional[Sequence[int]] = None):
  """Freshly initialised parameters of a model (or of the model a config names).

  Args:
    rng: a typed key (``jax.random.key``).
    config_or_model: a full config or a linen module.
    image_shape: ``(H, W, C)`` (or ``(B, H, W, C)``); from ``config.data`` when omitted.
  Returns:
    The ``params`` pytree (nested dicts of float32 arrays), the layout of released checkpoints.
  """
  model, shape = _model_and_shape(config_or_model, image_shape)
  return jax.jit(_init_fn(model, shape))(rng)


def abstract_params(config_or_model: Union[ml_collections.ConfigDict, nn.Module],
                    image_shape: Optional[Sequence[int]] = None):
  """The parameter pytree as ``jax.ShapeDtypeStruct`` leaves, without allocating or computing
  anything: the target for sharded initialisation and checkpoint restoring."""
  model, shape = _model_and_shape(config_or_model, image_shape)
  return jax.eval_shape(_init_fn(model, shape), jax.random.key(0))


def module_order(config_or_model: Union[ml_collections.ConfigDict, nn.Module],
                 image_shape: Optional[Sequence[int]] = None) -> Tuple[str, ...]:
  """The top-level submodule names of the parameter tree in the order the network creates them.

  linen names submodules ``<Class>_<k>`` in creation order, which is the order PyTorch ports keep
  their layers in (``pytorch_checkpoints``); jax pytrees sort dict keys, so the order is read off
  the ``init`` trace itself. Computes nothing (``jax.eval_shape``).
  """
  model, shape = _model_and_shape(config_or_model, image_shape)
  init, order = _init_fn(model, shape), []

  def record(rng):
    params = init(rng)
    order.extend(params)  # Trace-time side effect: the dict's insertion order.
    return params
  jax.eval_shape(record, jax.random.key(0))
  return tuple(order)


def count_params(params) -> int:
  """Number of scalars in a parameter pytree (arrays or ``ShapeDtypeStruct`` leaves)."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(params)))


COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str):
  """``config.training.compute_dtype`` as a dtype. Raises ValueError naming the choices."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f'compute_dtype must be one of {sorted(COMPUTE_DTYPES)}; got {name!r}.')
  return COMPUTE_DTYPES[name]


# Parameters kept float32 under mixed precision: NCSN++'s Fourier frequencies (|W| ~ 16) would
# move the embedding of log sigma by a large fraction of a period if rounded to bfloat16.
_FLOAT32_PARAMS = ('GaussianFourierProjection',)


def cast_params(params, dtype):
  """Every floating-point parameter cast to ``dtype``, but the time embedding's frequencies."""
  def cast(path, a):
    keep = any(name in str(getattr(k, 'key', k)) for k in path for name in _FLOAT32_PARAMS)
    return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) and not keep else a
  return jax.tree_util.tree_map_with_path(cast, params)


def get_model_fn(model: nn.Module, params, train: bool = False,
                 rng: Optional[jax.Array] = None,
                 class_labels: Optional[jax.Array] = None,
                 dtype: str = 'float32') -> ModelFn:
  """``model_fn(x, labels, class_labels=class_labels) -> output``: the network with fixed
  parameters.

  Args:
    model: a linen score network.
    params: its ``params`` pytree.
    train: dropout on (needs ``rng``) or off.
    rng: key of the 'dropout' stream; the same key gives the same dropout masks.
    class_labels: default ``(B,)`` int classes of a class-conditional network (the null label
      ``num_classes`` for its unconditional output); required there, ignored by others.
    dtype: the compute dtype, ``'float32'`` or ``'bfloat16'`` (mixed precision). With bfloat16
      the parameters (kept float32 by the caller: gradients, Adam and the EMA stay float32) and
      the input are cast to bfloat16 for the call, so convolutions, matmuls and activations run
      in bfloat16; the networks embed time in float32 before casting the embedding, group norm
      reduces its statistics in float32 (flax), attention takes its softmax in float32, and the
      output is cast back to float32, where the loss is computed.
  """
  compute = compute_dtype(dtype)
  if train and rng is None and getattr(model, 'dropout', 0.) > 0:
    raise ValueError('train=True applies dropout; pass rng=<a jax.random.key> for it.')
  rngs = {} if rng is None else {'dropout': rng}
  conditional = is_class_conditional(model)
  default_labels = class_labels

  def model_fn(x: jax.Array, labels: jax.Array, class_labels=None) -> jax.Array:
    kwargs = {}
    if conditional:
      class_labels = default_labels if class_labels is None else class_labels
      if class_labels is None:
        raise ValueError(f'{type(model).__name__} is class-conditional (num_classes='
                         f'{model.num_classes}); pass class_labels, (B,) ints, with '
                         f'{model.num_classes} for "no class".')
      kwargs['class_labels'] = jnp.broadcast_to(jnp.asarray(class_labels, jnp.int32),
                                                x.shape[:1])
    if compute == jnp.float32:
      return model.apply({'params': params}, x, labels, train=train, rngs=rngs, **kwargs)
    out = model.apply({'params': cast_params(params, compute)}, x.astype(compute), labels,
                      train=train, rngs=rngs, **kwargs)
    return out.astype(jnp.float32)

  return model_fn


def get_score_fn(sde: sde_lib.SDE, model: nn.Module, params, train: bool = False,
                 continuous: bool = False, rng: Optional[jax.Array] = None,
                 class_labels: Optional[jax.Array] = None,
                 dtype: str = 'float32', parameterization='auto') -> sde_lib.ScoreFn:
  """``score_fn(x, t) ~ grad_x log p_t(x)`` from a network: ``get_model_fn``'s network read
  through ``parameterization.score_fn_from_model_fn`` (time labels and output conversion).

  With ``parameterization='auto'``, the released conventions:

  * VP and sub-VP: the network predicts the noise ``z`` of ``x_t = alpha x_0 + std z``, so
    ``score = -output / std`` (from ``E[z | x_t] = -std grad log p_t``). Continuous-time (and every
    sub-VP) model: label ``999 t``, ``std`` the SDE's marginal std. Discrete DDPM model: label
    ``t (N - 1)``, ``std = sqrt(1 - alphabar_i)`` at ``i = int(label)``.
  * VE: the network output is the score. Continuous: label ``sigma(t)``. Discrete SMLD: label
    ``round((T - t)(N - 1))``, the index into the descending sigma ladder (0 = largest noise).

  Args:
    sde: a ``VPSDE``, ``subVPSDE`` or ``VESDE``.
    model, params, train, rng, dtype: as for ``get_model_fn``.
    continuous: whether the model was trained with continuous-time labels.
    class_labels: for a class-conditional network, the ``(B,)`` (or scalar) class to score;
      each call may pass other ``class_labels`` (guidance scores two label sets at once).
    parameterization: what the output is, a name of ``config.model.parameterization``
      (``'score'``, ``'eps'``, ``'x0'``, ``'v'``, ``'auto'``, EDM's ``'edm_vp'``, ``'edm_ve'``;
      docs/parameterization.md) or a ``models.parameterization.Parameterization``, as
      ``config_parameterization(config, sde)`` gives (the one way to set EDM's ``sigma_data``).
  Returns:
    ``score_fn(x (B, H, W, C), t (B,), class_labels=class_labels) -> (B, H, W, C)``.
  """
  return score_fn_from_model_fn(sde, get_model_fn(model, params, train=train, rng=rng,
                                                  class_labels=class_labels, dtype=dtype),
                                continuous, parameterization)


def get_classifier_fn(sde: sde_lib.SDE, classifier: nn.Module, params
                      ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``logits_fn(x, t) -> (B, K)``: a noise-conditional classifier ``p_t(y | x)`` as a function
  of diffusion time, for ``sampling.guidance`` and the classifier objective.

  The classifier is conditioned on the marginal std of the perturbation kernel at ``t``
  (``sigma(t)`` for VE, the reference's ``ve_noise_scale``; ``sqrt(1 - alpha(t)^2)`` for VP),
  so one network layout serves every SDE. Evaluation mode (no dropout, no batch statistics):
  each example's logits depend on that example only, as guidance's gradient requires.
  """
  def logits_fn(x: jax.Array, t: jax.Array) -> jax.Array:
    return classifier.apply({'params': params}, x, sde.marginal_coeffs(t)[1], train=False)

  return logits_fn


__all__ = ['MODELS', 'CLASSIFIERS', 'class_count', 'get_classifier', 'is_class_conditional',
           'get_classifier_fn', 'get_sigmas', 'get_model', 'init_params', 'abstract_params',
           'config_parameterization', 'count_params', 'get_model_fn', 'get_score_fn', 'models_with',
           'ode_score_continuous', 'score_fn_from_model_fn', 'sde_class', 'unet_problems']
