"""DDPM++ cont. (deep) on CIFAR-10 with the sub-VP SDE: 8 residual blocks per resolution.

    python main.py --config configs/subvp/cifar10_ddpmpp_deep_continuous.py \
        --workdir runs/subvp/cifar10_ddpmpp_deep_continuous

Reported (yang-song/score_sde README): FID 2.41, IS 9.57 (paper Table 3); FID 2.92 with the
probability-flow ODE and 2.99 bits/dim (paper Table 2), the paper's best likelihood (abstract).
"""
from score_sde.configs.vp import cifar10_ddpmpp_deep_continuous


def get_config():
  config = cifar10_ddpmpp_deep_continuous.get_config()
  config.training.sde = 'subvpsde'
  return config
