"""``python -m score_sde.data.download DATASET --data_dir DIR [--category C]``: fetches a
dataset's official files into ``DIR``, checking their size and SHA-256 (``data.remote``).

    python -m score_sde.data.download cifar10 --data_dir ~/data
    python -m score_sde.data.download svhn --data_dir ~/data
    python -m score_sde.data.download celeba --data_dir ~/data
    python -m score_sde.data.download lsun --category church_outdoor --data_dir ~/data

then train with ``--config.data.data_dir=DIR``. A problem (no connection, a checksum that does
not match, a download refused) prints one message and exits with status 2. The package does not
import this module, so that ``python -m`` runs it once.
"""
import argparse
import sys
from typing import Optional, Sequence

from score_sde.common import errors
from score_sde.data import remote


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Parses ``argv`` (default ``sys.argv[1:]``), downloads; the exit status."""
  parser = argparse.ArgumentParser(
      prog='python -m score_sde.data.download',
      description='Download a dataset\'s official files into a folder, checking their SHA-256; '
                  'then train with --config.data.data_dir=DIR.')
  parser.add_argument('dataset', choices=sorted(name.lower() for name in [*remote.FILES, 'LSUN']))
  parser.add_argument('--data_dir', required=True, help='folder to put the files in')
  parser.add_argument('--category', default='',
                      help=f'LSUN scene: {", ".join(sorted(remote.LSUN_SCENES))}')
  args = parser.parse_args(argv)
  try:
    remote.download(args.dataset, args.data_dir, args.category)
  except errors.UserError as e:
    print(f'Error: {e}', file=sys.stderr, flush=True)
    return 2
  category = f' --config.data.category={args.category}' if args.category else ''
  print(f'Done: --config.data.dataset={args.dataset.upper()} '
        f'--config.data.data_dir={args.data_dir}{category}', file=sys.stderr, flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
