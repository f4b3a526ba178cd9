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


@pytest.fixture(scope="session")
def trained_smoke_run(tmp_path_factory):
  """``(config, workdir)``: the smoke network (VE, one resolution, no FIR) trained for 4 steps
  on 8 devices, with checkpoints at steps 2 (preemption) and 4 (periodic) and its config.json.
  Shared by the tests that only read a trained run (pipeline, README snippets)."""
  from configs import smoke
  from score_sde.training import train
  config = smoke.get_config()
  config.training.n_iters = 4
  config.training.snapshot_freq_for_preemption = 2
  config.model.ch_mult, config.model.attn_resolutions, config.model.fir = (1,), (), False
  workdir = str(tmp_path_factory.mktemp("trained_smoke") / "runs" / "embedded")
  train.train_and_evaluate(config, workdir)
  return config, workdir
