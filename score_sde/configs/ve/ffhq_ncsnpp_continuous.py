"""NCSN++ cont. on 1024x1024 FFHQ with the VE SDE (the 1024 px setup of the paper's CelebA-HQ).

    python main.py --config configs/ve/ffhq_ncsnpp_continuous.py \
        --workdir runs/ve/ffhq_ncsnpp_continuous \
        --config.data.tfrecords_path=/path/to/ffhq-r10.tfrecords

The reference README shows samples of a released checkpoint; no figure is stated. The
reference's 1024 px network has eight resolutions (1024 down to 8), a base width of 16 and one
residual block per resolution.
"""
from score_sde.configs.ve import _ncsnpp_256


def get_config():
  config = _ncsnpp_256.get_base_config()
  training = config.training
  training.batch_size = 8
  training.reduce_mean = True

  config.sampling.snr = 0.15
  config.eval.batch_size = 1024

  data = config.data
  data.dataset = 'FFHQ'
  data.image_size = 1024

  model = config.model
  model.sigma_max = 1348.
  model.ema_rate = 0.9999
  model.nf = 16
  model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
  model.num_res_blocks = 1
  return config
