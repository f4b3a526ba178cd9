"""``python main.py --config configs/<file>.py --workdir DIR [--mode MODE]``: the command line,
``score_sde.cli`` (its docstring lists the modes and flags)."""
from score_sde import cli

if __name__ == '__main__':
  cli.run()
