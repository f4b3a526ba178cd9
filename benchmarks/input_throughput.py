"""Images per second that the input sources hand out, per decoding thread count.

    python benchmarks/input_throughput.py
    python benchmarks/input_throughput.py --num_images 1024 --workers 1,2,4,8,16

IMAGE_FOLDER: writes ``--num_images`` random-content RGB JPEGs of ``--file_size`` pixels square
into a temporary folder, then times ``ImageFolderSource.get`` on batches of ``--batch_size``
random indices at ``--image_size`` (equal sizes: decoding only; a larger file size adds the
bicubic resize) for the serial loop (``num_workers=0``) and each of ``--workers``; the median
of ``--repeats`` batches, after one warm-up batch that also starts the pool. The files are in
the page cache (just written), so this is decoding, not the disk.

TFRecord: the CRC-32C of one 256x256 RGB payload (MB/s), and ``TFRecordSource.get`` images/s
with both CRCs checked, on records written here.

Random JPEG content is the slow case for the decoder (nothing compresses); photographs decode
faster. Speed-ups are bounded by the cores: about 2x on a 2-core machine.
"""
import os
import pathlib
import struct
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

from score_sde.data import sources, tfrecord

_NUM_IMAGES = flags.DEFINE_integer('num_images', 512, 'JPEG files written.')
_FILE_SIZE = flags.DEFINE_integer('file_size', 256, 'Side of the written JPEGs, in pixels.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'data.image_size of the source.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Indices per get() call.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed batches per setting; the median is shown.')
_WORKERS = flags.DEFINE_list('workers', ['1', '2', '4', '8'], 'num_workers values to time.')
_RECORDS = flags.DEFINE_integer('records', 256, 'TFRecord records written (0: skip).')


def _write_jpegs(folder: pathlib.Path, num: int, size: int) -> None:
  rng = np.random.default_rng(0)
  for i in range(num):
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f'{i:05d}.jpg', quality=90)


def _median_seconds(fn, batches) -> float:
  """Median wall time of ``fn(batch)`` over ``batches`` (after one untimed warm-up call)."""
  fn(batches[0])
  times = []
  for batch in batches:
    start = time.perf_counter()
    fn(batch)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _batches(num: int, rng: np.random.Generator):
  replace = num < _BATCH_SIZE.value
  return [rng.choice(num, _BATCH_SIZE.value, replace=replace) for _ in range(_REPEATS.value)]


def _image_folder(folder: pathlib.Path) -> None:
  paths = sources.list_images(folder)
  batches = _batches(len(paths), np.random.default_rng(1))
  print(f'IMAGE_FOLDER: {len(paths)} random {_FILE_SIZE.value}x{_FILE_SIZE.value} JPEGs -> '
        f'{_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}, batches of {_BATCH_SIZE.value}, median of '
        f'{_REPEATS.value}, {os.cpu_count()} CPUs')
  print(f"{'num_workers':>12s} {'images/s':>10s} {'ms/batch':>9s} {'speed-up':>9s}")
  baseline = None
  for workers in [0] + [int(w) for w in _WORKERS.value]:
    source = sources.ImageFolderSource(paths, _IMAGE_SIZE.value, 3, num_workers=workers)
    seconds = _median_seconds(source.get, batches)
    baseline = baseline or seconds
    label = '0 (serial)' if workers == 0 else str(workers)
    print(f'{label:>12s} {_BATCH_SIZE.value / seconds:10.0f} {seconds * 1e3:9.1f} '
          f'{baseline / seconds:8.2f}x', flush=True)


def _frame(payload: bytes) -> bytes:
  length = struct.pack('<Q', len(payload))
  return (length + struct.pack('<I', tfrecord.masked_crc32c(length)) + payload
          + struct.pack('<I', tfrecord.masked_crc32c(payload)))


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
    value >>= 7
    if not value:
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited protobuf field."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _example(chw: np.ndarray) -> bytes:
  """A progressive-GAN style tf.train.Example: packed int64 'shape' and bytes 'data'."""
  shape = _field(3, _field(1, b''.join(_varint(int(s)) for s in chw.shape)))
  pixels = _field(1, _field(1, chw.tobytes()))
  return _field(1, _field(1, _field(1, b'shape') + _field(2, shape))
                + _field(1, _field(1, b'data') + _field(2, pixels)))


def _tfrecord(folder: pathlib.Path) -> None:
  rng = np.random.default_rng(2)
  payload = _example(rng.integers(0, 256, (3, 256, 256), dtype=np.uint8))
  seconds = _median_seconds(tfrecord.crc32c, [payload] * max(_REPEATS.value, 20))
  print(f'\nTFRecord: crc32c of a {len(payload):,}-byte record (256x256 RGB): '
        f'{seconds * 1e3:.2f} ms, {len(payload) / seconds / 1e6:.0f} MB/s')
  path = folder / 'bench-r08.tfrecords'
  with open(path, 'wb') as f:
    for _ in range(_RECORDS.value):
      f.write(_frame(_example(rng.integers(0, 256, (3, 256, 256), dtype=np.uint8))))
  start = time.perf_counter()
  source = tfrecord.TFRecordSource([str(path)], 256, 3)
  index_seconds = time.perf_counter() - start
  seconds = _median_seconds(source.get, _batches(len(source), rng))
  print(f'TFRecordSource.get, both CRCs checked: {_BATCH_SIZE.value / seconds:.0f} images/s '
        f'({seconds * 1e3:.1f} ms per batch of {_BATCH_SIZE.value}); indexing {len(source)} '
        f'records: {index_seconds * 1e3:.1f} ms')


def main(_):
  with tempfile.TemporaryDirectory(prefix='input_throughput_') as tmp:
    folder = pathlib.Path(tmp)
    start = time.perf_counter()
    _write_jpegs(folder, _NUM_IMAGES.value, _FILE_SIZE.value)
    print(f'Wrote {_NUM_IMAGES.value} JPEGs in {time.perf_counter() - start:.1f} s')
    _image_folder(folder)
    if _RECORDS.value:
      _tfrecord(folder)


if __name__ == '__main__':
  app.run(main)
