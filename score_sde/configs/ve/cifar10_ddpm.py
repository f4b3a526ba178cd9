"""The DDPM architecture of Ho et al. (2020) trained with the discrete SMLD loss on CIFAR-10.

    python main.py --config configs/ve/cifar10_ddpm.py --workdir runs/ve/cifar10_ddpm

An ablation of the reference code (architecture held fixed, SMLD instead of DDPM noise); the
paper and the reference README report no figure for this configuration.
"""
from score_sde.configs.ve import cifar10_ncsnpp


def get_config():
  config = cifar10_ncsnpp.get_config()
  model = config.model
  model.name = 'ddpm'
  model.num_res_blocks = 2
  return config
