"""Tests of CIFAR10 / SVHN / CELEBA / LSUN read from their official files, and of the download
command: each test writes small files in the published layout and opens them through the
dataset registry and the start-up checks, as a run does."""
import io
import os
import pathlib
import pickle
import shutil
import struct
import sys
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from score_sde import data
from score_sde.common import errors
from score_sde.data import archives, download, lsun, remote

# ------------------------------------------------------------------------------- file makers


def _string(value: bytes) -> bytes:
  """A Python 2 ``str`` as cPickle writes it: SHORT_BINSTRING or BINSTRING."""
  if len(value) < 256:
    return b'U' + bytes([len(value)]) + value
  return b'T' + struct.pack('<i', len(value)) + value


def _int(value: int) -> bytes:
  return b'J' + struct.pack('<i', value)  # BININT


def _array(array: np.ndarray) -> bytes:
  """A uint8 array as numpy under Python 2 pickled it (CIFAR-10's own opcodes)."""
  shape = b''.join(_int(n) for n in array.shape) + {1: b'\x85', 2: b'\x86'}[array.ndim]
  dtype = (b'cnumpy\ndtype\n' + _string(b'u1') + b'K\x00K\x01\x87R'
           b'(K\x03' + _string(b'|') + b'NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb')
  return (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85' + _string(b'b')
          + b'\x87R(K\x01' + shape + dtype + b'\x89' + _string(array.tobytes()) + b'tb')


def _cifar_batch_pickle(name: bytes, rows: np.ndarray, labels) -> bytes:
  """A protocol-2 pickle of a CIFAR-10 batch dict, opcode for opcode as the published files."""
  items = [(b'batch_label', _string(name)),
           (b'labels', b'](' + b''.join(_int(v) for v in labels) + b'e'),
           (b'data', _array(rows)),
           (b'filenames', b'](' + b''.join(_string(b'img_%d.png' % i)
                                           for i in range(len(labels))) + b'e')]
  return b'\x80\x02}(' + b''.join(_string(k) + v for k, v in items) + b'u.'


def _write_cifar(root: pathlib.Path, counts=(3, 2, 2, 1, 2), num_test=3, replace=None):
  """``root/cifar-10-python.tar.gz``; returns the HWC images and labels written per split.

  Image 0 of the training set has constant planes R=250, G=5, B=128; the rest are random.
  ``replace`` maps a batch name to the bytes that stand in for its pickle.
  """
  rng = np.random.default_rng(0)
  written = {}
  members = {}
  for split, sizes in (('train', counts), ('test', (num_test,))):
    hwc = rng.integers(0, 256, (sum(sizes), 32, 32, 3), dtype=np.uint8)
    if split == 'train':
      hwc[0] = (250, 5, 128)
    labels = rng.integers(0, 10, sum(sizes))
    written[split] = (hwc, labels)
    rows = hwc.transpose(0, 3, 1, 2).reshape(len(hwc), 3072)  # Channel-major, as published.
    names = archives.CIFAR_BATCHES[split]
    starts = np.cumsum((0,) + tuple(sizes))
    for name, lo, hi in zip(names, starts[:-1], starts[1:]):
      members[name] = _cifar_batch_pickle(name.encode(), rows[lo:hi], labels[lo:hi].tolist())
  members['batches.meta'] = pickle.dumps({b'label_names': [b'airplane']}, protocol=2)
  members['readme.html'] = b'<html></html>'
  members.update(replace or {})
  with tarfile.open(root / archives.CIFAR_ARCHIVE, 'w:gz') as tar:
    for name, payload in members.items():
      info = tarfile.TarInfo(f'{archives.CIFAR_FOLDER}/{name}')
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return written


def _configure(smoke_config, dataset, root, image_size=32, **fields):
  smoke_config.data.update(dataset=dataset, data_dir=str(root), image_size=image_size,
                           num_channels=3, **fields)
  return smoke_config.data


def _all(source):
  return source.get(np.arange(len(source)))


# ----------------------------------------------------------------------------------- CIFAR10


