"""NCSN on 64x64 CelebA with techniques 1, 2, 4 and 5 of NCSNv2 (Song & Ermon 2020): those of
``celeba_124`` plus an EMA of the weights (0.999). An ablation of that paper.

    python main.py --config configs/ve/ncsn/celeba_1245.py --workdir runs/ve/ncsn/celeba_1245

No figure is stated for this configuration in the reference README.
"""
from score_sde.configs.ve.ncsn import celeba_124


def get_config():
  config = celeba_124.get_config()
  config.model.ema_rate = 0.999
  return config
