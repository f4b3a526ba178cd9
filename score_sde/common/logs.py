"""What a command prints: its own INFO lines, and only warnings and errors from the libraries
(orbax and jax log every step of their work at INFO). Each command's entry point calls
``quiet_libraries`` (``main.py``, the checkpoint converter)."""
import logging as std_logging

from absl import logging


class OnlyWarningsFromLibraries(std_logging.Filter):
  """Passes a record at WARNING or above, or one logged by the package or ``main.py``."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or '/score_sde/' in record.pathname or (
        record.pathname.endswith('main.py'))


def quiet_libraries() -> None:
  """Filters absl's handler (which every Python logger reaches) with
  ``OnlyWarningsFromLibraries``."""
  logging.get_absl_handler().addFilter(OnlyWarningsFromLibraries())
