"""Tests for score_sde.io.summary: event files read back, grid layout, PNGs, progress arithmetic."""
import io
import math
import time

import numpy as np
import pytest
from PIL import Image

from event_files import crc32c, read_events, tensorboard_view
from score_sde.io import summary


def test_crc32c_reference_vector():
  """The test's own CRC-32C matches the standard check value (iSCSI, RFC 3720 test vector)."""
  assert crc32c(b'123456789') == 0xE3069283


def test_scalars_and_images_can_be_read_back(tmp_path):
  """Scalars land in the event file with their tag, step and float32 value; an image grid
  decodes from its PNG to the same pixels (grey shown as RGB)."""
  grid = summary.image_grid(np.random.default_rng(0).random((4, 3, 5, 1)))
  with summary.SummaryWriter(tmp_path, enabled=True) as writer:
    writer.scalars(10, {'training_loss': 1.5, 'eval_loss': np.float32(2.25)})
    writer.scalar('training_loss', 0.125, 20)
    writer.image('samples', grid, 20)
  found, images = [], {}
  for event in read_events(tmp_path):
    for value in event.summary.value:
      if value.HasField('image'):
        images[(value.tag, event.step)] = value.image
      else:
        found.append((value.tag, event.step, value.simple_value))
  assert sorted(found) == [('eval_loss', 10, 2.25), ('training_loss', 10, 1.5),
                           ('training_loss', 20, 0.125)]
  png = np.asarray(Image.open(io.BytesIO(images[('samples', 20)].encoded_image_string)))
  np.testing.assert_array_equal(png, np.repeat(grid, 3, axis=-1))


def test_disabled_writer_writes_nothing(tmp_path):
  """A writer on a process other than 0 (enabled=False) creates no files and accepts calls."""
  writer = summary.SummaryWriter(tmp_path / 'tb', enabled=False)
  writer.scalar('loss', 1., 0)
  writer.image('samples', np.zeros((4, 4, 3), np.uint8), 0)
  writer.close()
  assert not (tmp_path / 'tb').exists()


def reference_grid(images, nrow, padding, pad_value):
  """The reference's loop: fill a pad_value canvas cell by cell, then quantise."""
  b, h, w, c = images.shape
  xmaps = min(nrow, b)
  ymaps = int(math.ceil(b / xmaps))
  hh, ww = h + padding, w + padding
  canvas = np.full((hh * ymaps + padding, ww * xmaps + padding, c), pad_value, np.float64)
  for k in range(b):
    y, x = divmod(k, xmaps)
    canvas[y * hh + padding:(y + 1) * hh, x * ww + padding:(x + 1) * ww] = images[k]
  return np.clip(canvas * 255. + .5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize('b,nrow,padding,pad_value', [
    (6, 4, 2, 0.), (9, None, 1, 1.), (5, 3, 0, .5), (1, None, 3, 0.)])
def test_image_grid_matches_a_cell_by_cell_loop(b, nrow, padding, pad_value):
  """Layout (row-major cells, frames, empty trailing cells) and rounding agree with a plain
  loop over cells; the default nrow is floor(sqrt(B)); values outside [0, 1] are clipped."""
  images = np.random.default_rng(b).uniform(-.1, 1.1, (b, 4, 3, 3))
  got = summary.image_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
  want = reference_grid(images, nrow or math.isqrt(b), padding, pad_value)
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, want)


def test_image_grid_rejects_bad_shapes():
  """A single image (H, W, C) is refused with the expected shape in the message."""
  with pytest.raises(ValueError, match=r'\(B, H, W, C\)'):
    summary.image_grid(np.zeros((4, 4, 3)))


@pytest.mark.parametrize('channels', [1, 3])
def test_save_png_round_trips(tmp_path, channels):
  """A saved grid reads back from disk with the same uint8 pixels (grey stays one channel)."""
  grid = summary.image_grid(np.random.default_rng(1).random((3, 4, 4, channels)))
  summary.save_png(tmp_path / 'sub' / 'samples.png', grid)
  back = np.asarray(Image.open(tmp_path / 'sub' / 'samples.png'))
  np.testing.assert_array_equal(back.reshape(grid.shape), grid)


