"""Reads the checkpoints released with score_sde (JAX) and converts them into our orbax layout.

``convert`` (and the command line below) also takes score_sde_pytorch's ``checkpoint_<N>.pth``
files, read by ``pytorch_checkpoints`` (through ``torch_files``, which trusts nothing in them);
the format is told from the file's content.

The released files ``checkpoints/checkpoint_<N>`` were written by
``flax.training.checkpoints.save_checkpoint`` (flax 0.3) from the reference code's state

  State(step, optimizer, lr, model_state, ema_rate, params_ema, rng)

as one msgpack map. ``optimizer`` is a ``flax.optim.Optimizer``, stored as
``{'target': params, 'state': {'step': k, 'param_states': P}}`` where ``P`` mirrors ``params`` with
each leaf replaced by flax Adam's ``{'grad_ema': m, 'grad_sq_ema': v}``. ``<N>`` counts snapshots,
``N = step // snapshot_freq``, while ``State.step`` holds the number of updates done (a few more
than ``N * snapshot_freq``, because the reference ran ``n_jitted_steps`` updates per loop turn).

flax Adam and ``optax.scale_by_adam`` keep the same moments (``m <- b1 m + (1 - b1) g``,
``v <- b2 v + (1 - b2) g^2``, bias correction with ``k + 1``), so the moments carry over exactly
and training can resume from a released checkpoint.

Command line (writes ``DIR/checkpoints/<training step>``, which ``main.py --mode eval`` evaluates
as snapshot ``N``; a file it refuses is one line on stderr and exit status 2)::

  python -m score_sde.conversion.released_checkpoints \\
      --config configs/ve/cifar10_ncsnpp_continuous.py \\
      --checkpoint exp/ve/cifar10_ncsnpp_continuous/checkpoints/checkpoint_26 --workdir DIR
"""
import collections
import re
import sys
from typing import Any, Dict, Optional

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging
from etils import epath

from score_sde import models, optim
from score_sde.common import errors, logs
from score_sde.configs import record
from score_sde.conversion import pytorch_checkpoints, torch_files
from score_sde.io import checkpoint
from score_sde.training.train_state import TrainState

USER_ERROR_STATUS = 2  # As main.py's.
_FILE_PATTERN = re.compile(r'checkpoint_(\d+)(\.pth)?$')
_MOMENTS = ('grad_ema', 'grad_sq_ema')


def snapshot_index(path) -> Optional[int]:
  """``N`` of a file named ``checkpoint_<N>`` (JAX) or ``checkpoint_<N>.pth`` (PyTorch port)."""
  match = _FILE_PATTERN.search(epath.Path(path).name)
  return int(match.group(1)) if match else None


def _resolve(path) -> epath.Path:
  """A file as is; a directory -> its ``checkpoint_<N>`` with the largest N."""
  path = epath.Path(path)
  if not path.exists():
    raise torch_files.CheckpointNotFoundError(f'No released checkpoint at {path}.')
  if not path.is_dir():
    return path
  files = [p for p in path.iterdir() if snapshot_index(p) is not None]
  if not files:
    raise torch_files.CheckpointNotFoundError(
        f'{path} holds no checkpoint_<N> file; pass the file itself.')
  return max(files, key=snapshot_index)


def _split_moments(param_states):
  """flax Adam per-leaf ``{'grad_ema', 'grad_sq_ema'}`` dicts -> the trees (mu, nu)."""
  if isinstance(param_states, dict) and set(param_states) == set(_MOMENTS):
    return param_states['grad_ema'], param_states['grad_sq_ema']
  if not isinstance(param_states, dict):
    raise ValueError(f'Unexpected flax optimizer state leaf {type(param_states).__name__}; only '
                     'flax.optim.Adam states (grad_ema, grad_sq_ema) are understood.')
  pairs = {k: _split_moments(v) for k, v in param_states.items()}
  return {k: mu for k, (mu, _) in pairs.items()}, {k: nu for k, (_, nu) in pairs.items()}


