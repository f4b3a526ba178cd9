"""The environment of the processes tests start (``main.py``, killed runs, notebook kernels)."""
import os
import subprocess
import sys

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


def run_converter(checkpoint, workdir) -> subprocess.CompletedProcess:
  """The converter's command line (``python -m score_sde.conversion.released_checkpoints``) on
  ``checkpoint`` with ``configs/smoke.py``, into ``workdir``, from the checkout; its output is
  captured as text."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run(
      [sys.executable, '-m', 'score_sde.conversion.released_checkpoints',
       '--config', os.path.join(root, 'configs', 'smoke.py'), '--checkpoint', str(checkpoint),
       '--workdir', str(workdir)],
      capture_output=True, text=True, cwd=root, timeout=600,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
