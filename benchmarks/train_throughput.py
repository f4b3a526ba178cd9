"""What one train step costs: FLOPs, device memory, images/s and MFU, with the compile time apart.

    python benchmarks/train_throughput.py --config configs/embedded.py
    python benchmarks/train_throughput.py --config configs/ve/cifar10_ncsnpp_continuous.py \
        --batch_sizes 8,32 --dtypes float32,bfloat16 --remat false,true --steps 10
    python benchmarks/train_throughput.py --paper --batch_sizes 1,8 --steps 0   # cost only

For every combination of per-device batch size, compute dtype (``training.compute_dtype``) and
``model.remat`` it compiles the real train step (``losses.get_step_fn`` jitted by
``train.jit_step``: loss, gradient, Adam, EMA, data-parallel over every local device) and prints
one row:

* GFLOP per step, from XLA's cost analysis of the compiled step (all devices together);
* device memory per device, from XLA's memory analysis: arguments (the state and the batch),
  outputs, temporaries, minus what donation aliases: the peak the step needs;
* images/s over ``--steps`` timed steps (median of ``--repeats`` blocks; 0: cost only);
* MFU, model FLOPs utilisation: achieved FLOP/s over the device's peak dense bf16 (or fp32)
  FLOP/s, for the accelerators in ``_PEAK_TFLOPS``, when timed.

With ``--grad_accum_steps k`` a step runs k micro-batches of the per-device batch (global batch
``k x per-device x devices``). The batch is synthetic (uniform noise of the config's image
shape): this measures the step, not the input pipeline (``benchmarks/input_throughput.py``).

Memory on XLA:CPU is XLA's CPU buffer assignment, which schedules for speed, not memory: there,
remat saves nothing (the recomputation is hoisted) and bfloat16 convolutions may run in
float32. Read the memory columns as GPU / TPU figures only when run on one.
"""
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from score_sde import losses, optim, sde_lib
from score_sde.common import parallel
from score_sde.data import images
from score_sde.models import utils as mutils
from score_sde.training import train, train_state

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/embedded.py', 'Config file.')
_PAPER = flags.DEFINE_bool('paper', False, 'Every network of the paper (_PAPER_CONFIGS) instead '
                           'of --config.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', [], 'Per-device batch sizes (default: the '
                                 "config's training.batch_size over the devices).")
_DTYPES = flags.DEFINE_list('dtypes', ['float32'], 'Compute dtypes: float32, bfloat16.')
_REMAT = flags.DEFINE_list('remat', ['false'], 'model.remat values: false, true.')
_GRAD_ACCUM = flags.DEFINE_integer('grad_accum_steps', 1, 'training.grad_accum_steps.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps after the first; 0: cost only.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed blocks; the median is reported.')

# One config per distinct network of the paper (the others share these architectures).
_PAPER_CONFIGS = (
    'configs/ve/cifar10_ncsnpp_continuous.py',       # NCSN++ cont., 62.8M, 32 px
    'configs/ve/cifar10_ncsnpp_deep_continuous.py',  # NCSN++ cont. deep, 32 px
    'configs/vp/cifar10_ddpmpp_continuous.py',       # DDPM++ cont., 32 px
    'configs/vp/cifar10_ddpmpp_deep_continuous.py',  # DDPM++ cont. deep, 32 px
    'configs/vp/cifar10_ddpm.py',                    # DDPM, 35.2M, 32 px
    'configs/ve/celebahq_256_ncsnpp_continuous.py',  # NCSN++ at 256 px
    'configs/ve/ffhq_ncsnpp_continuous.py',          # NCSN++ at 1024 px
)

# Peak dense TFLOP/s per device (bf16, fp32 without tensor cores), from the vendors' data
# sheets; matched against jax.Device.device_kind.
_PEAK_TFLOPS = {
    'H200': {'bfloat16': 989., 'float32': 67.},
    'H100': {'bfloat16': 989., 'float32': 67.},  # SXM.
    'A100': {'bfloat16': 312., 'float32': 19.5},
    'L4': {'bfloat16': 121., 'float32': 30.},
    'TPU v4': {'bfloat16': 275., 'float32': 275.},
    'TPU v5 lite': {'bfloat16': 197., 'float32': 197.},
    'TPU v5p': {'bfloat16': 459., 'float32': 459.},
}