def load_released_checkpoint(path) -> Dict[str, Any]:
  """Parses a released ``checkpoint_<N>`` file (or the newest one in a directory); no flax.optim.

  Returns:
    dict with ``step`` (int, updates done), ``params`` and ``params_ema`` (nested dicts of numpy
    float32 arrays, the linen ``params`` collection), ``adam`` (``{'count', 'mu', 'nu'}`` or
    None when the optimizer state is not flax Adam's), ``model_state`` (other collections),
    ``lr``, ``ema_rate`` (floats), ``rng`` (uint32 (2,) raw key), ``snapshot`` (N or None),
    ``path``.
  Raises:
    torch_files.CheckpointNotFoundError: nothing at ``path``.
    torch_files.CheckpointFileError: the file is not a score_sde training state.
  """
  path = _resolve(path)
  try:
    raw = flax.serialization.msgpack_restore(path.read_bytes())
  except Exception as e:
    message = ' '.join(str(e).split())
    raise torch_files.CheckpointFileError(
        f'{path} is not a flax msgpack checkpoint ({type(e).__name__}: {message}).') from None
  missing = {'step', 'optimizer', 'params_ema'} - set(raw if isinstance(raw, dict) else ())
  if missing or not isinstance(raw['optimizer'], dict) or 'target' not in raw['optimizer']:
    raise torch_files.CheckpointFileError(
        f'{path} is not a score_sde State checkpoint: missing {sorted(missing)} (expected '
        'fields step, optimizer.target, params_ema).')
  adam = None
  opt_state = raw['optimizer'].get('state', {})
  try:
    mu, nu = _split_moments(opt_state['param_states'])
    adam = {'count': int(np.asarray(opt_state['step'])), 'mu': mu, 'nu': nu}
  except (KeyError, ValueError) as e:
    logging.warning('%s: optimizer moments not read (%s); they will start from zero.', path, e)
  model_state = raw.get('model_state') or {}
  if model_state:  # No released score model keeps non-parameter collections; say so if one does.
    logging.warning('%s: model_state collections %s are not used.', path, sorted(model_state))
  return {'step': int(np.asarray(raw['step'])), 'params': raw['optimizer']['target'],
          'params_ema': raw['params_ema'], 'adam': adam, 'model_state': model_state,
          'lr': _float_or_none(raw.get('lr')), 'ema_rate': _float_or_none(raw.get('ema_rate')),
          'rng': raw.get('rng'), 'snapshot': snapshot_index(path), 'path': str(path)}


def _float_or_none(x) -> Optional[float]:
  return None if x is None else float(np.asarray(x))


def describe_params(params) -> str:
  """'59 modules: 40 ResnetBlockBigGANpp, 6 AttnBlockpp, ...; 62,758,915 parameters'."""
  counts = collections.Counter(re.sub(r'_\d+$', '', k) for k in params)
  n = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))
  parts = ', '.join(f'{c} {name}' for name, c in counts.most_common())
  return f'{len(params)} modules: {parts}; {n:,} parameters'


def check_params(released_params, template, what: str = 'params') -> None:
  """Fails unless the released tree has exactly the template's names, shapes and dtypes.

  Raises:
    checkpoint.StructureMismatchError: naming the first differing paths and describing both
      networks, so the config that matches can be picked.
  """
  hint = (f'  released network: {describe_params(released_params)}\n'
          f'  this config\'s network: {describe_params(template)}\n'
          'Use the config the checkpoint was trained with (configs/{ve,vp,subvp}/<name>.py for '
          'exp/<sde>/<name>): *_deep_* configs have 8 residual blocks per resolution; DDPM++ '
          'differs from NCSN++ by plain (not FIR) resampling and no progressive input (the '
          'input pyramid\'s Downsample layers), both with BigGAN residual blocks; VE *_continuous '
          'configs embed time with a GaussianFourierProjection.')
  checkpoint.check_structure(checkpoint.leaf_specs({what: template}),
                             checkpoint.leaf_specs({what: released_params}),
                             f'The released {what}', hint)


