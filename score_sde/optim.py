"""The optimizer of the paper as an optax chain (global-norm clipping, then Adam with warmup), and
the exponential moving average of the weights that sample.

The learning rate at update ``k`` (counting from 0) is ``lr * min(k / warmup, 1)``, the released
code's schedule, so the very first update is a no-op when warmup > 0.
"""
import jax
import jax.numpy as jnp
import optax


def get_learning_rate_schedule(optim_config) -> optax.Schedule:
  """Linear warmup from 0 to ``optim.lr`` over ``optim.warmup`` steps, then constant."""
  if optim_config.lr <= 0:
    raise ValueError(f'optim.lr must be positive, got {optim_config.lr}.')
  if optim_config.warmup < 0:
    raise ValueError(f'optim.warmup must be >= 0, got {optim_config.warmup}.')
  if optim_config.warmup == 0:
    return optax.constant_schedule(optim_config.lr)
  return optax.linear_schedule(0., optim_config.lr, int(optim_config.warmup))


def get_optimizer(optim_config) -> optax.GradientTransformation:
  """``clip_by_global_norm(grad_clip)`` (skipped when ``grad_clip <= 0``) then Adam or AdamW.

  Args:
    optim_config: ``config.optim`` with ``optimizer`` ('Adam' | 'AdamW'), ``lr``, ``beta1``,
      ``beta2``, ``eps``, ``weight_decay``, ``warmup``, ``grad_clip``.
  """
  schedule = get_learning_rate_schedule(optim_config)
  name = str(optim_config.optimizer).lower()
  kwargs = dict(b1=optim_config.beta1, b2=optim_config.beta2, eps=optim_config.eps)
  if name == 'adam':
    if optim_config.weight_decay:
      raise ValueError('optim.weight_decay needs optim.optimizer = "AdamW" (decoupled decay); '
                       f'got Adam with weight_decay={optim_config.weight_decay}.')
    core = optax.adam(schedule, **kwargs)
  elif name == 'adamw':
    core = optax.adamw(schedule, weight_decay=optim_config.weight_decay, **kwargs)
  else:
    raise ValueError(f'Unknown optim.optimizer {optim_config.optimizer!r}; known: Adam, AdamW.')
  if optim_config.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(optim_config.grad_clip), core)
  return core


def ema_update(params_ema, params, rate):
  """``params_ema <- rate * params_ema + (1 - rate) * params``, leaf by leaf."""
  return jax.tree.map(lambda e, p: rate * e + (1. - rate) * p, params_ema, params)


def ema_halflife_rate(step: jax.Array, batch_size: int, halflife_kimg: float,
                      rampup_ratio: float = 0.) -> jax.Array:
  """EDM's EMA rate of update ``step`` (0-based) at global batch ``batch_size``:
  ``0.5 ** (batch_size / h)``, so that a weight's share halves every ``h = 1000 halflife_kimg``
  images; with ``rampup_ratio > 0``, ``h = min(h, rampup_ratio * step * batch_size)`` (the
  images seen before this update), so that the EMA of a young run forgets its start: the first
  update copies the weights. ``float32`` scalar."""
  if not halflife_kimg > 0:
    raise ValueError(f'model.ema_halflife_kimg={halflife_kimg} must be positive.')
  if not batch_size > 0:
    raise ValueError(f'The EMA by half-life needs the global batch size; got {batch_size} '
                     '(StepSettings.batch_size: training.batch_size).')
  halflife = jnp.float32(1000. * halflife_kimg)
  if rampup_ratio > 0:
    seen = jnp.asarray(step, jnp.float32) * batch_size
    halflife = jnp.minimum(halflife, rampup_ratio * seen)
  return jnp.float32(0.5) ** (batch_size / jnp.maximum(halflife, 1e-8))


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
