"""Fine-tuning with a fraction of the labels: the whole encoder plus a linear head, trained with
SGD (Nesterov momentum) under a cosine schedule, on a stratified, seeded subset of the training
split; scored on the test split with a bootstrap confidence interval.

Subsets: every class's examples are permuted once by the seed, and a fraction f keeps the first
max(1, round(f * n_class)) of each class. So subsets are stratified, reproducible, and nested
(the 1 % subset lies inside the 10 % one), as in the semi-supervised protocols of SimCLR/BYOL.

Interval: the test set is resampled with replacement `num_samples` times and the metric
recomputed; the interval is the (2.5, 97.5) percentiles of that bootstrap distribution (the
percentile bootstrap), not mean +- 1.96 std.

The labelled subset and the test split are held in host memory (fine for digits and CIFAR; a
100 % ImageNet fine-tune would need the streaming pipeline instead). Images are used as they are
(no augmentation), which suits the low-label, few-step regime this measures.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from input_pipeline import device_augment
from ssl_jax.models.classifier import Classifier


def label_fraction_subsets(labels: np.ndarray, fractions, seed: int) -> dict[float, np.ndarray]:
  """{fraction: sorted indices}: per class, the first max(1, round(f * n)) of one seeded
  permutation of that class, hence stratified and nested across fractions."""
  labels = np.asarray(labels)
  for fraction in fractions:
    if not 0.0 < fraction <= 1.0:
      raise ValueError(f"label fractions must be in (0, 1], got {fraction}")
  rng = np.random.default_rng(seed)
  orders = {cls: rng.permutation(np.flatnonzero(labels == cls)) for cls in np.unique(labels)}
  return {fraction: np.sort(np.concatenate([
      order[:max(1, int(round(fraction * len(order))))] for order in orders.values()]))
      for fraction in fractions}


def bootstrap_interval(labels: np.ndarray, predictions: np.ndarray,
                       metric: Callable[[np.ndarray, np.ndarray], float], *,
                       num_samples: int = 1000, level: float = 0.95, seed: int = 0
                       ) -> tuple[float, float, float]:
  """(metric on the whole test set, lower, upper): percentiles (1 - level)/2 and (1 + level)/2
  of the metric over `num_samples` resamples (with replacement) of the test examples."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  rng = np.random.default_rng(seed)
  count = len(labels)
  samples = np.array([metric(labels[index], predictions[index])
                      for index in rng.integers(0, count, (num_samples, count))])
  lower, upper = np.percentile(samples, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
  return float(metric(labels, predictions)), float(lower), float(upper)


def fine_tune(encoder, images: np.ndarray, labels: np.ndarray, *, num_classes: int, steps: int,
              batch_size: int, learning_rate: float, momentum: float = 0.9,
              weight_decay: float = 0.0, seed: int = 0):
  """Trains encoder + head on (images, labels); returns (encoder variables, predict_fn) where
  predict_fn(images) -> (N, classes) probabilities of the fine-tuned network in evaluation
  mode."""
  classifier = Classifier(encoder.module, num_classes)
  count = len(labels)
  batch_size = min(batch_size, count)
  # Only the head is new, so only the head is initialised (an init of the whole classifier would
  # draw, then discard, a second backbone). 'rbg' keys compile far faster than threefry on CPU.
  head = nn.Dense(num_classes, name="head")
  head_params = jax.jit(head.init)(jax.random.key(seed, impl="rbg"),
                                   jnp.zeros((1, encoder.feature_dim), jnp.float32))["params"]
  params = {"backbone": encoder.variables["params"], "head": head_params}
  batch_stats = {"backbone": encoder.variables["batch_stats"]}
  schedule = optax.cosine_decay_schedule(learning_rate, max(steps, 1))
  optimizer = optax.chain(optax.add_decayed_weights(weight_decay),
                          optax.sgd(schedule, momentum=momentum, nesterov=True))
  opt_state = optimizer.init(params)

  def normalise(batch):
    return device_augment.normalize(batch, encoder.mean, encoder.std)

  @jax.jit
  def train_step(params, batch_stats, opt_state, batch_images, batch_labels):
    def loss_fn(params):
      outputs, mutated = classifier.apply({"params": params, "batch_stats": batch_stats},
                                          normalise(batch_images), train=True,
                                          mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"],
                                                             batch_labels).mean()
      return loss, mutated["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  rng = np.random.default_rng(seed)
  order, position = rng.permutation(count), 0
  for _ in range(steps):
    if position + batch_size > count:   # a new epoch: reshuffle, drop the ragged remainder
      order, position = rng.permutation(count), 0
    index = order[position:position + batch_size]
    position += batch_size
    params, batch_stats, opt_state, _ = train_step(params, batch_stats, opt_state,
                                                   jnp.asarray(images[index]),
                                                   jnp.asarray(labels[index]))

  variables = {"params": params, "batch_stats": batch_stats}

  @jax.jit
  def probabilities_of_batch(variables, batch_images):
    logits = classifier.apply(variables, normalise(batch_images), train=False)["logits"]
    return jax.nn.softmax(logits, -1)

  def predict_probabilities(all_images, chunk: int = 512):
    return np.concatenate([
        np.asarray(probabilities_of_batch(variables, jnp.asarray(all_images[s:s + chunk])))
        for s in range(0, len(all_images), chunk)])

  encoder_variables = {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}
  return encoder_variables, predict_probabilities
