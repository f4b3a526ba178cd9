"""How much of the score does bfloat16 compute lose, noise level by noise level?

    python benchmarks/bf16_error.py --workdir runs/embedded
    python benchmarks/bf16_error.py --workdir runs/embedded --compare runs/embedded_bf16 \\
        --compare runs/embedded_seed1

At low noise the perturbed image ``x_t = alpha x_0 + std z`` carries the noise ``z`` in its last
few bits: near ``|x| = 1`` a bfloat16 value is rounded by up to ``2^-8``, the size of ``std``
itself at the smallest times (VP: ``std = 0.01`` at ``t = 1e-3``, ``0.001`` at ``1e-5``; VE:
``sigma_min = 0.01``). A network that predicts ``z`` (or the score ``-z / std``) from a rounded
``x_t`` cannot be accurate there. For a trained run, on ``--num_images`` held-out images with one
fixed noise draw, this prints per time ``t`` (not averaged over random ``t``, which the large
times would dominate):

* ``rel RMS``: ``||s_bf16 - s_f32|| / ||s_f32||`` over the batch, where ``s_bf16`` is the score
  with ``compute_dtype='bfloat16'`` (``models.utils.get_score_fn``, the training forward pass)
  and ``s_f32`` the float32 one, both of the same parameters;
* ``f32 edges``: the same with the input, every convolution that reads or writes image channels,
  the residual stream and all skip connections in float32 (only the inner convolutions and
  matmuls take bfloat16 operands), the remedy that keeps the input's bits away from rounding
  until the first inner layer;
* ``as trained``: the score the bfloat16 training objective sees at that ``t``: float32 where
  ``std < training.float32_below_std`` (``score_sde/low_noise.py``; its rows are checked to
  run in float32 by ``tests/test_low_noise.py``), bfloat16 elsewhere;
* the DSM loss ``|| std s + z ||^2 / D`` at that ``t`` in float32 and in bfloat16;

then the DSM loss restricted to ``t ~ U(eps, 0.01)`` (``--num_draws`` draws of the batch) in
both precisions. ``--compare WORKDIR`` adds, for other runs of the same config (one trained in
bfloat16, one with another seed), their float32 losses at the same ``t`` and noise: whether
training in bfloat16 left the network any worse at low noise than the seed-to-seed spread.
"""
from typing import Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import score_sde
from score_sde.data import embedded
from score_sde.models import layers, utils as mutils

_WORKDIR = flags.DEFINE_string('workdir', '', 'Trained run (its EMA parameters are measured).')
_COMPARE = flags.DEFINE_multi_string('compare', [], 'Other runs of the same config whose '
                                     'float32 losses to print beside it.')
_NUM = flags.DEFINE_integer('num_images', 256, 'Held-out images per time.')
_DRAWS = flags.DEFINE_integer('num_draws', 8, 'Batches of t ~ U(eps, 0.01) for the small-t loss.')
_TIMES = flags.DEFINE_list('times', ['1e-5', '1e-3', '1e-2', '0.03', '0.1', '0.5', '1'],
                           'Times t at which to compare.')

_LINEAR = (nn.Conv, nn.Dense, layers.NIN)


def relative_rms(a: jax.Array, ref: jax.Array) -> float:
  """``||a - ref|| / ||ref||`` over every element: the error measure of the table."""
  return float(jnp.linalg.norm((a - ref).ravel()) / jnp.linalg.norm(ref.ravel()))


def float32_edges_model_fn(model: nn.Module, params, num_channels: int) -> Callable:
  """``model_fn(x, labels)`` with only the inner linear layers in bfloat16.

  Parameters of layers that read or write ``num_channels`` channels (the image side) and the
  time embedding's frequencies stay float32, the rest are rounded to bfloat16; every
  ``nn.Conv`` / ``nn.Dense`` / ``NIN`` call gets its input cast to its own parameters' dtype,
  and its output is added to the float32 stream, so norms, activations, residual sums and skips
  stay float32.
  """
  def cast(path, a):
    names = ''.join(str(getattr(k, 'key', k)) for k in path)
    image_side = a.ndim >= 1 and min(a.shape[-2:]) <= num_channels
    return a if 'GaussianFourierProjection' in names or image_side else a.astype(jnp.bfloat16)
  mixed = jax.tree_util.tree_map_with_path(cast, params)

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name != '__call__' or not isinstance(context.module, _LINEAR):
      return next_fun(*args, **kwargs)
    dtype = jax.tree.leaves(context.module.variables['params'])[0].dtype
    return next_fun(args[0].astype(dtype), *args[1:], **kwargs)

  def model_fn(x, labels, class_labels=None):
    del class_labels  # An unconditional run.
    with nn.intercept_methods(interceptor):
      return model.apply({'params': mixed}, x, labels).astype(jnp.float32)
  return model_fn


