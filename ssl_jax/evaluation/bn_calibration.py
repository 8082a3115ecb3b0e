"""BatchNorm statistics of an encoder recomputed on clean training images ("precise BN").

A freshly initialised network's running statistics are the initial mean 0 / variance 1, so in
evaluation mode every BatchNorm is the identity and the network is an unnormalised random conv
net. A trained encoder's statistics come from data. To compare what the *weights* learned, the
random-init baseline is also evaluated with statistics measured on the training images: each
BatchNorm's mean and variance become the average over batches of its batch statistics, computed
in train mode layer after layer, exactly as training would record them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from input_pipeline import device_augment
from input_pipeline import pipeline as input_pipeline
from ssl_jax.models.batch_norm import GroupedBatchNorm


def _batch_statistics_fn(encoder):
  """jit(params, images) -> the batch statistics of every BN layer for this batch."""
  momentum = GroupedBatchNorm.momentum

  def batch_statistics(params, images):
    inputs = device_augment.normalize(images, encoder.mean, encoder.std)
    zeros = jax.tree.map(jnp.zeros_like, encoder.variables["batch_stats"])
    _, mutated = encoder.module.apply({"params": params, "batch_stats": zeros}, inputs,
                                      train=True, mutable=["batch_stats"])
    # Starting from zero running statistics, one update leaves (1 - momentum) * batch stats.
    return jax.tree.map(lambda s: s / (1.0 - momentum), mutated["batch_stats"])

  return jax.jit(batch_statistics)


def recompute_batch_stats(encoder, config: ml_collections.ConfigDict, *, batch_size: int,
                          max_examples: int):
  """`encoder` with BN statistics averaged over full batches of clean training images."""
  statistics_fn = _batch_statistics_fn(encoder)
  total, count = None, 0
  for batch in input_pipeline.eval_batches(config, config.data.train_split, batch_size,
                                           max_examples):
    if batch["image"].shape[0] != batch_size:
      continue   # a short last batch would give noisier statistics (and a second compile)
    stats = statistics_fn(encoder.variables["params"], batch["image"])
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += 1
  if count == 0:
    raise ValueError(f"no full batch of {batch_size} training images to recompute BatchNorm "
                     "statistics with; lower config.eval.batch_size")
  averaged = jax.tree.map(lambda s: np.asarray(s / count), total)
  return encoder.with_variables({"params": encoder.variables["params"],
                                 "batch_stats": averaged})
