"""NCSN on 64x64 CelebA with an EMA of the weights (0.999), technique 5 of NCSNv2 (Song & Ermon
2020) alone: an ablation of that paper.

    python main.py --config configs/ve/ncsn/celeba_5.py --workdir runs/ve/ncsn/celeba_5

No figure is stated for this configuration in the reference README.
"""
from score_sde.configs.ve.ncsn import celeba


def get_config():
  config = celeba.get_config()
  config.model.ema_rate = 0.999
  return config
