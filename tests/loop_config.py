"""The configuration of the tests of the training loop, evaluation, recovery and multi-host runs.

What those tests protect is the loop (saving, resuming, sharding, reporting), whatever the
layers, which ``test_models.py`` checks one by one. They share one network, the smoke network
at one resolution with plain blocks and resampling: a fraction of the smoke network's compile
time, and, being the same program, compiled once per suite and then read from the persistent
compilation cache (``conftest.py``) by every other test and child process that builds it.
"""
from score_sde.configs import smoke

NET = dict(ch_mult=(1,), attn_resolutions=(), fir=False, resblock_type='ddpm',
           progressive_input='none')


def get_config(**training):
  """``configs/smoke.py`` with the loop tests' network and ``training`` fields set."""
  config = smoke.get_config()
  config.model.update(NET)
  config.training.update(training)
  return config


def main_overrides() -> list:
  """The same network as ``main.py`` flags over ``--config configs/smoke.py``."""
  return [f'--config.model.{name}={value}' for name, value in NET.items()]