def _score_fns(pipe) -> Dict[str, Callable]:
  """The run's float32, bfloat16 and float32-edges scores, jitted; VP-type continuous labels."""
  continuous = pipe.config.training.continuous
  fns = {dtype: mutils.get_score_fn(pipe.sde, pipe.model, pipe.params, continuous=continuous,
                                    dtype=dtype) for dtype in ('float32', 'bfloat16')}
  edges = float32_edges_model_fn(pipe.model, pipe.params, pipe.shape[-1])
  # get_score_fn's own scaling, around the float32-edges network.
  fns['f32 edges'] = mutils.score_fn_from_model_fn(pipe.sde, edges, continuous)
  return {name: jax.jit(fn) for name, fn in fns.items()}


def dsm_per_dim(score: jax.Array, z: jax.Array, std: jax.Array) -> float:
  """The DSM loss ``mean_x || std s + z ||^2 / D`` of eq. (7) with ``lambda = std^2``."""
  return float(jnp.mean(jnp.square(std[:, None, None, None] * score + z)))


def main(_):
  pipe = score_sde.load(_WORKDIR.value)
  others = [score_sde.load(w) for w in _COMPARE.value]
  source = embedded.mnist_embedded(pipe.config.data, 'test')
  x0 = source._load(np.arange(min(_NUM.value, len(source))))['image']
  x0 = pipe.scaler(jnp.asarray(x0, jnp.float32) / 255.)
  fns = _score_fns(pipe)
  other_fns = [_score_fns(o)['float32'] for o in others]
  z = jax.random.normal(jax.random.key(0), x0.shape)
  print(f'{_WORKDIR.value}: {pipe}; {x0.shape[0]} held-out images, one noise draw')
  head = ' '.join(f'| {w} f32 loss' for w in _COMPARE.value)
  below = pipe.config.training.get('float32_below_std', 0.)
  print(f'| t | std | bf16 rel RMS | f32 edges rel RMS | as trained (float32 below std '
        f'{below:g}) | f32 loss | bf16 loss {head}|')
  print('|---' * (7 + len(others)) + '|')
  for t in map(float, _TIMES.value):
    tt = jnp.full(x0.shape[:1], t)
    mean, std = pipe.sde.marginal_prob(x0, tt)
    xt = mean + std[:, None, None, None] * z
    ref = fns['float32'](xt, tt)
    bf16 = fns['bfloat16'](xt, tt)
    trained = ref if float(std[0]) < below else bf16
    row = [relative_rms(bf16, ref), relative_rms(fns['f32 edges'](xt, tt), ref),
           relative_rms(trained, ref), dsm_per_dim(ref, z, std), dsm_per_dim(bf16, z, std)]
    row += [dsm_per_dim(fn(xt, tt), z, std) for fn in other_fns]
    print(f'| {t:g} | {float(std[0]):.3g} | {row[0]:.2%} | {row[1]:.2%} | {row[2]:.2%} | '
          + ' | '.join(f'{r:.4f}' for r in row[3:]) + ' |')

  eps = pipe.config.training.eps
  losses = {name: [] for name in ['float32', 'bfloat16', 'f32 edges'] + _COMPARE.value}
  for i in range(_DRAWS.value):
    t_key, z_key = jax.random.split(jax.random.key(100 + i))
    tt = jax.random.uniform(t_key, x0.shape[:1], minval=eps, maxval=0.01)
    zz = jax.random.normal(z_key, x0.shape)
    mean, std = pipe.sde.marginal_prob(x0, tt)
    xt = mean + std[:, None, None, None] * zz
    for name, fn in list(fns.items()) + list(zip(_COMPARE.value, other_fns)):
      losses[name].append(dsm_per_dim(fn(xt, tt), zz, std))
  base = np.mean(losses['float32'])
  print(f'\nDSM loss per dimension over t ~ U({eps:g}, 0.01), {_DRAWS.value} x {x0.shape[0]} '
        'draws (same parameters unless a run is named):')
  for name, values in losses.items():
    print(f'  {name}: {np.mean(values):.4f} ({np.mean(values) / base - 1:+.1%} of float32)')
  top = float(pipe.sde.marginal_coeffs(jnp.float32(0.01))[1])
  if top < below:
    print(f'  as trained: float32 (std(0.01) = {top:.3g} < training.float32_below_std = {below:g})')


if __name__ == '__main__':
  app.run(main)
