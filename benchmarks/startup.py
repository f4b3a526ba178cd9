"""Launch to first step, cold and warm: what the persistent compilation cache saves each mode.

    python benchmarks/startup.py                      # configs/embedded.py, every mode
    python benchmarks/startup.py --modes train,resume --keep /tmp/startup

Each mode is launched as a user launches it (``python main.py ...`` in a fresh process) and
timed from the launch to the log line that follows its first unit of work:

=========  ==================================================  ==============================
mode       what is launched                                    the line it waits for
=========  ==================================================  ==============================
train      a new run (empty workdir) with n_iters=1            ``step 1, training loss``
resume     the same command on a run holding step 1, n_iters=2 ``step 2, training loss``
eval       ``--mode eval`` on that step-1 checkpoint (loss)    ``step 1: loss in``
sample     ``--mode sample`` on it (one round of the sampler)  ``Sample round 1 done``
=========  ==================================================  ==============================

Cold: an empty compilation cache (``--compilation_cache=<new dir>``): every program compiles.
Warm: the same command again with the cache that its cold launch filled, on a fresh copy of
the same workdir (a new empty one for train). Each mode has a cache of its own, so a cold
resume does not profit from the train launch before it. Both include Python's and JAX's
imports, the data check and the state's initialisation or restore; the operating system's file
cache is warm for both (the cold launches are not the machine's first).

The runs use ``--config.training.snapshot_freq=1`` (step 1 is a kept checkpoint, what eval and
sample read) and no snapshot sampling; the rest is ``--config`` as given, plus ``--overrides``.
The table gives the seconds to the line, cold and warm, the time saved, and the cache entries
and megabytes each cold launch wrote. A launch that fails prints its last lines and stops.
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# mode -> (main.py flags beyond --config / --workdir, the log line of its first step).
MODES = {
    'train': (['--config.training.n_iters=1'], 'step 1, training loss'),
    'resume': (['--config.training.n_iters=2'], 'step 2, training loss'),
    'eval': (['--mode', 'eval', '--config.eval.begin_ckpt=1', '--config.eval.end_ckpt=1',
              '--config.eval.enable_loss=True', '--config.eval.enable_bpd=False',
              '--config.eval.enable_sampling=False'], 'step 1: loss in'),
    'sample': (['--mode', 'sample'], 'Sample round 1 done'),
}
COMMON = ['--config.training.snapshot_freq=1', '--config.training.snapshot_sampling=False',
          '--config.training.log_freq=1']


def launch(args, workdir, cache, wait_for, timeout):
  """Seconds from launching ``main.py args`` to the stderr line containing ``wait_for``; the
  process is then run to its end, which must be a success."""
  command = [sys.executable, str(ROOT / 'main.py'), '--workdir', str(workdir),
             f'--compilation_cache={cache}'] + args
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  reached, tail = None, []
  for line in process.stderr:
    if reached is None and wait_for in line:
      reached = time.perf_counter() - start
    tail = (tail + [line])[-15:]
  process.wait(timeout=timeout)
  if process.returncode != 0 or reached is None:
    sys.exit(f'{" ".join(command)}\nexited with {process.returncode} before "{wait_for}":\n' +
             ''.join(tail))
  return reached


def cache_size(cache):
  files = [p for p in pathlib.Path(cache).rglob('*') if p.is_file()]
  return len(files), sum(p.stat().st_size for p in files) / 2**20


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/embedded.py')
  parser.add_argument('--modes', default=','.join(MODES),
                      help='comma-separated, from: ' + ', '.join(MODES) + ' (resume, eval and '
                      'sample need a step-1 run, which train makes, so train always runs)')
  parser.add_argument('--overrides', default='', help='extra main.py flags, space-separated, '
                      'e.g. "--config.model.nf=8"')
  parser.add_argument('--keep', default=None, help='folder for the workdirs and caches, kept '
                      'afterwards (default: a temporary one, removed)')
  parser.add_argument('--timeout', type=float, default=3600., help='seconds per launch')
  flags = parser.parse_args()
  modes = ['train'] + [m for m in flags.modes.split(',') if m and m != 'train']
  unknown = set(modes) - set(MODES)
  if unknown:
    parser.error(f'unknown modes {sorted(unknown)}; use some of {list(MODES)}')
  base_args = ['--config', flags.config] + COMMON + flags.overrides.split()
  work = pathlib.Path(flags.keep or tempfile.mkdtemp(prefix='startup_'))
  work.mkdir(parents=True, exist_ok=True)
  rows = []
  try:
    step1 = work / 'step1'  # The run that resume, eval and sample start from.
    for mode in modes:
      args, wait_for = MODES[mode]
      cache = work / f'cache_{mode}'
      shutil.rmtree(cache, ignore_errors=True)
      cache.mkdir()
      times = []
      for temperature in ('cold', 'warm'):
        workdir = work / f'{mode}_{temperature}'
        shutil.rmtree(workdir, ignore_errors=True)
        if mode != 'train':
          shutil.copytree(step1, workdir)
        times.append(launch(base_args + args, workdir, cache, wait_for, flags.timeout))
        if temperature == 'cold':
          entries, megabytes = cache_size(cache)
        print(f'{mode:<7} {temperature}: {times[-1]:.1f} s', flush=True)
      if mode == 'train':
        shutil.rmtree(step1, ignore_errors=True)
        shutil.copytree(work / 'train_warm', step1)
      rows.append((mode, wait_for, *times, entries, megabytes))
  finally:
    if flags.keep is None:
      shutil.rmtree(work, ignore_errors=True)

  print(f'\nLaunch to first step, {flags.config} {flags.overrides}'.rstrip() +
        f' ({os.cpu_count()} CPU cores; JAX_PLATFORMS={os.environ.get("JAX_PLATFORMS", "")!r})')
  print('| mode | waits for | cold (s) | warm (s) | saved (s) | cache entries | cache MB |')
  print('|---|---|---|---|---|---|---|')
  for mode, wait_for, cold, warm, entries, megabytes in rows:
    print(f'| {mode} | `{wait_for}` | {cold:.1f} | {warm:.1f} | {cold - warm:.1f} | {entries} | '
          f'{megabytes:.1f} |')


if __name__ == '__main__':
  main()