def test_progress_rates_and_eta():
  """Rates are measured since the previous line, ETA = remaining steps / that rate:
  from step 100 at t=0 to 300 at t=40: 5 steps/s, 5 x 64 = 320 images/s, 1700 / 5 = 340 s."""
  progress = summary.Progress(total_steps=2000, start_step=100, batch_size=64, now=0.)
  assert progress.line(300, 40.) == ('step 300/2000 (15.0%) | 5.00 steps/s | 320 images/s | '
                                'ETA 00:05:40')
  # The next interval alone counts: 200 steps in 10 s -> 20 steps/s, 1500 / 20 = 75 s.
  assert progress.line(500, 50.).endswith('20.00 steps/s | 1280 images/s | ETA 00:01:15')
  assert progress.line(500, 50.).endswith('ETA ?')  # No steps in no time: unknown.


def test_format_duration():
  """Days, hours, minutes and seconds add up: 2 d 3 h 4 min 5 s = 183845 s."""
  assert summary.format_duration(2 * 86400 + 3 * 3600 + 4 * 60 + 5) == '2d 03:04:05'
  assert summary.format_duration(59.6) == '00:01:00'
  assert summary.format_duration(float('inf')) == '?'


def test_writer_that_writes_nothing_leaves_no_event_file(tmp_path):
  """No 0-byte event files; the file appears with the first value."""
  writer = summary.SummaryWriter(tmp_path / 'tb', enabled=True)
  writer.flush()
  writer.close()
  assert not (tmp_path / 'tb').exists()


def test_flush_puts_every_value_on_disk_while_the_writer_is_open(tmp_path):
  """After flush() (training calls it at every checkpoint) the values are in the file even if
  the process dies without close(): read here while the writer is still open, with a flush
  interval far longer than the test."""
  writer = summary.SummaryWriter(tmp_path, enabled=True, flush_secs=3600)
  for step in range(1, 4):
    writer.scalar('training_loss', 1. / step, step)
  writer.flush()
  assert [s for s, _ in tensorboard_view(read_events(tmp_path))['training_loss']] == [1, 2, 3]
  assert all(p.stat().st_size > 0 for p in tmp_path.iterdir())
  writer.close()


def test_purge_step_replaces_a_killed_runs_values_from_the_restored_step(tmp_path):
  """A run logs steps 1..6 and dies; the resumed run (restored at 4, purge_step=4) logs 5..8.
  As TensorBoard reads the directory: 1..8 once each, 5 and 6 from the resumed run."""
  first = summary.SummaryWriter(tmp_path, enabled=True)
  for step in range(1, 7):
    first.scalar('loss', float(step), step)
  first.close()
  time.sleep(1.1)  # Event files are named by the second they were opened in.
  with summary.SummaryWriter(tmp_path, enabled=True, purge_step=4) as resumed:
    for step in range(5, 9):
      resumed.scalar('loss', 10. * step, step)
  view = tensorboard_view(read_events(tmp_path))['loss']
  assert view == [(1, 1.), (2, 2.), (3, 3.), (5, 50.), (6, 60.), (7, 70.), (8, 80.)]


def test_paused_time_is_kept_out_of_the_rate_and_eta():
  """100 steps in 50 s of which 40 s were a snapshot (exclude): 10 steps/s, not 2."""
  progress = summary.Progress(total_steps=1100, start_step=0, batch_size=8, now=0.)
  progress.exclude(40.)
  assert progress.line(100, 50.) == ('step 100/1100 (9.1%) | 10.00 steps/s | 80 images/s | '
                                     'ETA 00:01:40')
  # The exclusion is spent: the next interval is measured as it is.
  assert '5.00 steps/s' in progress.line(200, 70.)
  with progress.paused():
    time.sleep(0.05)
  assert progress._excluded >= 0.05
