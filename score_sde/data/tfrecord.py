"""FFHQ and CelebA-HQ from the reference's TFRecord files, read with random access and no TF.

The reference trains on the progressive-GAN style TFRecords (one file per resolution, e.g.
``ffhq-r08.tfrecords`` for 256x256): each record is a ``tf.train.Example`` with an int64 feature
``shape = [C, H, W]`` and a bytes feature ``data`` holding the raw ``uint8`` pixels in CHW order.

A TFRecord file is a sequence of ``[uint64 length][uint32 crc][data][uint32 crc]`` frames, so one
pass over the 12-byte headers (seeking past the payloads) indexes every record by its byte offset;
after that any record is one seek and one read. The Example protobuf is decoded here from its wire
format (the four message types involved are tiny), so neither TensorFlow nor a compiled proto is
needed. CRCs are not verified, and GZIP-compressed files are not supported.

``data.tfrecords_path`` is one file or a glob pattern (files taken in sorted order); left empty,
the file ``data.data_dir/*-rNN.tfrecords`` with ``2**NN = data.image_size`` is read. There is no
held-out split in these files: 'test' reads the same records as 'train', as in the reference.
Images are resized (antialiased bilinear) only when their size differs from ``data.image_size``.
"""
import glob
import os
import struct
from typing import Dict, Iterator, List, Sequence, Tuple

import ml_collections
import numpy as np

from score_sde import errors
from score_sde.data import images, sources

_HEADER = 12  # uint64 length + uint32 masked CRC of the length.
_FOOTER = 4  # uint32 masked CRC of the payload.


def index_file(path: str) -> np.ndarray:
  """``int64 (n, 2)``: ``(payload offset, payload length)`` of every record in one TFRecord file.

  Raises:
    ValueError: when the file ends inside a record (truncated or not a TFRecord file).
  """
  size = os.path.getsize(path)
  rows = []
  with open(path, 'rb') as f:
    pos = 0
    while pos < size:
      header = f.read(_HEADER)
      if len(header) < _HEADER:
        raise ValueError(f'{path}: truncated record header at byte {pos}.')
      (length,) = struct.unpack('<Q', header[:8])
      if pos + _HEADER + length + _FOOTER > size:
        raise ValueError(f'{path}: record at byte {pos} claims {length} bytes past the end of the '
                         'file; is it a (non-compressed) TFRecord file?')
      rows.append((pos + _HEADER, length))
      pos += _HEADER + length + _FOOTER
      f.seek(pos)
  return np.asarray(rows, np.int64).reshape(-1, 2)


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
  """Decodes a base-128 varint at ``pos``; returns ``(value, next position)``."""
  value, shift = 0, 0
  while True:
    byte = buf[pos]
    value |= (byte & 0x7F) << shift
    pos += 1
    if byte < 0x80:
      return value, pos
    shift += 7


def _fields(buf: bytes) -> Iterator[Tuple[int, int, object]]:
  """Yields ``(field number, wire type, value)`` of a serialized protobuf message.

  Values: ``int`` for varints (wire type 0), ``bytes`` for length-delimited fields (2) and for
  fixed 64- and 32-bit fields (1 and 5).
  """
  pos = 0
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
    elif wire == 2:
      length, pos = _varint(buf, pos)
      value, pos = buf[pos:pos + length], pos + length
    elif wire in (1, 5):
      width = 8 if wire == 1 else 4
      value, pos = buf[pos:pos + width], pos + width
    else:
      raise ValueError(f'Unsupported protobuf wire type {wire} (field {number}).')
    yield number, wire, value


def _int64s(items: Sequence[Tuple[int, object]]) -> np.ndarray:
  values: List[int] = []
  for wire, value in items:
    if wire == 0:
      values.append(value)
    else:  # Packed: consecutive varints.
      pos = 0
      while pos < len(value):
        v, pos = _varint(value, pos)
        values.append(v)
  # int64 is two's complement in a 64-bit varint.
  return np.asarray([v - (1 << 64) if v >= 1 << 63 else v for v in values], np.int64)


def _floats(items: Sequence[Tuple[int, object]]) -> np.ndarray:
  return np.frombuffer(b''.join(v for _, v in items), '<f4').astype(np.float32)


def parse_example(record: bytes) -> Dict[str, object]:
  """A serialized ``tf.train.Example`` -> ``{name: list of bytes | int64 array | float32 array}``.

  Message layout (tensorflow/core/example): Example{features=1}, Features{map feature=1 of
  entries {key=1, value=2}}, Feature{oneof bytes_list=1, float_list=2, int64_list=3}, each list
  {repeated value=1}.
  """
  parsed = {}
  for number, _, features in _fields(record):
    if number != 1:
      continue
    for entry_number, _, entry in _fields(features):
      if entry_number != 1:
        continue
      entry_fields = {n: v for n, _, v in _fields(entry)}
      name = entry_fields.get(1, b'').decode('utf-8')
      parsed[name] = _parse_feature(entry_fields.get(2, b''))
  return parsed


