"""NCSN (Song & Ermon 2019) on 64x64 CelebA, with the CIFAR-10 recipe.

    python main.py --config configs/ve/ncsn/celeba.py --workdir runs/ve/ncsn/celeba

No figure is stated for this configuration (the NCSN paper trained CelebA at 32x32); the
reference's file named the SDE in a misspelt field (``training.loss``), which here is
``training.sde``.
"""
from score_sde.configs.ve import _ncsn, celeba_ncsnpp


def get_config():
  return _ncsn.ncsn(celeba_ncsnpp.get_config())
