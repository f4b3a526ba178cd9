"""Checks a whole configuration once, at the boundary, before anything is built or written.

``validate_config`` reads every field of a config, collects every problem it finds and raises one
``errors.ConfigError`` (a ``ValueError``) listing all of them, each naming the field, its bad
value and the fix. A run with a typo, a batch that does not split over the devices or a loss that
does not exist for the chosen SDE therefore fails in the first second instead of after
compilation or hours into training.

Names (SDE, model, dataset, sampling method, predictor, corrector) are checked against the
registries of the subpackages that define them (``sde_lib.SDES``, ``models.MODELS``,
``data.DATASETS``, ``sampling.METHODS``, ``sampling.PREDICTORS``, ``sampling.CORRECTORS``; a
method's entry also gives its maximum order and grid, ``sampling.base.Method``), and the values of
every other enumerated field against the table of the module that branches on it (``choices``);
those modules are imported only when validation runs. The entry a config names reports what the
config asks of it that it does not have, as ``(field, fix)`` pairs of its
``config_problems(config)``, which validation words like its own: the SDE (``sde_lib``: its
parameters; a discrete-time loss only for the SDEs with a discrete model), the network (``models``:
``models.utils.unet_problems`` for the U-Nets, ``ncsnv2`` for the SMLD networks, which take a
noise-level index and train with the discrete VE loss only) and the dataset
(``data.sources.Dataset``: its images' channels, LSUN's category). The rules across sections follow
the reference implementation (yang-song/score_sde):

* Likelihood weighting exists only for the continuous loss (eq. 7); the ``'elbo'`` weighting, the
  variational bound's diffusion term summed over the data dimensions, needs
  ``reduce_mean=False``.
* ``scale_by_sigma`` belongs to a network whose output is the score (``model.parameterization``,
  ``models.parameterization``).
* Ancestral sampling is stochastic by construction: it has no probability-flow form.
* A weight decay needs the decoupled form of AdamW (``optim.py`` refuses it with Adam).
* The variational bound's draws suit the bound of the model (``elbo_problems``, which
  ``Pipeline.elbo`` checks its arguments with too).
"""
import difflib
import importlib
import numbers
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import ml_collections

from score_sde.common import errors

# Enumerated fields whose values are listed here; the others are read off their modules' tables
# (choices()).
CHOICES = {
    'optim.optimizer': ('Adam', 'AdamW'),
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
    ('sampling.method', 'score_sde.sampling', 'METHODS'),
    ('sampling.predictor', 'score_sde.sampling', 'PREDICTORS'),
    ('sampling.corrector', 'score_sde.sampling', 'CORRECTORS'),
    ('classifier.name', 'score_sde.models', 'CLASSIFIERS'),
)

# The predictor / corrector name that switches the step off: valid whatever is registered.
_OFF = 'none'


def registered_names(module_name: str, attribute: str) -> Tuple[str, ...]:
  """Lower-case names in the registry ``module_name.attribute``."""
  return tuple(str(name).lower()
               for name in getattr(importlib.import_module(module_name), attribute))


def choices() -> Dict[str, Tuple[Any, ...]]:
  """Every enumerated field and the values it takes: ``CHOICES``, and the tables (tuples, or a
  dict's keys) of the modules that branch on the other fields."""
  from score_sde import losses  # Imported only when validation runs (jax).
  from score_sde.data import sources
  from score_sde.models import layers, ncsnpp, normalization, refinenet
  from score_sde.sampling import multistep, network, unipc
  tables = {
      'model.normalization': normalization.NORMALIZATIONS,
      'model.interpolation': refinenet.INTERPOLATIONS,
      'model.nonlinearity': layers.ACTIVATIONS,
      **{f'model.{field}': values for field, values in ncsnpp.CHOICES.items()},
      'model.attention_type': ncsnpp.ATTENTION_TYPES,
      'model.reverse_variance': losses.REVERSE_VARIANCES,
      'training.weighting': losses.WEIGHTINGS,
      'eval.bpd_dataset': sources.SPLITS,
      # '' leaves the end to the SDE's measured default (multistep.DEFAULT_FINALS).
      'sampling.final_step': ('',) + multistep.FINALS,
      'sampling.unipc_variant': unipc.VARIANTS,
      # None is the sampler's float output; a config names the 8-bit grid of the metrics.
      'eval.quantization': [q for q in network.QUANTIZATIONS if q is not None],
  }
  return dict(CHOICES, **{field: tuple(values) for field, values in tables.items()})


