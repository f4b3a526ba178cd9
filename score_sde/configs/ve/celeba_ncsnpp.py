"""NCSN++ on 64x64 CelebA trained with the discrete SMLD loss (VE noise levels).

    python main.py --config configs/ve/celeba_ncsnpp.py --workdir runs/ve/celeba_ncsnpp

No figure for this configuration is stated in the reference README.
"""
from score_sde.configs.ve import cifar10_ncsnpp


def get_config():
  config = cifar10_ncsnpp.get_config()
  config.sampling.snr = 0.17

  evaluate = config.eval
  evaluate.begin_ckpt = 1
  evaluate.enable_sampling = True

  data = config.data
  data.dataset = 'CELEBA'
  data.image_size = 64

  config.model.sigma_max = 90.  # The reference value for CelebA (CIFAR-10: 50).
  return config
