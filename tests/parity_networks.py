"""The small networks of the PyTorch-parity fixtures (tests/fixtures/parity/), shared by their
generator (benchmarks/make_parity_fixtures.py) and tests/test_parity.py.

Each is a paper config shrunk to 16 px and two resolutions; between them they use every
architecture option of the paper's configs.
"""
import importlib

# name -> (config module, what it covers)
NETWORKS = {
    'ncsnpp_ve': ('configs.ve.cifar10_ncsnpp_continuous',
                  'NCSN++: FIR, BigGAN blocks, progressive input residual, Fourier, scale_by_sigma'),
    'ncsnpp_ve_256': ('configs.ve.celebahq_256_ncsnpp_continuous',
                      'NCSN++ 256 px layout: progressive output_skip, input_skip'),
    'ddpmpp_vp': ('configs.vp.cifar10_ddpmpp_continuous',
                  'DDPM++: plain resampling, positional embedding of 999 t'),
    'ddpm_vp': ('configs.vp.cifar10_ddpm', 'DDPM (discrete)'),
    'ncsnpp_embedded': ('configs.embedded',
                        'the embedded default: DDPM residual blocks, centred data, 1 channel'),
}


def network_config(name: str):
  """The config of fixture network ``name``: its paper config at small sizes."""
  config = importlib.import_module(NETWORKS[name][0]).get_config()
  data, model, optim = config.data, config.model, config.optim
  data.image_size = 16
  if name != 'ncsnpp_embedded':
    data.num_channels = 3
  model.num_res_blocks = 1
  model.attn_resolutions = (8,)
  if name == 'ddpm_vp':  # DDPM's group norms have 32 groups.
    model.nf, model.ch_mult = 32, (1, 1)
  else:
    model.nf, model.ch_mult = 8, (1, 2)
  if config.training.sde.lower() != 'vesde':
    model.num_scales = 1000  # The port indexes its sigma table at 999 t.
  model.dropout = 0.1  # Exercised by the train steps; evaluation is deterministic.
  model.ema_rate = 0.9
  model.ema_warmup = True  # The port's EMA always warms up (num_updates); the JAX code's never.
  optim.warmup = 2
  optim.grad_clip = 1.
  config.training.batch_size = 2
  return config


def ncsnv2_config():
  """NCSNv2 (``configs/ve/ncsnv2/cifar10.py``) at 16 px with nf 8: the unconditional RefineNet,
  InstanceNorm++, mean-pooled and dilated residual blocks, the output divided by sigma_i."""
  config = importlib.import_module('configs.ve.ncsnv2.cifar10').get_config()
  config.data.image_size, config.model.nf = 16, 8
  return config