def _place(tree, template):
  """numpy leaves -> jax arrays with the template leaves' dtype and sharding (if any)."""
  def one(x, t):
    x = np.asarray(x, dtype=t.dtype)
    sharding = getattr(t, 'sharding', None)
    return jax.device_put(x, sharding) if sharding is not None else jnp.asarray(x)
  return jax.tree.map(one, tree, template)


def _fill_optax_state(node, count: int, mu, nu):
  """``node`` with every Adam state's (count, mu, nu) and every other step counter replaced."""
  if isinstance(node, optax.ScaleByAdamState):
    return node._replace(count=jnp.full_like(node.count, count), mu=mu, nu=nu)
  if hasattr(node, '_fields'):  # Another optax NamedTuple state, e.g. the schedule's count.
    fields = {f: _fill_optax_state(getattr(node, f), count, mu, nu) for f in node._fields}
    if 'count' in fields:
      fields['count'] = jnp.full_like(node.count, count)
    return type(node)(**fields)
  if isinstance(node, (tuple, list)):
    return type(node)(_fill_optax_state(x, count, mu, nu) for x in node)
  if isinstance(node, dict):
    return {k: _fill_optax_state(v, count, mu, nu) for k, v in node.items()}
  return node


def _has_adam(node) -> bool:
  if isinstance(node, optax.ScaleByAdamState):
    return True
  if isinstance(node, dict):
    node = list(node.values())
  return isinstance(node, (tuple, list)) and any(_has_adam(c) for c in node)


def to_train_state(released: Dict[str, Any], template, tx: optax.GradientTransformation, *,
                   map_adam: bool = True) -> TrainState:
  """Our ``TrainState`` from ``load_released_checkpoint``'s dict.

  Args:
    released: the loaded dict.
    template: an (abstract) ``TrainState``, or just a params pytree, of the model this config
      builds (arrays or ``jax.ShapeDtypeStruct``s; a ``.sharding`` on a leaf is honoured).
    tx: the optax optimizer of this config (``optim.get_optimizer(config.optim)``).
    map_adam: carry flax Adam's moments and step into every ``ScaleByAdamState`` of
      ``tx.init`` (and the step into other optax counters, e.g. the warmup schedule's). False,
      or a ``tx`` without Adam, gives a fresh optimizer state.
  Returns:
    ``TrainState(step=released step, params, params_ema, opt_state)``.
  Raises:
    checkpoint.StructureMismatchError: the released network is not this config's network.
  """
  params_template = template.params if isinstance(template, TrainState) else template
  check_params(released['params'], params_template, 'params')
  check_params(released['params_ema'], params_template, 'params_ema')
  params = _place(released['params'], params_template)
  params_ema = _place(released['params_ema'], params_template)
  opt_state = tx.init(params)
  adam = released.get('adam')
  if map_adam and adam is not None and _has_adam(opt_state):
    check_params(adam['mu'], params_template, 'adam mu')
    check_params(adam['nu'], params_template, 'adam nu')
    opt_state = _fill_optax_state(opt_state, adam['count'], _place(adam['mu'], params_template),
                                  _place(adam['nu'], params_template))
  elif map_adam:
    logging.warning('Optimizer state starts fresh (released moments: %s; Adam in tx: %s).',
                    adam is not None, _has_adam(opt_state))
  return TrainState(step=jnp.asarray(released['step'], jnp.int32), params=params,
                    params_ema=params_ema, opt_state=opt_state)


