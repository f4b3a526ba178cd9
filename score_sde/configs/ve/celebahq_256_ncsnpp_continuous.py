"""NCSN++ cont. on 256x256 CelebA-HQ with the VE SDE.

    python main.py --config configs/ve/celebahq_256_ncsnpp_continuous.py \
        --workdir runs/ve/celebahq_256_ncsnpp_continuous \
        --config.data.tfrecords_path=/path/to/celebahq-r08.tfrecords

The reference README shows samples of a released checkpoint; no figure is stated.
"""
from score_sde.configs.ve import _ncsnpp_256


def get_config():
  config = _ncsnpp_256.get_base_config()
  config.data.dataset = 'CELEBAHQ'
  config.model.sigma_max = 348.
  return config
