"""Frozen-feature evaluation of an encoder on a config's dataset: kNN and linear probe top-1
(mean AUC over labels for multi-label data)."""

from __future__ import annotations

import ml_collections
import numpy as np
from jax.sharding import Mesh

from input_pipeline import pipeline as input_pipeline
from ssl_jax.evaluation import features as features_lib
from ssl_jax.evaluation import knn as knn_lib
from ssl_jax.evaluation import linear_probe as linear_probe_lib
from ssl_jax.evaluation import metrics as metrics_lib


def resolve_num_classes(config: ml_collections.ConfigDict, *label_arrays: np.ndarray) -> int:
  """config.data.num_classes, or (when 0: 'whatever the data holds') 1 + the largest label."""
  if config.data.num_classes > 0:
    return config.data.num_classes
  return int(max(np.max(labels) for labels in label_arrays)) + 1


def is_multi_label(config: ml_collections.ConfigDict) -> bool:
  return config.data.get("label_type", "single") == "multi_label"


def split_features(encoder, config: ml_collections.ConfigDict, mesh: Mesh, split: str, *,
                   apply_fn=None, batch_size: int | None = None,
                   max_examples: int | None = None):
  """Features and labels of a whole split (capped by config.eval.max_examples).

  `apply_fn` (default: the encoder's pooled features) may return a dict of features, e.g.
  `features.stage_feature_fn(encoder)`; `batch_size` and `max_examples` override
  config.eval's (the evaluation configs keep them at top level)."""
  batch_size = config.eval.batch_size if batch_size is None else batch_size
  max_examples = config.eval.max_examples if max_examples is None else max_examples
  batch_size = features_lib.padded_batch_size(batch_size, mesh)
  batches = input_pipeline.eval_batches(config, split, batch_size, max_examples)
  return features_lib.extract_features(apply_fn or encoder.pooled, batches, mesh, batch_size)


def evaluate_frozen(encoder, config: ml_collections.ConfigDict, mesh: Mesh, *,
                    knn_ks=None, linear_probe: bool | None = None) -> dict[str, float]:
  """{'knn_top1_k<k>': ..., 'knn_top1': (first k), 'linear_top1': ...} on the test split,
  with the train split as the kNN memory bank and the probe's training data. Multi-label data
  gives the mean AUC over labels instead: 'knn_mean_auc_k<k>', 'knn_mean_auc',
  'linear_mean_auc'."""
  knn_ks = tuple(config.eval.knn_k if knn_ks is None else knn_ks)
  linear_probe = config.eval.linear_probe if linear_probe is None else linear_probe
  train_features, train_labels = split_features(encoder, config, mesh, config.data.train_split)
  test_features, test_labels = split_features(encoder, config, mesh, config.data.test_split)
  if is_multi_label(config):
    return _evaluate_multi_label(config, knn_ks, linear_probe, train_features, train_labels,
                                 test_features, test_labels)
  num_classes = resolve_num_classes(config, train_labels, test_labels)
  results = {}
  for k in knn_ks:
    results[f"knn_top1_k{k}"] = knn_lib.knn_top1(
        train_features, train_labels, test_features, test_labels, k=k,
        temperature=config.eval.knn_temperature, num_classes=num_classes)
  results["knn_top1"] = results[f"knn_top1_k{knn_ks[0]}"]
  if linear_probe:
    probe = linear_probe_lib.linear_probe_top1(train_features, train_labels, test_features,
                                               test_labels, num_classes=num_classes)
    results["linear_top1"] = probe["top1"]
    results["linear_l2"] = probe["l2"]
  return {key: float(np.asarray(value)) for key, value in results.items()}


def _evaluate_multi_label(config, knn_ks, linear_probe, train_features, train_targets,
                          test_features, test_targets) -> dict[str, float]:
  results = {}
  for k in knn_ks:
    scores = knn_lib.knn_multilabel_scores(train_features, train_targets, test_features, k=k,
                                           temperature=config.eval.knn_temperature)
    results[f"knn_mean_auc_k{k}"] = metrics_lib.multilabel_mean_auc(test_targets, scores)
  results["knn_mean_auc"] = results[f"knn_mean_auc_k{knn_ks[0]}"]
  if linear_probe:
    probe = linear_probe_lib.multilabel_linear_probe(train_features, train_targets, test_features,
                                                     test_targets)
    results["linear_mean_auc"] = probe["mean_auc"]
    results["linear_l2"] = probe["l2"]
  return {key: float(np.asarray(value)) for key, value in results.items()}
