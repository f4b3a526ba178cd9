"""The official files of CIFAR10, SVHN, CELEBA and LSUN: addresses, sizes, SHA-256, fetching.

``python -m score_sde.data.download`` (``data.download``) calls ``download``; the dataset readers
name that command (``command``) when a file is missing. Each file comes from its publisher's
address and is checked against its known size and SHA-256 before it gets its name: the bytes go
to a hidden temporary file in ``data_dir``, renamed only once both match, so an interrupted or
corrupted download never leaves a file that a run would read. A file already there with the
right checksum is kept. LSUN's zip files are extracted (LMDB reads its files from disk) into
``<category>_<split>_lmdb/``, through a temporary folder renamed at the end; the zip is then
removed. The checksums are those of the tensorflow-datasets and Keras catalogues of the same
files (CIFAR-10's archive: MD5 ``c58f30108f718f92721af3b95e74349a`` on its web page).

CelebA is served from Google Drive, which sometimes refuses large downloads for a day ('quota
exceeded'); ``fetch`` then stops with the page to fetch both files from by hand.
"""
import dataclasses
import hashlib
import os
import pathlib
import shlex
import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
from typing import Callable, Optional, Tuple

from score_sde.common import errors

_CHUNK = 1 << 20
_PROGRESS_SECS = 10.
_DRIVE = 'https://drive.usercontent.google.com/download?id={}&export=download&confirm=t'
_LSUN = 'http://dl.yf.io/lsun/scenes/{}_{}_lmdb.zip'
CELEBA_PAGE = 'https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html'


class DownloadError(errors.DataError):
  """A file could not be fetched, or what arrived is not the published file."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One published file: its name in ``data_dir``, address, size in bytes and SHA-256."""
  name: str
  url: str
  size: int
  sha256: str
  extract: bool = False  # A zip to unpack in data_dir (LSUN's LMDB folders).

  @property
  def extracted(self) -> str:
    """The folder the zip unpacks to (its name without ``.zip``)."""
    return self.name[:-len('.zip')]


FILES = {
    'CIFAR10': (
        RemoteFile('cifar-10-python.tar.gz',
                   'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz', 170498071,
                   '6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce'),),
    'SVHN': (
        RemoteFile('train_32x32.mat', 'http://ufldl.stanford.edu/housenumbers/train_32x32.mat',
                   182040794, '435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8'),
        RemoteFile('test_32x32.mat', 'http://ufldl.stanford.edu/housenumbers/test_32x32.mat',
                   64275384, 'cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b')),
    'CELEBA': (
        RemoteFile('img_align_celeba.zip', _DRIVE.format('0B7EVK8r0v71pZjFTYXZWM3FlRnM'),
                   1443490838, '46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74'),
        RemoteFile('list_eval_partition.txt', _DRIVE.format('0B7EVK8r0v71pY0NSMzRuSXJEVkk'),
                   2836386, 'fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7')),
}

