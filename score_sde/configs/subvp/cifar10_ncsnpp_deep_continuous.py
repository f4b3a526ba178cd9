"""NCSN++ cont. (deep) on CIFAR-10 with the sub-VP SDE: 8 residual blocks per resolution.

    python main.py --config configs/subvp/cifar10_ncsnpp_deep_continuous.py \
        --workdir runs/subvp/cifar10_ncsnpp_deep_continuous

No figure for this configuration is stated in the reference README.
"""
from score_sde.configs.vp import cifar10_ncsnpp_deep_continuous


def get_config():
  config = cifar10_ncsnpp_deep_continuous.get_config()
  config.training.sde = 'subvpsde'
  return config
