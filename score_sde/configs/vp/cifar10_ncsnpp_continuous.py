"""NCSN++ cont. on CIFAR-10 with the VP SDE.

    python main.py --config configs/vp/cifar10_ncsnpp_continuous.py \
        --workdir runs/vp/cifar10_ncsnpp_continuous

No figure for this configuration is stated in the reference README.

The VP delta from the VE default, shared by every VP and sub-VP experiment: data in [-1, 1],
the per-pixel mean loss, EMA 0.9999, a sinusoidal time embedding, no division by sigma (the score
is formed as -output / std), and Euler-Maruyama sampling stopped at t = 1e-3.
"""
from score_sde.configs import default


def get_config():
  config = default.get_config()
  training = config.training
  training.sde = 'vpsde'
  training.reduce_mean = True

  sampling = config.sampling
  sampling.predictor = 'euler_maruyama'
  sampling.corrector = 'none'
  sampling.eps = 1e-3

  config.eval.begin_ckpt = 9
  config.data.centered = True

  model = config.model
  model.scale_by_sigma = False
  model.ema_rate = 0.9999
  model.embedding_type = 'positional'
  return config
