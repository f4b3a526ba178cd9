"""NCSN++ cont. on 256x256 FFHQ with the VE SDE.

    python main.py --config configs/ve/ffhq_256_ncsnpp_continuous.py \
        --workdir runs/ve/ffhq_256_ncsnpp_continuous \
        --config.data.tfrecords_path=/path/to/ffhq-r08.tfrecords

The reference README shows samples of a released checkpoint; no figure is stated.
"""
from score_sde.configs.ve import _ncsnpp_256


def get_config():
  config = _ncsnpp_256.get_base_config()
  config.data.dataset = 'FFHQ'
  config.model.sigma_max = 348.
  return config
