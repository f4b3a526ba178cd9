"""Do samples of a digits run look like digits? Figures from a classifier trained here.

    python benchmarks/digit_quality.py --workdir runs/embedded
    python benchmarks/digit_quality.py --workdir runs/embedded --method pc --num_steps 100
    python benchmarks/digit_quality.py --samples runs/embedded/generated/step_3000/samples.npz \\
        --image_size 16

1. A small CNN is trained, at benchmark time, on the embedded MNIST training split (4,500
   digits, random shifts of up to 2 pixels) at the run's image size; its held-out accuracy on
   the 500 test digits is printed (it should be at least 97% for the figures below to mean
   much).
2. ``--num_samples`` images are drawn from the run (``score_sde.load(workdir).sample``) or read
   from an ``.npz`` of ``--mode sample``, and reported as:
   * confident: the share the classifier labels with probability >= 0.9 (real held-out digits:
     printed next to it);
   * the share of each class among the samples (uniform is 10% each);
   * FD: the Frechet distance between Gaussians fitted to the classifier's penultimate features
     (128-D) of the samples and of the 500 held-out digits (FID's formula in a digit
     classifier's feature space). The floor is the same distance for real training digits
     (as many as the samples) against the same held-out digits, and between two disjoint halves
     of the training digits: what a perfect sampler would score at these sample sizes.

Everything is seeded: the same run and flags print the same figures.
"""
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from absl import app, flags

import score_sde
from score_sde.data import embedded
from score_sde.metrics import fid

_WORKDIR = flags.DEFINE_string('workdir', '', 'Trained run to sample from.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default the newest.')
_SAMPLES = flags.DEFINE_string('samples', '', 'An .npz with uint8 "images" instead of sampling.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 0, 'Image size for --samples (default: the '
                                   "run's data.image_size).")
_NUM = flags.DEFINE_integer('num_samples', 512, 'Samples to score.')
_METHOD = flags.DEFINE_string('method', None, "Sampler (default: the run's sampling.method).")
_NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Sampler steps (default: the config).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sample seed.')
_EPOCHS = flags.DEFINE_integer('epochs', 30, 'Classifier training epochs.')

CONFIDENT = 0.9


class DigitNet(nn.Module):
  """Two conv blocks and a 128-unit feature layer; ``features=True`` returns that layer."""

  @nn.compact
  def __call__(self, x, train: bool = False, features: bool = False):
    for width in (32, 64):
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(0.3, deterministic=not train)(x)
    h = nn.relu(nn.Dense(128)(x))
    if features:
      return h
    h = nn.Dropout(0.3, deterministic=not train)(h)
    return nn.Dense(10)(h)


def digits(image_size: int, split: str):
  """``float32 (N, S, S, 1)`` in [0, 1] and ``int32 (N,)`` labels of the embedded split."""
  data_config = ml_collections.ConfigDict({'image_size': image_size, 'num_channels': 1})
  source = embedded.mnist_embedded(data_config, split)
  batch = source.get(np.arange(len(source)))
  return batch['image'].astype(np.float32) / 255., batch['label']


def _shift(rng: np.random.Generator, x: np.ndarray, max_shift: int = 2) -> np.ndarray:
  """Each image moved by up to ``max_shift`` pixels in each direction (zero fill)."""
  out = np.zeros_like(x)
  s = x.shape[1]
  for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (len(x), 2))):
    out[i, max(dy, 0):s + min(dy, 0), max(dx, 0):s + min(dx, 0)] = \
        x[i, max(-dy, 0):s + min(-dy, 0), max(-dx, 0):s + min(-dx, 0)]
  return out


