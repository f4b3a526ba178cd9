"""The DDPM model of Ho et al. (2020) on CIFAR-10: its architecture, loss and ancestral sampler.

    python main.py --config configs/vp/cifar10_ddpm.py --workdir runs/vp/cifar10_ddpm

Reported (yang-song/score_sde README, checkpoint ``vp/cifar10_ddpm``): FID 3.24; FID 3.37 with
the probability-flow ODE and 3.28 bits/dim (paper Table 2).
"""
from score_sde.configs.vp import cifar10_ddpmpp


def get_config():
  config = cifar10_ddpmpp.get_config()
  model = config.model
  model.name = 'ddpm'
  model.num_res_blocks = 2
  return config
