"""EDM's unconditional NCSN++ on CIFAR-10 (Karras et al. 2022, Table 2, "EDM" column).

    python main.py --config configs/edm/cifar10_ncsnpp_uncond.py \
        --workdir runs/edm/cifar10_ncsnpp_uncond

EDM's own run:

    torchrun --standalone --nproc_per_node=8 train.py --outdir=training-runs \
        --data=datasets/cifar10-32x32.zip --cond=0 --arch=ncsnpp

Reported: FID 1.98 at 35 NFE (18 Heun steps).

``configs/edm/cifar10_ddpmpp_uncond.py`` (the recipe, and what differs from EDM's run: no
augmentation pipeline here, which the reported FID depends on, and the released score_sde
initialisers instead of EDM's) with EDM's NCSN++ network: FIR resampling with the (1, 3, 3, 1)
kernel, the residual input pyramid (EDM's encoder 'residual'), and the Fourier embedding
(scale 16) of the label itself, EDM's ``c_noise = ln(sigma) / 4`` (``embed_log_sigma=False``).
"""
from score_sde.configs.edm import cifar10_ddpmpp_uncond


def get_config():
  config = cifar10_ddpmpp_uncond.get_config()
  model = config.model
  model.embedding_type = 'fourier'
  model.fourier_scale = 16.
  model.embed_log_sigma = False
  model.fir = True
  model.fir_kernel = (1, 3, 3, 1)
  model.progressive_input = 'residual'
  return config
