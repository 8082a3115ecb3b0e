"""Invariance of the pooled features to image transforms (`ssl_jax.evaluation.invariance`): for
each strength of each sweep, the mean cosine of f(x) and f(T(x)) over `num_images` images, beside
the mean cosine between different images."""

from __future__ import annotations

import ml_collections

from ssl_jax.evaluation import invariance as invariance_lib
from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.evaluators.evaluator import Evaluator
from ssl_jax.evaluation.evaluators.saliency import float_pooled_fn
from ssl_jax.evaluation.report import Report


def check(settings: ml_collections.ConfigDict) -> None:
  for name in settings.sweeps:
    if name not in invariance_lib.TRANSFORMS:
      raise ValueError(f"eval.invariance.sweeps has {name!r}; allowed: "
                       f"{list(invariance_lib.TRANSFORMS)}")


def evaluate(encoders: dict, data: EvalData, settings: ml_collections.ConfigDict) -> Report:
  images = data.sample_images(settings.split or data.config.data.test_split,
                              settings.num_images)
  sweeps = {name: list(settings.sweeps[name]) for name in settings.sweeps}
  results, rows = {}, []
  for name, encoder in encoders.items():
    feature_fn = float_pooled_fn(encoder)
    results[name] = {
        "transforms": invariance_lib.invariance_sweeps(feature_fn, images, sweeps),
        "different_images_cosine": invariance_lib.different_images_cosine(feature_fn, images)}
    for transform, sweep in results[name]["transforms"].items():
      rows.append((name, transform, " ".join(f"{p:g}:{c:.3f}" for p, c in
                                             zip(sweep["params"], sweep["cosine"]))))
    rows.append((name, "(different images)", f"{results[name]['different_images_cosine']:.3f}"))
  plots = []
  path = data.output_path("invariance.png")
  if path:
    from ssl_jax.plots import evaluation as plot_lib
    panels = {transform: {"x": sweeps[transform], "xlabel": transform,
                          "series": {n: r["transforms"][transform]["cosine"]
                                     for n, r in results.items()},
                          "baselines": {n: r["different_images_cosine"]
                                        for n, r in results.items()}}
              for transform in sweeps}
    plots.append(plot_lib.panels_of_lines(path, panels, "cosine f(x), f(T(x))",
                                          source=data.figure_source))
  return Report(results, ("encoder", "transform", "strength:cosine"), rows, plots)


EVALUATOR = Evaluator(evaluate, check, multi_label=True)
