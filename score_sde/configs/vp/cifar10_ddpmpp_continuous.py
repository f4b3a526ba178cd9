"""DDPM++ cont. on CIFAR-10 with the VP SDE.

    python main.py --config configs/vp/cifar10_ddpmpp_continuous.py \
        --workdir runs/vp/cifar10_ddpmpp_continuous
    python main.py --mode eval --config configs/vp/cifar10_ddpmpp_continuous.py \
        --workdir runs/vp/cifar10_ddpmpp_continuous --config.eval.enable_bpd=True

Reported (yang-song/score_sde README): FID 2.55, IS 9.58 (paper Table 3); FID 3.93 with the
probability-flow ODE and 3.16 bits/dim on uniformly dequantized CIFAR-10 (paper Table 2).

DDPM++ is NCSN++ without FIR resampling and without progressive input growing, the variant the
paper selected for VP SDEs.
"""
from score_sde.configs.vp import cifar10_ncsnpp_continuous


def get_config():
  config = cifar10_ncsnpp_continuous.get_config()
  model = config.model
  model.fir = False
  model.progressive_input = 'none'
  return config
