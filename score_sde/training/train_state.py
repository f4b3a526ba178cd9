"""The training state: one frozen pytree that a step takes in and gives back.

There is no RNG in the state: every random draw of step ``s`` comes from
``fold_in(key(seed), s)``, so resuming at step ``s`` needs only the step counter, and the same
draws happen whatever the device count.
"""
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from score_sde import checkpoint, errors, rng, sharding
from score_sde import workdir as workdir_lib
from score_sde.data import images
from score_sde.models import utils as mutils
from score_sde.training import optim


@flax.struct.dataclass
class TrainState:
  """Parameters, their exponential moving average and the optimizer state.

  Attributes:
    step: int32 scalar, optimisation steps taken so far.
    params: the model's parameter pytree (what the optimizer updates).
    params_ema: EMA of ``params`` (the weights that sample); the released score_sde checkpoints
      use the same name.
    opt_state: optax state of the optimizer chain.
  """
  step: jax.Array
  params: Any
  params_ema: Any
  opt_state: optax.OptState


def create_train_state(params, tx: optax.GradientTransformation) -> TrainState:
  """A step-0 state whose EMA starts at the initial parameters."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    params_ema=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))


def ema_update(params_ema, params, rate):
  """``params_ema <- rate * params_ema + (1 - rate) * params``, leaf by leaf."""
  return jax.tree.map(lambda e, p: rate * e + (1. - rate) * p, params_ema, params)


def ema_rate_at(rate: float, step: jax.Array, warmup: bool) -> jax.Array:
  """The EMA rate of update ``step`` (0-based): ``rate``, or with ``warmup``
  ``min(rate, (1 + n) / (10 + n))`` for the ``n = step + 1``-th update, as score_sde_pytorch's
  ``ExponentialMovingAverage`` (``num_updates``, after TensorFlow's), which lets a short run
  forget its initial weights: at rate 0.999 a plain EMA still holds 37% of them after 1,000
  steps, a warmed-up one under 0.01%."""
  if not warmup:
    return jnp.asarray(rate, jnp.float32)
  num_updates = jnp.asarray(step, jnp.float32) + 1.
  return jnp.minimum(jnp.float32(rate), (1. + num_updates) / (10. + num_updates))


def state_factory(config, model, tx: optax.GradientTransformation) -> Callable[[], TrainState]:
  """A function making the run's step-0 state (parameters drawn from ``rng.INIT_STREAM``);
  jit it, or ``jax.eval_shape`` it for the abstract state."""
  image_shape = images.image_shape(config.data.image_size, config.data.num_channels)

  def init():
    params = mutils.init_params(rng.stream_key(config.seed, rng.INIT_STREAM), model, image_shape)
    return create_train_state(params, tx)

  return init


def abstract_state(init_fn: Callable[[], TrainState], mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of ``init_fn()``'s state, without computing it:
  what ``checkpoint.Checkpointer.restore*`` restores onto."""
  rep = sharding.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                      jax.eval_shape(init_fn))


def restore_params_ema(workdir: str, init_fn: Callable[[], TrainState], mesh, what: str,
                       step: Optional[int] = None):
  """``(params_ema, step)`` of the newest readable checkpoint of ``workdir``, or of checkpoint
  ``step`` (read-only: nothing is renamed or written), replicated over ``mesh``.

  Raises:
    errors.WorkdirError: when ``workdir`` holds no readable checkpoint of ``what``, or none at
      ``step`` (naming the steps it holds).
    checkpoint.StructureMismatchError: the checkpoint holds another network than ``init_fn``'s.
    checkpoint.CorruptCheckpointError: checkpoint ``step`` is damaged.
  """
  abstract = abstract_state(init_fn, mesh)
  with checkpoint.Checkpointer(workdir, read_only=True) as ckpt:
    if step is None:
      state, step = ckpt.restore_latest(abstract)
    else:
      try:
        state = ckpt.restore(step, abstract)
      except KeyError as e:
        raise errors.WorkdirError(e.args[0]) from None
  if state is None:
    raise errors.WorkdirError(f'{workdir} holds no readable checkpoint of the {what}.')
  return state.params_ema, step


def load_classifier(config, workdir: str, mesh):
  """The noise-conditional classifier of classifier guidance: ``(module, params_ema)`` from the
  newest checkpoint in ``workdir_lib.classifier_workdir(config, workdir)``.

  Raises:
    errors.WorkdirError: when no classifier was trained there, naming the command that trains it.
  """
  classifier = mutils.get_classifier(config)
  directory = workdir_lib.classifier_workdir(config, workdir)
  init_fn = state_factory(config, classifier, optim.get_optimizer(config.optim))
  try:
    params, step = restore_params_ema(directory, init_fn, mesh, 'classifier')
  except errors.WorkdirError as e:
    raise errors.WorkdirError(
        f'{e} sampling.classifier_scale={config.sampling.classifier_scale} needs a trained '
        'noise-conditional classifier: run main.py --mode train_classifier with this config '
        'and workdir first, or set sampling.classifier_workdir, or sampling.classifier_scale=0.'
    ) from None
  return classifier, params, step
