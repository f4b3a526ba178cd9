"""EDM's unconditional DDPM++ on CIFAR-10 (Karras et al. 2022, Table 2, "EDM" column).

    python main.py --config configs/edm/cifar10_ddpmpp_uncond.py \
        --workdir runs/edm/cifar10_ddpmpp_uncond

EDM's own run (NVlabs/edm README; its FIDs are the minimum of three FIDs of 50,000 images,
18 Heun steps, 35 network evaluations):

    torchrun --standalone --nproc_per_node=8 train.py --outdir=training-runs \
        --data=datasets/cifar10-32x32.zip --cond=0 --arch=ddpmpp

Reported: FID 1.97 at 35 NFE.

The recipe, each field from EDM's ``train.py`` and ``training/training_loop.py``:

* denoiser ``D = c_skip x + c_out F(c_in x; c_noise)`` with ``sigma_data = 0.5``
  (``model.parameterization='edm'``), trained on ``ln sigma ~ N(-1.2, 1.2^2)`` with weight
  ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (``training.weighting='edm'``); the VE
  SDE from ``sigma = 0.002`` to 80 only places the samplers' grid;
* 200 Mimg at batch 512 (390,625 steps); Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-8, ramped
  up linearly over 10 Mimg (19,531 steps, ``optim.warmup``); no gradient clipping;
* EMA half-life 500 kimg, capped at 5% of the images seen; dropout 0.13; float32; data in
  [-1, 1], no x-flips outside the augmentation pipeline;
* DDPM++: 128 channels, ``ch_mult (2, 2, 2)``, 4 BigGAN blocks per resolution, attention at
  16x16, box resampling (EDM's ``resample_filter=[1, 1]``), positional embedding of
  ``c_noise``;
* sampling: Heun, 18 steps on the ``rho = 7`` grid, deterministic.

What differs from EDM's run: EDM trains with its non-leaky augmentation pipeline
(``--augment=0.12``: x- and y-flips, scaling, rotation, anisotropic scaling and fractional
translation, their parameters a 9-D label of the network, absent at sampling). This codebase
does not implement it, and the reported FIDs depend on it: expect a higher FID from this config.
EDM's layers are also initialised with its own scales (Xavier-uniform everywhere, residual
branches' last layer and attention output at 1e-5, attention qkv at sqrt(0.2)), while
``ncsnpp`` uses the released score_sde initialisers (``init_scale=0``). EDM's loss is the sum
over pixels, here half of it (Adam, up to its eps, does not see the factor); EDM replaces
non-finite gradients, while training here stops at a non-finite loss.
"""
import ml_collections

from score_sde.configs import default, edm


def get_config():
  config = edm.recipe(default.get_config())
  training = config.training
  training.reduce_mean = False
  training.batch_size = 512
  training.n_iters = 390625  # 200 Mimg.
  training.snapshot_freq = 15625  # 8 Mimg: 25 snapshots.
  training.label_dropout = 0.

  data = config.data
  data.dataset = 'CIFAR10'
  data.random_flip = False

  model = config.model
  model.ema_halflife_kimg = 500.
  model.ema_rampup_ratio = 0.05
  model.dropout = 0.13
  model.nf = 128
  model.ch_mult = (2, 2, 2)
  model.num_res_blocks = 4
  model.attn_resolutions = (16,)
  model.resblock_type = 'biggan'
  model.fir = False
  model.progressive = 'none'
  model.progressive_input = 'none'
  model.embedding_type = 'positional'

  optim = config.optim
  optim.optimizer = 'Adam'
  optim.lr = 1e-3
  optim.beta1, optim.beta2, optim.eps = 0.9, 0.999, 1e-8
  optim.warmup = 19531  # 10 Mimg of batch 512.
  optim.grad_clip = 0.

  config.eval.begin_ckpt, config.eval.end_ckpt = 1, 25
  return config


def class_conditional(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """EDM's ``--cond=1``: the ten CIFAR-10 classes, their embedding added to the noise embedding
  (``map_label``), no label dropout (EDM's ``label_dropout=0``)."""
  config.model.num_classes = 10
  config.model.class_embedding = 'noise'
  config.training.label_dropout = 0.
  return config
