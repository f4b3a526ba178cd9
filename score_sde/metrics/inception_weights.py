"""Weights of the FID Inception network: our .npz format, the pytorch-fid converter, the cache.

Our canonical file is an .npz of the flattened ``params`` tree of ``inception.FIDInceptionV3``
(keys like ``Mixed_6b/branch7x7_2/kernel``). It is made once from pytorch-fid's port of the TF
2015-12-05 graph, a torch state dict, which needs torch for reading only:

    python -m score_sde.metrics.inception_weights --from-pytorch-fid pt_inception.pth \
        --out inception_fid.npz
    python -m score_sde.metrics.inception_weights --download   # fetch + convert into the cache

Conversion, per torch ``BasicConv2d`` ``P`` (conv without bias, BatchNorm eps 1e-3):
``P/kernel = P.conv.weight`` transposed OIHW -> HWIO; ``P/scale = gamma / sqrt(var + eps)``;
``P/bias = beta - mean * scale``. ``fc/kernel = fc.weight.T``, ``fc/bias = fc.bias``.
Nothing here ever falls back to random weights.
"""
import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
from flax import traverse_util

from score_sde.common import errors
from score_sde.metrics import inception

PYTORCH_FID_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   'pt_inception-2015-12-05-6726825d.pth')
PYTORCH_FID_SHA256_PREFIX = '6726825d'  # torch.hub convention: the file name carries it.
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'score_sde')
CACHE_NAME = 'inception_fid.npz'

_BN_SUFFIXES = ('bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var')


def _how_to_get_weights() -> str:
  cached = os.path.join(DEFAULT_CACHE_DIR, CACHE_NAME)
  return (
      'FID/KID/IS need the FID Inception-v3 weights (TF 2015-12-05 graph). Either\n'
      '  (1) online, with torch installed: python -m score_sde.metrics.inception_weights '
      f'--download   (writes {cached}), or\n'
      f'  (2) download {PYTORCH_FID_URL}, then (torch needed once) python -m '
      'score_sde.metrics.inception_weights --from-pytorch-fid PATH.pth --out inception_fid.npz\n'
      'and set --config.eval.inception_path=/path/to/inception_fid.npz (or leave it empty to use '
      f'{cached}).')


def flatten_params(params) -> Dict[str, np.ndarray]:
  """Nested params -> {'Mixed_5b/branch1x1/kernel': array, ...} of numpy arrays."""
  flat = traverse_util.flatten_dict(params, sep='/')
  return {k: np.asarray(v) for k, v in flat.items()}


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict:
  return traverse_util.unflatten_dict(dict(flat), sep='/')


def flatten_params_shapes() -> Dict[str, object]:
  """Flattened ``inception.param_shapes()``: name -> ShapeDtypeStruct."""
  return traverse_util.flatten_dict(inception.param_shapes(), sep='/')


def validate_params(params) -> None:
  """Checks a tree has exactly the network's parameter names and shapes.

  Raises:
    ValueError: listing missing, unexpected and mis-shaped entries.
  """
  want = {k: tuple(v.shape) for k, v in flatten_params_shapes().items()}
  have = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(params, sep='/').items()}
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  shapes = sorted(f'{k}: {have[k]} (want {want[k]})'
                  for k in set(want) & set(have) if have[k] != want[k])
  if missing or unexpected or shapes:
    def show(items):
      return ', '.join(items[:5]) + (f' and {len(items) - 5} more' if len(items) > 5 else '')
    raise ValueError(
        'Not FID Inception parameters: '
        f'{len(missing)} missing [{show(missing)}]; {len(unexpected)} unexpected '
        f'[{show(unexpected)}]; {len(shapes)} mis-shaped [{show(shapes)}].\n'
        + _how_to_get_weights())


def save_params(path: str, params) -> None:
  """Writes our canonical .npz (float32), atomically (temporary name, then rename)."""
  validate_params(params)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=directory, suffix='.npz', delete=False) as f:
    np.savez(f, **{k: v.astype(np.float32) for k, v in flatten_params(params).items()})
  os.replace(f.name, path)


