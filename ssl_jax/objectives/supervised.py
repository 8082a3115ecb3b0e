"""Supervised training from scratch: the baseline every results table compares SSL with.

The same backbone as the SSL runs, with a linear classifier on its pooled features, trained by
cross-entropy on the labels (sigmoid cross-entropy per label for multi-label data) of both
augmented views, so it sees the images, augmentation and steps an SSL run of the same config
sees. Its backbone is exported and evaluated like any SSL encoder (kNN, linear probe, fine-tune
on its frozen features).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax.models import COMPUTE_DTYPES, build_training_backbone
from ssl_jax.models.classifier import Classifier
from ssl_jax.objectives.base import LossInputs, LossOutput, Objective, PyTree


class Supervised(Objective):
  """Cross-entropy of a linear classifier on the backbone (see the module docstring)."""

  metric_names = ("train_accuracy",)

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    self.num_classes = int(config.data.num_classes)
    if self.num_classes < 2:
      raise ValueError(
          f"the supervised objective needs config.data.num_classes >= 2 (the classifier's "
          f"outputs), got {self.num_classes}; set it for {config.data.name}")
    self.multi_label = config.data.label_type == "multi_label"
    self.network = Classifier(build_training_backbone(config.model), self.num_classes,
                              dtype=COMPUTE_DTYPES[config.model.dtype])

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    variables = self.network.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    if inputs.labels is None:
      raise ValueError("the supervised objective needs the batch's 'label' (the training "
                       "pipeline provides it)")
    # Both views in one forward pass: one set of BN statistics over the 2N images.
    images = jnp.concatenate(inputs.views, axis=0)
    labels = jnp.concatenate([inputs.labels] * len(inputs.views), axis=0)
    outputs, batch_stats = self.train_forward(inputs.params, inputs.batch_stats, images)
    logits = outputs["logits"]
    if self.multi_label:
      targets = labels.astype(jnp.float32)
      loss = jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1))
      accuracy = jnp.mean(((logits > 0) == (targets > 0.5)).astype(jnp.float32))
    else:
      loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
      accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats={},
        projections=outputs["pooled"][:inputs.views[0].shape[0]],
        extras={},
        metrics={"train_accuracy": accuracy},
    )
