"""The environment of the processes tests start (``main.py``, killed runs, notebook kernels)."""
import os

_DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'


def xla_env(devices: int) -> dict:
  """This process's environment on ``devices`` fake CPU devices, every other XLA flag kept.

  A child must compile as the test process does (conftest's flags): tests compare its results
  with the parent's to float tolerance, and share its compilation cache.
  """
  env = dict(os.environ)
  flags = [f for f in env.get('XLA_FLAGS', '').split() if not f.startswith(_DEVICE_COUNT_FLAG)]
  env['XLA_FLAGS'] = ' '.join(flags + [f'{_DEVICE_COUNT_FLAG}={devices}'])
  env['JAX_PLATFORMS'] = 'cpu'
  return env
