"""EDM's class-conditional DDPM++ on CIFAR-10 (Karras et al. 2022, Table 2, "EDM" column).

    python main.py --config configs/edm/cifar10_ddpmpp_cond.py \
        --workdir runs/edm/cifar10_ddpmpp_cond

EDM's own run:

    torchrun --standalone --nproc_per_node=8 train.py --outdir=training-runs \
        --data=datasets/cifar10-32x32.zip --cond=1 --arch=ddpmpp

Reported: FID 1.79 at 35 NFE (18 Heun steps).

``configs/edm/cifar10_ddpmpp_uncond.py`` with the ten classes: their learnt embedding is added
to the noise embedding (``model.class_embedding='noise'``, EDM's ``map_label``) and no label is
dropped while training (EDM's default), so the network has no unconditional score for
classifier-free guidance. The same differences from EDM's run apply (that file's docstring): no
augmentation pipeline here, which the reported FID depends on, and the released score_sde
initialisers instead of EDM's.
"""
from score_sde.configs.edm import cifar10_ddpmpp_uncond


def get_config():
  return cifar10_ddpmpp_uncond.class_conditional(cifar10_ddpmpp_uncond.get_config())
