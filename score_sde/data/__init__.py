"""Datasets as random-access sources, and a batch pipeline that is a pure function of the step.

    source = data.get_dataset(config.data, 'train')
    batch = data.get_batch(source, step, config.training.batch_size, config.seed, train=True,
                           random_flip=config.data.random_flip,
                           uniform_dequantization=config.data.uniform_dequantization,
                           host_index=jax.process_index(), host_count=jax.process_count())
    x = data.get_data_scaler(config.data.centered)(batch['image'])

Importing this package registers every dataset in ``DATASETS``: MNIST_EMBEDDED (no download),
IMAGE_FOLDER, CIFAR10 / SVHN / CELEBA / LSUN (their official files, fetched with
``python -m score_sde.data.download``; no TensorFlow) and FFHQ / CELEBAHQ (the reference's
TFRecords).
"""
from score_sde.data import archives, celeba, embedded, lsun, tfrecord  # noqa: F401  (fill DATASETS)
from score_sde.data.checks import open_checked
from score_sde.data.loader import batches, epoch_batches, example_indices, get_batch, num_examples
from score_sde.data.scalers import get_data_inverse_scaler, get_data_scaler
from score_sde.data.sources import (ArraySource, DATASETS, DecodedSource, get_dataset,
                                   ImageFolderSource, Source)

__all__ = [
    'DATASETS', 'ArraySource', 'DecodedSource', 'ImageFolderSource', 'Source', 'batches',
    'epoch_batches', 'example_indices', 'get_batch', 'get_data_inverse_scaler',
    'get_data_scaler', 'get_dataset', 'num_examples', 'open_checked',
]
