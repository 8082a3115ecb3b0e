"""Per-layer probing (`ssl_jax.evaluation.layer_probe`): the linear probe of `eval.linear`, on
each stage output (globally pooled; with `spatial_size` S > 0 also pooled onto an S x S grid).

Results per encoder: {layer: linear-probe results}.
"""

from __future__ import annotations

import ml_collections

from ssl_jax.evaluation import layer_probe
from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.evaluators import linear
from ssl_jax.evaluation.evaluators.evaluator import Evaluator
from ssl_jax.evaluation.report import Report, fmt


def check(settings: ml_collections.ConfigDict) -> None:
  if settings.spatial_size < 0:
    raise ValueError(f"eval.layers.spatial_size={settings.spatial_size} must be >= 0 (0: global "
                     "pooling only)")


def evaluate(encoders: dict, data: EvalData, settings: ml_collections.ConfigDict) -> Report:
  splits = data.config.data
  probe_settings = linear.probe_settings(data.settings.linear, data.seed)
  results, rows = {}, []
  for name, encoder in encoders.items():
    train_features, train_labels = data.stage_features(encoder, splits.train_split,
                                                       settings.spatial_size)
    test_features, test_labels = data.stage_features(encoder, splits.test_split,
                                                     settings.spatial_size)
    results[name] = layer_probe.probe_layers(train_features, train_labels, test_features,
                                             test_labels, num_classes=data.num_classes,
                                             **probe_settings)
    for layer, probe in results[name].items():
      rows.append((name, layer, str(train_features[layer].shape[1]), fmt(probe["top1"]),
                   fmt(probe["mean_per_class"])))
  plots = []
  path = data.output_path("layers.png")
  if path:
    from ssl_jax.plots import evaluation as plot_lib
    layers = list(next(iter(results.values())))
    plots.append(plot_lib.lines(
        path, "linear probe per layer", "layer", "top-1", list(range(len(layers))),
        {n: [r[layer]["top1"] for layer in layers] for n, r in results.items()},
        x_ticks=layers, source=data.figure_source))
  return Report(results, ("encoder", "layer", "dim", "top-1", "mean per class"), rows, plots)


EVALUATOR = Evaluator(evaluate, check)
