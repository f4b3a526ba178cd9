"""The run notebooks/quickstart.ipynb trains in tests (``QUICKSTART_CONFIG``): the loop tests'
network (``loop_config``) for 4 steps on an RGB image folder (``QUICKSTART_TEST_IMAGES``, made
by the test), so that the notebook's training branch and every section, colourisation included,
run in seconds."""
import os
import sys

# main.py loads this file by path, from the repository root: loop_config sits beside it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loop_config  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def get_config():
  config = loop_config.get_config(n_iters=4)
  config.data.dataset = 'IMAGE_FOLDER'
  config.data.data_dir = os.environ['QUICKSTART_TEST_IMAGES']
  config.data.num_channels = 3
  return config
