"""Checks a whole configuration once, at the boundary, before anything is built or written.

``validate_config`` reads every field of a config, collects every problem it finds and raises one
``errors.ConfigError`` (a ``ValueError``) listing all of them, each naming the field, its bad
value and the fix. A run with a typo, a batch that does not split over the devices or a loss that
does not exist for the chosen SDE therefore fails in the first second instead of after
compilation or hours into training.

Names (SDE, model, dataset, predictor, corrector) are checked against the registries of the
subpackages that define them (``sde_lib.SDES``, ``models.MODELS``, ``data.DATASETS``,
``sampling.PREDICTORS``, ``sampling.CORRECTORS``), imported only when validation runs. Which
combinations are legal follows the reference implementation (yang-song/score_sde):

* Discrete-time training exists for two SDEs only: the SMLD loss (Song & Ermon 2019) is the
  VE SDE's and the DDPM loss (Ho et al. 2020) the VP SDE's; the sub-VP SDE has no discrete
  counterpart. Likelihood weighting exists only for the continuous loss (eq. 7); the ``'elbo'``
  weighting, the variational bound's diffusion term summed over the data dimensions, for the
  continuous loss and the DDPM chain (the SMLD ladder has no bound), with ``reduce_mean=False``.
* The network is conditioned on sigma(t) when a VE model is trained in continuous time and on an
  integer-like step index otherwise; only the Gaussian Fourier embedding (of log sigma) reads the
  former, and it needs continuous training because log(0) of a step index is not finite.
* ``scale_by_sigma`` divides the output by the VE noise level; VP / sub-VP models are divided by
  the marginal std when the score is formed, so dividing again would be wrong. It belongs to a
  network whose output is the score (``model.parameterization``, ``models.parameterization``).
* Ancestral sampling is stochastic by construction: it has no probability-flow form.
* A weight decay needs the decoupled form of AdamW (``optim.py`` refuses it with Adam).
* The NCSN / NCSNv2 networks are indexed by the SMLD noise level (0 = sigma_max): they train
  with the discrete VE loss only, and only they use the InstanceNorm / VarianceNorm family.
"""
import difflib
import importlib
from typing import Any, Iterable, List, Tuple

import ml_collections

from score_sde.common import errors

# Values the code branches on; anything else is a typo.
CHOICES = {
    'sampling.method': ('pc', 'ode', 'adaptive', 'heun', 'dpm_solver', 'unipc', 'deis', 'ipndm'),
    'sampling.final_step': ('', 'extrapolate', 'tweedie'),
    'sampling.unipc_variant': ('bh1', 'bh2'),
    'model.normalization': ('GroupNorm', 'InstanceNorm', 'InstanceNorm++', 'VarianceNorm'),
    'model.interpolation': ('bilinear', 'nearest_neighbor'),
    'model.nonlinearity': ('swish', 'elu', 'relu', 'lrelu'),
    'model.resblock_type': ('biggan', 'ddpm'),
    'model.progressive': ('none', 'output_skip', 'residual'),
    'model.progressive_input': ('none', 'input_skip', 'residual'),
    'model.progressive_combine': ('sum', 'cat'),
    'model.attention_type': ('ddpm',),
    'model.embedding_type': ('fourier', 'positional'),
    'model.reverse_variance': ('posterior', 'beta'),
    'training.weighting': ('dsm', 'likelihood', 'elbo'),
    'optim.optimizer': ('Adam', 'AdamW'),
    'eval.bpd_dataset': ('train', 'test'),
    'eval.quantization': ('truncate', 'round'),
    'eval.elbo_time_sampling': ('importance', 'uniform'),
    'logging.wandb_mode': ('', 'online', 'offline', 'disabled'),
}

# Fields of recorded runs (config.json) replaced by one of another kind:
# old name -> (new name, {old value: new value}).
REPLACED = {'training.likelihood_weighting': ('training.weighting',
                                              {True: 'likelihood', False: 'dsm'})}

# (field, module holding the registry, registry attribute). Importing the module fills it.
REGISTRIES = (
    ('training.sde', 'score_sde.sde_lib', 'SDES'),
    ('model.name', 'score_sde.models', 'MODELS'),
    ('data.dataset', 'score_sde.data', 'DATASETS'),
    ('sampling.predictor', 'score_sde.sampling', 'PREDICTORS'),
    ('sampling.corrector', 'score_sde.sampling', 'CORRECTORS'),
    ('classifier.name', 'score_sde.models', 'CLASSIFIERS'),
)

