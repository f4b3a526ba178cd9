"""The command line around a run: ``--help``, config files that cannot be loaded, the persistent
compilation cache and the filter that keeps XLA's slow-compile alarm off stderr.

Protects: ``--help`` exits 0 with plain usage text, the flags and the config's fields with their
values; a config file with a syntax error, a failing import, an undefined name or a
``get_config`` that raises is one message naming the file, the line and the error (exit 2, no
traceback); a second process reads the programs the first compiled from the cache, and an
unusable cache directory is a one-line warning; the alarm's records (in XLA's exact format) are
dropped while every other byte on stderr reaches the terminal, in order, before the process ends.
"""
import pathlib
import subprocess
import sys
import textwrap

import child_env
from score_sde.common import compile_cache, stderr_filter

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _main(*args, **kwargs):
  return subprocess.run([sys.executable, str(ROOT / 'main.py'), *args], capture_output=True,
                        text=True, timeout=120, env=child_env.xla_env(1), **kwargs)


def test_help_is_plain_text_with_the_flags_and_the_config_fields(tmp_path):
  """``--help`` exits 0 from any directory and prints usage without reST markup, this command's
  flags, and one line per config field with its value: the defaults without ``--config``, the
  given file's values with it (smoke.py's batch size 8 against the default 128)."""
  default = _main('--help', cwd=tmp_path)
  smoke = _main('--config', 'configs/smoke.py', '--help', cwd=tmp_path)
  for run in default, smoke:
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("score_sde's command line") and '``' not in run.stdout
    assert 'Usage: score-sde --config CONFIG --workdir DIR' in run.stdout
    assert '--compilation_cache' in run.stdout and '--workdir' in run.stdout
    assert '\n  training:\n' in run.stdout and '\n  sampling:\n' in run.stdout
    assert all(len(line) <= 100 for line in run.stdout.splitlines())
  assert 'Config fields of configs/default.py' in default.stdout
  assert 'batch_size = 128' in default.stdout and 'batch_size = 8 ' not in default.stdout
  assert 'Config fields of configs/smoke.py' in smoke.stdout
  assert 'batch_size = 8 ' in smoke.stdout  # Its comment follows: 'Global batch over ...'.


_BAD_CONFIGS = {
    'syntax.py': ('from score_sde.configs import smoke\n\n\ndef get_config():\n'
                  '  config = smoke.get_config()\n  config.training.batch_size = = 8\n'
                  '  return config\n', 'line 6: SyntaxError: invalid syntax'),
    'imports.py': ('import ml_collections\nfrom score_sde.configs import no_such_config\n',
                   "line 2: ImportError: cannot import name 'no_such_config'"),
    'name.py': ('from score_sde.configs import smoke\n\n\ndef get_config():\n'
                '  config = smoke.get_config()\n  config.training.batch_size = batch\n'
                '  return config\n', "line 6: NameError: name 'batch' is not defined"),
    'raises.py': ('def get_config():\n  raise ValueError("pass a dataset: raises.py:cifar10")\n',
                  'line 2: ValueError: pass a dataset: raises.py:cifar10'),
}


def test_config_files_that_cannot_be_loaded_are_one_message_naming_file_line_and_error(
    tmp_path):
  """Each of a syntax error, a failing import, a NameError and a raising get_config: exit 2,
  'Error: --config <file>: line <n>: <error>' without a traceback, nothing written."""
  runs = []  # Started together: each is Python's start-up and the file.
  for name, (source, _) in _BAD_CONFIGS.items():
    (tmp_path / name).write_text(source)
    runs.append((name, subprocess.Popen(
        [sys.executable, str(ROOT / 'main.py'), '--config', name, '--workdir', 'run'],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env.xla_env(1))))
  for name, run in runs:
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2, stderr[-2000:]
    assert 'Traceback' not in stderr, stderr[-2000:]
    assert f'Error: --config {name}: {_BAD_CONFIGS[name][1]}' in stderr, stderr[-2000:]
  assert not (tmp_path / 'run').exists()


def test_cache_directory_is_the_flag_then_jax_variable_then_the_user_cache(monkeypatch):
  """``enable(None)`` follows ``$JAX_COMPILATION_CACHE_DIR``, else the XDG cache home, else
  ``~/.cache``, each under ``score_sde/jax`` where it is the user's."""
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/somewhere/jax')
  assert compile_cache.default_dir() == '/somewhere/jax'
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  monkeypatch.setenv('XDG_CACHE_HOME', '/xdg')
  assert compile_cache.default_dir() == '/xdg/score_sde/jax'
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', '/home/someone')
  assert compile_cache.default_dir() == '/home/someone/.cache/score_sde/jax'


_CACHED_PROCESS = textwrap.dedent('''
    import sys
    from score_sde.common import compile_cache
    import jax, jax.numpy as jnp
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event.endswith('/cache_hits') else None)
    assert compile_cache.enable('') is None  # --compilation_cache= : off.
    assert not jax.config.jax_enable_compilation_cache
    print(compile_cache.enable(sys.argv[1]))
    jax.jit(lambda x: jnp.tanh(x) @ x.T + 1.)(jnp.ones((4, 4))).block_until_ready()
    print(len(hits))
''')