# LSUN scenes: category -> (size, SHA-256) of <category>_train_lmdb.zip and of _val_lmdb.zip.
LSUN_SCENES = {
    'bedroom': ((45922737680, 'a15644c2e7153106867f0adb3491fc41224102d1f01b24494fb47d9f5d1f174e'),
                (4670661, '5d022e781b241c25ec2e1f1f769afcdb8091d7fd58362667aec03137b8114b12')),
    'bridge': ((16478644518, '2701b2d421bbc4d8a5e9b0652ff7c3b57cd6495da8e0e85c39533275b5a925a3'),
               (6176834, '83216a2974d6068c2e1d18086006e7380ff58540216f955ce87fe049b460cb0d')),
    'church_outdoor': (
        (2448463466, '91128ae026840ac0c5982b4445ab5fc4e092d6847cca76793b2b1a0815c2e74a'),
        (5957308, '34635b7547a3e51a15f942a4a4082dd6bc9cca381a953515cb2275c0eed50584')),
    'classroom': ((3279497022, '73a8a3e318819e1cc602f229673c3f51a68f3ece61e3764ce22df6abea4d0873'),
                  (5880261, '5e0e9a375d94091dfe1fa3be87d4a92f41c03f1c0b8e376acc7e05651de512d7')),
    'conference_room': (
        (4048461633, 'fa0a4cf72e7acfb103392eaf33640d5508a728e971f31877b01d64e1bde6068c'),
        (5316084, '927c94df52e10b9b374748c2b83b28b5860e946b3186dfd587985e274834650f')),
    'dining_room': (
        (11592966936, 'e4ee24c7c309360c3bf019123ce5bbf17434b2ba33abec2b0b07cfae715a52cb'),
        (5301030, 'bd604d4b91bb5a9611d4e0b85475efd20758390d1a4eb57b53973fcbb5aa8ab6')),
    'kitchen': ((35791384987, 'b1993cf639aece5d207a27eb9ff872bcca9dff6472d8227a052c79d40ee753c4'),
                (4867891, '329165f35ec61c4cf49f809246de300b8baad3ffcbda1ac30c27bdd32c84369a')),
    'living_room': (
        (22792405188, 'bd2c52b812c80f73ce3062a221396d13a52b5cce2f813b4cdf61937651281d7a'),
        (5167755, '30a23d9a3db5414e9c97865f60ffb2ee973bfa658a23dbca7188ea514c97c9fc')),
    'restaurant': (
        (13489345463, '11a0a924b960cd0900e9b7477d684fb338bd99cc5f72db1caac592e4f497e09a'),
        (6232385, 'efaa7bcb898ad6cb73b07b89fec3a9c670f4622912eea22fab3986c2cf9a1c20')),
    'tower': ((12010237081, '440caec74c9641cb51fd235a5970c8e4931c3af875aeb044a8bcca956e106309'),
              (5223709, '7f5257847bc01f4e40d4a1b3e24dd8fcd37063f12ca8cf31e726c2ee0b1ae104')),
}


def lsun_files(category: str) -> Tuple[RemoteFile, RemoteFile]:
  """The train and val LMDB zips of an LSUN scene category; ``ConfigError`` for another name."""
  if category not in LSUN_SCENES:
    raise errors.ConfigError(
        f'LSUN category {category!r} is not one of the scene categories '
        f'{", ".join(sorted(LSUN_SCENES))}; choose one (data.category, or --category of the '
        'download command).')
  return tuple(RemoteFile(f'{category}_{split}_lmdb.zip', _LSUN.format(category, split), size,
                          digest, extract=True)
               for split, (size, digest) in zip(('train', 'val'), LSUN_SCENES[category]))


def files_for(dataset: str, category: str = '') -> Tuple[RemoteFile, ...]:
  """The published files of ``dataset`` (a ``data.dataset`` name, any case)."""
  dataset = dataset.upper()
  if dataset == 'LSUN':
    return lsun_files(category)
  if dataset not in FILES:
    raise errors.ConfigError(f'No download is known for dataset {dataset!r}; known: '
                             f'{", ".join(sorted(FILES) + ["LSUN"])}.')
  return FILES[dataset]


def command(dataset: str, data_dir: str, category: str = '') -> str:
  """The shell command that downloads ``dataset`` into ``data_dir``."""
  flag = f' --category {category}' if dataset.upper() == 'LSUN' else ''
  return (f'python -m score_sde.data.download {dataset.lower()}{flag} '
          f'--data_dir {shlex.quote(data_dir) if data_dir else "DIR"}')