# Channels of the datasets whose images have a fixed colour format.
DATASET_CHANNELS = {'mnist_embedded': 1, 'cifar10': 3, 'svhn': 3, 'celeba': 3, 'lsun': 3,
                    'ffhq': 3, 'celebahq': 3}

# The predictor / corrector name that switches the step off: valid whatever is registered.
_OFF = 'none'


def registered_names(module_name: str, attribute: str) -> Tuple[str, ...]:
  """Lower-case names in the registry ``module_name.attribute``."""
  return tuple(str(name).lower()
               for name in getattr(importlib.import_module(module_name), attribute))


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    num_hosts: int = 1) -> None:
  """Raises one ConfigError listing every problem of ``config``; returns None when there is none.

  Args:
    config: a complete configuration (see ``configs/default.py``).
    num_devices: devices over all hosts that the global batches are split over.
    num_hosts: processes that each load an equal, contiguous share of every batch.
  Raises:
    errors.ConfigError: the config has problems; the message has one line per problem.
    ValueError: ``num_devices`` / ``num_hosts`` are not positive with hosts dividing devices
      (a caller's bug, not the user's).
  """
  problems = config_problems(config, num_devices, num_hosts)
  if problems:
    raise errors.ConfigError(f'{len(problems)} problem(s) in the config:\n' +
                             '\n'.join(f'  - {p}' for p in problems))


def config_problems(config: ml_collections.ConfigDict, num_devices: int,
                    num_hosts: int = 1) -> List[str]:
  """Every problem of ``config`` as one sentence each (empty when it is valid); see above."""
  if not (isinstance(num_devices, int) and isinstance(num_hosts, int)
          and num_devices > 0 and num_hosts > 0 and num_devices % num_hosts == 0):
    raise ValueError(f'num_devices={num_devices!r} and num_hosts={num_hosts!r} must be positive '
                     'integers with num_hosts dividing num_devices (every host has as many '
                     'devices); pass jax.device_count() and jax.process_count().')
  missing, unknown = _field_problems(config)
  if missing:
    return missing + unknown  # The checks below read every field of the default config.
  problems, c = unknown, config
  problems += _name_problems(c)
  problems += _batch_problems(c, num_devices, num_hosts)
  problems += _training_problems(c)
  problems += _sampling_problems(c)
  problems += _eval_problems(c)
  problems += _data_problems(c)
  problems += _model_problems(c)
  problems += _class_problems(c)
  problems += _optim_problems(c)
  problems += distributed_problems(c)
  return problems


# --------------------------------------------------------------------------------- field names
def _leaves(config: ml_collections.ConfigDict, prefix: str = '') -> Iterable[str]:
  for key, value in config.items():
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, path + '.')
    else:
      yield path


def _field_problems(config: ml_collections.ConfigDict) -> Tuple[List[str], List[str]]:
  """Problems of fields missing from ``config`` and of fields unknown to the code (typos)."""
  from score_sde.configs import default  # The one list of every field the code reads.
  expected = set(_leaves(default.get_config()))
  present = set(_leaves(config))
  missing = [f'config.{f} is missing; add it (see configs/default.py for its meaning).'
             for f in sorted(expected - present)]
  unknown = []
  for field in sorted(present - expected):
    # A shortened name ('model.ema') means one of the fields it begins, before any lookalike.
    longer = [e for e in expected if e.startswith(field + '_')]
    close = difflib.get_close_matches(field, longer or expected, n=1, cutoff=0 if longer else 0.6)
    hint = f'did you mean config.{close[0]}?' if close else 'remove it.'
    if field in REPLACED:
      new, values = REPLACED[field]
      old = _get(config, field)
      fix = (f'config.{new}={values[old]!r}' if old in values else ' or '.join(
          f'config.{new}={v!r} (for {k!r})' for k, v in values.items()))
      hint = f'it is now config.{new}; remove it and set {fix}.'
    unknown.append(f'config.{field} is not a field the code reads; {hint}')
  return missing, unknown


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


