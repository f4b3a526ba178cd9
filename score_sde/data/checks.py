"""Start-up checks of the configured data, run before any state is built or anything is written.

``open_checked(data_config, splits)`` opens each split and makes sure that a run can use it: the
source opens (a missing folder, archive or TFRecord file names the fix), it is not empty,
every example passes the source's cheap ``probe`` (image folders: every file's header), and its
first examples decode to ``(data.image_size, data.image_size, data.num_channels)`` uint8
images. What works but may surprise (images resized, an evaluation split that is the training
set) is logged as one WARNING line each. A problem raises an ``errors.DataError`` naming the
split, the file where there is one, and the fix, so it surfaces in the first seconds instead of
minutes later from the prefetch thread, after compilation and checkpoint directories.
"""
from typing import Dict, Sequence

import ml_collections
import numpy as np
from absl import logging

from score_sde.common import errors
from score_sde.data import sources

FIRST_EXAMPLES = 8  # Decoded per split at start-up.


def check_source(source: sources.Source, data_config: ml_collections.ConfigDict,
                 split: str) -> None:
  """Raises ``errors.DataError`` if ``source`` cannot serve ``split`` as configured; logs the
  source's warnings (``Source.probe``)."""
  name = f'{data_config.dataset}[{split}]'
  if len(source) == 0:
    raise errors.DataNotFoundError(f'{name} has no examples; check data.data_dir and the split.')
  for warning in source.probe():
    logging.warning('%s', warning)
  try:
    first = source.get(np.arange(min(len(source), FIRST_EXAMPLES)))
  except errors.DataError:
    raise
  except Exception as e:  # A source's reader can fail in any way; say which dataset it was.
    raise errors.BadDataError(f'{name}: the first examples cannot be decoded '
                              f'({type(e).__name__}: {e}).') from e
  expected = (data_config.image_size, data_config.image_size, data_config.num_channels)
  image = np.asarray(first['image'])
  if image.dtype != np.uint8 or image.shape[1:] != expected:
    raise errors.BadDataError(
        f'{name} gives {image.dtype} images of shape {image.shape[1:]}, but the config asks for '
        f'uint8 {expected} (data.image_size, data.num_channels); set those fields to match the '
        'dataset.')


def open_checked(data_config: ml_collections.ConfigDict,
                 splits: Sequence[str] = sources.SPLITS) -> Dict[str, sources.Source]:
  """Opens and checks each of ``splits`` (module docstring); ``{split: source}``.

  Raises:
    errors.DataNotFoundError: a split is missing or empty.
    errors.BadDataError: an example cannot be decoded or has the wrong shape.
    errors.MissingDependencyError: the dataset's optional reader is not installed.
  """
  opened, probed = {}, set()
  for split in splits:
    source = sources.get_dataset(data_config, split)
    files = getattr(source, 'paths', None)
    if files is not None and files in probed:  # The test split is the training folder.
      for note in source.notes:
        logging.warning('%s', note)
    else:
      check_source(source, data_config, split)
      if files is not None:
        probed.add(files)
    opened[split] = source
  logging.info('Data %s: %s.', data_config.dataset,
               ', '.join(f'{split} {len(source)} examples' for split, source in opened.items()))
  return opened
