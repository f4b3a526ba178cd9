"""NCSNv2 (Song & Ermon 2020) on 64x64 CelebA: 500 noise levels from 90 to 0.01, 5 Langevin
steps per level at snr 0.128, EMA 0.999.

    python main.py --config configs/ve/ncsnv2/celeba.py --workdir runs/ve/ncsnv2/celeba

No figure is stated for this configuration in the reference README.
"""
from score_sde.configs.ve import _ncsn, celeba_ncsnpp


def get_config():
  return _ncsn.ncsnv2(celeba_ncsnpp.get_config(), 'ncsnv2_64', num_scales=500, snr=0.128,
                      n_steps_each=5)