def test_a_second_process_reads_the_programs_the_first_compiled(tmp_path):
  """Two processes compile the same programs into one cache directory: the first writes
  entries and reads none, the second reads them (cache hits) and writes nothing."""
  cache = tmp_path / 'cache'
  env = child_env.xla_env(1)
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'  # The program is tiny.
  runs = []
  for _ in range(2):
    run = subprocess.run([sys.executable, '-c', _CACHED_PROCESS, str(cache)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    runs.append((run.stdout.split(), sorted(p.name for p in cache.iterdir())))
  (first, first_files), (second, second_files) = runs
  assert first == [str(cache), '0'] and first_files
  assert second[0] == str(cache) and int(second[1]) >= 1 and second_files == first_files


def test_an_unwritable_cache_directory_is_one_warning_and_the_cache_off(tmp_path):
  """A cache directory that cannot be created (under a file) turns the cache off with one
  warning line naming the directory and the flag; the program still runs."""
  blocker = tmp_path / 'file'
  blocker.write_text('')
  script = textwrap.dedent('''
      import sys
      from score_sde.common import compile_cache
      import jax, jax.numpy as jnp
      assert compile_cache.enable(sys.argv[1]) is None
      assert not jax.config.jax_enable_compilation_cache
      print(float(jax.jit(lambda x: x * 2)(jnp.float32(1.5))))
  ''')
  run = subprocess.run([sys.executable, '-c', script, str(blocker / 'cache')], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=child_env.xla_env(1))
  assert run.returncode == 0 and run.stdout.strip() == '3.0', run.stderr[-2000:]
  warnings = [line for line in run.stderr.splitlines() if 'Compilation cache off' in line]
  assert len(warnings) == 1 and '--compilation_cache=DIR' in warnings[0], run.stderr


# XLA's alarm as jaxlib writes it to stderr: when a compilation passes two minutes, and again
# with its duration when it ends (slow_operation_alarm.cc).
_ALARM = (
    'E1207 05:15:54.103941   15609 slow_operation_alarm.cc:73] \n'
    '********************************\n'
    '[Compiling module jit_f for CPU] Very slow compile? If you want to file a bug, run with '
    'envvar XLA_FLAGS=--xla_dump_to=/tmp/foo and attach the results.\n'
    '********************************\n')
_ALARM_ENDED = (
    'E1207 05:18:45.219998   15607 slow_operation_alarm.cc:140] The operation took '
    '4m51.117459561s\n\n' + _ALARM.split('\n', 1)[1])
# Another alarm of the same file, which is not about compile time: kept.
_OTHER_ALARM = (
    'E1207 05:20:00.000001   15607 slow_operation_alarm.cc:73] \n'
    '********************************\n'
    'Constant folding an instruction is taking > 1s: %x = f32[1000]{0} add(...)\n'
    '********************************\n')


def test_the_alarm_filter_drops_only_the_slow_compile_records():
  """Fed in pieces (a record split across reads, a progress line without newline), the filter
  drops both slow-compile records and keeps everything else byte for byte, in order."""
  kept = ('Compiling the train step...\n', 'E1207 05:16:00.5 15607 pjrt.cc:12] a real error\n',
          _OTHER_ALARM, 'step 10, loss 0.3\r')
  stream = (kept[0] + _ALARM + kept[1] + _ALARM_ENDED + kept[2] + kept[3]).encode()
  alarm_filter = stderr_filter.AlarmFilter()
  out = b''
  for start in range(0, len(stream), 97):
    out += alarm_filter.feed(stream[start:start + 97])
  out += alarm_filter.flush()
  assert out.decode() == ''.join(kept)


def test_the_installed_filter_keeps_the_alarm_off_the_terminal_and_the_rest_on_it(tmp_path):
  """A process that installed the filter writes the alarm and other lines to fd 2, as XLA's C++
  does: its stderr holds every other line, in order, by the time it has exited, and no
  alarm; where the user asked for XLA's diagnostics (TF_CPP_MIN_LOG_LEVEL=0) the alarm stays."""
  script = textwrap.dedent(f'''
      import os, sys
      from score_sde.common import stderr_filter
      print(stderr_filter.install())
      os.write(2, b'before\\n' + {_ALARM.encode()!r})
      sys.stderr.write('python line\\n')
      os.write(2, {_ALARM_ENDED.encode()!r} + b'last line\\n')
      sys.exit(3)
  ''')
  run = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=child_env.xla_env(1))
  assert run.returncode == 3 and run.stdout == 'True\n', run.stderr
  assert run.stderr == 'before\npython line\nlast line\n'
  env = dict(child_env.xla_env(1), TF_CPP_MIN_LOG_LEVEL='0')
  run = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=env)
  assert run.stdout == 'False\n' and 'Very slow compile?' in run.stderr