def convert(config, checkpoint_path, workdir, step: Optional[int] = None) -> int:
  """Writes a released checkpoint as the periodic checkpoint of its training step in ``workdir``.

  The checkpoint is filed under the number of updates the file holds (``State.step`` of a
  released JAX checkpoint, ``'step'`` of a port one), so its name, its state's step and
  ``score_sde.load(workdir).step`` agree. A released ``checkpoint_<N>`` holds a few updates
  past ``N * snapshot_freq`` (``+ 5`` from the reference, whose loop turn ran
  ``n_jitted_steps = 5`` updates, ``+ 1`` from the port), and ``--mode eval`` evaluates such a
  checkpoint as snapshot ``step // training.snapshot_freq``, i.e. ``N``
  (``evaluation.evaluate.with_converted``).

  Also records ``config`` as the workdir's ``config.json``, so ``score_sde.load(workdir)`` works
  on the converted checkpoint as on a run trained here.

  Args:
    config: the config the checkpoint was trained with.
    checkpoint_path: a released ``checkpoint_<N>``, a port ``checkpoint_<N>.pth``, or the
      directory holding them (the newest is read).
    workdir: the run directory to write into.
    step: the step to record the checkpoint as (its name and its state's step) in place of the
      training step the file holds.
  Returns:
    The step written.
  Raises:
    errors.UserError: the file is missing, damaged or crafted (``torch_files.
      CheckpointFileError``), holds another network than ``config``'s
      (``checkpoint.StructureMismatchError``), or the step is in ``workdir`` already.
  """
  template = models.abstract_params(config)
  path = _resolve(checkpoint_path)
  if torch_files.is_torch_file(path):
    released = pytorch_checkpoints.load_pytorch_checkpoint(path, template,
                                                           models.module_order(config))
    released['snapshot'] = snapshot_index(path)
  else:
    released = load_released_checkpoint(path)
  freq = config.training.snapshot_freq
  if step is None:
    step = released['step']
  elif step != released['step']:
    logging.warning('%s holds training step %d; recorded as step %d (--step).', path,
                    released['step'], step)
    released = {**released, 'step': step}
  if released['snapshot'] is not None and released['snapshot'] != step // freq:
    logging.warning('%s is snapshot %d of its run, but its step %d is snapshot %d at this '
                    "config's training.snapshot_freq=%d: the run saved at another frequency.",
                    path, released['snapshot'], step, step // freq, freq)
  if released['ema_rate'] is not None and not np.isclose(released['ema_rate'],
                                                         config.model.ema_rate):
    logging.warning('Released ema_rate %s differs from config.model.ema_rate %s.',
                    released['ema_rate'], config.model.ema_rate)
  state = to_train_state(released, template, optim.get_optimizer(config.optim))
  with checkpoint.Checkpointer(workdir, async_save=False) as ckpt:
    if not ckpt.save(step, state, periodic=True):
      raise errors.WorkdirError(f'{workdir}/{checkpoint.PERIODIC_DIR}/{step} exists and is not '
                                'replaced: convert into another --workdir, or delete it.')
  record.save_run_config(config, workdir)  # So score_sde.load(workdir) needs nothing else.
  if step // freq:
    how = (f'--mode eval evaluates it as snapshot {step // freq} (--config.eval.begin_ckpt='
           f'{step // freq} --config.eval.end_ckpt={step // freq})')
  else:
    how = (f'--mode eval starts at snapshot 1, step {freq} (training.snapshot_freq); convert '
           f'with --step {freq} to evaluate it as snapshot 1')
  logging.info('Wrote %s (training step %d) to %s/%s/%d; %s.', path, released['step'], workdir,
               checkpoint.PERIODIC_DIR, step, how)
  return step


def _define_flags():
  # Defined only when run as a command, so importing this module adds no global flags.
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'The config the checkpoint was trained with.',
                                  lock_config=True)
  flags.DEFINE_string('checkpoint', None, 'A released checkpoint_<N> file, a score_sde_pytorch '
                      'checkpoint_<N>.pth, or the directory holding them (the newest is read).')
  flags.DEFINE_string('workdir', None, 'Run directory to write checkpoints/<step> into.')
  flags.DEFINE_integer('step', None, 'Step to record it as; default the training step the file '
                       'holds.')
  flags.mark_flags_as_required(['config', 'checkpoint', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}; everything is passed as --flags.')
  logs.quiet_libraries()
  f = flags.FLAGS
  try:
    convert(f.config, f.checkpoint, f.workdir, f.step)
  except errors.UserError as e:  # A file or config the user can fix: the message, no traceback.
    sys.stderr.write(f'Error: {e}\n')
    sys.exit(USER_ERROR_STATUS)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
