"""EDM's class-conditional NCSN++ on CIFAR-10 (Karras et al. 2022, Table 2, "EDM" column).

    python main.py --config configs/edm/cifar10_ncsnpp_cond.py \
        --workdir runs/edm/cifar10_ncsnpp_cond

EDM's own run:

    torchrun --standalone --nproc_per_node=8 train.py --outdir=training-runs \
        --data=datasets/cifar10-32x32.zip --cond=1 --arch=ncsnpp

Reported: FID 1.79 at 35 NFE (18 Heun steps).

``configs/edm/cifar10_ncsnpp_uncond.py`` with the ten classes, as
``configs/edm/cifar10_ddpmpp_cond.py`` adds them: the class embedding goes to the noise
embedding, no label dropout. The same differences from EDM's run apply: no augmentation
pipeline here, which the reported FID depends on, and the released score_sde initialisers
instead of EDM's.
"""
from score_sde.configs.edm import cifar10_ddpmpp_uncond, cifar10_ncsnpp_uncond


def get_config():
  return cifar10_ddpmpp_uncond.class_conditional(cifar10_ncsnpp_uncond.get_config())
