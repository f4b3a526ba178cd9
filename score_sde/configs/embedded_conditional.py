"""Class-conditional NCSN++ on the embedded MNIST digits (labels 0-9), for classifier-free and
classifier guidance on a CPU.

    python main.py --config configs/embedded_conditional.py --workdir runs/digits
    python main.py --config configs/embedded_conditional.py --workdir runs/digits --mode sample
    python main.py --config configs/embedded_conditional.py --workdir runs/digits \\
        --mode train_classifier
    python main.py --config configs/embedded_conditional.py --workdir runs/digits --mode sample \\
        --config.sampling.classifier_scale=4 --config.sampling.cfg_scale=-1 \\
        --sample_folder classifier_guided

The first takes 50 min on a 2-core CPU (2000 steps) and gives mostly recognisable digits, one
column per digit; classifier guidance (the last, after 8 min of classifier training) does not
yet follow its columns at this budget (docs/conditional.md). The network is
``configs/embedded_ncsnpp.py``'s plus a label embedding (``model.num_classes = 10``), trained
with 10% of labels dropped to the null label, so one network gives both the conditional and
the unconditional score; samples use classifier-free guidance with weight
``sampling.cfg_scale``. Snapshot grids and ``--mode sample`` have one column per digit (0 to 9).
The classifier of classifier guidance is a small noise-conditional Wide-ResNet.
"""
from score_sde.configs import embedded_ncsnpp


def get_config():
  config = embedded_ncsnpp.get_config()
  config.model.num_classes = 10
  training = config.training
  training.label_dropout = 0.1
  training.n_iters = 2000  # Twice embedded_ncsnpp.py's: the label table and guidance need longer.
  training.snapshot_freq = 1000
  training.n_snapshot_samples = 40  # Four rows of the ten digits (splits over 8 devices).
  config.sampling.cfg_scale = 1.
  config.sampling.batch_size = 40  # Four rows of the ten digits.

  classifier = config.classifier
  classifier.num_classes = 10
  classifier.blocks_per_group = 1  # WRN-10-2.
  classifier.channel_multiplier = 2
  classifier.n_iters = 4000  # About 10 minutes on a 2-core CPU.
  classifier.ema_rate = 0.99
  return config
