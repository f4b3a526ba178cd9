"""DDPM cont. on CIFAR-10: the Ho et al. (2020) architecture trained with the VP SDE's loss.

    python main.py --config configs/vp/cifar10_ddpm_continuous.py \
        --workdir runs/vp/cifar10_ddpm_continuous

Reported (yang-song/score_sde README): FID 3.69 with the probability-flow ODE and 3.21 bits/dim
(paper Table 2).
"""
from score_sde.configs.vp import cifar10_ddpm


def get_config():
  config = cifar10_ddpm.get_config()
  config.training.continuous = True
  config.sampling.predictor = 'euler_maruyama'
  return config
