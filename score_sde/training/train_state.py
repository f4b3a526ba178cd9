"""The training state: one frozen pytree that a step takes in and gives back.

There is no RNG in the state: every random draw of step ``s`` comes from
``fold_in(key(seed), s)``, so resuming at step ``s`` needs only the step counter, and the same
draws happen whatever the device count.
"""
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from score_sde.common import parallel, rng
from score_sde.data import images
from score_sde.models import utils as mutils


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
  rep = parallel.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                      jax.eval_shape(init_fn))