def train_classifier(image_size: int, epochs: int, seed: int = 0):
  """``(apply(x, features) -> logits | features, held-out accuracy, seconds)``."""
  x, y = digits(image_size, 'train')
  x_test, y_test = digits(image_size, 'test')
  net = DigitNet()
  params = net.init(jax.random.key(seed), x[:1])['params']
  steps_per_epoch = len(x) // 64
  tx = optax.adam(optax.cosine_decay_schedule(2e-3, epochs * steps_per_epoch))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, xb, yb, key):
    def loss_fn(p):
      logits = net.apply({'params': p}, xb, train=True, rngs={'dropout': key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  start = time.time()
  for epoch in range(epochs):
    order = rng.permutation(len(x))
    shifted = _shift(rng, x)
    for i in range(steps_per_epoch):
      rows = order[i * 64:(i + 1) * 64]
      params, opt_state = step(params, opt_state, shifted[rows], y[rows],
                               jax.random.key(epoch * steps_per_epoch + i))

  apply = jax.jit(lambda x, features=False: net.apply({'params': params}, x, features=features),
                  static_argnums=1)
  accuracy = float(np.mean(np.argmax(_batched(apply, x_test), -1) == y_test))
  return apply, accuracy, time.time() - start


def _batched(apply, x, features: bool = False, batch: int = 500) -> np.ndarray:
  return np.concatenate([np.asarray(apply(x[i:i + batch], features))
                         for i in range(0, len(x), batch)])


def frechet(apply, a: np.ndarray, b: np.ndarray) -> float:
  """Frechet distance of Gaussians fitted to the classifier features of ``a`` and ``b``."""
  stats = [fid.feature_statistics(_batched(apply, x, features=True)) for x in (a, b)]
  return float(fid.frechet_distance(*stats[0], *stats[1]))


def confident_share(apply, x: np.ndarray) -> float:
  probs = jax.nn.softmax(_batched(apply, x), axis=-1)
  return float(np.mean(np.max(probs, -1) >= CONFIDENT))


def main(_):
  if bool(_WORKDIR.value) == bool(_SAMPLES.value):
    raise app.UsageError('Pass exactly one of --workdir and --samples.')
  if _SAMPLES.value:
    samples = np.load(_SAMPLES.value)['images'][:_NUM.value].astype(np.float32) / 255.
    image_size = _IMAGE_SIZE.value or samples.shape[1]
    where = _SAMPLES.value
  else:
    pipe = score_sde.load(_WORKDIR.value, step=_STEP.value)
    image_size = pipe.config.data.image_size
    start = time.time()
    samples = pipe.sample(_NUM.value, method=_METHOD.value, num_steps=_NUM_STEPS.value,
                          seed=_SEED.value)
    method = _METHOD.value or pipe.config.sampling.method
    where = f'{_WORKDIR.value} step {pipe.step}, {method}, {time.time() - start:.0f} s to sample'
  if samples.shape[1:] != (image_size, image_size, 1):
    raise app.UsageError(f'Samples are {samples.shape[1:]}; expected ({image_size}, '
                         f'{image_size}, 1) grey digits.')

  apply, accuracy, seconds = train_classifier(image_size, _EPOCHS.value)
  x_train, _ = digits(image_size, 'train')
  x_test, _ = digits(image_size, 'test')
  n = len(samples)
  order = np.random.default_rng(1).permutation(len(x_train))
  labels = np.argmax(_batched(apply, samples), -1)
  shares = np.bincount(labels, minlength=10) / n

  print(f'digit classifier ({image_size}x{image_size}): held-out accuracy {accuracy:.2%} on '
        f'{len(x_test)} test digits ({seconds:.0f} s to train)')
  print(f'samples: {n} from {where}')
  print(f'confident (p >= {CONFIDENT}): samples {confident_share(apply, samples):.1%}, '
        f'held-out digits {confident_share(apply, x_test):.1%}')
  print('class shares: ' + ' '.join(f'{k}:{s:.1%}' for k, s in enumerate(shares)))
  print(f'FD to {len(x_test)} held-out digits: samples {frechet(apply, samples, x_test):.2f}; '
        f'floor: {n} real training digits {frechet(apply, x_train[order[:n]], x_test):.2f}, '
        f'two halves of training digits '
        f'{frechet(apply, x_train[order[:n]], x_train[order[n:2 * n]]):.2f}')


if __name__ == '__main__':
  app.run(main)
