"""NCSN++ cont. (deep) on CIFAR-10 with the VE SDE: 8 residual blocks per resolution.

    python main.py --config configs/ve/cifar10_ncsnpp_deep_continuous.py \
        --workdir runs/ve/cifar10_ncsnpp_deep_continuous

Reported: FID 2.20, IS 9.89, the paper's best CIFAR-10 sample quality (abstract and Table 3;
also the yang-song/score_sde README).
"""
from score_sde.configs import default
from score_sde.configs.ve import cifar10_ncsnpp_continuous


def get_config():
  return default.deepen(cifar10_ncsnpp_continuous.get_config())
