"""NCSN++ cont. on 256x256 LSUN church_outdoor with the VE SDE.

    python main.py --config configs/ve/church_ncsnpp_continuous.py \
        --workdir runs/ve/church_ncsnpp_continuous --config.data.data_dir=/path/to/lsun

The paper shows samples only; no figure is stated for this configuration.
"""
from score_sde.configs.ve import _ncsnpp_256


def get_config():
  config = _ncsnpp_256.get_base_config()
  data = config.data
  data.dataset = 'LSUN'
  data.category = 'church_outdoor'
  config.model.sigma_max = 380.
  return config
