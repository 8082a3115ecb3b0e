"""Metrics beyond top-1: mean per-class accuracy, binary, multi-class and multi-label AUC,
quadratic kappa.

All take host arrays and return Python floats. AUC is the Mann-Whitney statistic (the probability
that a random positive scores above a random negative, ties counting one half), computed from
average ranks so ties are handled exactly as the trapezoidal ROC area handles them.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def top1(labels: np.ndarray, predictions: np.ndarray) -> float:
  return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def mean_per_class_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
  """The average over classes present in `labels` of each class's recall (balanced accuracy)."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  recalls = [np.mean(predictions[labels == cls] == cls) for cls in np.unique(labels)]
  return float(np.mean(recalls))


def binary_auc(targets: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve of `scores` for binary `targets` (0/1)."""
  targets = np.asarray(targets).astype(bool).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  positives, negatives = int(targets.sum()), int((~targets).sum())
  if positives == 0 or negatives == 0:
    raise ValueError(f"AUC needs both classes; got {positives} positives and {negatives} "
                     "negatives")
  ranks = stats.rankdata(scores)   # average ranks of tied scores
  positive_rank_sum = ranks[targets].sum()
  return float((positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def multilabel_mean_auc(targets: np.ndarray, scores: np.ndarray) -> float:
  """Mean over labels of the binary AUC (labels without both outcomes are skipped, as in the
  chest X-ray benchmarks, where rare findings can be absent from a split)."""
  targets, scores = np.asarray(targets), np.asarray(scores)
  if targets.shape != scores.shape or targets.ndim != 2:
    raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be (N, labels)")
  aucs = [binary_auc(targets[:, j], scores[:, j]) for j in range(targets.shape[1])
          if 0 < targets[:, j].sum() < targets.shape[0]]
  if not aucs:
    raise ValueError("no label has both positives and negatives; AUC is undefined")
  return float(np.mean(aucs))


def classification_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
  """AUC of single-label predictions as the MedMNIST benchmarks score it: for two classes the
  binary AUC of the class-1 probability; for more, the mean over classes of the one-vs-rest AUC of
  that class's probability (classes absent from `labels` are skipped). Ordinal grades are scored
  as classes."""
  labels, probabilities = np.asarray(labels), np.asarray(probabilities)
  if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0]:
    raise ValueError(f"probabilities {probabilities.shape} must be (N, classes) for {labels.shape[0]} "
                     "labels")
  if probabilities.shape[1] == 2:
    return binary_auc(labels == 1, probabilities[:, 1])
  one_hot = (labels[:, None] == np.arange(probabilities.shape[1])[None, :]).astype(np.int64)
  return multilabel_mean_auc(one_hot, probabilities)


def quadratic_weighted_kappa(labels: np.ndarray, predictions: np.ndarray,
                             num_classes: int | None = None) -> float:
  """Cohen's kappa with weights (i - j)^2 / (K - 1)^2, for ordinal grades 0..K-1."""
  labels = np.asarray(labels, np.int64)
  predictions = np.asarray(predictions, np.int64)
  if num_classes is None:
    num_classes = int(max(labels.max(), predictions.max())) + 1
  observed = np.zeros((num_classes, num_classes))
  np.add.at(observed, (labels, predictions), 1.0)
  observed /= observed.sum()
  # Agreement expected by chance: outer product of the two marginals.
  expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
  grades = np.arange(num_classes)
  weights = (grades[:, None] - grades[None, :]) ** 2 / max(num_classes - 1, 1) ** 2
  return float(1.0 - (weights * observed).sum() / (weights * expected).sum())


CLASSIFICATION_METRICS = {
    "top1": top1,
    "mean_per_class": mean_per_class_accuracy,
    "kappa": quadratic_weighted_kappa,
}