def load_params_npz(path: str) -> dict:
  with np.load(path) as data:
    params = unflatten_params({k: data[k] for k in data.files})
  validate_params(params)
  return params


def convert_pytorch_fid_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
  """pytorch-fid's Inception state dict (numpy arrays) -> our ``params`` tree (float32).

  Args:
    state_dict: torch key -> array, e.g. ``Mixed_5b.branch1x1.conv.weight`` (64, 192, 1, 1).
      ``*.num_batches_tracked`` entries are ignored.
  Returns:
    Nested dict matching ``inception.param_shapes()``.
  Raises:
    ValueError: on keys that belong to no layer or layers with a missing part; the final tree
      is checked by ``validate_params``.
  """
  sd = {k: np.asarray(v, np.float64) for k, v in state_dict.items()
        if not k.endswith('num_batches_tracked')}
  flat, used = {}, set()
  for key in sd:
    if not key.endswith('.conv.weight'):
      continue
    prefix = key[:-len('.conv.weight')]
    parts = [f'{prefix}.{s}' for s in _BN_SUFFIXES]
    absent = [p for p in parts if p not in sd]
    if absent:
      raise ValueError(f'Layer {prefix!r} has a convolution but no {absent}; is this a '
                       'pytorch-fid Inception state dict?')
    gamma, beta, mean, var = (sd[p] for p in parts)
    scale = gamma / np.sqrt(var + inception.BN_EPSILON)
    name = prefix.replace('.', '/')
    flat[f'{name}/kernel'] = sd[key].transpose(2, 3, 1, 0)  # OIHW -> HWIO
    flat[f'{name}/scale'] = scale
    flat[f'{name}/bias'] = beta - mean * scale
    used.update([key, *parts])
  for src, dst, transform in (('fc.weight', 'fc/kernel', np.transpose),
                              ('fc.bias', 'fc/bias', lambda a: a)):
    if src in sd:
      flat[dst] = transform(sd[src])
      used.add(src)
  leftover = sorted(set(sd) - used)
  if leftover:
    hint = (' AuxLogits belong to torchvision\'s Inception, not the FID one: use '
            f'{PYTORCH_FID_URL}.' if any(k.startswith('AuxLogits') for k in leftover) else '')
    raise ValueError(f'Unconverted state-dict keys {leftover[:5]} ({len(leftover)} in all).'
                     + hint)
  params = unflatten_params({k: v.astype(np.float32) for k, v in flat.items()})
  validate_params(params)
  return params


def _import_torch(what: str):
  """torch, or ``errors.MissingDependencyError`` saying that ``what`` needs it."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise errors.MissingDependencyError(
        f'{what} needs torch (`pip install torch --index-url '
        'https://download.pytorch.org/whl/cpu`). Or convert on a machine that has torch and copy '
        'the resulting .npz here.') from None
  return torch


def read_torch_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Reads a torch ``.pth`` state dict into numpy arrays (torch is needed for this step only)."""
  if not os.path.exists(path):
    raise errors.DataNotFoundError(f'No file {path!r}.\n' + _how_to_get_weights())
  torch = _import_torch(f'Reading {path!r}')
  state_dict = torch.load(path, map_location='cpu', weights_only=True)
  return {k: v.detach().cpu().numpy() for k, v in state_dict.items()}