def _load_config(path: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _peak_tflops(dtype: str):
  kind = jax.devices()[0].device_kind
  for name, peaks in _PEAK_TFLOPS.items():
    if name.lower() in kind.lower():
      return peaks[dtype]
  return None


def _memory_gb(compiled) -> float:
  """Peak device memory of one call, per device: arguments + outputs + temporaries, less the
  outputs that alias donated arguments (the state is donated, so it is counted once)."""
  m = compiled.memory_analysis()
  if m is None:
    return float('nan')
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return total / 2 ** 30


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def measure(config, per_device_batch: int, dtype: str, remat: bool, grad_accum_steps: int,
            steps: int, repeats: int) -> dict:
  """One row: the train step of ``config`` at ``per_device_batch`` images per device (times
  ``grad_accum_steps`` micro-batches), compiled and, with ``steps > 0``, timed."""
  mesh = parallel.make_mesh()
  batch_size = per_device_batch * mesh.devices.size * grad_accum_steps
  with config.unlocked():
    config.training.update(batch_size=batch_size, compute_dtype=dtype,
                           grad_accum_steps=grad_accum_steps)
    config.model.remat = remat
  sde, model = sde_lib.get_sde(config), mutils.get_model(config)
  tx = optim.get_optimizer(config.optim)
  init = train_state.state_factory(config, model, tx)
  step = train.jit_step(losses.get_step_fn(sde, model, True, tx, losses.step_settings(config)),
                        mesh, train=True)
  image_shape = images.image_shape(config.data.image_size, config.data.num_channels)
  state_spec = train_state.abstract_state(init, mesh)
  batch_spec = {'image': jax.ShapeDtypeStruct((batch_size,) + image_shape, jnp.float32,
                                              sharding=parallel.data_sharding(mesh)),
                'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32,
                                              sharding=parallel.data_sharding(mesh))}
  key = parallel.replicate(jax.random.key(0), mesh)
  start = time.perf_counter()
  compiled = step.lower(state_spec, batch_spec, key).compile()
  row = dict(batch=per_device_batch, global_batch=batch_size, dtype=dtype, remat=remat,
             compile_s=time.perf_counter() - start, gflop=_flops(compiled) / 1e9,
             memory_gb=_memory_gb(compiled),
             params_m=sum(int(np.prod(s.shape)) for s in jax.tree.leaves(state_spec.params)) / 1e6)
  if steps <= 0:
    return row
  state = jax.jit(init, out_shardings=parallel.replicated(mesh))()
  rng = np.random.default_rng(0)
  batch = parallel.to_global({
      'image': rng.uniform(size=(batch_size,) + image_shape).astype(np.float32),
      'label': np.zeros((batch_size,), np.int32)}, mesh)
  state, metrics = compiled(state, batch, key)
  jax.block_until_ready(metrics)
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready((state, metrics))
    rates.append(steps / (time.perf_counter() - start))
  steps_per_s = float(np.median(rates))
  row.update(images_per_s=steps_per_s * batch_size,
             images_per_s_range=(min(rates) * batch_size, max(rates) * batch_size))
  peak = _peak_tflops(dtype)
  if peak is not None:
    row['mfu'] = row['gflop'] * 1e9 * steps_per_s / (peak * 1e12 * mesh.devices.size)
  return row


def _print_row(name: str, row: dict) -> None:
  timed = ''
  if 'images_per_s' in row:
    low, high = row['images_per_s_range']
    timed = f' {row["images_per_s"]:9.1f} ({low:.1f}-{high:.1f})'
    if 'mfu' in row:
      timed += f'  MFU {100 * row["mfu"]:5.1f}%'
  print(f'{name:<32} {row["params_m"]:6.1f}M {row["batch"]:5d} {row["global_batch"]:6d} '
        f'{row["dtype"]:>8} {str(row["remat"]):>5} {row["compile_s"]:7.1f} '
        f'{row["gflop"]:10.1f} {row["memory_gb"]:8.2f}{timed}', flush=True)


def main(_):
  paths = _PAPER_CONFIGS if _PAPER.value else (None,)
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind} '
        f'({jax.default_backend()}); grad_accum_steps {_GRAD_ACCUM.value}')
  print(f'{"config":<32} {"params":>7} {"b/dev":>5} {"global":>6} {"dtype":>8} {"remat":>5} '
        f'{"compile":>7} {"GFLOP/step":>10} {"GiB/dev":>8} {"images/s (range)":>9}')
  for path in paths:
    base = _CONFIG.value if path is None else _load_config(path)
    name = (flags.FLAGS['config'].config_filename if path is None else path)
    name = name.replace('configs/', '').replace('.py', '')
    devices = jax.device_count()
    batch_sizes = ([int(b) for b in _BATCH_SIZES.value] if _BATCH_SIZES.value else
                   [max(1, base.training.batch_size // devices // _GRAD_ACCUM.value)])
    remats = [r.lower() in ('1', 'true', 'yes') for r in _REMAT.value]
    for batch, dtype, remat in itertools.product(batch_sizes, _DTYPES.value, remats):
      config = base.copy_and_resolve_references()
      _print_row(name, measure(config, batch, dtype, remat, _GRAD_ACCUM.value, _STEPS.value,
                               _REPEATS.value))


if __name__ == '__main__':
  app.run(main)