# --------------------------------------------------------------------------------- names
def _name_problems(c) -> List[str]:
  problems = []
  for field, module, attribute in REGISTRIES:
    known = set(registered_names(module, attribute))
    if field.startswith('sampling.'):
      known.add(_OFF)
    value = _get(c, field)
    if str(value).lower() not in known:
      problems.append(f'config.{field}={value!r} is not registered; use one of '
                      f'{", ".join(sorted(known))}.')
  for field, options in CHOICES.items():
    value = _get(c, field)
    if value not in options:
      problems.append(f'config.{field}={value!r} is not supported; use one of '
                      f'{", ".join(repr(o) for o in options)}.')
  return problems


# --------------------------------------------------------------------------------- helpers
def _require(problems: List[str], ok: bool, field: str, value: Any, fix: str) -> None:
  if not ok:
    problems.append(f'config.{field}={value!r} is invalid: {fix}.')


def _positive_int(problems: List[str], c, field: str) -> None:
  value = _get(c, field)
  _require(problems, isinstance(value, int) and value > 0, field, value,
           'use a positive integer')


def _split_problem(field: str, value: Any, n: int, what: str) -> List[str]:
  if isinstance(value, int) and value > 0 and value % n == 0:
    return []
  lower = max(n, value // n * n) if isinstance(value, int) else n
  return [f'config.{field}={value!r} does not split evenly over {n} {what}; use a positive '
          f'multiple of {n}, e.g. {lower} or {lower + n}.']


# --------------------------------------------------------------------------------- sections
def _batch_problems(c, num_devices: int, num_hosts: int) -> List[str]:
  """Global batches are split over all devices, and each host loads an equal share.

  Every host drives as many devices, so a multiple of ``num_devices`` also splits over the hosts.
  """
  fields = ['training.batch_size', 'eval.batch_size', 'sampling.batch_size']
  if c.training.snapshot_sampling:
    fields.append('training.n_snapshot_samples')
  where = 'devices' if num_hosts == 1 else f'devices on {num_hosts} hosts'
  problems = []
  for field in fields:
    problems += _split_problem(field, _get(c, field), num_devices, where)
  k = c.training.grad_accum_steps
  if isinstance(k, int) and k > 1 and not problems:
    problems += _split_problem('training.batch_size', c.training.batch_size, k * num_devices,
                               f'(training.grad_accum_steps={k} micro-batches x {num_devices} '
                               f'{where})')
  return problems


def _training_problems(c) -> List[str]:
  t, problems = c.training, []
  for name in ('n_iters', 'log_freq', 'eval_freq', 'snapshot_freq',
               'snapshot_freq_for_preemption'):
    _positive_int(problems, c, f'training.{name}')
  _require(problems, t.max_to_keep >= 0, 'training.max_to_keep', t.max_to_keep,
           'use 0 to keep every checkpoint or a positive count')
  _require(problems, 0. < t.eps < 1., 'training.eps', t.eps,
           'the loss samples t in [eps, 1]; use a small positive value such as 1e-5')
  _positive_int(problems, c, 'training.grad_accum_steps')
  _require(problems, t.compute_dtype in ('float32', 'bfloat16'), 'training.compute_dtype',
           t.compute_dtype, "use 'float32' or 'bfloat16'")
  below = t.get('float32_below_std', 0.)
  _require(problems, isinstance(below, (int, float)) and below >= 0.,
           'training.float32_below_std', below,
           'use a noise std >= 0 (0: every noise level in the compute dtype)')
  profile = t.profile_steps
  ok = profile == () or (isinstance(profile, tuple) and len(profile) == 2 and all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in profile))
  _require(problems, ok, 'training.profile_steps', profile,
           'use (first_step, count) with both >= 1, e.g. (100, 5), or () for no trace')
  sde = str(t.sde).lower()
  if not t.continuous:
    _require(problems, sde in ('vesde', 'vpsde'), 'training.continuous', t.continuous,
             f'discrete-time losses exist only for vesde (SMLD) and vpsde (DDPM), not {sde!r}; '
             'set training.continuous=True')
    _require(problems, t.weighting != 'likelihood', 'training.weighting', t.weighting,
             "likelihood weighting exists only for the continuous loss; use 'dsm' or "
             'training.continuous=True')
    _require(problems, not (t.weighting == 'elbo' and sde == 'vesde'), 'training.weighting',
             t.weighting, "the discrete SMLD loss has no variational bound; use 'dsm' or "
                          'training.continuous=True (the continuous bound exists for vesde)')
  _require(problems, not (t.weighting == 'elbo' and t.reduce_mean), 'training.reduce_mean',
           t.reduce_mean, "training.weighting='elbo' is the bound's sum over the data "
                          'dimensions; set it to False')
  return problems


