"""score_sde_pytorch ``.pth`` files from strangers: the reader (score_sde.conversion.torch_files)
trusts no number in them. Each file here is made by the test in torch's layout
(tests/crafted_pth.py, no torch) with one lie in it; the reader must refuse it with one line
naming the file, never read memory outside a storage, crash, or inflate a record past what it
states and what a checkpoint can hold."""
import os
import tracemalloc

import jax
import numpy as np
import pytest

from score_sde.common import errors
from score_sde.conversion import pytorch_checkpoints as pc, torch_files
from tests import crafted_pth as craft

import child_env

ONE_FLOAT = {'0': np.float32(1.5).tobytes()}


def _one_tensor(tmp_path, offset, size, stride, numel=1, records=ONE_FLOAT, **kwargs):
  storage = craft.Storage('0', numel)
  return craft.write_pth(tmp_path / 'checkpoint_1.pth',
                         {'w': craft.Tensor(storage, offset, size, stride)}, records, **kwargs)


def _refused(path, match, **kwargs):
  """Reads ``path``, which must fail with one line naming it and matching ``match``."""
  with pytest.raises(torch_files.CheckpointFileError, match=match) as err:
    torch_files.read_pth(path, **kwargs)
  message = str(err.value)
  assert str(path) in message and '\n' not in message
  assert isinstance(err.value, errors.UserError)
  return message


def test_strided_views_inside_their_storage_read_the_right_numbers(tmp_path):
  """The control for the refusals below: a transposed view, one at an offset, and a stride-0
  (expanded) view of a 6-float storage give numpy's reading of the same numbers."""
  storage = craft.Storage('0', 6)
  values = np.arange(6, dtype=np.float32)
  path = craft.write_pth(tmp_path / 'ok.pth', {
      't': craft.Tensor(storage, 0, (2, 3), (1, 2)),
      'o': craft.Tensor(storage, 4, (2,), (1,)),
      'e': craft.Tensor(storage, 5, (3, 2), (0, 0)),
      'empty': craft.Tensor(storage, 6, (0, 4), (4, 1))}, {'0': values.tobytes()})
  got = torch_files.read_pth(path)
  np.testing.assert_array_equal(got['t'], values.reshape(3, 2).T)
  np.testing.assert_array_equal(got['o'], [4., 5.])
  np.testing.assert_array_equal(got['e'], np.full((3, 2), 5.))
  assert got['empty'].shape == (0, 4)


@pytest.mark.parametrize('offset, size, stride, match', [
    (0, (64,), (1,), 'reaches value 63 of a storage of 1'),  # Read 252 bytes of heap before.
    (0, (2,), (1 << 40,), 'reaches value 1,099,511,627,776'),  # Segfaulted before.
    (-3, (2,), (1,), 'offset must be a non-negative integer'),
    (0, (-1, 2), (1, 1), 'non-negative integers'),
    (0, (2, 2), (-1, 1), 'non-negative integers'),
    (0, (1, 1), (1,), 'as many'),
    (2, (0,), (1,), 'offset lies past the storage'),
    (1, (1,), (1,), 'reaches value 1 of a storage of 1'),
])
def test_views_outside_their_storage_are_refused(tmp_path, offset, size, stride, match):
  """Every element a view reaches must lie in its storage: sizes, strides and offset are
  checked (negative ones, mismatched lengths, the last element's index) before any read."""
  _refused(_one_tensor(tmp_path, offset, size, stride), match)


def test_a_storage_the_pickle_reshapes_is_refused(tmp_path):
  """The pickle may apply BUILD to a storage, which numpy takes as ndarray.__setstate__: here it
  makes a 12-float storage (3, 4), so that slicing it at offset 11 would point 11 rows (44
  floats) in. A tensor is built only on a storage as read: flat, of its type and size."""
  state = (1, (3, 4), np.dtype(np.float32), False, bytes(48))
  storage = craft.Storage('0', 12)
  path = craft.write_pth(tmp_path / 'reshaped.pth', {
      'w': craft.Tensor(craft.Rebuilt(storage, state), 11, (1,), (1,))},
      {'0': bytes(48)})
  _refused(path, 'other than a storage of the file as read')


