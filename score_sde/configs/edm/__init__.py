"""Karras et al. 2022 (EDM) on CIFAR-10: its four published networks with its training recipe
(preconditioned denoiser, log-normal noise levels and their weighting, EMA by half-life) and
its 18-step Heun sampler, as settings of this codebase. docs/edm.md tells what they reproduce
and what they do not."""
import ml_collections


def recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """EDM's denoiser, objective, noise range and sampler on ``config``, its network and training
  schedule untouched: the preconditioned denoiser with ``sigma_data = 0.5``, the log-normal noise
  levels ``ln sigma ~ N(-1.2, 1.2^2)`` and their weight, the VE SDE from ``sigma = 0.002`` to 80
  (which only places the samplers' grid), centred data, and 18 deterministic Heun steps on the
  ``rho = 7`` grid (35 network evaluations)."""
  training = config.training
  training.sde = 'vesde'
  training.continuous = True
  training.weighting = 'edm'
  training.p_mean = -1.2
  training.p_std = 1.2

  sampling = config.sampling
  sampling.method = 'heun'
  sampling.schedule = 'karras'
  sampling.rho = 7.
  sampling.num_steps = 18
  sampling.s_churn = 0.
  sampling.eps = 1e-5  # sigma(eps) = 0.002 (1 + 1e-4): the grid ends at EDM's sigma_min.

  config.data.centered = True
  model = config.model
  model.sigma_min = 0.002
  model.sigma_max = 80.
  model.parameterization = 'edm'
  model.sigma_data = 0.5
  model.embed_log_sigma = False  # The Fourier embedding reads c_noise, already a log.
  model.scale_by_sigma = False
  return config
