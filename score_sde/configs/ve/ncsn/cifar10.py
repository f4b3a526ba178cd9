"""NCSN (Song & Ermon 2019) on CIFAR-10: SMLD loss over 10 noise levels, annealed Langevin
dynamics.

    python main.py --config configs/ve/ncsn/cifar10.py --workdir runs/ve/ncsn/cifar10

Reported: FID 25.32, IS 8.87 (Song & Ermon 2019, as listed in Song et al. 2021, Table 3).
"""
from score_sde.configs.ve import _ncsn, cifar10_ncsnpp_continuous


def get_config():
  return _ncsn.ncsn(cifar10_ncsnpp_continuous.get_config())
