"""The digits default (``configs/embedded.py``) trained with EDM's recipe (Karras et al. 2022):
the same 0.28M-parameter network, data, batch, steps and learning rate, so that the two recipes
can be compared on a CPU (benchmarks/edm_vs_dsm.py, docs/edm.md).

    python main.py --config configs/embedded_edm.py --workdir runs/embedded_edm

What changes against ``configs/embedded.py`` (VP SDE, continuous DSM, noise prediction):

* EDM's preconditioned denoiser ``D = c_skip x + c_out F(c_in x; c_noise)`` with
  ``sigma_data = 0.5`` (``model.parameterization='edm'``; the digits in [-1, 1] have standard
  deviation 0.503 at 16x16); the network's positional embedding reads ``c_noise = ln(sigma) / 4``.
* EDM's objective (``training.weighting='edm'``): ``ln sigma ~ N(-1.2, 1.2^2)``, weight
  ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` on the denoiser's squared error.
* The VE SDE from ``sigma = 0.002`` to 80 (EDM's range), which places the samplers' grid.
* Snapshots with EDM's sampler: Heun on the ``rho = 7`` grid, 18 steps (35 evaluations).
* The EMA by half-life. EDM's (500 kimg of a 200 Mimg run, 0.25% of it) would be 0.5 kimg, 7
  steps, here: too short to compare against the digits default, whose warmed-up EMA
  ``min(0.999, (1 + n) / (10 + n))`` has a half-life of about ``ln 2 (n + 1) / 9`` updates, 7.7%
  of the steps taken, 231 steps (14.8 kimg) at step 3,000. EDM's ramp-up,
  ``half-life = min(ema_halflife_kimg, ema_rampup_ratio x images seen)``, with ratio
  ``ln 2 / 9 = 0.077`` and a cap of 15 kimg is that same average at every step, so the two
  recipes differ in their objective, parameterization, noise levels and sampler, not in how
  their weights are averaged. (EDM's own ratio, 0.05, would end at 9.6 kimg.)

Everything else is ``configs/embedded.py``'s: Adam at 2e-3 with 200 warm-up steps and gradient
clipping at 1, no dropout, the half sum of squares per image.
"""
from score_sde.configs import edm, embedded


def get_config():
  config = edm.recipe(embedded.get_config())
  model = config.model
  model.ema_halflife_kimg = 15.
  model.ema_rampup_ratio = 0.077
  model.ema_warmup = False
  return config
