"""CIFAR10, SVHN, CELEBA and LSUN through TensorFlow Datasets' random-access data sources.

``tfds.data_source`` reads datasets prepared in the ArrayRecord format, one example at a time,
without TensorFlow at read time. tensorflow-datasets is an optional extra, imported only when one
of these datasets is asked for; nothing here downloads: prepare a dataset once with

    pip install -e ".[tfds]"
    tfds build cifar10 --file_format=array_record --data_dir=DIR

and pass ``--config.data.data_dir=DIR`` (empty: tfds' default, ``~/tensorflow_datasets``).

Preprocessing follows the reference's ``datasets.py``, on uint8 images with PIL:
  * CIFAR10 (``cifar10``), SVHN (``svhn_cropped``): antialiased bilinear resize to
    ``image_size`` (a no-op at 32).
  * CELEBA (``celeb_a``): central 140x140 crop of the 218x178 image, then bilinear resize.
  * LSUN (``lsun/<data.category>``): at 128, shorter side to 128 (bilinear) then central crop;
    otherwise central square crop then bicubic resize.
Held-out data ('test') is the tfds 'test' split for CIFAR10 / SVHN and 'validation' for CELEBA /
LSUN, as in the reference. Datasets without class labels give label -1.
"""
import dataclasses
from typing import Callable, Dict

import ml_collections
import numpy as np

from score_sde.common import errors
from score_sde.data import images, sources

CELEBA_CROP = 140


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  return images.resize(image, size, size, 'bilinear')


def _celeba(image: np.ndarray, size: int) -> np.ndarray:
  square = images.center_crop(image, CELEBA_CROP, CELEBA_CROP)
  return images.resize_short_side(square, size, 'bilinear')


def _lsun(image: np.ndarray, size: int) -> np.ndarray:
  if size == 128:
    return images.center_crop(images.resize_short_side(image, size, 'bilinear'), size, size)
  return images.crop_resize(image, size, 'bicubic')


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How one config dataset maps onto tfds: builder name, split names, preprocessing."""
  tfds_name: str
  test_split: str
  preprocess: Callable[[np.ndarray, int], np.ndarray]  # uint8 (H, W, C), size -> (S, S, C).


SPECS = {
    'CIFAR10': TfdsSpec('cifar10', 'test', _resize),
    'SVHN': TfdsSpec('svhn_cropped', 'test', _resize),
    'CELEBA': TfdsSpec('celeb_a', 'validation', _celeba),
    'LSUN': TfdsSpec('lsun/{category}', 'validation', _lsun),
}


def _build_command(tfds_name: str, data_dir: str) -> str:
  flag = f' --data_dir={data_dir}' if data_dir else ''
  return f'tfds build {tfds_name} --file_format=array_record{flag}'


def _import_tfds(dataset: str, command: str):
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise errors.MissingDependencyError(
        f'Dataset {dataset} reads TensorFlow Datasets, an optional extra that is not installed. '
        f'Run: pip install -e ".[tfds]" && {command}') from err
  return tfds


class TfdsSource(sources.Source):
  """A tfds random-access data source, preprocessed per example to ``(S, S, C) uint8``."""

  def __init__(self, data_source, preprocess: Callable[[np.ndarray, int], np.ndarray],
               image_size: int, num_channels: int):
    self._data_source = data_source
    self._preprocess = preprocess
    self._shape = images.image_shape(image_size, num_channels)

  @property
  def image_shape(self):
    return self._shape

  def __len__(self):
    return len(self._data_source)

  def _example(self, record: Dict[str, np.ndarray]):
    image = np.asarray(record['image'], np.uint8)
    image = images.to_channels(self._preprocess(image, self._shape[0]), self._shape[-1])
    return image, int(record.get('label', sources.NO_LABEL))

  def _load(self, indices):
    records = self._data_source.__getitems__([int(i) for i in indices])
    pairs = [self._example(r) for r in records]
    return {'image': np.stack([p[0] for p in pairs]),
            'label': np.asarray([p[1] for p in pairs], np.int32)}


def open_tfds(dataset: str, data_config: ml_collections.ConfigDict, split: str) -> TfdsSource:
  """Opens ``dataset`` (a key of ``SPECS``) for ``split``; fails with the command that fixes it.

  Raises:
    ImportError: tensorflow-datasets is not installed.
    FileNotFoundError: the dataset is not prepared as ArrayRecord under ``data.data_dir``.
    ValueError: LSUN without ``data.category``.
  """
  spec = SPECS[dataset]
  tfds_name = spec.tfds_name
  if '{category}' in tfds_name:
    category = data_config.get('category', '')
    if not category:
      raise errors.ConfigError(f'{dataset} needs data.category, e.g. '
                               '--config.data.category=bedroom (or church_outdoor).')
    tfds_name = tfds_name.format(category=category)
  data_dir = str(data_config.get('data_dir', '') or '')
  command = _build_command(tfds_name, data_dir)
  tfds = _import_tfds(dataset, command)
  tfds_split = 'train' if split == 'train' else spec.test_split
  try:
    data_source = tfds.data_source(
        tfds_name, split=tfds_split, data_dir=data_dir or None, download=False)
  except Exception as err:  # pylint: disable=broad-except
    # tfds raises several types here (missing files, wrong file format, missing array_record).
    raise errors.DataNotFoundError(
        f'Could not open {tfds_name}[{tfds_split}] as a random-access (ArrayRecord) dataset '
        f'under data_dir={data_dir or "~/tensorflow_datasets"}: {err}. Prepare it once with: '
        f'{command}') from err
  return TfdsSource(data_source, spec.preprocess, data_config.image_size,
                    data_config.num_channels)


def _register(dataset: str) -> None:
  def factory(data_config: ml_collections.ConfigDict, split: str) -> TfdsSource:
    return open_tfds(dataset, data_config, split)

  factory.__doc__ = f'{dataset} from tfds {SPECS[dataset].tfds_name!r}; see the module docstring.'
  sources.DATASETS.register(dataset)(factory)


for _name in SPECS:
  _register(_name)
