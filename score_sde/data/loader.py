"""Deterministic, resumable, per-host batches: every batch is a pure function of (seed, step).

The examples of a source form an infinite stream: epoch ``e`` is the permutation
``np.random.default_rng([seed, salt, e]).permutation(N)``, and the stream is epoch 0, then 1, ...
The global batch at ``step`` is stream positions ``[step * B, (step + 1) * B)`` (a batch may
straddle two epochs), so a run restarted at any step sees exactly the batches it would have seen,
and every example appears exactly once per epoch. Host ``h`` of ``K`` takes the contiguous rows
``[h * B / K, (h + 1) * B / K)`` of the global batch and loads only those examples, matching
``parallel.host_batch_slice`` and ``parallel.to_global``.

Augmentation (horizontal flip, uniform dequantization) draws from a generator seeded with
``[seed, salt, position]``: the randomness of each example depends only on its stream position,
so the global batch is the same whatever the number of hosts, and a host draws only for its own
rows (drawing noise for the whole global batch on every host would cost O(B H W C) per step).

Images come out as float32 in [0, 1]: ``x / 255``, or with dequantization ``(x + u) / 256``,
``u ~ U[0, 1)`` (``x`` the 8-bit value); float32 rounding can reach 1.0 for ``x = 255``.
"""
import concurrent.futures
import functools
import itertools
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from score_sde.data import sources

Batch = Dict[str, np.ndarray]

# Salts separate the random streams that share one seed.
_TRAIN_ORDER, _EVAL_ORDER = 0, 1
_TRAIN_AUGMENT, _EVAL_AUGMENT, _EPOCH_NOISE = 2, 3, 4


def _check_hosts(global_batch_size: int, host_index: int, host_count: int) -> int:
  """Returns the per-host batch size after checking the arguments."""
  if global_batch_size <= 0:
    raise ValueError(f'global_batch_size must be positive, got {global_batch_size}.')
  if host_count <= 0 or not 0 <= host_index < host_count:
    raise ValueError(f'Need 0 <= host_index < host_count; got {host_index} and {host_count}.')
  if global_batch_size % host_count:
    raise ValueError(f'global_batch_size={global_batch_size} does not split over {host_count} '
                     f'hosts; use a multiple of {host_count}.')
  return global_batch_size // host_count


def _check_seed(seed: int) -> int:
  if int(seed) != seed or seed < 0:
    raise ValueError(f'seed must be a non-negative integer (numpy SeedSequence), got {seed!r}.')
  return int(seed)


@functools.lru_cache(maxsize=8)
def epoch_permutation(num: int, seed: int, salt: int, epoch: int) -> np.ndarray:
  """``int64 (num,)``: the order of the examples in ``epoch`` (read-only, cached)."""
  order = np.random.default_rng([seed, salt, epoch]).permutation(num)
  order.flags.writeable = False
  return order


def stream_indices(num: int, positions: np.ndarray, seed: int, salt: int) -> np.ndarray:
  """Example index at each stream position: ``perm_e[p mod num]`` with ``e = p // num``."""
  epochs = positions // num
  out = np.empty_like(positions)
  for epoch in np.unique(epochs):
    at = epochs == epoch
    out[at] = epoch_permutation(num, seed, salt, int(epoch))[positions[at] % num]
  return out


def host_positions(step: int, global_batch_size: int, host_index: int = 0,
                   host_count: int = 1) -> np.ndarray:
  """``int64 (B / host_count,)``: the stream positions of this host's rows of batch ``step``."""
  per_host = _check_hosts(global_batch_size, host_index, host_count)
  if int(step) != step or step < 0:
    raise ValueError(f'step must be a non-negative integer, got {step!r}.')
  start = int(step) * global_batch_size + host_index * per_host
  return np.arange(start, start + per_host, dtype=np.int64)


def example_indices(num: int, step: int, global_batch_size: int, seed: int, *, train: bool,
                    host_index: int = 0, host_count: int = 1) -> np.ndarray:
  """``int64 (B / host_count,)``: which examples (of ``num``) this host loads at ``step``."""
  if num <= 0:
    raise ValueError('The source is empty; there is nothing to batch.')
  positions = host_positions(step, global_batch_size, host_index, host_count)
  salt = _TRAIN_ORDER if train else _EVAL_ORDER
  return stream_indices(num, positions, _check_seed(seed), salt)


