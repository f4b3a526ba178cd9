"""Data parallelism over every device of every host: one mesh axis, batch split, state replicated.

This is the successor of the reference code's ``pmap``: functions are compiled once with
``jax.jit`` and told, through ``NamedSharding``, that the leading (batch) axis of data is split
over the ``'data'`` axis of a device mesh while parameters are replicated. XLA then inserts the
all-reduce that averages gradients over the global batch; no collective appears in the math.
"""
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the mesh; the rest of the array replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """The whole array on every device (parameters, optimizer state, scalars)."""
  return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
  """``tree`` (host values equal on every host: keys, scalars, parameters) replicated over
  ``mesh``. Unlike ``jax.device_put``, this also works when the mesh spans several processes,
  whose devices a process cannot address one by one."""
  return jax.jit(lambda t: t, out_shardings=replicated(mesh))(tree)


def check_divisible(batch_size: int, mesh: Mesh, what: str = 'batch size') -> None:
  """Fails before anything runs when a global batch does not split evenly over the devices.

  Raises:
    ValueError: naming the value, the device count and the nearest values that would work.
  """
  n = mesh.devices.size
  if batch_size <= 0 or batch_size % n:
    lower = max(n, batch_size // n * n)
    raise ValueError(
        f'{what}={batch_size} does not split over {n} devices '
        f'({jax.process_count()} host(s)). Use a multiple of {n}, e.g. {lower} or {lower + n}.')


def host_batch_slice(global_batch_size: int) -> slice:
  """The rows of a global batch that this host loads (hosts load disjoint, contiguous shards)."""
  per_host = global_batch_size // jax.process_count()
  start = jax.process_index() * per_host
  return slice(start, start + per_host)


def to_global(local_batch, mesh: Mesh):
  """Assembles each host's rows into one global array sharded over the mesh's data axis.

  Args:
    local_batch: a pytree of numpy arrays holding this host's ``global / process_count`` rows.
  Returns:
    The same pytree of ``jax.Array``s with global leading dimension, split over ``'data'``.
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def gather_rows(x) -> np.ndarray:
  """Every row of ``x`` as numpy, the same on every host: the inverse of ``to_global``.

  Args:
    x: a ``jax.Array`` (e.g. split over ``'data'``, its rows on several hosts), whole as it is;
      or this host's rows as numpy (e.g. ``x[host_batch_slice(n)]``), concatenated with the
      other hosts' rows in process order (all hosts must pass the same shape).
  Returns:
    ``(N, ...)`` numpy of ``x``'s dtype; ``N`` is the global batch.
  """
  if isinstance(x, jax.Array) and x.is_fully_addressable:
    return np.asarray(x)
  # Collective: every host must call it, in the same order.
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def jit_over_examples(step: Callable, mesh: Mesh, out_shardings, what: str = 'batch size',
                      num_arrays: int = 1) -> Callable:
  """``step(rng, params, *arrays)``, a function whose outputs per example depend on that
  example only, compiled once for ``mesh``: the ``num_arrays`` arrays (images, masks, latents)
  split over ``'data'``, ``rng`` and ``params`` replicated, the outputs sharded as
  ``out_shardings`` says.

  Returns:
    ``fn(rng, params, *arrays)``; each array a global ``jax.Array`` or this host's rows as
    numpy, their global batch a multiple of the device count (``check_divisible``, naming
    ``what``).
  """
  whole = replicated(mesh)
  compiled = jax.jit(step, in_shardings=(whole, whole) + (data_sharding(mesh),) * num_arrays,
                     out_shardings=out_shardings)

  def sharded_fn(rng, params, *arrays):
    arrays = [to_global(a, mesh) if isinstance(a, np.ndarray) else a for a in arrays]
    check_divisible(arrays[0].shape[0], mesh, what)
    return compiled(rng, params, *arrays)

  return sharded_fn
