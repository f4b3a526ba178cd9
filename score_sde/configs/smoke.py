"""A tiny configuration for tests, CI and Colab: every code path, seconds per step on a CPU."""
from score_sde.configs import embedded_ncsnpp


def get_config():
  config = embedded_ncsnpp.get_config()
  training = config.training
  training.batch_size = 8
  training.n_iters = 6
  training.log_freq = 2
  training.eval_freq = 3
  training.snapshot_freq = 4
  training.snapshot_freq_for_preemption = 2
  training.max_to_keep = 2
  training.snapshot_sampling = False
  training.n_snapshot_samples = 8

  config.sampling.num_steps = 4
  config.model.num_scales = 10

  data = config.data
  data.image_size = 16
  data.num_channels = 1

  model = config.model
  model.nf = 8
  model.ch_mult = (1, 2)
  model.num_res_blocks = 1
  model.attn_resolutions = (8,)

  config.optim.warmup = 2
  config.eval.batch_size = 8
  config.eval.num_samples = 16
  return config
