"""DDPM++ on CIFAR-10 trained with the discrete DDPM loss, sampled ancestrally.

    python main.py --config configs/vp/cifar10_ddpmpp.py --workdir runs/vp/cifar10_ddpmpp

Reported: FID 2.78, IS 9.64 (yang-song/score_sde README, from the paper's Table 3).
"""
from score_sde.configs.vp import cifar10_ddpmpp_continuous


def get_config():
  config = cifar10_ddpmpp_continuous.get_config()
  config.training.continuous = False
  config.sampling.predictor = 'ancestral_sampling'
  return config
