"""This code's train step beside score_sde_pytorch's, at equal config, on this machine's CPU.

    python benchmarks/pytorch_parity.py --pytorch_repo ~/score_sde_pytorch \
        --config configs/ve/cifar10_ncsnpp_continuous.py --batch_sizes 8 --steps 3
    python benchmarks/pytorch_parity.py --pytorch_repo ~/score_sde_pytorch \
        --config configs/ve/cifar10_ncsnpp_continuous.py --config.model.nf=32 \
        --config.model.ch_mult='(1, 2, 2)' --batch_sizes 8,32

Both sides build their network from the same ``ml_collections`` config (the PyTorch port reads
the same field names) and run their own full train step: the SDE loss of the config, backward
pass, Adam with warm-up and gradient clipping, EMA update. The parameter counts are printed so a
mismatch shows. Each measurement is a fresh process (``--worker``), and the two frameworks
alternate for ``--rounds`` rounds so that machine load drifts hit both; the table gives the
median over rounds of each process's images/s (itself the median of ``--repeats`` blocks of
``--steps`` steps after one warm-up step), and the peak resident memory of the process (what
``top`` shows at its high point: for JAX this includes XLA's compilation).

Needs ``torch`` (CPU wheel) and a checkout of https://github.com/yang-song/score_sde_pytorch;
neither is a dependency of this package or its tests. The port compiles CUDA kernels when its
``op`` package is imported; on CPU its code calls only the pure-PyTorch ``upfirdn2d_native``,
so the worker replaces ``torch.utils.cpp_extension.load`` with a stub before importing it.
"""
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

import train_throughput  # the --config flag and the JAX measurement

_REPO = flags.DEFINE_string('pytorch_repo', None, 'Checkout of score_sde_pytorch.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternating rounds (fresh processes) per setting.')
_WORKER = flags.DEFINE_enum('worker', None, ['jax', 'torch'], 'Internal: measure one side.')
_BATCH = flags.DEFINE_integer('batch', 8, 'Internal: the worker\'s batch size.')


def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _torch_worker(config, batch: int, steps: int, repeats: int) -> dict:
  import torch
  import torch.utils.cpp_extension
  torch.utils.cpp_extension.load = lambda *args, **kwargs: None
  sys.path.insert(0, os.path.expanduser(_REPO.value))
  import losses
  import sde_lib
  from models import ddpm, ncsnpp, ncsnv2  # noqa: F401  (registers the models)
  from models import utils as mutils
  from models.ema import ExponentialMovingAverage

  with config.unlocked():
    config.device = torch.device('cpu')
    if config.training.continuous and config.training.sde.lower() != 'vesde':
      # The port looks up a table of num_scales sigmas at the VP label 999 t even where the
      # network does not use it; the continuous-time loss itself does not depend on N.
      config.model.num_scales = max(config.model.num_scales, 1000)
  torch.manual_seed(0)
  model = mutils.create_model(config)
  ema = ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
  optimizer = losses.get_optimizer(config, model.parameters())
  state = dict(optimizer=optimizer, model=model, ema=ema, step=0)
  name = config.training.sde.lower()
  if name == 'vesde':
    sde = sde_lib.VESDE(config.model.sigma_min, config.model.sigma_max, config.model.num_scales)
  elif name == 'vpsde':
    sde = sde_lib.VPSDE(config.model.beta_min, config.model.beta_max, config.model.num_scales)
  else:
    sde = sde_lib.subVPSDE(config.model.beta_min, config.model.beta_max,
                           config.model.num_scales)
  step_fn = losses.get_step_fn(
      sde, train=True, optimize_fn=losses.optimization_manager(config),
      reduce_mean=config.training.reduce_mean, continuous=config.training.continuous,
      likelihood_weighting=config.training.weighting == 'likelihood')  # The port: no 'elbo'.
  shape = (batch, config.data.num_channels, config.data.image_size, config.data.image_size)
  images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
  step_fn(state, images)
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step_fn(state, images)
    rates.append(steps * batch / (time.perf_counter() - start))
  return dict(images_per_s=float(np.median(rates)), threads=torch.get_num_threads(),
              params_m=sum(p.numel() for p in model.parameters()) / 1e6)


def _worker(_):
  config = train_throughput._CONFIG.value
  steps, repeats = train_throughput._STEPS.value, train_throughput._REPEATS.value
  if _WORKER.value == 'torch':
    row = _torch_worker(config, _BATCH.value, steps, repeats)
  else:
    row = train_throughput.measure(config, _BATCH.value, 'float32', False, 1, steps, repeats)
    row = dict(images_per_s=row['images_per_s'], params_m=row['params_m'])
  row['peak_rss_gib'] = _peak_rss_gib()
  print('RESULT ' + json.dumps(row), flush=True)


def _run_worker(side: str, batch: int) -> dict:
  args = [a for a in sys.argv[1:] if not a.startswith('--batch_sizes')]
  out = subprocess.run([sys.executable, os.path.abspath(__file__), f'--worker={side}',
                        f'--batch={batch}'] + args, capture_output=True, text=True, check=False)
  lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
  if out.returncode or not lines:
    raise RuntimeError(f'{side} worker failed (exit {out.returncode}):\n{out.stderr[-3000:]}')
  return json.loads(lines[-1][len('RESULT '):])


def main(argv):
  if _WORKER.value:
    return _worker(argv)
  if not _REPO.value:
    raise app.UsageError('--pytorch_repo: the path of a score_sde_pytorch checkout.')
  batch_sizes = [int(b) for b in train_throughput._BATCH_SIZES.value] or [8]
  print(f'{"batch":>5} {"params (jax/torch)":>18} {"jax img/s":>10} {"torch img/s":>11} '
        f'{"ratio":>6} {"jax GiB":>8} {"torch GiB":>9}')
  for batch in batch_sizes:
    runs = {'jax': [], 'torch': []}
    for _ in range(_ROUNDS.value):
      for side in ('torch', 'jax'):
        runs[side].append(_run_worker(side, batch))
    med = {side: float(np.median([r['images_per_s'] for r in rows]))
           for side, rows in runs.items()}
    rss = {side: float(np.median([r['peak_rss_gib'] for r in rows]))
           for side, rows in runs.items()}
    params = f'{runs["jax"][0]["params_m"]:.2f}M/{runs["torch"][0]["params_m"]:.2f}M'
    print(f'{batch:5d} {params:>18} {med["jax"]:10.2f} {med["torch"]:11.2f} '
          f'{med["jax"] / med["torch"]:5.2f}x {rss["jax"]:8.2f} {rss["torch"]:9.2f}',
          flush=True)
    print('  per round (jax, torch images/s): ' + ', '.join(
        f'({j["images_per_s"]:.2f}, {t["images_per_s"]:.2f})'
        for j, t in zip(runs['jax'], runs['torch'])), flush=True)


if __name__ == '__main__':
  app.run(main)