def _parse_feature(feature: bytes):
  for kind, _, value_list in _fields(feature):
    items = [(w, v) for n, w, v in _fields(value_list) if n == 1]
    if kind == 1:
      return [v for _, v in items]
    if kind == 2:
      return _floats([(w, v) for w, v in items])
    if kind == 3:
      return _int64s(items)
  return []


def decode_image(record: bytes) -> np.ndarray:
  """A reference FFHQ / CelebA-HQ record -> ``uint8 (H, W, C)`` (stored as CHW)."""
  features = parse_example(record)
  if 'shape' not in features or 'data' not in features:
    raise ValueError(f'Record has features {sorted(features)}; expected "shape" and "data" '
                     '(progressive-GAN style TFRecords).')
  shape = tuple(int(s) for s in features['shape'])
  pixels = np.frombuffer(features['data'][0], np.uint8).reshape(shape)
  return np.ascontiguousarray(pixels.transpose(1, 2, 0))


class TFRecordSource(sources.Source):
  """Random access to image records of TFRecord files through a byte-offset index."""

  def __init__(self, paths: Sequence[str], image_size: int, num_channels: int,
               notes: Sequence[str] = ()):
    if not paths:
      raise ValueError('A TFRecord source needs at least one file.')
    self.notes = tuple(notes)
    self._paths = tuple(paths)
    self._shape = images.image_shape(image_size, num_channels)
    per_file = [index_file(p) for p in self._paths]
    file_ids = [np.full((len(rows), 1), i, np.int64) for i, rows in enumerate(per_file)]
    # Columns: file number, payload offset, payload length.
    self._index = np.concatenate([np.concatenate(file_ids), np.concatenate(per_file)], axis=1)

  @property
  def image_shape(self):
    return self._shape

  def __len__(self):
    return len(self._index)

  def _read(self, index: int) -> np.ndarray:
    file_id, offset, length = self._index[index]
    path = self._paths[file_id]
    try:
      with open(path, 'rb') as f:
        f.seek(offset)
        image = decode_image(f.read(length))
    except (OSError, ValueError, IndexError) as e:
      raise errors.BadDataError(f'{path}: record {index} at byte {offset} cannot be decoded '
                                f'({type(e).__name__}: {e}); the file is damaged or not a '
                                'progressive-GAN style TFRecord file.') from e
    size, _, channels = self._shape
    return images.to_channels(images.resize(image, size, size, 'bilinear'), channels)

  def _load(self, indices):
    return {'image': np.stack([self._read(i) for i in indices]),
            'label': np.full((len(indices),), sources.NO_LABEL, np.int32)}


def resolution_file_pattern(data_dir: str, image_size: int) -> str:
  """``data_dir/*-rNN.tfrecords`` with ``2**NN = image_size``: progressive-GAN file naming."""
  level = int(image_size).bit_length() - 1
  if 1 << level != image_size:
    raise ValueError(f'data.image_size={image_size} is not a power of two, so no -rNN.tfrecords '
                     'file holds it; set data.tfrecords_path to the file to read.')
  return os.path.join(data_dir, f'*-r{level:02d}.tfrecords')


def tfrecord_dataset(data_config: ml_collections.ConfigDict, split: str) -> TFRecordSource:
  """Records of ``data.tfrecords_path`` (a file or glob), or else of the file in ``data.data_dir``
  whose ``-rNN`` suffix matches ``data.image_size``. Both splits are the same records (the
  reference's files have no held-out split); the 'test' source says so in its ``notes``."""
  pattern = os.path.expanduser(str(data_config.get('tfrecords_path', '') or ''))
  data_dir = os.path.expanduser(str(data_config.get('data_dir', '') or ''))
  if not pattern and data_dir:
    pattern = resolution_file_pattern(data_dir, data_config.image_size)
  if not pattern:
    raise errors.ConfigError(f'{data_config.dataset} needs data.tfrecords_path, e.g. '
                     '--config.data.tfrecords_path=/data/ffhq/ffhq-r08.tfrecords (256x256), or '
                     'data.data_dir holding the -rNN.tfrecords files.')
  paths = sorted(glob.glob(pattern))
  if not paths:
    raise errors.DataNotFoundError(f'{data_config.dataset}: no file matches {pattern!r} (from '
                            'data.tfrecords_path or data.data_dir).')
  notes = ()
  if split == 'test':
    notes = (f'{data_config.dataset}: the TFRecord files have no held-out split, so evaluation '
             "('test') reads the training images, as the reference does.",)
  try:
    return TFRecordSource(paths, data_config.image_size, data_config.num_channels, notes)
  except ValueError as e:  # A truncated file or one that is not a TFRecord file.
    raise errors.BadDataError(f'{data_config.dataset}: {e}') from e


sources.DATASETS.register('FFHQ')(tfrecord_dataset)
sources.DATASETS.register('CELEBAHQ')(tfrecord_dataset)
