"""Device mesh and sharding rules: the batch is split over every device, state by rule.

The mesh has two axes: 'data' (pure data parallelism) and 'fsdp' (a second axis over which large
parameters and their optimiser state are sharded, FSDP-style). The batch is split over both, so
with fsdp=1 this is plain data parallelism. State shardings are never written per leaf: they come
from `state_shardings`, a rule applied to the abstract state from `jax.eval_shape`.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
# The global batch is split over every device of the mesh.
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """Mesh of shape (data, fsdp) over `devices` (default: all), data=-1 meaning 'the rest'."""
  devices = list(jax.devices() if devices is None else devices)
  num_devices = len(devices)
  fsdp = int(mesh_config.fsdp)
  if fsdp < 1 or num_devices % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must be a positive divisor of the {num_devices} devices")
  data = num_devices // fsdp if mesh_config.data == -1 else int(mesh_config.data)
  if data * fsdp != num_devices:
    raise ValueError(f"mesh.data={mesh_config.data} x mesh.fsdp={fsdp} must equal the "
                     f"{num_devices} devices (use mesh.data=-1 to take the rest)")
  device_grid = np.asarray(devices).reshape(data, fsdp)
  return Mesh(device_grid, (DATA_AXIS, FSDP_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


def num_batch_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[axis] for axis in BATCH_AXES]))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over all devices; other axes whole."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
  """A buffer of several batches (steps, batch, ...): each batch split like `batch_sharding`."""
  return NamedSharding(mesh, PartitionSpec(None, BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> PartitionSpec:
  """The FSDP rule for one leaf: which dimension, if any, is split over the 'fsdp' axis.

  - Scalars and vectors (BatchNorm scales, biases and statistics, step counters) stay
    replicated: even in a ResNet-200 x2 a vector holds at most 8192 numbers, and an all-gather
    per vector would cost a collective's latency to save almost nothing.
  - Leaves under `min_size` elements stay replicated for the same reason.
  - Otherwise the last dimension is split when the axis divides it: Flax keeps the output
    features last in every Conv (kh, kw, in, out) and Dense (in, out) kernel, and output
    channels are never the 3 RGB inputs of a stem. Failing that, the largest dimension the
    axis divides (the first of equals); with none, the leaf stays replicated.
  Memory per device is the same whichever dimension is split; the rule only has to be
  predictable, so a sharded kernel's layout can be read off its shape.
  """
  if fsdp_size == 1 or len(shape) < 2 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return PartitionSpec()
  if shape[-1] % fsdp_size == 0:
    dim = len(shape) - 1
  else:
    candidates = [d for d in range(len(shape)) if shape[d] % fsdp_size == 0]
    if not candidates:
      return PartitionSpec()
    dim = max(candidates, key=lambda d: (shape[d], -d))
  spec = [None] * len(shape)
  spec[dim] = FSDP_AXIS
  return PartitionSpec(*spec)


def state_shardings(abstract_state: Any, mesh: Mesh, fsdp_min_size: int) -> Any:
  """Sharding of every leaf of a state pytree (from `jax.eval_shape`), by `fsdp_spec`.

  The rule looks at shapes only, so params, the EMA target and the optimiser's moments (which
  mirror the params' shapes) are all sharded alike, and so is any large objective state (the
  MoCo queue). With mesh.fsdp=1 everything is replicated: plain data parallelism."""
  fsdp_size = mesh.shape[FSDP_AXIS]
  return jax.tree.map(
      lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), fsdp_size, fsdp_min_size)),
      abstract_state)


def bytes_per_device(tree: Any, shardings: Any) -> dict:
  """Bytes of `tree`'s leaves (arrays or ShapeDtypeStructs) held by each device under
  `shardings`: {device: bytes}. Computed from shard shapes, so it needs no materialised state."""
  totals: dict = {}
  for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
    shard_shape = sharding.shard_shape(tuple(leaf.shape))
    shard_bytes = int(np.prod(shard_shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    for device in sharding.device_set:
      totals[device] = totals.get(device, 0) + shard_bytes
  return totals


def host_batch_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local batch into one global array sharded over the mesh."""
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, value)
          for name, value in batch.items()}


def host_batches_to_global_buffer(batches: list[dict[str, np.ndarray]],
                                  mesh: Mesh) -> dict[str, jax.Array]:
  """Stacks each process's local batches, in order, into one global (steps, batch, ...) buffer
  whose batch axis is sharded over the mesh (the input of `step.jit_multi_step`)."""
  sharding = stacked_batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(
              sharding, np.stack([batch[name] for batch in batches]))
          for name in batches[0]}