def test_cifar10_archive_gives_the_written_images_labels_and_channel_order(tmp_path,
                                                                           smoke_config):
  """Protects CIFAR10 without TensorFlow: the tar.gz (and its unpacked folder) in the published
  layout opens through the registry and start-up checks, 'train' = data_batch_1..5 in order,
  'test' = test_batch, each channel-major row turned into HWC (the constant R/G/B planes land in
  channels 0/1/2), labels int32 as written; other sizes are the bilinear resize."""
  written = _write_cifar(tmp_path)
  rows = (np.arange(2 * 3072) % 251).astype(np.uint8).reshape(2, 3072)
  plain = pickle.loads(_cifar_batch_pickle(b'b', rows, [7, 3]), encoding='bytes')
  assert plain[b'labels'] == [7, 3]  # The stdlib reads the made batches as the published ones.
  np.testing.assert_array_equal(plain[b'data'], rows)
  unpacked = tmp_path / 'unpacked'
  with tarfile.open(tmp_path / archives.CIFAR_ARCHIVE) as tar:
    tar.extractall(unpacked, filter='data')
  for root in (tmp_path, unpacked):
    opened = data.open_checked(_configure(smoke_config, 'CIFAR10', root))
    for split, (hwc, labels) in written.items():
      got = _all(opened[split])
      assert got['image'].dtype == np.uint8 and got['image'].shape == hwc.shape
      np.testing.assert_array_equal(got['image'], hwc)
      assert got['label'].dtype == np.int32 and got['label'].tolist() == labels.tolist()
    assert opened['train'].get([0])['image'][0, 17, 3].tolist() == [250, 5, 128]
  small = data.get_dataset(_configure(smoke_config, 'CIFAR10', tmp_path, image_size=16), 'test')
  hwc = written['test'][0]
  expected = np.asarray(Image.fromarray(hwc[1]).resize((16, 16), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(small.get([1])['image'][0], expected)


class _Runs:
  """A pickle that calls ``func(*args)`` when loaded."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


@pytest.mark.parametrize('payload', ['open', 'system', 'eval', 'object_array'])
def test_cifar10_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, smoke_config,
                                                                    payload):
  """Protects users from a crafted CIFAR archive: a batch whose pickle calls open / os.system /
  eval, or holds an object array, is refused with a BadDataError naming the member, before
  anything of it runs (the marker file it would create does not appear)."""
  marker = tmp_path / 'ran'
  evil = {
      'open': _Runs(open, str(marker), 'w'),
      'system': _Runs(os.system, f'touch {marker}'),
      'eval': _Runs(eval, f'open({str(marker)!r}, "w")'),
      'object_array': {b'data': np.array([_Runs(open, str(marker), 'w')], dtype=object),
                       b'labels': [0]},
  }[payload]
  _write_cifar(tmp_path, replace={'data_batch_3': pickle.dumps(evil, protocol=2)})
  with pytest.raises(errors.BadDataError, match='data_batch_3 is not a safe CIFAR-10 batch'):
    data.open_checked(_configure(smoke_config, 'CIFAR10', tmp_path), ('train',))
  assert not marker.exists()
  with pytest.raises(pickle.UnpicklingError):
    archives.safe_unpickle(pickle.dumps(evil, protocol=4))
  assert not marker.exists()


# -------------------------------------------------------------------------------------- SVHN


def test_svhn_mat_files_give_the_written_digits_with_10_as_0(tmp_path, smoke_config):
  """Protects SVHN without TensorFlow: train_32x32.mat / test_32x32.mat hold X (32, 32, 3, N)
  and y in 1..10; the source gives X[..., i] as image i (HWC, channels kept) and y % 10."""
  rng = np.random.default_rng(1)
  written = {}
  for split, n in (('train', 5), ('test', 3)):
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    x[..., 0] = (9, 99, 199)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0] = 10
    scipy.io.savemat(tmp_path / archives.SVHN_FILES[split], {'X': x, 'y': y})
    written[split] = (x, y)
  opened = data.open_checked(_configure(smoke_config, 'SVHN', tmp_path))
  for split, (x, y) in written.items():
    got = _all(opened[split])
    assert got['image'].dtype == np.uint8 and got['image'].shape == (x.shape[3], 32, 32, 3)
    for i in range(x.shape[3]):
      np.testing.assert_array_equal(got['image'][i], x[..., i])
    assert got['image'][0, 5, 7].tolist() == [9, 99, 199]
    assert got['label'].dtype == np.int32 and got['label'][0] == 0
    assert got['label'].tolist() == [int(v) % 10 for v in y[:, 0]]


# ------------------------------------------------------------------------------------ CELEBA

_CENTRE = (slice(39, 179), slice(19, 159))  # The central 140x140 of a 218x178 image.


def _face(k: int) -> np.ndarray:
  """A 218x178 image whose central 140x140 is one colour (k-dependent), margins black."""
  face = np.zeros((218, 178, 3), np.uint8)
  face[_CENTRE] = (40 + 30 * k, 200 - 20 * k, 90)
  return face


def _write_celeba(root: pathlib.Path, partitions=(0, 1, 0, 2, 1, 0)):
  with zipfile.ZipFile(root / 'img_align_celeba.zip', 'w') as archive:
    for k in range(len(partitions)):
      buffer = io.BytesIO()
      Image.fromarray(_face(k)).save(buffer, 'JPEG', quality=95, subsampling=0)
      archive.writestr(f'img_align_celeba/{k + 1:06d}.jpg', buffer.getvalue())
  lines = ''.join(f'{k + 1:06d}.jpg {p}\r\n' for k, p in enumerate(partitions))
  (root / 'list_eval_partition.txt').write_bytes(lines.encode())
  return partitions


def test_celeba_zip_is_decoded_cropped_and_split_like_the_reference(tmp_path, smoke_config):
  """Protects CELEBA without TensorFlow: img_align_celeba.zip + list_eval_partition.txt give
  'train' = partition 0 and 'test' = partition 1 (the reference's validation split) in list
  order; each JPEG is cropped to its central 140x140 (the black margins stay out) and resized,
  channels in RGB order, label -1; decoding on threads equals decoding in one thread."""
  partitions = _write_celeba(tmp_path)
  config = _configure(smoke_config, 'CELEBA', tmp_path, image_size=16, num_workers=0)
  opened = data.open_checked(config)
  for split, part in (('train', 0), ('test', 1)):
    ks = [k for k, p in enumerate(partitions) if p == part]
    got = _all(opened[split])
    assert len(opened[split]) == len(ks) and got['image'].shape == (len(ks), 16, 16, 3)
    assert got['image'].dtype == np.uint8 and got['label'].tolist() == [-1] * len(ks)
    for image, k in zip(got['image'], ks):
      colour = np.asarray(_face(k)[_CENTRE][70, 70], int)
      assert np.abs(image.astype(int) - colour).max() <= 3, (split, k)
  config.num_workers = 3
  threaded = data.get_dataset(config, 'train')
  indices = [2, 0, 1, 2, 0]
  np.testing.assert_array_equal(threaded.get(indices)['image'],
                                opened['train'].get(indices)['image'])


def test_celeba_image_missing_from_the_zip_is_named_at_start_up(tmp_path, smoke_config):
  """Protects the start-up check: an image the partition list names but the zip lacks stops
  the run with a BadDataError naming it."""
  _write_celeba(tmp_path)
  with open(tmp_path / 'list_eval_partition.txt', 'ab') as f:
    f.write(b'999999.jpg 0\r\n')
  with pytest.raises(errors.BadDataError, match='img_align_celeba/999999.jpg'):
    data.open_checked(_configure(smoke_config, 'CELEBA', tmp_path, image_size=16))


# ------------------------------------------------------------------------------ missing files


@pytest.mark.parametrize('dataset, expected', [
    ('CIFAR10', 'cifar-10-python.tar.gz'), ('SVHN', 'train_32x32.mat'),
    ('CELEBA', 'img_align_celeba.zip'), ('LSUN', 'church_outdoor_train_lmdb/data.mdb')])
def test_missing_files_name_the_file_the_folder_and_the_download_command(
    tmp_path, smoke_config, dataset, expected):
  """Protects a first run: a dataset whose files are not in data.data_dir stops at start-up with
  one DataNotFoundError naming the file expected, the folder searched and the command that
  downloads it; an empty data.data_dir names the command too."""
  config = _configure(smoke_config, dataset, tmp_path, category='church_outdoor')
  with pytest.raises(errors.DataNotFoundError) as info:
    data.open_checked(config)
  message = str(info.value)
  category = ' --category church_outdoor' if dataset == 'LSUN' else ''
  assert expected in message and f'in {tmp_path} ' in message
  assert f'python -m score_sde.data.download {dataset.lower()}{category} --data_dir {tmp_path}' \
      in message
  config.data_dir = ''
  with pytest.raises(errors.DataNotFoundError, match='data.data_dir is empty.*--data_dir DIR'):
    data.open_checked(config)


# --------------------------------------------------------------------------------------- LSUN


def test_lsun_without_lmdb_or_category_says_what_to_do(tmp_path, smoke_config, monkeypatch):
  """Protects the LSUN route's messages: no category or an unknown one is a ConfigError listing
  the scenes; without the lmdb package, a MissingDependencyError gives the pip command."""
  config = _configure(smoke_config, 'LSUN', tmp_path, category='')
  with pytest.raises(errors.ConfigError, match='data.category'):
    data.get_dataset(config, 'train')
  config.category = 'bedrooms'
  with pytest.raises(errors.ConfigError, match='church_outdoor'):
    data.get_dataset(config, 'train')
  config.category = 'bedroom'
  (tmp_path / 'bedroom_train_lmdb').mkdir()
  (tmp_path / 'bedroom_train_lmdb' / 'data.mdb').write_bytes(b'')
  monkeypatch.setitem(sys.modules, 'lmdb', None)  # Makes the import fail.
  with pytest.raises(errors.MissingDependencyError, match='pip install lmdb'):
    data.get_dataset(config, 'train')


def test_lsun_lmdb_gives_the_stored_images_preprocessed_like_the_reference(tmp_path,
                                                                           smoke_config):
  """Protects LSUN from the published LMDB folders (with the lmdb package): every key is one
  example in key order, 'test' reads <category>_val_lmdb, and each image is the reference's
  centre crop and resize of the stored one, channels in RGB order."""
  lmdb_module = pytest.importorskip('lmdb')
  rng = np.random.default_rng(2)
  stored = {}
  for split, folder in (('train', 'tower_train_lmdb'), ('test', 'tower_val_lmdb')):
    env = lmdb_module.open(str(tmp_path / folder), map_size=1 << 24)
    stored[split] = []
    with env.begin(write=True) as txn:
      for i in range(3 if split == 'train' else 2):
        image = rng.integers(0, 256, (24 + 4 * i, 40, 3), dtype=np.uint8)
        image[..., 0], image[..., 2] = 255, 0
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, 'WEBP', lossless=True)
        txn.put(f'{split}{i:03d}'.encode(), buffer.getvalue())
        stored[split].append(image)
    env.close()
  opened = data.open_checked(_configure(smoke_config, 'LSUN', tmp_path, image_size=16,
                                        category='tower'))
  for split, originals in stored.items():
    got = _all(opened[split])
    assert got['image'].shape == (len(originals), 16, 16, 3) and got['image'].dtype == np.uint8
    assert got['label'].tolist() == [-1] * len(originals)
    for image, original in zip(got['image'], originals):
      np.testing.assert_array_equal(image, lsun.preprocess(original, 16))
      assert image[..., 0].min() == 255 and image[..., 2].max() == 0


# ---------------------------------------------------------------------------------- download


def test_fetch_verifies_the_checksum_and_never_leaves_a_partial_file(tmp_path):
  """Protects the download command: a file whose size and SHA-256 match is saved under its name
  (and kept, not fetched again, on the next call); a wrong checksum or a cut transfer raises a
  DownloadError and leaves neither the file nor a temporary one behind."""
  source = tmp_path / 'mirror' / 'cifar-10-python.tar.gz'
  source.parent.mkdir()
  payload = os.urandom(3_000_000)
  source.write_bytes(payload)
  good = remote.RemoteFile(source.name, source.as_uri(), len(payload),
                           remote.sha256_of(source))
  target = tmp_path / 'data'
  lines = []
  assert remote.fetch(good, target, say=lines.append) == target / source.name
  assert (target / source.name).read_bytes() == payload
  assert os.listdir(target) == [source.name]
  moved = remote.RemoteFile(good.name, (tmp_path / 'nowhere').as_uri(), good.size, good.sha256)
  remote.fetch(moved, target, say=lines.append)  # Present and verified: not downloaded.
  assert 'checksum verified' in lines[-1]
  for bad, match in ((remote.RemoteFile('a.bin', good.url, good.size, '0' * 64), 'SHA-256'),
                     (remote.RemoteFile('b.bin', good.url, good.size + 1, good.sha256), 'cut'),
                     (remote.RemoteFile('c.bin', good.url, good.size - 1, good.sha256),
                      'more than')):
    with pytest.raises(remote.DownloadError, match=match):
      remote.fetch(bad, target, say=lines.append)
    assert os.listdir(target) == [source.name]
  with pytest.raises(remote.DownloadError, match='Could not download'):
    remote.fetch(remote.RemoteFile('d.bin', (tmp_path / 'gone').as_uri(), 1, '0' * 64),
                 target, say=lines.append)
  assert os.listdir(target) == [source.name]


def test_download_command_fetches_and_unpacks_with_exit_codes(tmp_path, monkeypatch, capsys):
  """Protects ``python -m score_sde.data.download``: it fetches a dataset's files (exit 0),
  unpacks LSUN's zip into its LMDB folder and removes the zip, refuses a zip member outside
  that folder, and reports a bad checksum as one message with exit 2."""
  mirror = tmp_path / 'mirror'
  mirror.mkdir()
  zip_path = mirror / 'tower_val_lmdb.zip'
  with zipfile.ZipFile(zip_path, 'w') as archive:
    archive.writestr('tower_val_lmdb/data.mdb', b'db')
  lsun_zip = remote.RemoteFile(zip_path.name, zip_path.as_uri(), zip_path.stat().st_size,
                             remote.sha256_of(zip_path), extract=True)
  monkeypatch.setattr(remote, 'lsun_files', lambda category: (lsun_zip,))
  assert download.main(['lsun', '--category', 'tower', '--data_dir', str(tmp_path / 'd')]) == 0
  assert (tmp_path / 'd' / 'tower_val_lmdb' / 'data.mdb').read_bytes() == b'db'
  assert os.listdir(tmp_path / 'd') == ['tower_val_lmdb']
  with zipfile.ZipFile(zip_path, 'w') as archive:
    archive.writestr('tower_val_lmdb/data.mdb', b'db')
    archive.writestr('tower_val_lmdb/../../escaped', b'x')
  shutil.copy(zip_path, tmp_path / 'tower_val_lmdb.zip')
  with pytest.raises(remote.DownloadError, match='outside tower_val_lmdb/'):
    remote.extract(tmp_path / 'tower_val_lmdb.zip', say=lambda line: None)
  assert not (tmp_path / 'escaped').exists() and not (tmp_path / 'tower_val_lmdb').exists()
  wrong = remote.RemoteFile('cifar-10-python.tar.gz', zip_path.as_uri(),
                           zip_path.stat().st_size, '0' * 64)
  monkeypatch.setitem(remote.FILES, 'CIFAR10', (wrong,))
  capsys.readouterr()
  assert download.main(['cifar10', '--data_dir', str(tmp_path / 'e')]) == 2
  err = capsys.readouterr().err
  assert err.splitlines()[-1].startswith('Error: ') and 'not the published' in err
  assert 'Traceback' not in err
  assert os.listdir(tmp_path / 'e') == []
