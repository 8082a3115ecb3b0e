"""The supervised-from-scratch baseline: its loss against NumPy for single- and multi-label data,
and its refusal of a dataset without a class count. (Its tiny job learning, export and
evaluation are the shared checks of tests/test_tiny_jobs.py, which takes every objective.)"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import config_validation, train
from ssl_jax.objectives import LossInputs, build_objective


def _objective_and_inputs(label_type: str, num_classes: int):
  config = importlib.import_module("configs.supervised").get_config("digits,tiny")
  config.data.label_type = label_type
  config.data.num_classes = num_classes
  objective = build_objective(config, num_batch_shards=1)
  params, batch_stats = objective.init(jax.random.key(0), (16, 16, 3))
  rng = np.random.default_rng(0)
  views = tuple(jnp.asarray(rng.normal(size=(6, 16, 16, 3)), jnp.float32) for _ in range(2))
  if label_type == "multi_label":
    labels = rng.integers(0, 2, (6, num_classes)).astype(np.int32)
  else:
    labels = rng.integers(0, num_classes, 6).astype(np.int32)
  inputs = LossInputs(params=params, batch_stats=batch_stats, views=views,
                      rng=jax.random.key(1), step=jnp.int32(0), labels=jnp.asarray(labels))
  return objective, inputs, labels


def _logits(objective, inputs) -> np.ndarray:
  outputs, _ = objective.train_forward(inputs.params, inputs.batch_stats,
                                       jnp.concatenate(inputs.views, axis=0))
  return np.asarray(outputs["logits"], np.float64)


def test_loss_is_the_cross_entropy_of_both_views():
  objective, inputs, labels = _objective_and_inputs("single", 10)
  loss, output = objective.loss(inputs)
  logits = _logits(objective, inputs)
  targets = np.concatenate([labels, labels])
  log_probabilities = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(
      1, keepdims=True)) - logits.max(1, keepdims=True)
  expected = -np.mean(log_probabilities[np.arange(12), targets])
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(output.metrics["train_accuracy"]) == pytest.approx(
      np.mean(logits.argmax(1) == targets))


def test_multi_label_loss_is_the_summed_sigmoid_cross_entropy():
  objective, inputs, labels = _objective_and_inputs("multi_label", 5)
  loss, _ = objective.loss(inputs)
  logits = _logits(objective, inputs)
  targets = np.concatenate([labels, labels]).astype(np.float64)
  per_label = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
  assert float(loss) == pytest.approx(per_label.sum(1).mean(), rel=1e-5)


def test_a_dataset_without_a_class_count_is_a_config_error(tmp_path):
  config = importlib.import_module("configs.supervised").get_config("folder,tiny")
  config.data.root = str(tmp_path)
  with pytest.raises(config_validation.ConfigError,
                     match="needs config.data.num_classes >= 2.*set it for folder"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
