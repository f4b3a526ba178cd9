"""The wheel that ``pip install .`` builds: what it holds, and that it runs outside the checkout.

Protects: ``pyproject.toml`` builds (offline, without build isolation) a wheel with every module
and config of the package and none of the tests, benchmarks or notebooks; installed on its own
into a folder, its ``score-sde`` command answers ``--help`` and trains a tiny run from a
directory that is not the checkout, reading ``--config configs/smoke.py`` from the installed
package and importing nothing from the checkout.
"""
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import child_env
import loop_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """``(wheel, site)``: the wheel built from a copy of the checkout's package (so that no
  build/ folder is left in the checkout, nor read from it), and the folder it is installed in."""
  tmp = tmp_path_factory.mktemp('packaging')
  source = tmp / 'source'
  source.mkdir()
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(ROOT / name, source / name)
  shutil.copytree(ROOT / 'score_sde', source / 'score_sde',
                  ignore=shutil.ignore_patterns('__pycache__'))
  pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check']
  subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q',
                        '-w', str(tmp / 'dist'), str(source)],
                 check=True, capture_output=True, timeout=300)
  wheel, = (tmp / 'dist').glob('score_sde-*.whl')
  site = tmp / 'site'
  subprocess.run(pip + ['install', '--no-deps', '--no-index', '-q', '--target', str(site),
                        str(wheel)], check=True, capture_output=True, timeout=300)
  return wheel, site


def test_the_wheel_holds_the_package_and_its_configs_and_no_tests(installed):
  """Every module of score_sde/ (configs included, vp/ve/subvp experiments too) is in the wheel,
  with the ``score-sde`` entry point; nothing from tests/, benchmarks/ or notebooks/ is."""
  wheel, _ = installed
  names = zipfile.ZipFile(wheel).namelist()
  package = {str(p.relative_to(ROOT)) for p in (ROOT / 'score_sde').rglob('*.py')}
  assert package <= set(names), sorted(package - set(names))
  assert {'score_sde/configs/embedded.py', 'score_sde/configs/smoke.py',
          'score_sde/configs/vp/cifar10_ddpmpp_continuous.py'} <= set(names)
  assert all(n.startswith(('score_sde/', 'score_sde-')) for n in names), names
  entry_points, = (n for n in names if n.endswith('.dist-info/entry_points.txt'))
  assert 'score-sde = score_sde.cli:run' in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_command_runs_outside_the_checkout(installed, tmp_path):
  """From a directory outside the checkout, with only the installed folder on the path: the
  package is imported from there, ``score-sde --help`` exits 0, and ``score-sde --config
  configs/smoke.py`` (the packaged file) trains two steps and writes their checkpoint."""
  _, site = installed
  env = child_env.xla_env(1)
  env['PYTHONPATH'] = str(site)
  command = [str(site / 'bin' / 'score-sde')]
  where = subprocess.run([sys.executable, '-c', 'import score_sde; print(score_sde.__file__)'],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  assert pathlib.Path(where.stdout.strip()).is_relative_to(site), where
  helped = subprocess.run(command + ['--help'], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
  assert helped.returncode == 0 and 'Config fields of configs/default.py' in helped.stdout
  trained = subprocess.run(
      command + ['--config', 'configs/smoke.py', '--workdir', 'run',
                 '--config.training.n_iters=2'] + loop_config.main_overrides(),
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert not os.path.exists(ROOT / 'run')
  assert (tmp_path / 'run' / 'config.json').exists()
  assert any((tmp_path / 'run').glob('checkpoints*/2')), list((tmp_path / 'run').rglob('*'))
