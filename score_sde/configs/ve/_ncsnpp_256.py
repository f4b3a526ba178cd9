"""Shared setup of the 256x256 NCSN++ cont. VE experiments (LSUN, CelebA-HQ 256, FFHQ 256).

Not an experiment itself: the files that import it name the data. Differences from CIFAR-10 are
the reference code's LSUN defaults: smaller batches and longer training, 2000 noise levels, no
dropout, and the 256 px architecture with seven resolutions and progressive growing
(output skip, input skip).
"""
from score_sde.configs import default


def get_base_config():
  config = default.get_config()
  training = config.training
  training.batch_size = 64
  training.n_iters = 2400001
  training.snapshot_freq_for_preemption = 5000

  config.sampling.snr = 0.075

  evaluate = config.eval
  evaluate.batch_size = 512
  evaluate.enable_sampling = True
  # The reference's range 50-96 lies past the last checkpoint of 2.4M steps at snapshot_freq 50k;
  # evaluate every checkpoint there is instead.
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = 48

  config.data.image_size = 256

  model = config.model
  model.num_scales = 2000
  model.dropout = 0.
  model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
  model.num_res_blocks = 2
  model.progressive = 'output_skip'
  model.progressive_input = 'input_skip'
  return config