def _sampling_problems(c) -> List[str]:
  s, problems = c.sampling, []
  predictor, corrector = str(s.predictor).lower(), str(s.corrector).lower()
  if s.method == 'pc':
    _require(problems, predictor != _OFF or corrector != _OFF, 'sampling.predictor', s.predictor,
             "with sampling.corrector='none' too the PC sampler would do nothing; "
             'name a predictor or a corrector')
  if s.method == 'pc' and predictor == 'ancestral_sampling':
    _require(problems, not s.probability_flow, 'sampling.probability_flow', s.probability_flow,
             'ancestral sampling has no probability-flow form; set it to False or use '
             "sampling.predictor='reverse_diffusion'")
  if corrector != _OFF:
    _positive_int(problems, c, 'sampling.n_steps_each')
    _require(problems, s.snr > 0, 'sampling.snr', s.snr,
             'the Langevin step size needs a positive signal-to-noise ratio, typically 0.05-0.2')
  _require(problems, isinstance(s.num_steps, int) and s.num_steps >= 0, 'sampling.num_steps',
           s.num_steps, "use 0 (the SDE's N) or a positive step count")
  pc_steps = s.pc_num_steps
  _require(problems, isinstance(pc_steps, int) and pc_steps >= 0, 'sampling.pc_num_steps',
           pc_steps, "use 0 (the SDE's N, model.num_scales) or a positive step count")
  from score_sde import sampling  # Imported only when validation runs (jax).
  fixed_step = ', '.join(sampling.FIXED_STEP_METHODS)
  if isinstance(pc_steps, int) and pc_steps not in (0, c.model.num_scales):
    _require(problems, c.training.continuous, 'sampling.pc_num_steps', pc_steps,
             f'a discrete-time network only knows its model.num_scales={c.model.num_scales} '
             f'noise levels; use 0, or a fixed-step sampling.method ({fixed_step}) for fewer '
             'steps')
  max_order = sampling.MAX_ORDERS.get(s.method)
  if max_order:
    order = s.order
    _require(problems, isinstance(order, int) and 0 <= order <= max_order, 'sampling.order',
             order, f'{s.method} is implemented for orders 1 to {max_order} (0: its default)')
  if s.method in sampling.FIXED_STEP_METHODS:
    schedules = sampling.schedule.SCHEDULES
    _require(problems, s.schedule in ('',) + schedules, 'sampling.schedule',
             s.schedule, f"use '' (the method's own) or one of {', '.join(schedules)}")
    _require(problems, s.rho > 0, 'sampling.rho', s.rho,
             'the karras schedule needs rho > 0 (EDM uses 7)')
  problems += _times_problems(c, sampling)
  _require(problems, s.s_churn >= 0, 'sampling.s_churn', s.s_churn,
           'use 0 for the deterministic Heun sampler or a positive churn, e.g. 40 (EDM)')
  for name in ('rtol', 'atol'):
    _require(problems, _get(s, name) > 0, f'sampling.{name}', _get(s, name),
             'ODE tolerances must be positive, e.g. 1e-5')
  for name in ('adaptive_rtol', 'adaptive_atol'):
    _require(problems, _get(s, name) > 0, f'sampling.{name}', _get(s, name),
             "the adaptive SDE sampler's tolerances must be positive (its authors': 0.05 "
             'and 0.0078)')
  _require(problems, 0. < s.eps < 1., 'sampling.eps', s.eps,
           'samplers stop at t = eps in (0, 1); use 1e-5 (VE) or 1e-3 (VP, sub-VP)')
  return problems


