"""``score_sde.load(workdir)``: a trained run as one object for notebooks (sample, inpaint,
colorize, bits/dim, the variational bound, encode / decode).

    import score_sde
    pipe = score_sde.load('runs/embedded')            # newest readable checkpoint
    images = pipe.sample(16, method='dpm_solver', num_steps=20, seed=0)
    score_sde.pipeline.to_pil(images)                 # a grid, shown inline by Jupyter

Everything runs on the package's own pieces, compiled once per shape and sampler and split
over the devices of ``mesh``: ``sampling.get_network_sampler`` (the sampler training snapshots
and evaluation use, with classifier-free guidance for a class-conditional network),
``sampling.get_pc_inpainter`` / ``get_pc_colorizer`` (the PC sampler's loop with the known
coordinates clamped, appendix I), ``likelihood`` (bits/dim through the probability-flow ODE,
eq. 39), ``elbo`` (the variational bound and its terms), the ODE encoder (sec. 4.3) and the ODE
sampler started at given latents (``decode``). Images go in and come out as numpy ``float32 (N, H, W, C)`` in
``[0, 1]`` (uint8 is accepted where images go in); any ``N`` works: batches are padded to a
multiple of the device count and trimmed.

Every argument that carries images, masks, latents or class labels is checked before anything
is compiled or solved (dtype, shape, finite values, images in ``[0, 1]``, masks of 0 and 1;
``pipeline_inputs``): a bad one raises ``InputError`` naming the argument, the images at fault
and what is expected, so one bad image is refused up front rather than spoiling its batch (the
ODE solvers share their step sizes across the batch).

Only the checkpoint's EMA weights are read (``training.restore``). Nothing is written into the
workdir, and nothing of it is renamed: a damaged newest checkpoint is skipped with a warning, as
evaluation does.
"""
import copy
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from score_sde import data, elbo, likelihood, pipeline_inputs, sampling, sde_lib
from score_sde.common import errors, parallel
from score_sde.configs import record, validation
from score_sde.data import images as images_lib
from score_sde.io import checkpoint, summary, workdir as workdir_lib
from score_sde.models import utils as mutils
from score_sde.sampling import shard
from score_sde.training import restore

ConfigLike = Union[None, str, os.PathLike, ml_collections.ConfigDict]
InputError = pipeline_inputs.InputError  # What the methods raise for a bad argument.


