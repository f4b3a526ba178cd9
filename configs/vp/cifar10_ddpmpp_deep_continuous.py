"""DDPM++ cont. (deep) on CIFAR-10 with the VP SDE: 8 residual blocks per resolution.

    python main.py --config configs/vp/cifar10_ddpmpp_deep_continuous.py \
        --workdir runs/vp/cifar10_ddpmpp_deep_continuous

Reported (yang-song/score_sde README): FID 2.41, IS 9.68 (paper Table 3); FID 3.08 with the
probability-flow ODE and 3.13 bits/dim (paper Table 2).
"""
from configs.vp import cifar10_ddpmpp_continuous


def get_config():
  config = cifar10_ddpmpp_continuous.get_config()
  config.training.n_iters = 950001
  config.eval.end_ckpt = 19  # The last checkpoint of 950k steps at snapshot_freq = 50k.
  config.model.num_res_blocks = 8
  return config
