"""NCSN++ cont. (deep) on CIFAR-10 with the VP SDE: 8 residual blocks per resolution.

    python main.py --config configs/vp/cifar10_ncsnpp_deep_continuous.py \
        --workdir runs/vp/cifar10_ncsnpp_deep_continuous

No figure for this configuration is stated in the reference README.
"""
from configs.vp import cifar10_ncsnpp_continuous


def get_config():
  config = cifar10_ncsnpp_continuous.get_config()
  config.training.n_iters = 950001
  config.eval.end_ckpt = 19  # The last checkpoint of 950k steps at snapshot_freq = 50k.
  config.model.num_res_blocks = 8
  return config