def download_pytorch_fid_weights(cache_dir: str = DEFAULT_CACHE_DIR) -> str:
  """Downloads pytorch-fid's .pth into ``cache_dir`` (once), checking its SHA-256 prefix.

  Raises:
    errors.DataNotFoundError: the download failed or is not the expected file; one line saying
      how to get the file by other means.
  """
  path = os.path.join(cache_dir, os.path.basename(PYTORCH_FID_URL))
  if os.path.exists(path):
    return path
  os.makedirs(cache_dir, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False) as f:
    try:
      with urllib.request.urlopen(PYTORCH_FID_URL, timeout=60) as response:
        shutil.copyfileobj(response, f)
    except OSError as e:
      os.unlink(f.name)
      reason = ' '.join(str(getattr(e, 'reason', None) or e).split())
      raise errors.DataNotFoundError(
          f'Could not download {PYTORCH_FID_URL} ({reason}). Fetch that file where there is '
          'network, then run python -m score_sde.metrics.inception_weights --from-pytorch-fid '
          'PATH.pth') from None
  with open(f.name, 'rb') as g:
    digest = hashlib.sha256(g.read()).hexdigest()
  if not digest.startswith(PYTORCH_FID_SHA256_PREFIX):
    os.unlink(f.name)
    raise errors.DataNotFoundError(
        f'{PYTORCH_FID_URL} has SHA-256 {digest}, expected {PYTORCH_FID_SHA256_PREFIX}...; the '
        'download is corrupt or the file changed: run the command again.')
  os.replace(f.name, path)
  return path


def load_inception_params(path: Optional[str] = '', cache_dir: str = DEFAULT_CACHE_DIR) -> dict:
  """The FID Inception ``params`` from ``config.eval.inception_path``.

  Args:
    path: our .npz, or pytorch-fid's .pth (converted on the fly; needs torch). Empty: the
      converted file in ``cache_dir`` (see ``--download``).
    cache_dir: where an empty ``path`` looks.
  Returns:
    Nested dict of float32 numpy arrays for ``inception.get_inception_fn``.
  Raises:
    FileNotFoundError: with the URL, the converter command and the config field to set.
  """
  path = path or os.path.join(cache_dir, CACHE_NAME)
  if not os.path.exists(path):
    raise errors.DataNotFoundError(f'No Inception weights at {path!r}.\n' + _how_to_get_weights())
  if path.endswith(('.pth', '.pt')):
    return convert_pytorch_fid_state_dict(read_torch_state_dict(path))
  if path.endswith('.npz'):
    return load_params_npz(path)
  raise errors.ConfigError(f'Unknown Inception weights format {path!r}: expected .npz (ours) or '
                           '.pth (pytorch-fid).')


def main(argv: Optional[Sequence[str]] = None) -> str:
  """Command line: convert a local .pth, or download and convert; returns the written path.

  Raises:
    errors.UserError: torch is missing, the download failed, or the file is not pytorch-fid's
      (``run`` prints these as one message and exits with status 2).
  """
  parser = argparse.ArgumentParser(
      prog='python -m score_sde.metrics.inception_weights', description=__doc__.split('\n')[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--from-pytorch-fid', metavar='PATH.pth',
                      help='pytorch-fid state dict to convert.')
  source.add_argument('--download', action='store_true',
                      help=f'Download {PYTORCH_FID_URL} into --cache-dir, then convert it.')
  parser.add_argument('--out', help=f'Output .npz (default: CACHE_DIR/{CACHE_NAME}).')
  parser.add_argument('--cache-dir', default=DEFAULT_CACHE_DIR)
  args = parser.parse_args(argv)
  if args.download:  # Before fetching 91 MB that could not be converted here.
    _import_torch('Converting the downloaded weights')
  pth = args.from_pytorch_fid or download_pytorch_fid_weights(args.cache_dir)
  out = args.out or os.path.join(args.cache_dir, CACHE_NAME)
  save_params(out, convert_pytorch_fid_state_dict(read_torch_state_dict(pth)))
  print(f'Wrote {out}; set --config.eval.inception_path={out}')
  return out


def run(argv: Optional[Sequence[str]] = None) -> None:
  """``main`` as a command: a problem the user can fix is its message on stderr and exit
  status 2, without a traceback."""
  try:
    main(argv)
  except errors.UserError as e:
    sys.stderr.write(f'Error: {e}\n')
    sys.exit(2)


if __name__ == '__main__':
  run()
