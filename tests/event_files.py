"""Reading TensorBoard event files back without TensorFlow, for the tests.

``read_events`` checks the TFRecord framing with a CRC-32C written out here; ``tensorboard_view``
applies TensorBoard's purge rule, so a test sees the history a user would.
"""
import struct
from typing import Dict, List, Tuple

from tensorboardX.proto import event_pb2


def crc32c(data: bytes) -> int:
  """Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), written out for the test."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
  return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
  """TFRecord's masking: rotate right by 15 and add a constant, mod 2**32."""
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(logdir):
  """Every Event in the directory's event files, checking the TFRecord framing:
  uint64 length, uint32 masked crc32c(length), payload, uint32 masked crc32c(payload)."""
  events = []
  for path in sorted(logdir.glob('events.out.tfevents.*')):
    data, pos = path.read_bytes(), 0
    while pos < len(data):
      header = data[pos:pos + 8]
      (length,), (header_crc,) = struct.unpack('<Q', header), struct.unpack(
          '<I', data[pos + 8:pos + 12])
      assert header_crc == masked(crc32c(header))
      payload = data[pos + 12:pos + 12 + length]
      assert struct.unpack('<I', data[pos + 12 + length:pos + 16 + length])[0] == masked(
          crc32c(payload))
      events.append(event_pb2.Event.FromString(payload))
      pos += 16 + length
  return events


def tensorboard_view(events) -> Dict[str, List[Tuple[int, float]]]:
  """``{tag: [(step, value), ...]}`` of scalars as TensorBoard shows them.

  A ``SessionLog.START`` event at step ``s`` (tensorboardX's ``purge_step``) discards the
  values loaded before it at steps ``>= s``: TensorBoard's handling of a restarted run.
  """
  view: Dict[str, List[Tuple[int, float]]] = {}
  for event in events:
    if event.HasField('session_log') and event.session_log.status == event.session_log.START:
      view = {tag: [(s, v) for s, v in values if s < event.step] for tag, values in view.items()}
    for value in event.summary.value:
      if value.HasField('simple_value'):
        view.setdefault(value.tag, []).append((event.step, value.simple_value))
  return view
