"""Batched, sharded extraction of frozen pooled features from an encoder.

Every batch is padded to one fixed size (a multiple of the device count) so the feature function
compiles once and its batch splits evenly over the mesh; padding rows are dropped on the host.
"""

from __future__ import annotations

from typing import Callable, Iterable

import jax
import numpy as np
from jax.sharding import Mesh

from ssl_jax import sharding as sharding_lib


def padded_batch_size(batch_size: int, mesh: Mesh) -> int:
  shards = sharding_lib.num_batch_shards(mesh)
  return -(-batch_size // shards) * shards


def extract_features(
    apply_fn: Callable[[jax.Array], jax.Array],
    batches: Iterable[dict[str, np.ndarray]],
    mesh: Mesh,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Runs `apply_fn(uint8 images) -> (N, D) features` over `batches` ({'image', 'label'}).

  `apply_fn` should be jitted by the caller; here each batch is padded to `batch_size` rows
  (rounded up to the device count) and laid out over the mesh's batch axes."""
  padded_size = padded_batch_size(batch_size, mesh)
  sharding = sharding_lib.batch_sharding(mesh)
  features, labels = [], []
  for batch in batches:
    images = np.asarray(batch["image"])
    count = images.shape[0]
    if count > padded_size:
      raise ValueError(f"eval batch of {count} exceeds the feature batch size {padded_size}")
    padding = np.zeros((padded_size - count,) + images.shape[1:], images.dtype)
    device_images = jax.device_put(np.concatenate([images, padding]), sharding)
    features.append(np.asarray(apply_fn(device_images))[:count])
    labels.append(np.asarray(batch["label"]))
  if not features:
    raise ValueError("no examples to extract features from (empty split?)")
  return np.concatenate(features).astype(np.float32), np.concatenate(labels).astype(np.int32)
