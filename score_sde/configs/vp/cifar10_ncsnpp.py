"""NCSN++ on CIFAR-10 trained with the discrete DDPM loss (Ho et al. 2020).

    python main.py --config configs/vp/cifar10_ncsnpp.py --workdir runs/vp/cifar10_ncsnpp

No figure for this configuration is stated in the reference README. As in the reference, it
samples with reverse diffusion rather than ancestral sampling.
"""
from score_sde.configs.vp import cifar10_ncsnpp_continuous


def get_config():
  config = cifar10_ncsnpp_continuous.get_config()
  config.training.continuous = False
  config.sampling.predictor = 'reverse_diffusion'
  return config
