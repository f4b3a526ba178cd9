"""FFHQ and CelebA-HQ from the reference's TFRecord files, read with random access and no TF.

The reference trains on the progressive-GAN style TFRecords (one file per resolution, e.g.
``ffhq-r08.tfrecords`` for 256x256): each record is a ``tf.train.Example`` with an int64 feature
``shape = [C, H, W]`` and a bytes feature ``data`` holding the raw ``uint8`` pixels in CHW order.

A TFRecord file is a sequence of ``[uint64 length][uint32 crc][data][uint32 crc]`` frames, so one
pass over the 12-byte headers (seeking past the payloads) indexes every record by its byte offset;
after that any record is one seek and one read. The Example protobuf is decoded here from its wire
format (the four message types involved are tiny), so neither TensorFlow nor a compiled proto is
needed. GZIP-compressed files are not supported.

Both CRCs of a frame are verified, as TensorFlow's reader does: the length's while indexing (so a
damaged length is not trusted to find the next record), the payload's each time the record is
read. Each is a CRC-32C (Castagnoli) masked as ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` mod
2**32. A mismatch is an ``errors.BadDataError`` naming the file, the record's byte offset and
which CRC failed. The CRC is computed with numpy, without a compiled extension: the payload is cut
into rows whose CRCs advance together, one 16-bit table lookup per two bytes of every row, and
the row CRCs are then merged pairwise (CRCs are linear over GF(2)). On one core that is about
300 MB/s, 0.6 ms per 256x256 RGB record (a plain Python loop: about 10 MB/s).

``data.tfrecords_path`` is one file or a glob pattern (files taken in sorted order); left empty,
the file ``data.data_dir/*-rNN.tfrecords`` with ``2**NN = data.image_size`` is read. There is no
held-out split in these files: 'test' reads the same records as 'train', as in the reference.
Images are resized (antialiased bilinear) only when their size differs from ``data.image_size``.
"""
import functools
import glob
import os
import struct
from typing import Dict, Iterator, List, Sequence, Tuple

import ml_collections
import numpy as np

from score_sde.common import errors
from score_sde.data import images, sources

_HEADER = 12  # uint64 length + uint32 masked CRC of the length.
_FOOTER = 4  # uint32 masked CRC of the payload.
_FIX = 'Re-download or regenerate the file.'

# ------------------------------------------------------------------------------------ CRC-32C

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), bit-reflected.
_MASK_DELTA = 0xA282EAD8  # TFRecord's masking constant.
_ROW = 64  # Bytes per row of the vectorized CRC, a power of two; 32-128 measured best, 16K-4M.
_SCALAR_BELOW = 256  # Shorter data (the 8-byte lengths) goes through the plain loop.


def _table8() -> np.ndarray:
  """``uint32 (256,)``: the register after one byte ``b`` entered a zero register."""
  crc = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    crc = (crc >> 1) ^ (np.uint32(_POLY) * (crc & 1))
  return crc


def _zero_bytes(register: np.ndarray, count: int) -> np.ndarray:
  """``uint32`` registers advanced through ``count`` zero bytes, elementwise."""
  for _ in range(count):
    register = _TABLE8[register & 0xFF] ^ (register >> 8)
  return register


_TABLE8 = _table8()
_TABLE8_LIST = _TABLE8.tolist()  # Python ints: faster than numpy scalars in the plain loop.
# uint32 (65536,): a 16-bit register advanced through two zero bytes; two bytes per lookup.
_TABLE16 = _zero_bytes(np.arange(1 << 16, dtype=np.uint32), 2)


def _scalar_register(data: bytes, register: int) -> int:
  """The CRC-32C register after ``data``, from ``register``, one byte at a time."""
  table = _TABLE8_LIST
  for byte in data:
    register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
  return register


def _shift(tables: np.ndarray, register: np.ndarray) -> np.ndarray:
  """Applies a zero-byte shift given as ``uint32 (4, 256)`` per-byte tables (it is linear)."""
  return (tables[0][register & 0xFF] ^ tables[1][(register >> 8) & 0xFF]
          ^ tables[2][(register >> 16) & 0xFF] ^ tables[3][register >> 24])


@functools.lru_cache(maxsize=None)
def _shift_tables(log2_count: int) -> np.ndarray:
  """``uint32 (4, 256)``: entry ``[k, b]`` is register ``b << 8k`` after ``2**log2_count`` zero
  bytes; built by squaring the one-byte shift."""
  if log2_count == 0:
    basis = np.arange(256, dtype=np.uint32)[None] << (8 * np.arange(4, dtype=np.uint32)[:, None])
    return _zero_bytes(basis, 1)
  half = _shift_tables(log2_count - 1)
  return _shift(half, half)