def test_a_storage_record_must_hold_exactly_its_values(tmp_path):
  """A storage's record holds numel values of its type: a 4-byte record for one double, or a
  record stating more bytes than the pickle gives the storage, is refused by size."""
  _refused(craft.write_pth(tmp_path / 'double.pth', {'w': craft.Tensor(
      craft.Storage('0', 1, 'DoubleStorage'), 0, (1,), (1,))}, ONE_FLOAT), 'states 4 bytes where 8')
  _refused(_one_tensor(tmp_path, 0, (1,), (1,), numel=2), 'states 4 bytes where 8')


def test_a_stride_zero_view_cannot_build_past_the_cap(tmp_path):
  """An expanded view of one float to 10^12 elements stays inside its storage, but building it
  would take 4 TB: the bytes a file makes the reader hold are capped."""
  _refused(_one_tensor(tmp_path, 0, (10 ** 6, 10 ** 6), (0, 0)), 'tensor of size')


def _peak_mib(fn):
  tracemalloc.start()
  try:
    fn()
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
  return peak / 2 ** 20


def test_a_record_inflating_past_its_stated_size_stays_bounded(tmp_path):
  """A zip bomb: a 64 KB record stating 4 bytes inflates to 64 MiB. It is read in bounded
  chunks up to its stated size, then fails its CRC: the reader never holds the inflated data
  (it held all of it, and more, before failing)."""
  path = _one_tensor(tmp_path, 0, (1,), (1,), records={'0': bytes(64 << 20)}, compress=True,
                     declared={'0': 4})
  assert os.path.getsize(path) < 1 << 20
  peak = _peak_mib(lambda: _refused(path, 'CRC'))
  assert peak < 4, f'{peak:.1f} MiB held while refusing a record that states 4 bytes'


def test_a_record_stating_a_huge_size_is_refused_before_inflating(tmp_path):
  """A record stating 4 GiB, matching a pickle that claims 2^30 floats, in a file of a few KB:
  more than its compressed bytes can inflate to, refused before anything is read. One that
  could be that size but passes the cap of what a checkpoint holds is refused by the cap."""
  huge = _one_tensor(tmp_path, 0, (1,), (1,), numel=1 << 30, records={'0': bytes(4096)},
                     compress=True, declared={'0': 4 << 30})
  peak = _peak_mib(lambda: _refused(huge, 'more than its .* stored bytes can hold'))
  assert peak < 4
  (tmp_path / 'big').mkdir()
  big = _one_tensor(tmp_path / 'big', 0, (1,), (1,), numel=8 << 20, records={'0': bytes(32 << 20)},
                    compress=True)
  peak = _peak_mib(lambda: _refused(big, 'past the cap of 8,388,608 bytes', max_bytes=8 << 20))
  assert peak < 4
  assert torch_files.read_pth(big)['w'].shape == (1,)  # Under the default cap it is a valid file.


def test_checkpoint_cap_follows_the_network(smoke_config):
  """The cap on what a port checkpoint of a network may hold: weights, EMA and Adam's two
  moments in float32, read and built (32 bytes per parameter), plus room for the pickle."""
  from score_sde import models
  template = models.abstract_params(smoke_config)
  n = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(template))
  assert pc.checkpoint_bytes(template) == 32 * n + 2 * torch_files.MAX_PICKLE_BYTES


def test_an_oversized_pickle_is_refused(tmp_path):
  """data.pkl holds names and shapes only; one stating more than MAX_PICKLE_BYTES is refused
  before it is read."""
  path = craft.write_pth(tmp_path / 'p.pth', {}, {},
                         declared_pickle=torch_files.MAX_PICKLE_BYTES + 1)
  _refused(path, 'data.pkl')


def test_code_running_pickles_are_refused(tmp_path):
  """A pickle that calls anything but the tensor rebuilders and plain containers (here
  os.system) is refused, and the call never runs."""
  marker = tmp_path / 'ran'
  path = craft.write_pth(tmp_path / 'evil.pth', craft.Call(
      craft.Global('os', 'system'), (f'touch {marker}',)), {})
  _refused(path, 'os.system in the checkpoint is neither a tensor')
  assert not marker.exists()


def test_converter_command_refuses_a_crafted_file_with_one_line(tmp_path):
  """The converter's command line, on the huge-stride file that segfaulted it (exit 139):
  exit status 2 and one line on stderr naming the file, no traceback, nothing written."""
  path = _one_tensor(tmp_path, 0, (2,), (1 << 40,))
  result = child_env.run_converter(path, tmp_path / 'run')
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and str(path) in lines[0] and 'reaches value' in lines[0], lines
  assert not (tmp_path / 'run' / 'checkpoints').exists()
