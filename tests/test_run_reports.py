"""Runs that say what they did: ``--mode eval`` and ``--mode sample`` on trained tiny runs.

Protects: an evaluation that finds none of its checkpoints writes nothing and fails naming the
checkpoints on disk and the flags that choose them; ``--mode sample`` reproduces a training
snapshot's PNG byte for byte, takes ``--seed`` (the stream it names, the config's by default)
and says (log line and samples.json) which checkpoint, sampler and seed it used.
"""
import json
import logging
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import child_env
import loop_config
import score_sde
from score_sde import generate, sampling
from score_sde.common import errors, rng
from score_sde.evaluation import evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ eval
@pytest.mark.parametrize('wait', [0., 0.01])
def test_eval_that_finds_no_checkpoint_writes_nothing_and_names_those_on_disk(
    trained_smoke_run, wait):
  """The 4-step run holds periodic checkpoint 4 (snapshot_freq 4); an evaluation of snapshots
  2 to 3 of a longer run (steps 8 and 12; skipped at once, or after a wait) is a WorkdirError
  (a UserError: exit status 2) naming step 4 and the flags that choose it, and no eval folder
  is written."""
  config, workdir = trained_smoke_run
  config = config.copy_and_resolve_references()
  config.training.n_iters = 12
  config.eval.update(begin_ckpt=2, end_ckpt=3, batch_size=64, wait_for_checkpoint_secs=wait)
  with pytest.raises(errors.WorkdirError) as err:
    evaluate.evaluate(config, workdir, eval_folder='eval_nothing')
  message = str(err.value)
  assert 'steps [8, 12]' in message and 'holds steps [4]' in message, message
  assert '--config.eval.begin_ckpt=1 --config.eval.end_ckpt=1' in message, message
  assert not (pathlib.Path(workdir) / 'eval_nothing').exists()


def test_suggested_flags_use_the_runs_own_snapshot_grid(trained_smoke_run):
  """Evaluated with another snapshot_freq than the run's (5, on which step 4 is no snapshot),
  the fix also names the run's training.snapshot_freq and n_iters, read from its config.json;
  those flags select step 4."""
  config, workdir = trained_smoke_run
  config = config.copy_and_resolve_references()
  config.training.update(snapshot_freq=5, n_iters=10)
  message = str(evaluate.nothing_to_evaluate(config, workdir, [5, 10], [4]))
  flags = ('--config.eval.begin_ckpt=1 --config.eval.end_ckpt=1 '
           '--config.training.snapshot_freq=4 --config.training.n_iters=4')
  assert flags in message, message
  assert evaluate.checkpoint_steps(1, 1, 4, 4) == [4]


# ------------------------------------------------------------------------------ sample
@pytest.fixture(scope='module')
def snapshot_run(tmp_path_factory):
  """``(config, workdir)``: the loop tests' network trained 2 steps on 8 devices, writing the
  snapshot grid samples/step_2.png of 8 images (training.n_snapshot_samples)."""
  from score_sde.training import train
  config = loop_config.get_config(n_iters=2, snapshot_freq=2, snapshot_freq_for_preemption=2,
                                  snapshot_sampling=True, n_snapshot_samples=8)
  workdir = tmp_path_factory.mktemp('snapshot') / 'run'
  train.train_and_evaluate(config, str(workdir))
  assert (workdir / 'samples' / 'step_2.png').exists()
  return config, workdir


def test_sample_mode_reproduces_the_training_snapshot_byte_for_byte(snapshot_run):
  """main.py --mode sample with sampling.batch_size = training.n_snapshot_samples and the
  default seed writes samples.png equal, byte for byte, to the training snapshot of the step;
  its one summary line and samples.json name the checkpoint (step and path), the sampler
  (method, settings, score evaluations) and the seed (the config's)."""
  config, workdir = snapshot_run
  run = subprocess.run(
      [sys.executable, 'main.py', '--config', 'configs/smoke.py', '--workdir', str(workdir),
       '--mode', 'sample', '--config.sampling.batch_size=8'] + loop_config.main_overrides(),
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=child_env.xla_env(8))
  assert run.returncode == 0, run.stderr[-3000:]
  folder = workdir / 'generated' / 'step_2'
  assert (folder / 'samples.png').read_bytes() == (workdir / 'samples' / 'step_2.png').read_bytes()
  used = json.loads((folder / 'samples.json').read_text())
  checkpoint_dir = str(workdir / 'checkpoints' / '2')
  assert used['checkpoint'] == {'step': 2, 'path': checkpoint_dir}
  assert used['seed'] == config.seed and used['num_samples'] == 8
  assert used['sampler']['method'] == 'pc' and used['sampler']['num_steps'] == 10
  nfe = int(np.load(folder / 'samples.npz')['nfe'])
  assert used['sampler']['nfe'] == nfe > 0
  line = next(l for l in run.stderr.splitlines() if 'Sampled 8 images' in l)
  for part in (f'checkpoint step 2 ({checkpoint_dir})', f'seed {config.seed}', 'pc sampler',
               'predictor=reverse_diffusion', f'{nfe} score evaluations per image'):
    assert part in line, line


def test_seed_draws_its_own_stream_and_is_recorded(snapshot_run, caplog):
  """seed=7 draws with the key fold_in(stream_key(7, SAMPLE_STREAM), step) (the sampler called
  directly gives the same images), not the config's stream; the log line and samples.json say
  seed 7."""
  config, workdir = snapshot_run
  config = config.copy_and_resolve_references()
  config.sampling.batch_size = 8
  with caplog.at_level(logging.INFO):
    out = generate.generate(config, str(workdir), out_folder='seeded', num_samples=8, seed=7)
  pipe = score_sde.load(str(workdir), config=config)
  sampler = sampling.get_network_sampler(config, pipe.sde, pipe.model, pipe.mesh, 8)
  key = jax.random.fold_in(rng.stream_key(7, rng.SAMPLE_STREAM), 2)
  np.testing.assert_array_equal(out['images'], np.asarray(sampler(pipe.params, key)[0]))
  default_key = jax.random.fold_in(rng.stream_key(config.seed, rng.SAMPLE_STREAM), 2)
  assert not np.array_equal(out['images'], np.asarray(sampler(pipe.params, default_key)[0]))
  used = json.loads((workdir / 'seeded' / 'step_2' / 'samples.json').read_text())
  assert used['seed'] == out['record']['seed'] == 7
  assert any('Sampled 8 images' in r.getMessage() and 'seed 7 ' in r.getMessage()
             for r in caplog.records)