def sha256_of(path: os.PathLike) -> str:
  """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_CHUNK), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _stream(response, out, remote: RemoteFile, say: Callable[[str], None]) -> str:
  """Copies ``response`` to ``out``; the SHA-256 of what arrived. Stops past the expected size."""
  digest, done, last = hashlib.sha256(), 0, time.monotonic()
  while chunk := response.read(_CHUNK):
    done += len(chunk)
    if done > remote.size:
      raise DownloadError(f'{remote.url} sent more than the {remote.size} bytes of '
                          f'{remote.name}; it is not the published file.')
    digest.update(chunk)
    out.write(chunk)
    if time.monotonic() - last > _PROGRESS_SECS:
      last = time.monotonic()
      say(f'  {remote.name}: {done / 2**20:,.0f} of {remote.size / 2**20:,.0f} MiB')
  if done != remote.size:
    raise DownloadError(f'{remote.url} sent {done} bytes, but {remote.name} has {remote.size}; '
                        'the transfer was cut. Run the command again.')
  return digest.hexdigest()


def fetch(remote: RemoteFile, data_dir: os.PathLike, *, url: Optional[str] = None,
          say: Callable[[str], None] = _say) -> pathlib.Path:
  """Downloads ``remote`` into ``data_dir`` unless a file with its checksum is there.

  Args:
    remote: the file to fetch.
    data_dir: the folder it goes to (created if missing).
    url: where to read it from instead of ``remote.url`` (a mirror, or a ``file://`` URL).
    say: where progress lines go.
  Returns:
    The path of the verified file.
  Raises:
    DownloadError: the transfer failed, was cut, or its size or SHA-256 is not the published
      one; nothing is left under ``remote.name``.
  """
  root = pathlib.Path(data_dir).expanduser()
  root.mkdir(parents=True, exist_ok=True)
  path = root / remote.name
  if path.is_file() and path.stat().st_size == remote.size and sha256_of(path) == remote.sha256:
    say(f'{path}: present, checksum verified.')
    return path
  url = url or remote.url
  say(f'Downloading {url} ({remote.size / 2**20:,.1f} MiB) to {path}')
  fd, tmp = tempfile.mkstemp(dir=root, prefix=f'.{remote.name}.', suffix='.part')
  try:
    with os.fdopen(fd, 'wb') as out:
      try:
        request = urllib.request.Request(url, headers={'User-Agent': 'score_sde'})
        with urllib.request.urlopen(request, timeout=60) as response:
          kind = response.headers.get('Content-Type', '') if response.headers else ''
          if kind.startswith('text/html') and not remote.name.endswith('.html'):
            raise DownloadError(
                f'{url} answered with a web page instead of {remote.name} (a download quota or '
                f'a moved file). Fetch it by hand from {CELEBA_PAGE if "google" in url else url} '
                f'into {root} and run the command again to verify it.')
          got = _stream(response, out, remote, say)
      except OSError as e:  # URLError, timeouts, resets.
        raise DownloadError(f'Could not download {url}: {e}. Check the connection and run the '
                            'command again.') from e
      out.flush()
      os.fsync(out.fileno())
    if got != remote.sha256:
      raise DownloadError(f'{url} gave a file with SHA-256 {got}, not the published '
                          f'{remote.sha256} of {remote.name}; nothing was saved. Run the command '
                          'again, or fetch the file from another mirror.')
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  say(f'{path}: checksum verified.')
  return path


def extract(zip_path: pathlib.Path, say: Callable[[str], None] = _say) -> pathlib.Path:
  """Unpacks ``<name>.zip`` (holding the folder ``<name>/``) next to itself, then removes it.

  Every member must lie inside ``<name>/`` (no absolute paths, no ``..``); the files go to a
  hidden temporary folder renamed to ``<name>`` at the end.
  """
  name = zip_path.name[:-len('.zip')]
  target = zip_path.parent / name
  tmp = pathlib.Path(tempfile.mkdtemp(dir=zip_path.parent, prefix=f'.{name}.', suffix='.part'))
  try:
    with zipfile.ZipFile(zip_path) as archive:
      for member in archive.namelist():
        parts = pathlib.PurePosixPath(member).parts
        if member.startswith('/') or '..' in parts or not parts or parts[0] != name:
          raise DownloadError(f'{zip_path} holds {member!r}, outside {name}/; not extracted.')
      say(f'Extracting {zip_path} to {target}')
      archive.extractall(tmp)
    os.replace(tmp / name, target)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  zip_path.unlink()
  return target


def download(dataset: str, data_dir: os.PathLike, category: str = '',
             say: Callable[[str], None] = _say) -> None:
  """Fetches and verifies every file of ``dataset`` into ``data_dir`` (module docstring)."""
  for remote in files_for(dataset, category):
    root = pathlib.Path(data_dir).expanduser()
    if remote.extract and (root / remote.extracted).is_dir():
      say(f'{root / remote.extracted}: present.')
      continue
    path = fetch(remote, root, say=say)
    if remote.extract:
      extract(path, say)
