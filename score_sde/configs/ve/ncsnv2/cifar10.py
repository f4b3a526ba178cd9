"""NCSNv2 (Song & Ermon 2020) on CIFAR-10: 232 noise levels from 50 to 0.01, 5 Langevin steps
per level at snr 0.176, EMA 0.999.

    python main.py --config configs/ve/ncsnv2/cifar10.py --workdir runs/ve/ncsnv2/cifar10

Reported: FID 10.87, IS 8.40 (Song & Ermon 2020, as listed in Song et al. 2021, Table 3).
"""
from score_sde.configs.ve import _ncsn, cifar10_ncsnpp_continuous


def get_config():
  return _ncsn.ncsnv2(cifar10_ncsnpp_continuous.get_config(), 'ncsnv2_64', num_scales=232,
                      snr=0.176, n_steps_each=5)