def _registered(c, field: str) -> Any:
  """The registry entry (``REGISTRIES``) that ``field`` names; None for a name that is not
  registered (``_name_problems`` reports it)."""
  module, attribute = next((m, a) for f, m, a in REGISTRIES if f == field)
  registry = getattr(importlib.import_module(module), attribute)
  name = _get(c, field)
  return registry.get(name) if name in registry else None


def _entry_problems(c, field: str) -> List[str]:
  """The problems that the entry ``field`` names finds in ``c`` (its ``config_problems``)."""
  entry = _registered(c, field)
  if entry is None:
    return []
  return [_invalid(f'config.{f}', _get(c, f), fix) for f, fix in entry.config_problems(c)]


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
    if field in ('sampling.predictor', 'sampling.corrector'):
      known.add(_OFF)
    value = _get(c, field)
    if str(value).lower() not in known:
      problems.append(f'config.{field}={value!r} is not registered; use one of '
                      f'{", ".join(sorted(known))}.')
  for field, options in choices().items():
    value = _get(c, field)
    if value not in options:
      problems.append(_unsupported(f'config.{field}', value, options))
  return problems


# --------------------------------------------------------------------------------- helpers
def _invalid(name: str, value: Any, fix: str) -> str:
  """The sentence of one problem of ``name`` (a config field, ``config.<field>``, or an
  argument), holding ``value``."""
  return f'{name}={value!r} is invalid: {fix}.'


def _unsupported(name: str, value: Any, options: Sequence[Any]) -> str:
  return f'{name}={value!r} is not supported; use one of {", ".join(map(repr, options))}.'


def _require(problems: List[str], ok: bool, field: str, value: Any, fix: str) -> None:
  if not ok:
    problems.append(_invalid(f'config.{field}', value, fix))


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
  from score_sde.models import utils as mutils  # Imported only when validation runs (jax).
  _require(problems, t.compute_dtype in mutils.COMPUTE_DTYPES, 'training.compute_dtype',
           t.compute_dtype, f'use {" or ".join(map(repr, mutils.COMPUTE_DTYPES))}')
  below = t.get('float32_below_std', 0.)
  _require(problems, isinstance(below, (int, float)) and below >= 0.,
           'training.float32_below_std', below,
           'use a noise std >= 0 (0: every noise level in the compute dtype)')
  profile = t.profile_steps
  ok = profile == () or (isinstance(profile, tuple) and len(profile) == 2 and all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in profile))
  _require(problems, ok, 'training.profile_steps', profile,
           'use (first_step, count) with both >= 1, e.g. (100, 5), or () for no trace')
  if not t.continuous:
    _require(problems, t.weighting not in ('likelihood', 'edm'), 'training.weighting',
             t.weighting, f'{t.weighting!r} weighting exists only for the continuous loss; use '
                          "'dsm' or training.continuous=True")
  if t.weighting == 'edm':
    from score_sde.models import parameterization  # Imported only when validation runs (jax).
    preconditioned = parameterization.preconditioned_names()
    _require(problems, t.p_std > 0, 'training.p_std', t.p_std,
             "the std of EDM's ln sigma must be positive (EDM: 1.2)")
    _require(problems, str(c.model.parameterization).lower() in preconditioned,
             'model.parameterization', c.model.parameterization,
             "training.weighting='edm' draws the noise level itself and needs EDM's "
             f'preconditioned denoiser: use one of {", ".join(map(repr, preconditioned))}')
  _require(problems, not (t.weighting == 'elbo' and t.reduce_mean), 'training.reduce_mean',
           t.reduce_mean, "training.weighting='elbo' is the bound's sum over the data "
                          'dimensions; set it to False')
  return problems + _entry_problems(c, 'training.sde')


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
  from score_sde.sampling import methods, schedule  # Imported only when validation runs (jax).
  if s.method not in methods.METHODS:
    return problems  # _name_problems reports it, listing the registered methods.
  entry = methods.get(s.method)
  gridded = ', '.join(methods.fixed_step_names())
  if isinstance(pc_steps, int) and pc_steps not in (0, c.model.num_scales):
    _require(problems, c.training.continuous, 'sampling.pc_num_steps', pc_steps,
             f'a discrete-time network only knows its model.num_scales={c.model.num_scales} '
             f'noise levels; use 0, or a fixed-step sampling.method ({gridded}) for fewer '
             'steps')
  if entry.max_order:
    order = s.order
    _require(problems, isinstance(order, int) and 0 <= order <= entry.max_order,
             'sampling.order', order,
             f'{s.method} is implemented for orders 1 to {entry.max_order} (0: its default)')
  if entry.steps_field == 'num_steps':
    schedules = schedule.SCHEDULES
    _require(problems, s.schedule in ('',) + schedules, 'sampling.schedule',
             s.schedule, f"use '' (the method's own) or one of {', '.join(schedules)}")
    _require(problems, s.rho > 0, 'sampling.rho', s.rho,
             'the karras schedule needs rho > 0 (EDM uses 7)')
  problems += _times_problems(c, entry, gridded)
  _require(problems, 0. <= _get(s, 'eta') <= 1., 'sampling.eta', _get(s, 'eta'),
           'use 0 (DDIM) to 1 (ancestral sampling)')
  _require(problems, 0. <= s.s_tmin < s.s_tmax, 'sampling.s_tmax', s.s_tmax,
           f'the churn acts on noise levels in [s_tmin, s_tmax]: use 0 <= s_tmin (={s.s_tmin}) '
           "< s_tmax (EDM's inf; 50 on ImageNet-64)")
  _require(problems, s.s_noise > 0, 'sampling.s_noise', s.s_noise,
           "the churn's noise scale must be positive (EDM: 1, 1.003 on ImageNet-64)")
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


