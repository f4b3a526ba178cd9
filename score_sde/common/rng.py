"""The independent random streams of a run, each folded out of ``config.seed``.

Every random draw of training, evaluation and sampling starts from one of these keys and is
folded further with the step, batch or round it belongs to (``jax.random.fold_in``), so a draw
depends only on ``(seed, stream, index)``: not on the device count, not on what ran before it.
"""
import jax

INIT_STREAM, TRAIN_STREAM, EVAL_STREAM, SAMPLE_STREAM = range(4)


def stream_key(seed: int, stream: int) -> jax.Array:
  """The typed key of one stream of a run (``INIT_STREAM``, ``TRAIN_STREAM``, ...)."""
  return jax.random.fold_in(jax.random.key(seed), stream)
