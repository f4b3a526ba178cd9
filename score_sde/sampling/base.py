"""The contract every sampler keeps, and the helpers that keep it uniform.

A sampler is a pure function ``sampler(rng, score_fn) -> (samples, nfe)``:

* ``rng`` is a typed key (``jax.random.key``). The prior draw ``x(T)`` uses
  ``prior_key(rng)`` in every sampler, so two deterministic samplers called with the same key
  integrate from the same ``x(T)`` (what the convergence tests and the benchmark compare).
  All noise is drawn at the global batch shape, so the result does not depend on the devices.
* ``score_fn(x, t) -> score`` takes ``x: (B, ...)`` and ``t: (B,)`` float32. It is an argument
  rather than baked in at construction, so that the caller jits ONE function of the parameters
  and compiles it once::

      @jax.jit
      def sample(params, rng):
        return sampler(rng, models.utils.get_score_fn(sde, model, params, train=False,
                                                      continuous=True))

  (``sampling.shard.get_sharded_sampler`` does exactly this, with NamedShardings.)
* ``nfe`` is the exact number of ``score_fn`` evaluations: a Python ``int`` for fixed-step
  samplers, an int32 scalar array for the adaptive ODE sampler (its step count is data-dependent).
"""
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

from score_sde import sde_lib

Nfe = Union[int, jax.Array]
Sampler = Callable[[jax.Array, sde_lib.ScoreFn], Tuple[jax.Array, Nfe]]
InverseScaler = Callable[[jax.Array], jax.Array]


def prior_key(rng: jax.Array) -> jax.Array:
  """The key of the prior draw ``x(T)``; the same in every sampler."""
  return jax.random.fold_in(rng, 0)


def noise_key(rng: jax.Array) -> jax.Array:
  """The key every step's noise derives from (``fold_in(noise_key(rng), step)``)."""
  return jax.random.fold_in(rng, 1)


def batch_times(t: jax.Array, batch: int) -> jax.Array:
  """A scalar time broadcast to ``(batch,)`` float32, as score functions expect."""
  return jnp.full((batch,), t, jnp.float32)


def check_shape(shape: Sequence[int]) -> Tuple[int, ...]:
  """Validates a ``(B, ...)`` sample shape and returns it as a tuple of ints."""
  shape = tuple(int(s) for s in shape)
  if len(shape) < 2 or min(shape) < 1:
    raise ValueError(f'Sample shape {shape} must be (batch, *event_shape) with positive sizes, '
                     'e.g. (64, 32, 32, 3).')
  return shape


def check_eps(sde: sde_lib.SDE, eps: Optional[float]) -> float:
  """``eps`` (``None``: the SDE's ``sampling_eps``, 1e-3 for VP / sub-VP and 1e-5 for VE, as
  the released code) must lie in ``(0, T)``: the score is ill-conditioned at 0 and nothing is
  left at T."""
  eps = float(sde.sampling_eps if eps is None else eps)
  if not 0. < eps < sde.T:
    raise ValueError(f'eps={eps} must lie in (0, T={sde.T}); the paper uses 1e-3 (VP, sub-VP) '
                     'and 1e-5 (VE).')
  return eps


def check_steps(num_steps: Any, what: str = 'num_steps') -> int:
  if int(num_steps) != num_steps or int(num_steps) < 1:
    raise ValueError(f'{what}={num_steps} must be a positive integer.')
  return int(num_steps)


def identity(x: jax.Array) -> jax.Array:
  """The inverse scaler of data that is already in model space."""
  return x