def _times_problems(c, entry, gridded: str) -> List[str]:
  """``sampling.times``: a grid that starts at T, decreases to a positive eps and has the
  levels ``num_steps`` needs (the method's ``levels``); only the fixed-step samplers read it."""
  s, problems = c.sampling, []
  times = tuple(s.times)
  if not times:
    return problems
  if entry.steps_field != 'num_steps':
    _require(problems, False, 'sampling.times', times,
             f"only the fixed-step methods ({gridded}) take a grid; {s.method!r} does not read "
             'it, so set it to ()')
    return problems
  from score_sde import sde_lib
  from score_sde.sampling import schedule
  try:
    sde = sde_lib.get_sde(c)
  except (KeyError, TypeError, ValueError):
    return problems  # training.sde's own problem is reported with it.
  try:
    levels = None
    if s.num_steps:
      levels = entry.levels(s.num_steps, entry.settings(s, sde))
    _, starts_at_T = schedule.check_times(
        sde, times, f'sampling.num_steps={s.num_steps} with this method and end', levels)
    if not starts_at_T:
      raise ValueError(f'times must start at T={sde.T}, where the prior is drawn; got '
                       f'{times[0]}')
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
  return problems + elbo_problems(c, of_model=e.enable_elbo)


def elbo_problems(config: ml_collections.ConfigDict, num_samples: Any = None,
                  time_sampling: Any = None, of_model: bool = True) -> List[str]:
  """Problems of the variational bound's draws per image and time sampling, one sentence each.

  They are ``config.eval.elbo_samples`` and ``config.eval.elbo_time_sampling``, or where given
  (not None) ``Pipeline.elbo``'s ``num_samples`` and ``time_sampling``; each problem names the
  one it found. The draws are a whole number >= 0, and ``of_model`` checks them against the
  bound of ``config``'s model: a discrete-time VP model's is the sum over its DDPM chain
  (``elbo.uses_chain``) of ``N - 1`` denoising terms (``N = model.num_scales >= 2``), of which
  it draws at most ``N - 1``, or 0 for the exact sum; the continuous-time bound is estimated
  from sampled times, at least 1 per image.
  """
  from score_sde import elbo  # Imported only when validation runs (jax).
  samples_name, samples = (('config.eval.elbo_samples', config.eval.elbo_samples)
                           if num_samples is None else ('num_samples', num_samples))
  timing_name, timing = (('config.eval.elbo_time_sampling', config.eval.elbo_time_sampling)
                         if time_sampling is None else ('time_sampling', time_sampling))
  problems = []
  if timing not in elbo.TIME_SAMPLINGS:
    problems.append(_unsupported(timing_name, timing, elbo.TIME_SAMPLINGS))
  if not (isinstance(samples, numbers.Integral) and not isinstance(samples, bool)
          and samples >= 0):
    return problems + [_invalid(samples_name, samples, 'use a positive number of draws per image '
                                '(16), or 0 for the exact sum over the chain of a discrete-time '
                                'VP model')]
  if not of_model:
    return problems
  if elbo.uses_chain(config):
    steps = config.model.num_scales
    if not (isinstance(steps, int) and steps >= 2):
      problems.append(_invalid('config.model.num_scales', steps, 'the bound of a discrete-time '
                               'VP model (eval.enable_elbo) sums over its chain of N = '
                               'model.num_scales steps, which needs N >= 2'))
    elif samples > steps - 1:
      problems.append(_invalid(samples_name, samples, f'the chain of model.num_scales={steps} '
                               f'steps has {steps - 1} denoising terms; draw at most {steps - 1}, '
                               'or use 0 for their exact sum'))
  elif samples < 1:
    problems.append(_invalid(samples_name, samples, 'the continuous-time bound (this model is not '
                             'a discrete-time VP one) is estimated from sampled times; use a '
                             'positive number of draws per image, e.g. 16 (0, the exact sum, '
                             'exists only for the DDPM chain)'))
  return problems


