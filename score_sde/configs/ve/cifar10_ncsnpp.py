"""NCSN++ on CIFAR-10 trained with the discrete SMLD loss (Song & Ermon 2019), VE noise levels.

    python main.py --config configs/ve/cifar10_ncsnpp.py --workdir runs/ve/cifar10_ncsnpp

Reported: FID 2.45, IS 9.73 (yang-song/score_sde README, from the paper's Table 3).
"""
from score_sde.configs.ve import cifar10_ncsnpp_continuous


def get_config():
  config = cifar10_ncsnpp_continuous.get_config()
  config.training.continuous = False
  # The network sees an integer noise-level index, not sigma, so the sinusoidal embedding is used.
  config.model.embedding_type = 'positional'
  return config
