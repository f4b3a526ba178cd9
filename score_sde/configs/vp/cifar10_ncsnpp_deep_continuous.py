"""NCSN++ cont. (deep) on CIFAR-10 with the VP SDE: 8 residual blocks per resolution.

    python main.py --config configs/vp/cifar10_ncsnpp_deep_continuous.py \
        --workdir runs/vp/cifar10_ncsnpp_deep_continuous

No figure for this configuration is stated in the reference README.
"""
from score_sde.configs import default
from score_sde.configs.vp import cifar10_ncsnpp_continuous


def get_config():
  return default.deepen(cifar10_ncsnpp_continuous.get_config())
