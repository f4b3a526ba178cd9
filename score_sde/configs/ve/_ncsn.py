"""Shared settings of the NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020) experiments.

Not an experiment itself: ``configs/ve/ncsn/*.py`` and ``configs/ve/ncsnv2/*.py`` apply these to
a data set's VE config. Both are trained with the discrete SMLD loss (``losses.smld_loss``) on
their own geometric noise ladder and sampled by annealed Langevin dynamics alone (PC sampling
with predictor 'none' and corrector 'ald'), with the reference's Adam recipe: no warmup, no
gradient clipping. Values are those of the reference's ``configs/ve/ncsn`` and
``configs/ve/ncsnv2`` files.
"""


def _smld(config, lr: float, snr: float, n_steps_each: int):
  training = config.training
  training.sde = 'vesde'
  training.continuous = False

  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'none'
  sampling.corrector = 'ald'
  sampling.n_steps_each = n_steps_each
  # ALD's step 2 (snr sigma_i)^2 is the papers' eps sigma_i^2 / sigma_min^2 with
  # eps = 2 snr^2 sigma_min^2.
  sampling.snr = snr

  model = config.model
  model.normalization = 'InstanceNorm++'
  model.nonlinearity = 'elu'
  model.nf = 128
  model.interpolation = 'bilinear'

  optim = config.optim
  optim.optimizer = 'Adam'
  optim.weight_decay = 0.
  optim.lr = lr
  optim.warmup = 0
  optim.grad_clip = -1.  # No clipping.
  return config


def ncsn(config):
  """NCSN: 10 noise levels from 1 to 0.01, 100 Langevin steps per level with step
  ``eps = 2e-5 sigma_i^2 / sigma_L^2`` (snr 0.316), conditional InstanceNorm++, no EMA, the
  output not divided by sigma, Adam at 1e-3."""
  config = _smld(config, lr=1e-3, snr=0.316, n_steps_each=100)
  model = config.model
  model.name = 'ncsn'
  model.scale_by_sigma = False
  model.sigma_max = 1.
  model.num_scales = 10
  model.ema_rate = 0.
  return config


def ncsnv2(config, name: str, num_scales: int, snr: float, n_steps_each: int,
           ema_rate: float = 0.999):
  """NCSNv2: ``num_scales`` levels from ``model.sigma_max`` (the data set's) to 0.01 (its
  techniques 1-2), the unconditional network divided by sigma (technique 3), ``n_steps_each``
  Langevin steps per level at ``snr`` (technique 4), an EMA of the weights (technique 5), Adam
  at 1e-4."""
  config = _smld(config, lr=1e-4, snr=snr, n_steps_each=n_steps_each)
  model = config.model
  model.name = name
  model.scale_by_sigma = True
  model.sigma_min = 0.01
  model.num_scales = num_scales
  model.ema_rate = ema_rate
  return config
