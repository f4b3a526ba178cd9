"""NCSN on CIFAR-10 with techniques 1, 2 and 4 of NCSNv2 (Song & Ermon 2020): 232 noise levels from
the data set's sigma_max (50.) to 0.01, 5 Langevin steps per level at snr 0.176; no EMA. An
ablation of that paper.

    python main.py --config configs/ve/ncsn/cifar10_124.py --workdir runs/ve/ncsn/cifar10_124

No figure is stated for this configuration in the reference README.
"""
from score_sde.configs.ve.ncsn import cifar10


def get_config():
  config = cifar10.get_config()
  config.model.sigma_max = 50.
  config.model.num_scales = 232
  config.sampling.n_steps_each = 5
  config.sampling.snr = 0.176
  return config
