"""DDPM++ cont. on CIFAR-10 with the sub-VP SDE, the VP variant introduced by the paper.

    python main.py --config configs/subvp/cifar10_ddpmpp_continuous.py \
        --workdir runs/subvp/cifar10_ddpmpp_continuous
    python main.py --mode eval --config configs/subvp/cifar10_ddpmpp_continuous.py \
        --workdir runs/subvp/cifar10_ddpmpp_continuous --config.eval.enable_bpd=True

Reported (yang-song/score_sde README): FID 2.61, IS 9.56 (paper Table 3); FID 3.16 with the
probability-flow ODE and 3.02 bits/dim (paper Table 2).

Every sub-VP experiment is its VP counterpart with the SDE swapped.
"""
from score_sde.configs.vp import cifar10_ddpmpp_continuous


def get_config():
  config = cifar10_ddpmpp_continuous.get_config()
  config.training.sde = 'subvpsde'
  return config