def _config_from(config: ConfigLike, workdir: str) -> ml_collections.ConfigDict:
  """The run's config: given as a ConfigDict, a ``configs/....py`` path, or recorded in
  ``workdir/config.json`` (None)."""
  if config is None:
    return record.load_run_config(workdir)
  if isinstance(config, ml_collections.ConfigDict):
    return copy.deepcopy(config)
  path = os.fspath(config)
  if not os.path.isfile(path):
    raise errors.ConfigError(f'config={path!r} is not a file; pass a config file such as '
                             'configs/embedded.py, a ConfigDict, or None for the workdir\'s '
                             f'{record.RUN_CONFIG}.')
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('_score_sde_loaded_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def load(workdir: str, step: Optional[int] = None, config: ConfigLike = None,
         mesh: Optional[jax.sharding.Mesh] = None) -> 'Pipeline':
  """A trained run (or a converted released checkpoint) ready to sample from.

  Args:
    workdir: the run's ``--workdir``.
    step: the checkpoint to load (periodic or preemption); None: the newest readable one.
    config: None reads ``workdir/config.json`` (written by training and by
      ``released_checkpoints.convert``); else a ConfigDict or a config file path.
    mesh: devices to run on; default every device.
  Returns:
    A ``Pipeline``.
  Raises:
    errors.UserError: for a workdir without (readable) checkpoints or without a recorded
      config, a ``step`` it does not hold, an invalid config, or a config whose network does not
      match the checkpoint (the message names the differing parameters).
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  workdir = workdir_lib.check_workdir(workdir, must_exist=True)
  config = _config_from(config, workdir)
  # The run's batch sizes were checked against the devices it trained on; here every batch is
  # padded to the devices, so only the device-independent checks apply.
  validation.validate_config(config, num_devices=1)
  model = mutils.get_model(config)
  try:
    params, step = restore.restore_network(config, model, workdir, mesh, 'score model', step)
  except checkpoint.StructureMismatchError as e:
    raise errors.ConfigError(
        f'The config does not describe the network saved in {workdir}: {e}\nPass the config '
        'the run was trained with (config=...), or its workdir\'s config.json.') from None
  except errors.WorkdirError as e:
    if step is not None:
      raise
    raise errors.WorkdirError(f'{e} Train first: python main.py --config CONFIG --workdir '
                              f'{workdir}.') from None
  logging.info('Loaded step %d of %s.', step, workdir)
  return Pipeline(config, model, params, int(step), mesh, workdir)


def _check_elbo_args(config, num_samples, time_sampling) -> None:
  """``Pipeline.elbo``'s ``num_samples`` and ``time_sampling`` (None: the config's), checked
  against the run's bound before any compile by the rules of the config's own
  (``validation.elbo_problems``)."""
  problems = validation.elbo_problems(config, num_samples, time_sampling)
  if problems:
    raise InputError(' '.join(problems))


class Pipeline:
  """A trained score model with the run's config, SDE and scalers (see the module docstring).

  Attributes:
    config: the run's ``ml_collections.ConfigDict``.
    model: the Flax module; ``params``: its EMA parameters (replicated over ``mesh``).
    sde: the run's forward SDE; ``scaler`` / ``inverse_scaler``: ``[0, 1]`` <-> model space.
    step: the training step of the loaded checkpoint; ``workdir``: where it came from.
    shape: ``(H, W, C)`` of one image.
    classifier: the noise-conditional classifier of classifier guidance
      (``training.restore.Network``), read when a sampler first asks for it; None until then.
  """

  def __init__(self, config: ml_collections.ConfigDict, model, params, step: int,
               mesh: jax.sharding.Mesh, workdir: str = ''):
    self.config, self.model, self.params, self.step = config, model, params, step
    self.mesh, self.workdir = mesh, workdir
    self.sde = sde_lib.get_sde(config)
    self.scaler = data.get_data_scaler(config.data.centered)
    self.inverse_scaler = data.get_data_inverse_scaler(config.data.centered)
    self.shape = images_lib.image_shape(config.data.image_size, config.data.num_channels)
    self.classifier: Optional[restore.Network] = None
    self._compiled: Dict[Any, Callable] = {}

  def __repr__(self):
    return (f'Pipeline({self.config.model.name}, {type(self.sde).__name__}, images {self.shape}, '
            f'{mutils.count_params(self.params) / 1e6:.2f}M parameters, step {self.step}, '
            f'{self.workdir or "in memory"})')

  # ------------------------------------------------------------------------------ scores
  def score_fn(self, continuous: Optional[bool] = None) -> sde_lib.ScoreFn:
    """``score_fn(x (B, H, W, C), t (B,)) -> (B, H, W, C)`` in model space, of the unconditional
    score (the null label of a class-conditional network). ``continuous``: the training's
    convention by default; ``models.utils.ode_score_continuous`` for an ODE solver."""
    return self._score_fn_of(self.params, continuous)

  def _score_fn_of(self, params, continuous: Optional[bool] = None) -> sde_lib.ScoreFn:
    continuous = self.config.training.continuous if continuous is None else continuous
    null_label = getattr(self.model, 'num_classes', 0) or None
    return mutils.get_score_fn(
        self.sde, self.model, params, train=False, continuous=continuous, class_labels=null_label,
        parameterization=mutils.config_parameterization(self.config, self.sde))

  def _ode_continuous(self) -> bool:
    return mutils.ode_score_continuous(self.sde, self.config.training.continuous)

  # ------------------------------------------------------------------------------ sampling
  def sample(self, n: int = 64, method: Optional[str] = None, num_steps: Optional[int] = None,
             seed: int = 0, class_labels: Optional[Sequence[int]] = None,
             **sampling_fields) -> np.ndarray:
    """Draws ``n`` images with any sampler of ``sampling.get_sampler``.

    Args:
      n: number of images.
      method: a name of ``sampling.METHODS`` (``'pc'``, ``'ode'``, ``'heun'``,
        ``'dpm_solver'``, ...); default the config's.
      num_steps: the method's steps (its entry's ``steps_field``: ``sampling.num_steps`` of the
        fixed-step samplers, or ``sampling.pc_num_steps`` of the PC chain, default the SDE's
        ``N``, other counts for continuous-time networks only, as a discrete network's labels
        are tied to its ``N``); default the config's.
      seed: the sample key is ``jax.random.key(seed)``; same seed, same images.
      class_labels: classes of a class-conditional network (or of classifier guidance), taken
        in turn; default ``sampling.class_labels`` (every class in turn when empty).
      **sampling_fields: any other ``config.sampling`` field, e.g. ``predictor='euler_maruyama'``,
        ``corrector='none'``, ``cfg_scale=2.``, ``snr=0.1``, ``order=3``;
        ``classifier_scale=s`` guides by the noise-conditional classifier that
        ``--mode train_classifier`` trained for this run (``sampling.classifier_workdir``).
    Returns:
      ``float32 (n, H, W, C)`` in ``[0, 1]`` (clipped).
    Raises:
      InputError: before any compile, for ``n`` not a positive integer or ``class_labels``
        that are not classes of what is sampled.
    """
    config = self._sampling_config(method, num_steps, class_labels, sampling_fields)
    sample, _ = self.sampler(self._padded(n), config)
    images, nfe = sample(self._key(seed))
    logging.info('Sampled %d images with %s (%d score evaluations).', n, config.sampling.method,
                 int(nfe))
    return parallel.gather_rows(images)[:n]

  def sampler(self, n: int, config: Optional[ml_collections.ConfigDict] = None,
              quantize: Optional[str] = None) -> Tuple[Callable, Optional[np.ndarray]]:
    """The run's configured sampler for batches of ``n`` images: the one path that ``sample``,
    ``--mode sample`` (``generate``) and, through ``sampling.get_network_sampler``, training
    snapshots and evaluation's FID rounds draw with.

    Args:
      n: images per call; must split over the mesh's devices.
      config: the config whose ``sampling`` section to use; default the run's.
      quantize: as for ``sampling.get_network_sampler``.
    Returns:
      ``(sample, labels)``: ``sample(key) -> (images, nfe)`` with ``images`` float32
      ``(n, H, W, C)`` in [0, 1], split over the mesh (compiled once per ``n`` and sampling
      section); ``labels`` the int32 ``(n,)`` class of each image, or None when unconditional.
      Classifier guidance (``sampling.classifier_scale``) reads the run's trained classifier.
    """
    config = self.config if config is None else config
    classifier, params = None, self.params
    if config.sampling.classifier_scale:
      net = self._classifier_for(config)
      classifier, params = net.module, {'score': self.params, 'classifier': net.params}
    key = ('sample', n, quantize, _frozen(config.sampling))
    if key not in self._compiled:
      self._compiled[key] = sampling.get_network_sampler(
          config, self.sde, self.model, self.mesh, n, quantize=quantize, classifier=classifier)
    labels = sampling.sampled_classes(config, self.model, n, classifier)
    compiled = self._compiled[key]
    return (lambda key: compiled(params, key)), labels

  def _classifier_for(self, config) -> restore.Network:
    """``self.classifier``, read (again) when ``config`` names another classifier directory
    than the one it came from (errors.WorkdirError naming ``--mode train_classifier`` when
    there is none)."""
    where = workdir_lib.classifier_workdir(config, self.workdir)
    if self.classifier is None or self.classifier.directory != where:
      self.classifier = restore.load_classifier(config, self.workdir, self.mesh)
    return self.classifier

  def _sampling_config(self, method, num_steps, class_labels, fields):
    config = copy.deepcopy(self.config)
    s = config.sampling
    unknown = sorted(set(fields) - set(s.keys()))
    if unknown:
      raise errors.ConfigError(f'Unknown sampling field(s) {unknown}; config.sampling has '
                               f'{sorted(s.keys())}.')
    for name, value in fields.items():
      s[name] = tuple(value) if isinstance(value, list) else value
    if method is not None:
      s.method = method
    if class_labels is not None:
      s.class_labels = pipeline_inputs.checked_labels(class_labels, config)
    if num_steps is not None and s.method in sampling.METHODS:
      num_steps = sampling.base.check_steps(num_steps)
      field = sampling.methods.get(s.method).steps_field
      if field:  # Validated below (a discrete-time network refuses other PC step counts).
        s[field] = num_steps
      else:
        tolerances = 'adaptive_rtol / atol' if s.method == 'adaptive' else 'rtol / atol'
        raise errors.ConfigError(f'num_steps={num_steps}: the {s.method!r} sampler is adaptive '
                                 f'(sampling.{tolerances} set its accuracy); drop num_steps.')
    validation.validate_config(config, num_devices=1)
    return config

  def _pc_times(self, num_steps: Optional[int]) -> np.ndarray:
    """The PC grid of the controllable samplers: ``num_steps`` levels (None: the SDE's ``N``),
    which a discrete-time network only has on its own chain."""
    if num_steps is not None:
      num_steps = sampling.base.check_steps(num_steps)
      if num_steps != self.sde.N and not self.config.training.continuous:
        gridded = ', '.join(sampling.methods.fixed_step_names())
        raise errors.ConfigError(
            f'num_steps={num_steps} for PC sampling: this network was trained in discrete time '
            f'on N={self.sde.N} steps, and its labels only exist on that grid. Use '
            f'num_steps=None, or a fixed-step method ({gridded}), which take any number of '
            'steps.')
    return sampling.get_times(self.sde, 'pc', num_steps, eps=self.config.sampling.eps)

  # ------------------------------------------------------------------------------ controllable
  def inpaint(self, images, mask, seed: int = 0, num_steps: Optional[int] = None) -> np.ndarray:
    """Fills the pixels where ``mask`` is 0 by PC sampling with the known ones clamped
    (appendix I.2), with the config's predictor, corrector and snr.

    Args:
      images: ``(N, H, W, C)`` in ``[0, 1]`` (or uint8); only the known pixels are read (the
        others may hold anything, NaN included).
      mask: 0 and 1 (or bool), broadcastable to ``images`` (e.g. ``(H, W, 1)``), 1 where a
        pixel is known.
      seed: the key is ``jax.random.key(seed)``.
      num_steps: PC steps (continuous-time networks), default the SDE's ``N``.
    Returns:
      ``float32 (N, H, W, C)`` in ``[0, 1]``: the known pixels exactly, the rest sampled.
    Raises:
      InputError: before any compile, for images or a mask that are not as above.
    """
    mask = pipeline_inputs.checked_mask(
        mask, pipeline_inputs.checked_images_shape(images, 'images', self.shape))
    images = pipeline_inputs.checked_images(images, 'images', self.shape, known=mask > .5)
    times = self._pc_times(num_steps)
    inpainter = sampling.get_pc_inpainter(self.sde, times, **self._pc_settings())
    out = self._run(('inpaint', len(times)), lambda rng, score_fn, x, m: inpainter(
        rng, score_fn, self.scaler(x), m)[0], seed, images, mask)
    # The sampler holds the known pixels in model space; for centred data the round trip through
    # the scalers is exact only to float rounding, so the known pixels are put back as given.
    return np.where(mask > 0.5, images, np.clip(out, 0., 1.))

  def colorize(self, grey, seed: int = 0, num_steps: Optional[int] = None) -> np.ndarray:
    """Colours grey images (appendix I.3): samples the two colour coordinates given the grey
    level ``(R + G + B) / 3``, with the config's PC sampler. RGB networks only.

    Args:
      grey: ``(N, H, W, 1)``, or ``(N, H, W, 3)`` with equal channels, in ``[0, 1]`` / uint8.
    Returns:
      ``float32 (N, H, W, 3)`` in ``[0, 1]`` whose channel mean is the input grey level,
      wherever no channel had to be clipped to ``[0, 1]``.
    Raises:
      InputError: before any compile, for grey images that are not as above.
    """
    grey = pipeline_inputs.checked_grey(grey, self.shape)
    if grey.shape[-1] == 1:
      grey = np.repeat(grey, 3, axis=-1)
    times = self._pc_times(num_steps)
    colorizer = sampling.get_pc_colorizer(self.sde, times, **self._pc_settings())
    out = self._run(('colorize', len(times)), lambda rng, score_fn, x: colorizer(
        rng, score_fn, self.scaler(x))[0], seed, grey)
    return np.clip(out, 0., 1.)

  def _pc_settings(self) -> Dict[str, Any]:
    """The config's PC sampler, as keywords of ``get_pc_inpainter`` / ``get_pc_colorizer``."""
    s = self.config.sampling
    return dict(sampling.pc.METHOD.settings(s, self.sde), inverse_scaler=self.inverse_scaler)

  # ------------------------------------------------------------------------------ likelihood
  def bits_per_dim(self, images, seed: int = 0, dequantize: bool = True,
                   num_nodes: int = likelihood.PER_EXAMPLE_NODES,
                   num_probes: int = likelihood.PER_EXAMPLE_PROBES) -> np.ndarray:
    """Bits/dim of each image under the probability-flow ODE (eq. 39): RK45 at
    rtol = atol = 1e-5 from t = 1e-5, the null label of a class-conditional network.

    Each image's value is meant to be used on its own (out-of-distribution scores, comparisons
    between images), so the divergence integral is estimated per image: ``num_nodes``
    quadrature nodes with ``num_probes`` fresh probes each, as a control variate of the
    reference's solve (``likelihood.flow_with_control_variate``), unbiased; its error per
    image against the exact divergence is in docs/likelihood.md ("Per-example likelihoods").
    ``num_nodes=0, num_probes=1`` is ``--mode eval``'s estimator (the
    reference's, unbiased, so right for dataset means, but noisy per image).

    Args:
      images: ``(N, H, W, C)`` uint8, or floats in ``[0, 1]`` on the 8-bit grid.
      seed: key of the dequantization noise and the probes.
      dequantize: add ``U[0, 1)`` noise to the 8-bit values first, ``(x + u) / 256``, which
        makes bits/dim an upper bound on the discrete likelihood (the paper's Table 2).
      num_nodes, num_probes: the estimator, as above.
    Returns:
      ``float32 (N,)`` bits/dim.
    Raises:
      InputError: before any compile, for images that are not as above.
    """
    images = pipeline_inputs.checked_images(images, 'images', self.shape)
    rng = jax.random.key(seed)
    if dequantize:
      levels = np.round(images * 255.)
      noise = jax.random.uniform(jax.random.fold_in(rng, 1), images.shape)
      images = (levels + np.asarray(noise)) / 256.
    key = ('bpd', num_nodes, num_probes)
    if key not in self._compiled:
      self._compiled[key] = likelihood.get_sharded_likelihood_fn(
          likelihood.get_likelihood_fn(self.sde, self.inverse_scaler, num_probes=num_probes,
                                       num_nodes=num_nodes),
          lambda p: self._score_fn_of(p, self._ode_continuous()), self.mesh, self.scaler)
    n, padded = len(images), self._padded(len(images))
    images = _pad_rows(images.astype(np.float32), padded)
    bpd, _, _ = self._compiled[key](self._key(seed), self.params,
                                    images[parallel.host_batch_slice(padded)])
    return parallel.gather_rows(bpd)[:n]

  def elbo(self, images, num_samples: Optional[int] = None, time_sampling: Optional[str] = None,
           seed: int = 0, dequantize: Optional[bool] = None
           ) -> Tuple[np.ndarray, Dict[str, Any]]:
    """The variational bound on each image's negative log-likelihood, in bits/dim, with its
    prior, diffusion and reconstruction terms (``elbo.get_elbo_fn``; no ODE solve), the null
    label of a class-conditional network.

    A discrete-time VP model (``training.continuous=False``, ``vpsde``) gets the bound of its
    DDPM chain, a bound on the probability of the 8-bit image itself: ``images`` must be on the
    8-bit grid (uint8, or ``k / 255`` as floats) and are not dequantized. Every other model gets
    the continuous-time bound on dequantized images, ``(x + u) / 256`` with the noise of
    ``bits_per_dim`` for the same ``seed``, so the two compare image by image.

    Args:
      images: ``(N, H, W, C)`` uint8, or floats in ``[0, 1]`` on the 8-bit grid (the continuous
        bound with ``dequantize=False`` takes any values in ``[0, 1]``).
      num_samples: draws per image of the diffusion term (chain steps or times), each image's
        estimate with its standard error; 0: the chain's exact sum over its ``N - 1`` steps.
        Default ``eval.elbo_samples``.
      time_sampling: continuous bound: ``'importance'`` (uniform in log-SNR) or ``'uniform'``
        in ``t``; default ``eval.elbo_time_sampling``.
      seed: the dequantization noise is drawn from ``jax.random.key(seed)`` as in
        ``bits_per_dim``, the bound's draws from ``fold_in(key(seed), 0)``.
      dequantize: continuous bound only: None or True adds the noise above, False takes the
        images as they are (already dequantized).
    Returns:
      ``(bpd, terms)``: ``bpd`` float32 ``(N,)``; ``terms`` holds ``'prior'``, ``'diffusion'``
      and ``'reconstruction'`` (float32 ``(N,)``, bits/dim, summing to ``bpd``; the
      dequantization offset is in ``'reconstruction'``), ``'diffusion_stderr'`` (``(N,)``, 0 for
      the exact sum, NaN for one draw) and ``'nfe'`` (int: network evaluations per image).
    Raises:
      InputError: before any compile, for images that are not as above (off the 8-bit grid for
        the chain), ``dequantize=True`` for the chain, or a ``num_samples`` or
        ``time_sampling`` the bound does not take.
    """
    images = pipeline_inputs.checked_images(images, 'images', self.shape)
    rng = jax.random.key(seed)
    if elbo.uses_chain(self.config):
      if dequantize:
        raise InputError('dequantize=True: this discrete-time VP model\'s bound is that of its '
                         'DDPM chain on the 8-bit images themselves; leave dequantize unset.')
      images = pipeline_inputs.checked_8bit(images, 'images')
    elif dequantize is None or dequantize:
      levels = np.round(images * 255.)
      noise = jax.random.uniform(jax.random.fold_in(rng, 1), images.shape)
      images = (levels + np.asarray(noise)) / 256.
    _check_elbo_args(self.config, num_samples, time_sampling)
    elbo_fn, continuous = elbo.get_run_elbo_fn(self.config, self.sde, num_samples, time_sampling)
    key = ('elbo', num_samples, time_sampling)
    if key not in self._compiled:
      self._compiled[key] = elbo.get_sharded_elbo_fn(
          elbo_fn, lambda p: self._score_fn_of(p, continuous), self.mesh, self.scaler)
    n, padded = len(images), self._padded(len(images))
    images = _pad_rows(images.astype(np.float32), padded)
    bpd, terms = self._compiled[key](
        parallel.replicate(jax.random.fold_in(rng, 0), self.mesh), self.params,
        images[parallel.host_batch_slice(padded)])
    out = {name: parallel.gather_rows(terms[name])[:n] for name in elbo.TERMS}
    return parallel.gather_rows(bpd)[:n], dict(out, nfe=int(jax.device_get(terms['nfe'])))

  def encode(self, images) -> np.ndarray:
    """Latents ``z = x(T)`` of images through the probability-flow ODE from ``t = eps``
    (sec. 4.3): ``(N, H, W, C)`` float32, the exact inverse of ``decode`` up to the solver's
    tolerance (``sampling.rtol`` / ``atol``)."""
    images = pipeline_inputs.checked_images(images, 'images', self.shape)
    s = self.config.sampling
    encoder = sampling.get_ode_encoder(self.sde, s.rtol, s.atol, eps=s.eps)
    return self._run(('encode',), lambda key, score_fn, x: encoder(score_fn, self.scaler(x))[0],
                     0, images, continuous=self._ode_continuous())

  def decode(self, z) -> np.ndarray:
    """Images from latents: the probability-flow ODE from ``T`` to ``eps``, without the final
    denoising step (so ``decode(encode(x)) ~ x``). Returns ``float32 (N, H, W, C)`` in data
    space, not clipped. Latents that are not finite ``(N, H, W, C)`` raise ``InputError``
    before any compile."""
    z = pipeline_inputs.checked_latents(z, self.shape)
    s = self.config.sampling
    decoder = sampling.get_ode_sampler(
        self.sde, (self._padded(z.shape[0]),) + tuple(self.shape),
        self.inverse_scaler, sampling.get_times(self.sde, 'ode', eps=s.eps), denoise=False,
        rtol=s.rtol, atol=s.atol)
    return self._run(('decode',), lambda key, score_fn, latents: decoder(
        key, score_fn, x_T=latents)[0], 0, z, continuous=self._ode_continuous())

  # ------------------------------------------------------------------------------ plumbing
  def _padded(self, n: int) -> int:
    """``n`` (``InputError`` unless a positive integer) rounded up to the device count."""
    d = self.mesh.devices.size
    return -(-pipeline_inputs.checked_count(n) // d) * d

  def _key(self, seed: int) -> jax.Array:
    return parallel.replicate(jax.random.key(seed), self.mesh)

  def _run(self, name, fn, seed: int, *arrays, continuous: Optional[bool] = None) -> np.ndarray:
    """``fn(rng, score_fn, *arrays)`` jitted once per ``name`` and shape, with the batch split
    over the mesh (padded to the device count by repeating the last row, then trimmed)."""
    n = arrays[0].shape[0]
    padded = self._padded(n)
    arrays = [_pad_rows(a, padded) for a in arrays]
    key = name + (padded, continuous) + tuple(a.shape for a in arrays)
    if key not in self._compiled:
      def run(rng, params, *xs):
        return fn(rng, shard.constrained(self._score_fn_of(params, continuous), self.mesh), *xs)

      self._compiled[key] = parallel.jit_over_examples(
          run, self.mesh, parallel.data_sharding(self.mesh), num_arrays=len(arrays))
    arrays = [a[parallel.host_batch_slice(padded)] for a in arrays]
    return parallel.gather_rows(self._compiled[key](self._key(seed), self.params, *arrays))[:n]


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """``x`` with its last row repeated up to ``rows`` rows (a batch split over the devices)."""
  return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def _frozen(section: ml_collections.ConfigDict) -> Tuple:
  return tuple(sorted((k, repr(v)) for k, v in section.items()))


def to_pil(images, nrow: Optional[int] = None) -> Image.Image:
  """A grid of ``(N, H, W, C)`` images in ``[0, 1]`` as a PIL image (Jupyter shows it inline),
  ``nrow`` per row (default about square); as the PNG grids training writes."""
  grid = summary.image_grid(np.asarray(images, np.float32), nrow=nrow)
  return Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