def _times_problems(c, sampling) -> List[str]:
  """``sampling.times``: a grid that starts at T, decreases to a positive eps and has the
  levels ``num_steps`` needs (``sampling.grid_levels``); only the fixed-step samplers read it."""
  s, problems = c.sampling, []
  times = tuple(s.times)
  if not times:
    return problems
  if s.method not in sampling.FIXED_STEP_METHODS:
    _require(problems, False, 'sampling.times', times,
             f"only the fixed-step methods ({', '.join(sampling.FIXED_STEP_METHODS)}) take a "
             f'grid; {s.method!r} does not read it, so set it to ()')
    return problems
  from score_sde import sde_lib
  try:
    sde = sde_lib.get_sde(c)
  except (KeyError, TypeError, ValueError):
    return problems  # training.sde's own problem is reported with it.
  try:
    levels = (len(times) if not s.num_steps else
              sampling.grid_levels(s.method, s.num_steps, s.noise_removal,
                                   s.final_step or sampling.default_final(sde)))
    sampling.schedule.check_times(sde, times, levels, None,
                                  f'sampling.num_steps={s.num_steps} with this method and end')
  except (TypeError, ValueError) as e:
    _require(problems, False, 'sampling.times', times, str(e).rstrip('.'))
  return problems


def _eval_problems(c) -> List[str]:
  e, problems = c.eval, []
  _positive_int(problems, c, 'eval.begin_ckpt')
  _require(problems, e.end_ckpt >= e.begin_ckpt, 'eval.end_ckpt', e.end_ckpt,
           f'it is below eval.begin_ckpt={e.begin_ckpt}; the range is inclusive, so use '
           f'end_ckpt >= begin_ckpt')
  _positive_int(problems, c, 'eval.num_samples')
  if e.enable_sampling:
    _require(problems, e.num_samples >= 2, 'eval.num_samples', e.num_samples,
             'FID needs a covariance of the samples; use at least 2 (the paper uses 50000)')
  _require(problems, isinstance(e.is_splits, int) and 1 <= e.is_splits <= e.num_samples,
           'eval.is_splits', e.is_splits,
           f'use a part count between 1 and eval.num_samples={e.num_samples} (1 or 10)')
  _require(problems, e.wait_for_checkpoint_secs >= 0, 'eval.wait_for_checkpoint_secs',
           e.wait_for_checkpoint_secs, 'use 0 (do not wait) or a number of seconds')
  return problems + _elbo_problems(c)


def _elbo_problems(c) -> List[str]:
  """``eval.elbo_samples`` is a count of draws, 0 (the exact sum) only for the DDPM chain's
  bound, at most the chain's ``N - 1`` denoising terms; checked against the bound's kind when
  ``eval.enable_elbo`` asks for it."""
  e, problems = c.eval, []
  samples = e.elbo_samples
  if not (isinstance(samples, int) and not isinstance(samples, bool) and samples >= 0):
    return [f'config.eval.elbo_samples={samples!r} is invalid: use a positive number of draws '
            'per image (16), or 0 for the exact sum over the chain of a discrete-time VP '
            'model.']
  if not e.enable_elbo:
    return problems
  from score_sde import elbo
  if elbo.uses_chain(c):
    steps = c.model.num_scales
    _require(problems, isinstance(steps, int) and steps >= 2, 'model.num_scales', steps,
             'the bound of a discrete-time VP model (eval.enable_elbo) sums over its chain of '
             'N = model.num_scales steps, which needs N >= 2')
    if isinstance(steps, int) and steps >= 2:
      _require(problems, samples <= steps - 1, 'eval.elbo_samples', samples,
               f'the chain of model.num_scales={steps} steps has {steps - 1} denoising terms; '
               f'draw at most {steps - 1}, or use 0 for their exact sum')
  else:
    _require(problems, samples >= 1, 'eval.elbo_samples', samples,
             'the continuous-time bound (this model is not a discrete-time VP one) is estimated '
             'from sampled times; use a positive number of draws per image, e.g. 16 (0, the '
             'exact sum, exists only for the DDPM chain)')
  return problems