def _vector_register(data: np.ndarray) -> int:
  """The register after ``uint8 (n,)`` ``data`` from a zero register, vectorized.

  Zero bytes in front of a zero register change nothing, so ``data`` is padded in front to
  whole rows of ``_ROW`` bytes; all rows advance together, then adjacent row CRCs merge:
  ``reg(A + B) = shift_|B|(reg(A)) ^ reg(B)``.
  """
  num_rows = -(-data.size // _ROW)
  padded = np.zeros(num_rows * _ROW, np.uint8)
  padded[padded.size - data.size:] = data
  words = padded.view('<u2').reshape(num_rows, _ROW // 2).T.copy()  # (words per row, rows).
  register = np.zeros(num_rows, np.uint32)
  index = np.empty(num_rows, np.uint32)
  for word in words:
    np.bitwise_xor(register, word, out=index)
    index &= 0xFFFF
    register >>= 16
    register ^= _TABLE16[index]
  levels = (num_rows - 1).bit_length()
  # Zero rows in front (register 0) round the count up to a power of two for pairwise merges.
  register = np.concatenate([np.zeros((1 << levels) - num_rows, np.uint32), register])
  log2_length = _ROW.bit_length() - 1
  while register.size > 1:
    register = _shift(_shift_tables(log2_length), register[0::2]) ^ register[1::2]
    log2_length += 1
  return int(register[0])


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of ``data``, as ``google-crc32c`` / TensorFlow compute it."""
  if len(data) < _SCALAR_BELOW:
    return _scalar_register(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
  array = np.frombuffer(data, np.uint8).copy()
  array[:4] ^= 0xFF  # An initial register of all ones is the first 32 bits of data inverted.
  return _vector_register(array) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's stored CRC: ``crc32c(data)`` rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _check_crc(path: str, what: str, start: int, data: bytes, stored: bytes) -> None:
  """Raises ``errors.BadDataError`` unless ``stored`` (4 bytes, little-endian) is the masked CRC
  of ``data``; ``what`` is 'length' or 'payload', ``start`` the byte offset of the record."""
  (expected,) = struct.unpack('<I', stored)
  actual = masked_crc32c(data)
  if actual != expected:
    cause = ('damaged, GZIP-compressed or not a TFRecord file' if what == 'length'
             else 'damaged')
    raise errors.BadDataError(
        f'{path}: the record at byte {start} fails its {what} CRC (stored 0x{expected:08x}, '
        f'computed 0x{actual:08x}): the file is {cause}. {_FIX}')


# ------------------------------------------------------------------------------------ framing


def index_file(path: str) -> np.ndarray:
  """``int64 (n, 2)``: ``(payload offset, payload length)`` of every record in one TFRecord file.

  Checks each length against its CRC before trusting it (payload CRCs are checked on reading).

  Raises:
    errors.BadDataError: a length CRC does not match (a damaged file, or not a TFRecord file).
    ValueError: when the file ends inside a record (truncated).
  """
  size = os.path.getsize(path)
  rows = []
  with open(path, 'rb') as f:
    pos = 0
    while pos < size:
      header = f.read(_HEADER)
      if len(header) < _HEADER:
        raise ValueError(f'{path}: truncated record header at byte {pos}.')
      _check_crc(path, 'length', pos, header[:8], header[8:])
      (length,) = struct.unpack('<Q', header[:8])
      if pos + _HEADER + length + _FOOTER > size:
        raise ValueError(f'{path}: the record at byte {pos} claims {length} bytes past the end of '
                         f'the file: it is truncated. {_FIX}')
      rows.append((pos + _HEADER, length))
      pos += _HEADER + length + _FOOTER
      f.seek(pos)
  return np.asarray(rows, np.int64).reshape(-1, 2)


def read_record(path: str, offset: int, length: int) -> bytes:
  """The ``length`` payload bytes at ``offset`` (a row of ``index_file``), their CRC checked.

  Raises:
    errors.BadDataError: the file cannot be read there, or the payload CRC does not match.
  """
  start = offset - _HEADER
  try:
    with open(path, 'rb') as f:
      f.seek(offset)
      frame = f.read(length + _FOOTER)
  except OSError as e:
    raise errors.BadDataError(f'{path}: the record at byte {start} cannot be read '
                              f'({type(e).__name__}: {e}).') from e
  if len(frame) < length + _FOOTER:
    raise errors.BadDataError(f'{path}: the record at byte {start} runs past the end of the file: '
                              f'it was truncated after it was indexed. {_FIX}')
  _check_crc(path, 'payload', start, frame[:length], frame[length:])
  return frame[:length]


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
    """Record ``index`` -> ``uint8 (H, W, C)`` of ``image_shape``; errors.BadDataError if not."""
    file_id, offset, length = (int(v) for v in self._index[index])
    path = self._paths[file_id]
    record = read_record(path, offset, length)
    try:
      image = decode_image(record)
    except (ValueError, IndexError) as e:
      raise errors.BadDataError(f'{path}: example {index}, the record at byte {offset - _HEADER}, '
                                f'cannot be decoded ({type(e).__name__}: {e}); the file is not '
                                'a progressive-GAN style TFRecord file.') from e
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


sources.register_dataset('FFHQ', num_channels=3)(tfrecord_dataset)
sources.register_dataset('CELEBAHQ', num_channels=3)(tfrecord_dataset)
