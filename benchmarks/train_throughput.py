"""Images per second of the compiled train step, with the compile time reported apart.

    python benchmarks/train_throughput.py --config configs/embedded.py
    python benchmarks/train_throughput.py --config configs/ve/cifar10_ncsnpp_continuous.py \
        --config.training.batch_size=128 --steps 20

The batch is synthetic (uniform noise of the configured image shape): this measures the step,
not the input pipeline. The step runs data-parallel over every local device, as in training.
"""
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from score_sde import optim, sde_lib, sharding, train, train_state
from score_sde.data import images
from score_sde.models import utils as mutils

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/embedded.py', 'Config file.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps after the compiled first one.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed blocks; the median is reported.')


def main(_):
  config = _CONFIG.value
  mesh = sharding.make_mesh()
  batch_size = config.training.batch_size
  sharding.check_divisible(batch_size, mesh, 'training.batch_size')
  sde, model = sde_lib.get_sde(config), mutils.get_model(config)
  tx = optim.get_optimizer(config.optim)
  state = jax.jit(train_state.state_factory(config, model, tx),
                  out_shardings=sharding.replicated(mesh))()
  step = train.compile_step(config, sde, model, mesh, train=True, tx=tx)
  rng = np.random.default_rng(0)
  image_shape = images.image_shape(config.data.image_size, config.data.num_channels)
  pixels = rng.uniform(size=(batch_size,) + image_shape).astype(np.float32)
  batch = sharding.to_global({'image': pixels}, mesh)
  key = jax.random.key(0)

  start = time.perf_counter()
  compiled = step.lower(state, batch, key).compile()
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batch, key)
  jax.block_until_ready(metrics)

  rates = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready((state, metrics))
    rates.append(_STEPS.value / (time.perf_counter() - start))
  steps_per_s = float(np.median(rates))
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind} '
        f'({jax.default_backend()})')
  print(f'model: {config.model.name}, {mutils.count_params(state.params) / 1e6:.2f}M params, '
        f'image {image_shape}, global batch {batch_size}')
  print(f'compile: {compile_s:.1f} s')
  print(f'train step: {steps_per_s:.2f} steps/s, {steps_per_s * batch_size:.1f} images/s '
        f'(median of {_REPEATS.value} x {_STEPS.value} steps; '
        f'range {min(rates) * batch_size:.1f}-{max(rates) * batch_size:.1f} images/s)')


if __name__ == '__main__':
  app.run(main)