def _data_problems(c) -> List[str]:
  d, problems = c.data, []
  size = d.image_size
  _require(problems, isinstance(size, int) and size >= 8 and size & (size - 1) == 0,
           'data.image_size', size, 'use a power of two >= 8 (8, 16, 32, ..., 1024)')
  workers = d.num_workers
  _require(problems, workers is None or (isinstance(workers, int) and workers >= 0),
           'data.num_workers', workers, 'use None (min(8, CPU count)), 0 / 1 (serial) or more')
  dataset = str(d.dataset).lower()
  channels = DATASET_CHANNELS.get(dataset)
  if channels is None:
    _require(problems, d.num_channels in (1, 3), 'data.num_channels', d.num_channels,
             'use 1 (grey) or 3 (RGB)')
  else:
    _require(problems, d.num_channels == channels, 'data.num_channels', d.num_channels,
             f'{d.dataset} images have {channels} channel(s); set it to {channels}')
  if dataset == 'lsun':
    scenes = sorted(importlib.import_module('score_sde.data.remote').LSUN_SCENES)
    _require(problems, d.category in scenes, 'data.category', d.category,
             f'LSUN needs a scene category, one of {", ".join(scenes)}')
  return problems


def _model_problems(c) -> List[str]:
  m, problems = c.model, []
  for name in ('nf', 'num_res_blocks', 'num_scales'):
    _positive_int(problems, c, f'model.{name}')
  _require(problems, m.num_scales >= 2, 'model.num_scales', m.num_scales,
           'the discretisation needs at least 2 noise levels')
  _require(problems, m.conv_size == 3, 'model.conv_size', m.conv_size,
           'the models implement 3x3 convolutions only; set it to 3')
  _require(problems, 0. <= m.ema_rate < 1., 'model.ema_rate', m.ema_rate,
           'use a decay in [0, 1): 0.999 (VE) or 0.9999 (VP, sub-VP)')
  _require(problems, 0. <= m.dropout < 1., 'model.dropout', m.dropout, 'use a rate in [0, 1)')
  _require(problems, m.init_scale >= 0., 'model.init_scale', m.init_scale,
           'use 0 (the default initialiser scale) or a positive scale')
  _require(problems, not m.remat or str(m.name).lower() in ('ncsnpp', 'ddpm'), 'model.remat',
           m.remat, f'rematerialisation is implemented for ncsnpp and ddpm, not {m.name!r}; '
                    'set model.remat=False')
  if str(m.name).lower() in NCSN_MODELS:
    problems += _ncsn_problems(c)  # Their architecture fields are their own.
  else:
    problems += _architecture_problems(c)
  problems += _normalization_problems(c)
  problems += _sde_parameter_problems(c)
  problems += _parameterization_problems(c)
  return problems


def _parameterization_problems(c) -> List[str]:
  """``model.parameterization`` names a registered output (or 'auto'), and ``scale_by_sigma``,
  which divides the output by sigma, is kept for a network whose output is the score."""
  m, problems = c.model, []
  from score_sde import sde_lib  # Imported only when validation runs (jax).
  from score_sde.models import parameterization
  choices = parameterization.choices()
  value = m.parameterization
  if str(value).lower() not in choices:
    return [f'config.model.parameterization={value!r} is not supported; use one of '
            f'{", ".join(repr(o) for o in choices)}.']
  try:
    sde = sde_lib.get_sde(c)
  except (KeyError, TypeError, ValueError):
    return problems  # training.sde's own problem is reported with it.
  name = parameterization.get_parameterization(value, sde).name
  # On VP / sub-VP, scale_by_sigma is refused whatever the output (_architecture_problems).
  ok = not (m.scale_by_sigma and isinstance(sde, sde_lib.VESDE)) or name == 'score'
  _require(problems, ok, 'model.scale_by_sigma',
           m.scale_by_sigma, f'it divides the output by sigma, which makes the output the score; '
                             f'set it to False for model.parameterization={value!r}')
  return problems


