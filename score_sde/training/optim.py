"""The optimizer of the paper as an optax chain: global-norm clipping, then Adam with warmup.

The learning rate at update ``k`` (counting from 0) is ``lr * min(k / warmup, 1)``, the released
code's schedule, so the very first update is a no-op when warmup > 0.
"""
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
