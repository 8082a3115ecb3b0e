"""Batched, sharded extraction of frozen features from an encoder (pooled or per stage).

Every batch is padded to one fixed size (a multiple of the device count) so the feature function
compiles once and its batch splits evenly over the mesh; padding rows are dropped on the host.
In a multi-process job every process reads the same batches, its devices compute their rows, and
the features are gathered back to every process (so kNN and probes see the whole split).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ssl_jax import distributed
from ssl_jax import sharding as sharding_lib


def padded_batch_size(batch_size: int, mesh: Mesh) -> int:
  shards = sharding_lib.num_batch_shards(mesh)
  return -(-batch_size // shards) * shards


def extract_features(
    apply_fn: Callable[[jax.Array], Any],
    batches: Iterable[dict[str, np.ndarray]],
    mesh: Mesh,
    batch_size: int,
) -> tuple[Any, np.ndarray]:
  """Runs `apply_fn(uint8 images) -> (N, D) features` over `batches` ({'image', 'label'}).

  `apply_fn` may also return a pytree (e.g. a dict of per-stage features); the result then has the
  same structure with every leaf concatenated over batches. `apply_fn` should be jitted by the
  caller; here each batch is padded to `batch_size` rows (rounded up to the device count) and
  laid out over the mesh's batch axes."""
  padded_size = padded_batch_size(batch_size, mesh)
  sharding = sharding_lib.batch_sharding(mesh)
  features, labels = [], []
  for batch in batches:
    images = np.asarray(batch["image"])
    count = images.shape[0]
    if count > padded_size:
      raise ValueError(f"eval batch of {count} exceeds the feature batch size {padded_size}")
    padding = np.zeros((padded_size - count,) + images.shape[1:], images.dtype)
    padded = np.concatenate([images, padding])
    # Each process places only the rows of its own devices (device_put would need them all).
    device_images = jax.make_array_from_callback(padded.shape, sharding,
                                                 lambda index, padded=padded: padded[index])
    device_outputs = apply_fn(device_images)
    if not features:
      # The first call compiled apply_fn; the gather below is the first collective, which all
      # processes should enter together (see distributed.wait_for_all_processes).
      distributed.wait_for_all_processes("features_compiled")
    outputs = distributed.to_host(device_outputs)
    features.append(jax.tree.map(lambda leaf, count=count: np.asarray(leaf)[:count], outputs))
    labels.append(np.asarray(batch["label"]))
  if not features:
    raise ValueError("no examples to extract features from (empty split?)")
  stacked = jax.tree.map(lambda *leaves: np.concatenate(leaves).astype(np.float32), *features)
  return stacked, np.concatenate(labels).astype(np.int32)


def spatial_pool(feature_map: jax.Array, size: int) -> jax.Array:
  """(N, H, W, C) -> (N, size * size * C): the map averaged onto a size x size grid
  (size 1 is global average pooling). Area averaging when H, W are multiples of size; otherwise
  antialiased linear resizing, which approximates it."""
  batch, height, width, channels = feature_map.shape
  feature_map = feature_map.astype(jnp.float32)
  if size == 1:
    return jnp.mean(feature_map, axis=(1, 2))
  if height % size == 0 and width % size == 0:
    blocks = feature_map.reshape(batch, size, height // size, size, width // size, channels)
    pooled = blocks.mean(axis=(2, 4))
  else:
    pooled = jax.image.resize(feature_map, (batch, size, size, channels), "linear",
                              antialias=True)
  return pooled.reshape(batch, -1)


def stage_feature_fn(encoder, spatial_size: int = 0) -> Callable[[jax.Array], dict]:
  """jit(images) -> {'stage1'..'stage4': globally pooled stage outputs, 'pooled'} and, with
  spatial_size > 0, also 'stage<i>_s<size>': each stage pooled onto a size x size grid."""
  if spatial_size < 0:
    raise ValueError(f"spatial_size must be >= 0 (0: global pooling only), got {spatial_size}")

  def features(variables, images):
    outputs = encoder.apply_unjitted(variables, images)
    result = {"pooled": outputs["pooled"]}
    for index, stage in enumerate(outputs["stages"], start=1):
      result[f"stage{index}"] = spatial_pool(stage, 1)
      if spatial_size > 0:
        result[f"stage{index}_s{spatial_size}"] = spatial_pool(stage, spatial_size)
    return result

  # Variables are an argument, not constants baked into the compiled program.
  jitted = jax.jit(features)
  return lambda images: jitted(encoder.variables, images)
