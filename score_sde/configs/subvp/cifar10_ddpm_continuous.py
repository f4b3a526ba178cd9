"""DDPM cont. on CIFAR-10 with the sub-VP SDE: the Ho et al. (2020) architecture.

    python main.py --config configs/subvp/cifar10_ddpm_continuous.py \
        --workdir runs/subvp/cifar10_ddpm_continuous

Reported (yang-song/score_sde README): FID 3.56 with the probability-flow ODE and 3.05 bits/dim
(paper Table 2).
"""
from score_sde.configs.vp import cifar10_ddpm_continuous


def get_config():
  config = cifar10_ddpm_continuous.get_config()
  config.training.sde = 'subvpsde'
  return config