def _data_problems(c) -> List[str]:
  d, problems = c.data, []
  size = d.image_size
  _require(problems, isinstance(size, int) and size >= 8 and size & (size - 1) == 0,
           'data.image_size', size, 'use a power of two >= 8 (8, 16, 32, ..., 1024)')
  workers = d.num_workers
  _require(problems, workers is None or (isinstance(workers, int) and workers >= 0),
           'data.num_workers', workers, 'use None (min(8, CPU count)), 0 / 1 (serial) or more')
  return problems + _entry_problems(c, 'data.dataset')


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
  _require(problems, m.ema_halflife_kimg >= 0., 'model.ema_halflife_kimg', m.ema_halflife_kimg,
           "use 0 (model.ema_rate) or the EMA's half-life in thousands of images (EDM: 500)")
  _require(problems, m.ema_rampup_ratio >= 0., 'model.ema_rampup_ratio', m.ema_rampup_ratio,
           'use 0 (no ramp) or the largest half-life as a share of the images seen (EDM: 0.05)')
  _require(problems, 0. <= m.dropout < 1., 'model.dropout', m.dropout, 'use a rate in [0, 1)')
  _require(problems, m.init_scale >= 0., 'model.init_scale', m.init_scale,
           'use 0 (the default initialiser scale) or a positive scale')
  problems += _entry_problems(c, 'model.name')
  problems += _parameterization_problems(c)
  return problems


def _parameterization_problems(c) -> List[str]:
  """``model.parameterization`` names a registered output (or 'auto'), and ``scale_by_sigma``,
  which divides the output by sigma, is kept for a network whose output is the score; EDM's
  preconditionings need continuous time, a positive ``sigma_data`` and (``edm_vp``) a VP SDE."""
  m, problems = c.model, []
  from score_sde import sde_lib  # Imported only when validation runs (jax).
  from score_sde.models import parameterization
  if str(m.parameterization).lower() in parameterization.preconditioned_names():
    _require(problems, c.training.continuous, 'training.continuous', c.training.continuous,
             f'model.parameterization={m.parameterization!r} labels the network by its noise '
             'level, which the discrete objectives do not; set it to True')
    _require(problems, m.sigma_data > 0, 'model.sigma_data', m.sigma_data,
             "use the data's standard deviation, e.g. 0.5 (EDM, images in [-1, 1])")
    if m.sigma_data <= 0:
      return problems
  options = parameterization.choices()
  value = m.parameterization
  if str(value).lower() not in options:
    return [_unsupported('config.model.parameterization', value, options)]
  try:
    sde = sde_lib.get_sde(c)
  except (KeyError, TypeError, ValueError):
    return problems  # training.sde's own problem is reported with it.
  try:
    name = parameterization.get_parameterization(value, sde, m.sigma_data).name
  except errors.ConfigError as e:
    return problems + [f'config.model.parameterization={value!r}: {e}']
  # On VP / sub-VP, scale_by_sigma is refused whatever the output (models.utils.unet_problems).
  ok = not (m.scale_by_sigma and isinstance(sde, sde_lib.VESDE)) or name == 'score'
  _require(problems, ok, 'model.scale_by_sigma',
           m.scale_by_sigma, f'it divides the output by sigma, which makes the output the score; '
                             f'set it to False for model.parameterization={value!r}')
  return problems


def _class_problems(c) -> List[str]:
  """Class-conditional training and guided sampling (``sampling.guidance``); which networks take
  classes is the network's own problem (``_model_problems``)."""
  m, s, problems = c.model, c.sampling, []
  _require(problems, isinstance(m.num_classes, int) and m.num_classes >= 0, 'model.num_classes',
           m.num_classes, 'use 0 (unconditional) or the number of classes of the data')
  if m.num_classes:
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
