"""NCSN++ cont. on CIFAR-10 with the VE SDE (Song et al. 2021, Table 3).

    python main.py --config configs/ve/cifar10_ncsnpp_continuous.py \
        --workdir runs/ve/cifar10_ncsnpp_continuous
    python main.py --mode eval --config configs/ve/cifar10_ncsnpp_continuous.py \
        --workdir runs/ve/cifar10_ncsnpp_continuous --config.eval.enable_sampling=True

Reported: FID 2.38, IS 9.83 with the PC sampler (reverse diffusion + Langevin, snr 0.16); figures
of the yang-song/score_sde README, which takes them from the paper's Table 3.

``configs/default.py`` already is this experiment; only the evaluated checkpoint range differs.
"""
from score_sde.configs import default


def get_config():
  config = default.get_config()
  # The reference evaluates checkpoints 9-26 (450k-1.3M steps) and reports the best FID.
  config.eval.begin_ckpt = 9
  return config
