"""NCSNv2 (Song & Ermon 2020) on 128x128 LSUN bedroom: the 128 px network, 1086 noise levels
from 190 to 0.01, 3 Langevin steps per level at snr 0.095, EMA 0.9999.

    python main.py --config configs/ve/ncsnv2/bedroom.py --workdir runs/ve/ncsnv2/bedroom \
        --config.data.data_dir=/path/to/lsun

The paper shows samples only; no figure is stated for this configuration. The reference's file
misspelt ``training.continuous`` (so it trained in continuous time, which this network, indexed
by noise level, cannot take); here it is the discrete SMLD loss like every NCSN experiment.
"""
from score_sde.configs.ve import _ncsn, bedroom_ncsnpp_continuous


def get_config():
  config = bedroom_ncsnpp_continuous.get_config()
  config.training.batch_size = 128
  config.data.image_size = 128
  config.model.sigma_max = 190.
  return _ncsn.ncsnv2(config, 'ncsnv2_128', num_scales=1086, snr=0.095, n_steps_each=3,
                      ema_rate=0.9999)
