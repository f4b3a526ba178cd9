"""DDPM++ cont. (deep) on CIFAR-10 with the VP SDE: 8 residual blocks per resolution.

    python main.py --config configs/vp/cifar10_ddpmpp_deep_continuous.py \
        --workdir runs/vp/cifar10_ddpmpp_deep_continuous

Reported (yang-song/score_sde README): FID 2.41, IS 9.68 (paper Table 3); FID 3.08 with the
probability-flow ODE and 3.13 bits/dim (paper Table 2).
"""
from score_sde.configs import default
from score_sde.configs.vp import cifar10_ddpmpp_continuous


def get_config():
  return default.deepen(cifar10_ddpmpp_continuous.get_config())
