"""Eight fake CPU devices for every test, so sharding is exercised without an accelerator."""
import os
import sys
import tempfile

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests build the same programs many times (a run, then its resumption, in fresh closures): a
# per-session persistent cache compiles each once. It changes no result, only the wall time.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="score_sde_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402


@pytest.fixture
def smoke_config():
  from configs import smoke
  return smoke.get_config()
