"""NCSN++ cont. on 1024x1024 CelebA-HQ with the VE SDE (the paper's 1024 px samples).

    python main.py --config configs/ve/celebahq_ncsnpp_continuous.py \
        --workdir runs/ve/celebahq_ncsnpp_continuous \
        --config.data.tfrecords_path=/path/to/celebahq-r10.tfrecords

Samples only; no figure is stated. The FFHQ 1024 setup on CelebA-HQ, with the loss summed
over pixels as in the reference.
"""
from score_sde.configs.ve import ffhq_ncsnpp_continuous


def get_config():
  config = ffhq_ncsnpp_continuous.get_config()
  config.training.reduce_mean = False
  config.data.dataset = 'CELEBAHQ'
  return config
