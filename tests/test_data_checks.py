"""Tests for score_sde.data.checks: every data problem is found at start-up, named, with its fix.

Protects the promise that bad data fails in the first seconds, before the state is built
or anything is written, instead of minutes later from the prefetch thread; and that what works
but may surprise (resized images, colour conversion, no held-out split) is said once, in one
line with a count.
"""
import logging

import numpy as np
import pytest
from PIL import Image

from score_sde.common import errors
from score_sde.data import checks, sources, tfrecord


def _png(path, size=(16, 16), mode='L'):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new(mode, size, color=128 if mode in ('L', 'P') else (128,) * len(mode)).save(path)


@pytest.fixture
def folder_config(smoke_config, tmp_path):
  smoke_config.data.update(dataset='IMAGE_FOLDER', data_dir=str(tmp_path / 'images'))
  return smoke_config.data


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_missing_and_empty_folders_are_data_not_found(folder_config, tmp_path):
  """A typo in data_dir and a folder with no images: DataNotFoundError naming the folder."""
  with pytest.raises(errors.DataNotFoundError, match='images.*is not a directory'):
    checks.open_checked(folder_config)
  (tmp_path / 'images').mkdir()
  (tmp_path / 'images' / 'readme.txt').write_text('no images here')
  with pytest.raises(errors.DataNotFoundError, match=r'no \.png.*files under .*images'):
    checks.open_checked(folder_config)


def test_corrupt_files_are_all_named_with_their_paths(folder_config, tmp_path):
  """Files that PIL cannot identify are found by the header probe, every one named, before any
  example is decoded (not a bare UnidentifiedImageError whenever the file is drawn)."""
  root = tmp_path / 'images'
  for i in range(3):
    _png(root / f'good_{i}.png')
  (root / 'bad_a.png').write_bytes(b'not a png at all')
  (root / 'sub' / 'bad_b.jpg').parent.mkdir()
  (root / 'sub' / 'bad_b.jpg').write_bytes(b'\x00' * 64)
  with pytest.raises(errors.BadDataError) as err:
    checks.open_checked(folder_config, ['train'])
  message = str(err.value)
  assert '2 of 5 files' in message
  assert str(root / 'bad_a.png') in message and str(root / 'sub' / 'bad_b.jpg') in message
  assert 'Remove or re-encode' in message


def test_file_with_a_good_header_and_a_damaged_body_is_named_when_decoded(folder_config,
                                                                           tmp_path):
  """A truncated PNG passes the header probe; decoding it (at start-up if it is among the first
  examples, else from the prefetch thread) raises BadDataError naming the file."""
  root = tmp_path / 'images'
  _png(root / 'a.png', size=(64, 64))
  data = (root / 'a.png').read_bytes()
  (root / 'a.png').write_bytes(data[:len(data) // 2])
  with pytest.raises(errors.BadDataError, match=r'cannot decode .*a\.png'):
    checks.open_checked(folder_config, ['train'])


def test_resized_and_converted_images_give_one_counted_warning_each(folder_config, tmp_path,
                                                                   caplog):
  """2 of 4 images are not 16x16 and 1 is RGB for a 1-channel config: one warning line each,
  with the counts, the size and the mode; the images themselves still load."""
  root = tmp_path / 'images'
  _png(root / 'train' / 'a.png')
  _png(root / 'train' / 'b.png', size=(20, 16))
  _png(root / 'train' / 'c.png', size=(32, 32), mode='RGB')
  _png(root / 'train' / 'd.png')
  _png(root / 'test' / 'e.png')
  with caplog.at_level(logging.WARNING):
    opened = checks.open_checked(folder_config)
  warnings = _warnings(caplog)
  assert len(warnings) == 2, warnings
  assert '2 of 4 images' in warnings[0] and 'not 16x16' in warnings[0]
  assert '1 images' in warnings[1] and 'RGB: 1' in warnings[1] and 'converted to L' in warnings[1]
  assert all('\n' not in w for w in warnings)
  assert opened['train'].get([2])['image'].shape == (1, 16, 16, 1)


def test_folder_without_splits_warns_that_evaluation_uses_the_training_images(
    folder_config, tmp_path, caplog):
  """No train/ and test/ subfolders: both splits are the whole folder (the reference's FFHQ
  behaviour), said once; the folder is probed once."""
  _png(tmp_path / 'images' / 'a.png')
  with caplog.at_level(logging.WARNING):
    opened = checks.open_checked(folder_config)
  assert opened['train'].paths == opened['test'].paths
  warnings = _warnings(caplog)
  assert len(warnings) == 1 and 'evaluation' in warnings[0] and 'training images' in warnings[0]


def test_split_folders_give_no_warning(folder_config, tmp_path, caplog):
  """The ordinary case is silent."""
  _png(tmp_path / 'images' / 'train' / 'a.png')
  _png(tmp_path / 'images' / 'test' / 'b.png')
  with caplog.at_level(logging.WARNING):
    checks.open_checked(folder_config)
  assert not _warnings(caplog)


class _WrongShape(sources.ArraySource):
  pass


def test_source_with_the_wrong_shape_is_refused_naming_the_fields(smoke_config, monkeypatch):
  """A registered source whose images do not match data.image_size / num_channels fails at
  start-up with the fields to change, not inside the first compiled step."""
  source = _WrongShape(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4,), np.int32))
  monkeypatch.setattr(sources, 'get_dataset', lambda data_config, split: source)
  with pytest.raises(errors.BadDataError, match=r'shape \(8, 8, 3\).*\(16, 16, 1\).*image_size'):
    checks.open_checked(smoke_config.data)


def test_empty_source_is_refused(smoke_config, monkeypatch):
  """A source without examples fails at start-up (not at the first batch)."""
  source = sources.ArraySource(np.zeros((0, 16, 16, 1), np.uint8), np.zeros((0,), np.int32))
  monkeypatch.setattr(sources, 'get_dataset', lambda data_config, split: source)
  with pytest.raises(errors.DataNotFoundError, match='no examples'):
    checks.open_checked(smoke_config.data, ['train'])


def test_tfrecord_test_split_says_it_is_the_training_set(smoke_config, tmp_path, caplog):
  """FFHQ-style TFRecords have no held-out split; evaluation on them is said to use the training
  images. A truncated file is a BadDataError naming it."""
  path = tmp_path / 'ffhq-r04.tfrecords'
  path.write_bytes(b'')
  smoke_config.data.update(dataset='FFHQ', tfrecords_path=str(path))
  source = tfrecord.tfrecord_dataset(smoke_config.data, 'test')
  assert any('training images' in n for n in source.probe())
  assert not tfrecord.tfrecord_dataset(smoke_config.data, 'train').probe()
  path.write_bytes(b'\x05' * 20)
  with pytest.raises(errors.BadDataError, match='ffhq-r04.tfrecords'):
    checks.open_checked(smoke_config.data, ['train'])