def _class_problems(c) -> List[str]:
  """Class-conditional training and guided sampling (``sampling.guidance``)."""
  m, s, problems = c.model, c.sampling, []
  _require(problems, isinstance(m.num_classes, int) and m.num_classes >= 0, 'model.num_classes',
           m.num_classes, 'use 0 (unconditional) or the number of classes of the data')
  if m.num_classes:
    _require(problems, str(m.name).lower() in ('ncsnpp', 'ddpm'), 'model.num_classes',
             m.num_classes, f'class-conditional networks are ncsnpp and ddpm, not {m.name!r}; '
                            'set model.num_classes=0')
    _require(problems, m.conditional, 'model.conditional', m.conditional,
             'the class embedding is added to the time embedding; set it to True')
  _require(problems, 0. <= c.training.label_dropout <= 1., 'training.label_dropout',
           c.training.label_dropout, 'use a probability in [0, 1], e.g. 0.1')
  _require(problems, s.cfg_scale >= -1, 'sampling.cfg_scale', s.cfg_scale,
           'use 0 (the conditional score), -1 (the unconditional one) or a positive guidance '
           'weight, e.g. 1-4')
  if s.cfg_scale:
    _require(problems, m.num_classes > 0, 'sampling.cfg_scale', s.cfg_scale,
             'classifier-free guidance needs a class-conditional network; set '
             'model.num_classes > 0 (and train it) or sampling.cfg_scale=0')
  k = c.classifier
  for name in ('num_classes', 'blocks_per_group', 'channel_multiplier', 'n_iters'):
    _positive_int(problems, c, f'classifier.{name}')
  _require(problems, 0. <= k.ema_rate < 1., 'classifier.ema_rate', k.ema_rate,
           'use a decay in [0, 1), e.g. 0.999')
  classes = m.num_classes or (k.num_classes if s.classifier_scale else 0)
  labels = tuple(s.class_labels)
  if labels and not classes:
    problems.append(f'config.sampling.class_labels={labels!r} but nothing conditions on a '
                    'class: set model.num_classes > 0 (classifier-free guidance) or '
                    'sampling.classifier_scale > 0 (classifier guidance), or leave it ().')
  elif labels:
    _require(problems, all(isinstance(y, int) and 0 <= y < classes for y in labels),
             'sampling.class_labels', labels, f'classes are integers in [0, {classes})')
  return problems


