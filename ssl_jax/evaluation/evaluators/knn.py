"""Weighted kNN on frozen pooled features (`ssl_jax.evaluation.knn`), for every k of the settings.

Results per encoder: 'top1_k<k>' for each k and 'top1', the first k's (the online kNN and the
end-of-training table report it); multi-label data gives 'mean_auc_k<k>' and 'mean_auc'.
"""

from __future__ import annotations

import ml_collections

from ssl_jax.evaluation import knn as knn_lib
from ssl_jax.evaluation import metrics as metrics_lib
from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.evaluators.evaluator import Evaluator
from ssl_jax.evaluation.report import Report, fmt


def check(settings: ml_collections.ConfigDict) -> None:
  ks = tuple(settings.ks)
  if not ks or min(ks) < 1:
    raise ValueError(f"eval.knn.ks={ks} must be one or more positive integers")
  if settings.temperature <= 0:
    raise ValueError(f"eval.knn.temperature={settings.temperature} must be positive")


def _scores(train_features, train_labels, test_features, test_labels, data: EvalData,
            settings) -> dict[str, float]:
  ks = tuple(settings.ks)
  results = {}
  for k in ks:
    if data.multi_label:
      scores = knn_lib.knn_multilabel_scores(train_features, train_labels, test_features, k=k,
                                             temperature=settings.temperature)
      results[f"mean_auc_k{k}"] = metrics_lib.multilabel_mean_auc(test_labels, scores)
    else:
      results[f"top1_k{k}"] = knn_lib.knn_top1(
          train_features, train_labels, test_features, test_labels, k=k,
          temperature=settings.temperature, num_classes=data.num_classes)
  metric = "mean_auc" if data.multi_label else "top1"
  results[metric] = results[f"{metric}_k{ks[0]}"]
  return results


def evaluate(encoders: dict, data: EvalData, settings: ml_collections.ConfigDict) -> Report:
  split_names = data.config.data
  ks = tuple(settings.ks)
  metric, title = ("mean_auc", "mean AUC") if data.multi_label else ("top1", "top-1")
  results, rows = {}, []
  for name, encoder in encoders.items():
    results[name] = _scores(*data.features(encoder, split_names.train_split),
                            *data.features(encoder, split_names.test_split), data, settings)
    rows.append((name,) + tuple(fmt(results[name][f"{metric}_k{k}"]) for k in ks))
  plots = []
  path = data.output_path("knn.png")
  if path:
    from ssl_jax.plots import evaluation as plot_lib
    plots.append(plot_lib.grouped_bars(
        path, f"weighted kNN (T={settings.temperature})", [f"k={k}" for k in ks],
        {n: [r[f"{metric}_k{k}"] for k in ks] for n, r in results.items()}, title,
        source=data.figure_source))
  return Report(results, ("encoder",) + tuple(f"{title} k={k}" for k in ks), rows, plots)


EVALUATOR = Evaluator(evaluate, check, multi_label=True, frozen_features=True)
