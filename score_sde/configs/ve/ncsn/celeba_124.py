"""NCSN on 64x64 CelebA with techniques 1, 2 and 4 of NCSNv2 (Song & Ermon 2020): 500 noise
levels from the data set's sigma_max (90.) to 0.01, 5 Langevin steps per level at snr 0.128; no
EMA. An ablation of that paper.

    python main.py --config configs/ve/ncsn/celeba_124.py --workdir runs/ve/ncsn/celeba_124

No figure is stated for this configuration in the reference README.
"""
from score_sde.configs.ve.ncsn import celeba


def get_config():
  config = celeba.get_config()
  config.model.sigma_max = 90.
  config.model.num_scales = 500
  config.sampling.n_steps_each = 5
  config.sampling.snr = 0.128
  return config
