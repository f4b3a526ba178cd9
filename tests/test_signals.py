"""SIGTERM (a cluster's preemption notice) in every mode of ``main.py``, in child processes.

Protects: each mode stops on SIGTERM with status 143 and one message saying what was kept and how
to go on, without a traceback, and without running to its next slow stretch first: training
while it compiles its first step (where Python's own handler cannot run until XLA returns),
sampling before its first round is done, evaluation while it waits for a checkpoint, keeping the
results it finished, which its next run does not compute again. (Training's SIGTERM after its
first step, which saves that step, is test_recovery.py's; the hosts of a multi-host run stopping
together, test_multihost.py's.)
"""
import json
import logging
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import child_env
import loop_config
from score_sde.evaluation import evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]
STOPPED = 128 + signal.SIGTERM
TIMEOUT_S = 300


class _Run:
  """``main.py`` with ``args`` on ``devices`` fake CPU devices, its stderr read as it comes."""

  def __init__(self, args, devices=8):
    self.process = subprocess.Popen(
        [sys.executable, 'main.py', '--config', 'configs/smoke.py'] + args +
        loop_config.main_overrides(), cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env=child_env.xla_env(devices))
    self.lines, self._changed = [], threading.Condition()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.process.stderr:
      with self._changed:
        self.lines.append(line)
        self._changed.notify_all()

  def stderr(self) -> str:
    with self._changed:
      return ''.join(self.lines)

  def terminate_at(self, text: str) -> float:
    """Sends SIGTERM once a line holds ``text``; returns the seconds to the process's exit."""
    with self._changed:
      said = self._changed.wait_for(
          lambda: any(text in line for line in self.lines) or self.process.poll() is not None,
          timeout=TIMEOUT_S)
    assert said and self.process.poll() is None, f'never said {text!r}:\n{self.stderr()[-3000:]}'
    self.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    self.process.wait(timeout=TIMEOUT_S)
    return time.monotonic() - sent

  def finish(self) -> str:
    self.process.wait(timeout=TIMEOUT_S)
    time.sleep(0.5)  # The reader's last lines.
    return self.stderr()


def _copy(trained_smoke_run, tmp_path) -> pathlib.Path:
  """The shared trained run, without what other tests sampled from it into generated/."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained_smoke_run[1], workdir, ignore=shutil.ignore_patterns('generated'))
  return workdir


def _assert_stopped(run: _Run, message: str) -> str:
  stderr = run.finish()
  assert run.process.returncode == STOPPED, stderr[-3000:]
  assert message in stderr and stderr.count('Stopped on request') == 1, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  return stderr


def test_sigterm_while_training_compiles_exits_at_once(tmp_path):
  """SIGTERM once training announces the compilation of its train step (the persistent cache
  off, so XLA compiles for seconds to minutes): status 143 and the message that nothing needed
  saving, before the compilation's end is ever logged."""
  run = _Run(['--workdir', str(tmp_path / 'run'), '--compilation_cache='], devices=1)
  seconds = run.terminate_at('Compiling the train step...')
  stderr = _assert_stopped(run, 'before the first training step')
  assert 'Compiled the train step' not in stderr, stderr[-3000:]
  print(f'exited {seconds:.2f} s after SIGTERM')


def test_sigterm_while_sampling_exits_before_the_first_round(trained_smoke_run, tmp_path):
  """SIGTERM once --mode sample has loaded the run and starts its 20 rounds (its sampler
  compiling cold): status 143, the message that nothing was written, no round finished, and
  nothing under generated/."""
  workdir = _copy(trained_smoke_run, tmp_path)
  run = _Run(['--workdir', str(workdir), '--mode', 'sample', '--num_samples', str(64 * 20),
              '--compilation_cache='])
  seconds = run.terminate_at('Sampling 1280 images')
  stderr = _assert_stopped(run, 'before the samples were written')
  assert 'Sample round 1 done' not in stderr, stderr[-3000:]
  assert not (workdir / 'generated').exists() or not any((workdir / 'generated').rglob('*.*'))
  print(f'exited {seconds:.2f} s after SIGTERM')


def test_sigterm_during_eval_keeps_what_it_finished(trained_smoke_run, tmp_path, monkeypatch,
                                                   caplog):
  """--mode eval of checkpoints 4 (on disk) and 8 (not yet: it waits up to 600 s): SIGTERM while
  it waits gives status 143 and the message that finished work is kept; the report holds step
  4's loss, and the next evaluation says step 4 is evaluated and computes nothing again."""
  workdir = _copy(trained_smoke_run, tmp_path)
  args = ['--workdir', str(workdir), '--mode', 'eval', '--config.training.n_iters=8']
  run = _Run(args + ['--config.eval.wait_for_checkpoint_secs=600'])
  seconds = run.terminate_at('Waiting for checkpoint 8')
  _assert_stopped(run, 'The evaluation keeps what it finished')
  rows = {row['step']: row for row in json.loads((workdir / 'eval' / 'report.json').read_text())}
  assert rows[4]['loss'] is not None and rows.get(8, {}).get('loss') is None
  print(f'exited {seconds:.2f} s after SIGTERM')

  # The next run, of checkpoint 4 alone, in this process (what it finds matters, not its flags).
  evaluate_loss = evaluate.make_loss_evaluator
  with monkeypatch.context() as patch, caplog.at_level(logging.INFO):
    patch.setattr(evaluate, 'make_loss_evaluator', lambda *a: pytest.fail('loss computed again'))
    result = evaluate.evaluate(loop_config.get_config(n_iters=4), str(workdir))
  assert evaluate.make_loss_evaluator is evaluate_loss
  assert [row['loss'] for row in result.rows] == [rows[4]['loss']]
  assert any('step 4: already evaluated' in r.getMessage() for r in caplog.records)
