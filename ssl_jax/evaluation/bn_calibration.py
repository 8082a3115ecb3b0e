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
  total, count, full_size = None, 0, None
  for batch in input_pipeline.eval_batches(config, config.data.train_split, batch_size,
                                           max_examples):
    # Only batches of the first batch's size: a short last batch would give noisier statistics
    # (and a second compilation). A split smaller than one batch is used whole.
    full_size = batch["image"].shape[0] if full_size is None else full_size
    if batch["image"].shape[0] != full_size:
      continue
    stats = statistics_fn(encoder.variables["params"], batch["image"])
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += 1
  if count == 0:
    raise ValueError(f"the {config.data.train_split!r} split has no images to recompute "
                     "BatchNorm statistics with")
  averaged = jax.tree.map(lambda s: np.asarray(s / count), total)
  return encoder.with_variables({"params": encoder.variables["params"],
                                 "batch_stats": averaged})