def _architecture_problems(c) -> List[str]:
  m, problems = c.model, []
  ch_mult = tuple(m.ch_mult)
  ok_mult = bool(ch_mult) and all(isinstance(k, int) and k > 0 for k in ch_mult)
  _require(problems, ok_mult, 'model.ch_mult', m.ch_mult,
           'use a non-empty tuple of positive integers, one per resolution')
  size = c.data.image_size
  if ok_mult and isinstance(size, int) and size > 0:
    factor = 2 ** (len(ch_mult) - 1)
    _require(problems, size % factor == 0, 'model.ch_mult', m.ch_mult,
             f'{len(ch_mult)} resolutions halve data.image_size={size} {len(ch_mult) - 1} times, '
             f'which needs a multiple of {factor}; use fewer entries or larger images')
    if size % factor == 0:
      reachable = [size // 2 ** i for i in range(len(ch_mult))]
      bad = [r for r in m.attn_resolutions if r not in reachable]
      _require(problems, not bad, 'model.attn_resolutions', m.attn_resolutions,
               f'{bad} is never reached; the network runs at {reachable}')
  if m.fir:
    kernel = tuple(m.fir_kernel)
    _require(problems, bool(kernel) and all(k > 0 for k in kernel), 'model.fir_kernel',
             m.fir_kernel, 'use a non-empty sequence of positive taps, e.g. (1, 3, 3, 1)')
  continuous, sde = c.training.continuous, str(c.training.sde).lower()
  if m.embedding_type == 'fourier':
    _require(problems, continuous, 'model.embedding_type', m.embedding_type,
             'the Fourier embedding reads log sigma(t), which discrete training does not pass; '
             "use 'positional' or training.continuous=True")
    _require(problems, m.fourier_scale > 0, 'model.fourier_scale', m.fourier_scale,
             'use a positive scale of the random frequencies, e.g. 16')
  elif sde == 'vesde' and continuous:
    problems.append(f'config.model.embedding_type={m.embedding_type!r} is invalid: continuous VE '
                    "training conditions the network on sigma(t); use 'fourier'.")
  _require(problems, not (m.scale_by_sigma and sde in ('vpsde', 'subvpsde')),
           'model.scale_by_sigma', m.scale_by_sigma,
           f'{sde} scores are already divided by the marginal std; set it to False '
           '(True is for vesde only)')
  return problems


def _sde_parameter_problems(c) -> List[str]:
  m, problems = c.model, []
  sde = str(c.training.sde).lower()
  if sde == 'vesde':
    _require(problems, 0. < m.sigma_min < m.sigma_max, 'model.sigma_max', m.sigma_max,
             f'VE needs 0 < sigma_min (={m.sigma_min}) < sigma_max; sigma_max is usually the '
             'largest pairwise distance between training images')
  elif sde in ('vpsde', 'subvpsde'):
    _require(problems, 0. < m.beta_min < m.beta_max, 'model.beta_max', m.beta_max,
             f'{sde} needs 0 < beta_min (={m.beta_min}) < beta_max, e.g. (0.1, 20)')
    if sde == 'vpsde' and not c.training.continuous:
      # The DDPM chain uses beta_i = beta(t_i) / N, which must be a probability.
      _require(problems, m.beta_max < m.num_scales, 'model.beta_max', m.beta_max,
               f'discrete DDPM steps use beta_max / num_scales (={m.num_scales}) < 1; '
               'raise model.num_scales or lower beta_max')
  return problems


# --------------------------------------------------------------------------------- NCSN / NCSNv2
# The RefineNet score networks of models/ncsnv2.py, and the normalisations each one has.
NCSN_MODELS = ('ncsn', 'ncsnv2_64', 'ncsnv2_128', 'ncsnv2_256')
_NCSNV2_NORMALIZATIONS = ('InstanceNorm++', 'InstanceNorm', 'VarianceNorm', 'GroupNorm')


def _normalization_problems(c) -> List[str]:
  m, problems = c.model, []
  name = str(m.name).lower()
  if m.normalization not in CHOICES['model.normalization']:
    return problems  # Reported by _name_problems.
  if name == 'ncsn':
    allowed = ('InstanceNorm++',)  # The only one with a noise-conditional form.
  elif name in NCSN_MODELS:
    allowed = _NCSNV2_NORMALIZATIONS
  else:
    allowed = ('GroupNorm',)
  _require(problems, m.normalization in allowed, 'model.normalization', m.normalization,
           f'{m.name} supports {", ".join(repr(a) for a in allowed)}')
  if name in NCSN_MODELS and m.normalization == 'GroupNorm':
    _require(problems, isinstance(m.nf, int) and m.nf % 32 == 0, 'model.nf', m.nf,
             'GroupNorm has 32 groups, so the channel counts (multiples of nf) must be '
             'multiples of 32')
  return problems


def _ncsn_problems(c) -> List[str]:
  """The NCSN networks take the index i of sigma_i in the descending SMLD ladder as their label,
  which only discrete VE training (the SMLD loss) and the discrete VE score pass."""
  m, t, problems = c.model, c.training, []
  sde = str(t.sde).lower()
  _require(problems, sde == 'vesde', 'training.sde', t.sde,
           f"{m.name} is an SMLD network conditioned on VE noise levels; set it to 'vesde'")
  _require(problems, not t.continuous, 'training.continuous', t.continuous,
           f'{m.name} takes the index of a noise level, not the sigma(t) of continuous '
           'training; set it to False (the SMLD loss)')
  return problems


def _optim_problems(c) -> List[str]:
  o, problems = c.optim, []
  _require(problems, o.lr > 0, 'optim.lr', o.lr, 'use a positive learning rate, e.g. 2e-4')
  _require(problems, isinstance(o.warmup, int) and o.warmup >= 0, 'optim.warmup', o.warmup,
           'use 0 (no warmup) or a positive step count')
  for name in ('beta1', 'beta2'):
    value = _get(o, name)
    _require(problems, 0. <= value < 1., f'optim.{name}', value, 'use a decay in [0, 1)')
  _require(problems, o.eps > 0, 'optim.eps', o.eps, 'use a small positive value, e.g. 1e-8')
  _require(problems, o.weight_decay >= 0, 'optim.weight_decay', o.weight_decay,
           'use 0 or a positive decay')
  _require(problems, not (o.weight_decay and o.optimizer == 'Adam'), 'optim.weight_decay',
           o.weight_decay, "Adam has no decoupled weight decay; set optim.optimizer='AdamW' or "
                           'the decay to 0')
  return problems


def distributed_problems(c) -> List[str]:
  """The ``distributed`` section's problems; ``cli`` checks them before a multi-host run's
  processes start (the rest of the config is checked once JAX counts the devices)."""
  problems = []
  _positive_int(problems, c, 'distributed.heartbeat_timeout_s')
  return problems
