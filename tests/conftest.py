"""Eight fake CPU devices for every test, so sharding is exercised without an accelerator."""
import os
import sys
import tempfile

# Must happen before jax is imported anywhere. LLVM's optimisation level 1 instead of 2: the
# suite is bound by XLA:CPU compilation of tiny programs, which this makes 2-3x faster, while
# the programs' results stay the same (level 0 would change float rounding).
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests build the same programs many times (a run, then its resumption, in fresh closures): a
# per-session persistent cache compiles each once. It changes no result, only the wall time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # Set once, by pytest-xdist's controller.
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="score_sde_xla_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402


@pytest.fixture
def smoke_config():
  from score_sde.configs import smoke
  return smoke.get_config()


@pytest.fixture(scope="session")
def trained_smoke_run(tmp_path_factory):
  """``(config, workdir)``: the loop tests' network (``loop_config``) trained for 4 steps on 8
  devices, with checkpoints at steps 2 (preemption) and 4 (periodic) and its config.json.
  Shared by the tests that only read a trained run (pipeline, README snippets)."""
  import loop_config
  from score_sde.training import train
  config = loop_config.get_config(n_iters=4, snapshot_freq_for_preemption=2)
  workdir = str(tmp_path_factory.mktemp("trained_smoke") / "runs" / "embedded")
  train.train_and_evaluate(config, workdir)
  return config, workdir