def to_float(image: np.ndarray, positions: np.ndarray, seed: int, salt: int, *, flip: bool,
             dequantize: bool) -> np.ndarray:
  """uint8 ``(n, H, W, C)`` -> float32 in [0, 1], flipped / dequantized per stream position.

  Example ``i`` uses ``np.random.default_rng([seed, salt, positions[i]])``: first a coin for the
  horizontal flip (drawn even when unused, so that switching flips off leaves the noise alone),
  then ``u ~ U[0, 1)`` of the image's shape for dequantization, ``(x + u) / 256``.
  """
  if not (flip or dequantize):
    return image.astype(np.float32) / np.float32(255.)
  out = np.empty(image.shape, np.float32)
  for i, position in enumerate(positions):
    rng = np.random.default_rng([seed, salt, int(position)])
    mirror = rng.random() < 0.5
    x = image[i, :, ::-1] if flip and mirror else image[i]
    if dequantize:
      out[i] = (x + rng.random(x.shape, dtype=np.float32)) / np.float32(256.)
    else:
      out[i] = x.astype(np.float32) / np.float32(255.)
  return out


def get_batch(source: sources.Source, step: int, global_batch_size: int, seed: int, *,
              train: bool, random_flip: bool, uniform_dequantization: bool, host_index: int = 0,
              host_count: int = 1) -> Batch:
  """This host's rows of global batch ``step``.

  Args:
    source: the examples (``len(source) = N``).
    step: training / evaluation step, >= 0.
    global_batch_size: B, summed over hosts; a multiple of ``host_count``.
    seed: non-negative integer; with ``step`` it fixes the batch.
    train: the training stream (flips allowed) or the evaluation stream (a different order).
    random_flip: mirror each image left-right with probability 1/2; only when ``train``
      (evaluation sees images as stored, as in the reference).
    uniform_dequantization: ``(x + U[0, 1)) / 256`` instead of ``x / 255``.
    host_index, host_count: this host and the number of hosts.
  Returns:
    ``{'image': float32 (B / host_count, H, W, C) in [0, 1], 'label': int32 (B / host_count,)}``.
  """
  seed = _check_seed(seed)
  indices = example_indices(len(source), step, global_batch_size, seed, train=train,
                            host_index=host_index, host_count=host_count)
  data = source.get(indices)
  positions = host_positions(step, global_batch_size, host_index, host_count)
  image = to_float(data['image'], positions, seed, _TRAIN_AUGMENT if train else _EVAL_AUGMENT,
                   flip=train and random_flip, dequantize=uniform_dequantization)
  return {'image': image, 'label': data['label'].astype(np.int32)}


def batches(source: sources.Source, start_step: int, global_batch_size: int, seed: int, *,
            train: bool, random_flip: bool, uniform_dequantization: bool, host_index: int = 0,
            host_count: int = 1, num_steps: Optional[int] = None,
            prefetch: bool = True) -> Iterator[Tuple[int, Batch]]:
  """Yields ``(step, get_batch(source, step, ...))`` for ``step = start_step, start_step + 1, ...``

  Endless unless ``num_steps`` is given. With ``prefetch`` one background thread loads the next
  batch while the caller uses the current one; the batches are the same either way.
  """
  load = functools.partial(
      get_batch, source, global_batch_size=global_batch_size, seed=seed, train=train,
      random_flip=random_flip, uniform_dequantization=uniform_dequantization,
      host_index=host_index, host_count=host_count)
  steps = (itertools.count(start_step) if num_steps is None
           else range(start_step, start_step + num_steps))
  if not prefetch:
    for step in steps:
      yield step, load(step=step)
    return
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='batches')
  try:
    steps = iter(steps)
    step = next(steps, None)
    pending = None if step is None else pool.submit(load, step=step)
    while pending is not None:
      next_step = next(steps, None)
      upcoming = None if next_step is None else pool.submit(load, step=next_step)
      yield step, pending.result()
      step, pending = next_step, upcoming
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def num_examples(source: sources.Source) -> int:
  """Number of examples in ``source``."""
  return len(source)


def epoch_batches(source: sources.Source, global_batch_size: int, host_index: int = 0,
                  host_count: int = 1, *, uniform_dequantization: bool = False,
                  seed: int = 0) -> Iterator[Batch]:
  """One pass over ``source`` in index order, padded to whole batches, for evaluation.

  Every host yields ``ceil(N / B)`` batches (so collective computations stay in step). Row ``r``
  of global batch ``b`` is example ``b * B + r``; rows past the end repeat the last example and
  have ``mask = False``, so sums over ``mask`` count each example exactly once.

  Yields:
    ``{'image': float32 (B / host_count, H, W, C), 'label': int32 (B / host_count,),
    'mask': bool (B / host_count,)}``; images dequantized with noise fixed by ``seed`` if asked.
  """
  num = len(source)
  if num <= 0:
    raise ValueError('The source is empty; there is nothing to evaluate.')
  seed = _check_seed(seed)
  for step in range(-(-num // global_batch_size)):
    positions = host_positions(step, global_batch_size, host_index, host_count)
    data = source.get(np.minimum(positions, num - 1))
    image = to_float(data['image'], positions, seed, _EPOCH_NOISE, flip=False,
                     dequantize=uniform_dequantization)
    yield {'image': image, 'label': data['label'].astype(np.int32), 'mask': positions < num}
