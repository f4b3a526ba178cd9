"""The contract every sampler keeps, the registry entry every method has, and the helpers that
keep them uniform.

Every sampler is built the same way, from the SDE, the sample shape, the inverse scaler, the
grid and its own settings (order, corrector, tolerances, ...), and nothing else of the grid::

    sampler = get_X_sampler(sde, shape, inverse_scaler, times, **settings)

``times`` is the grid, decreasing from where the samples start to the smallest time ``eps``
(``schedule.time_steps`` spaces one; ``methods.get_times`` gives the levels a method needs for
a step count; a fitted grid comes from ``schedule_fit``). A sampler is then a pure function
``sampler(rng, score_fn, x_T=None, callback=None) -> (samples, nfe)``:

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
* ``x_T``: the ``(B, ...)`` float32 state at ``times[0]`` in model space; None draws it from
  the prior, which needs ``times[0] = T``. A start below ``T`` with a given state is img2img
  (SDEdit: ``x_T`` a forward draw of an image at ``times[0]``); ``Pipeline.decode`` starts the
  ODE sampler at latents.
* ``callback(i, x, t, denoised)``: called inside the traced loop at every step ``i`` with the
  state ``x`` at time ``t`` (a scalar, or ``(B,)`` for the adaptive SDE sampler, whose examples
  step alone) and the data prediction ``denoised`` where the step computes one anyway (Heun,
  the multistep solvers; None for the others: it would cost an evaluation). Its return value is
  ignored; inside jit it observes through ``jax.debug.callback`` (a progress bar, saved
  trajectories). The adaptive ODE solver has no step index to give: ``i = -1`` there.
* ``nfe`` is the exact number of ``score_fn`` evaluations: a Python ``int`` for fixed-step
  samplers, an int32 scalar array for the adaptive ones (their step count is data-dependent).
"""
import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

from score_sde import sde_lib

Nfe = Union[int, jax.Array]
Sampler = Callable[..., Tuple[jax.Array, Nfe]]
InverseScaler = Callable[[jax.Array], jax.Array]
Callback = Callable[[jax.Array, jax.Array, jax.Array, Optional[jax.Array]], Any]


@dataclasses.dataclass(frozen=True)
class Method:
  """Everything the rest of the code asks about one ``config.sampling.method``: the registry
  entry (``methods.METHODS``) that validation, ``get_sampler``, the network sampler and the
  pipeline read. A new method is one module with its builder and one of these.

  Attributes:
    name: the ``config.sampling.method`` value.
    build: ``build(sde, shape, inverse_scaler, times, **settings) -> Sampler``.
    family: ``'sde'`` (samples the reverse SDE on the training's own time labels) or ``'ode'``
      (steps the probability flow, or a stochastic variant of it, on any grid: a discrete-time
      network's score is read as a continuous one, ``parameterization.ode_score_continuous``).
    settings: ``settings(config.sampling, sde) -> dict``, the builder's own keywords read from
      the config, defaults filled in (order, final step, corrector, tolerances, ...).
    levels: ``levels(num_steps, settings) -> int``, the grid levels ``num_steps`` steps use.
    steps_field: the ``config.sampling`` field that counts its steps (0: the SDE's ``N``):
      ``'num_steps'`` for the fixed-step solvers, whose grid is ``sampling.schedule`` /
      ``rho`` or ``sampling.times``; ``'pc_num_steps'`` for PC, on its own uniform grid; ``''``
      for the adaptive samplers, whose grid is ``[T, eps]``.
    schedule: the grid formula (``schedule.FORMULAS``) when ``sampling.schedule`` is ''.
    max_order: the largest ``sampling.order``; 0 for a method without one.
    deterministic: ``settings -> settings`` without any noise injection, the sampler a grid is
      fitted to (``schedule_fit``).
    defaults: ``defaults(sde) -> dict``, the builder's keywords whose default depends on the
      SDE and changes the level count (the multistep solvers' ``final``), so that a grid built
      for the defaults (``methods.get_times``) fits the builder called with them.
  """
  name: str
  build: Callable[..., Sampler]
  family: str
  settings: Callable[[Any, sde_lib.SDE], Dict[str, Any]]
  levels: Callable[[int, Dict[str, Any]], int]
  steps_field: str = 'num_steps'
  schedule: str = 'time_uniform'
  max_order: int = 0
  deterministic: Callable[[Dict[str, Any]], Dict[str, Any]] = lambda settings: settings
  defaults: Callable[[sde_lib.SDE], Dict[str, Any]] = lambda sde: {}

  def steps(self, num_levels: int, settings: Dict[str, Any]) -> int:
    """The inverse of ``levels``: the step count a grid of ``num_levels`` times gives."""
    return num_levels - (self.levels(1, settings) - 1)


def interval_levels(num_steps: int, settings: Dict[str, Any]) -> int:
  """``levels`` of an adaptive sampler: its grid is the interval ``[T, eps]``."""
  del num_steps, settings
  return 2


def prior_key(rng: jax.Array) -> jax.Array:
  """The key of the prior draw ``x(T)``; the same in every sampler."""
  return jax.random.fold_in(rng, 0)


def noise_key(rng: jax.Array) -> jax.Array:
  """The key every step's noise derives from (``fold_in(noise_key(rng), step)``)."""
  return jax.random.fold_in(rng, 1)


def start(sde: sde_lib.SDE, rng: jax.Array, shape: Tuple[int, ...], x_T: Optional[jax.Array],
          starts_at_T: bool) -> jax.Array:
  """The state at ``times[0]``: ``x_T`` (checked against ``shape``), or a prior draw with
  ``prior_key(rng)``, which needs the grid to start at ``T`` (``starts_at_T``).

  Raises:
    ValueError: for ``x_T`` of another shape, or no ``x_T`` on a grid that starts below ``T``.
  """
  if x_T is None:
    if not starts_at_T:
      raise ValueError(f'The grid starts below T={sde.T}, where no prior is known: pass x_T, a '
                       'draw of p_t at times[0] (e.g. an image noised by sde.marginal_prob, '
                       'SDEdit), or start the grid at T.')
    return sde.prior_sampling(prior_key(rng), shape)
  if tuple(x_T.shape) != tuple(shape):
    raise ValueError(f'x_T has shape {tuple(x_T.shape)}, but the sampler was built for {shape}.')
  return jnp.asarray(x_T, jnp.float32)


def notify(callback: Optional[Callback], i, x: jax.Array, t, denoised=None) -> None:
  """``callback(i, x, t, denoised)`` when there is one (the module docstring's contract)."""
  if callback is not None:
    callback(i, x, t, denoised)


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
