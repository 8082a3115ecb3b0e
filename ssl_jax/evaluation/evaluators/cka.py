"""CKA between every pair of stages of the evaluated encoder and another encoder
(`ssl_jax.evaluation.cka`), averaged over random subsets of examples.

`other_encoder`: 'random_init' (the same architecture freshly initialised, as the baseline of
that name), '' (the encoder against itself) or another exported encoder directory. The first
encoder given is the one evaluated (its results are the only entry); baselines do not take part.
"""

from __future__ import annotations

import os

import ml_collections

from ssl_jax import export as export_lib
from ssl_jax.evaluation import baselines
from ssl_jax.evaluation import cka as cka_lib
from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.evaluators.evaluator import Evaluator
from ssl_jax.evaluation.report import Report, fmt

STAGES = ("stage1", "stage2", "stage3", "stage4")


def check(settings: ml_collections.ConfigDict) -> None:
  for kernel in settings.kernels:
    if kernel not in cka_lib.KERNELS:
      raise ValueError(f"eval.cka.kernels has {kernel!r}; allowed: {list(cka_lib.KERNELS)}")
  if settings.rbf_sigma_mode not in cka_lib.RBF_SIGMA_MODES:
    raise ValueError(f"eval.cka.rbf_sigma_mode={settings.rbf_sigma_mode!r} is not allowed; "
                     f"choose one of {list(cka_lib.RBF_SIGMA_MODES)}")
  if settings.spatial_size < 0:
    raise ValueError(f"eval.cka.spatial_size={settings.spatial_size} must be >= 0")


def _other(encoder, data: EvalData, settings) -> tuple[object, str]:
  if settings.other_encoder == "random_init":
    return baselines.BASELINES["random_init"](encoder, data), "random_init"
  if settings.other_encoder:
    return export_lib.load_encoder(settings.other_encoder), settings.other_encoder
  return encoder, "encoder"


def evaluate(encoders: dict, data: EvalData, settings: ml_collections.ConfigDict) -> Report:
  name, encoder = next(iter(encoders.items()))
  other, other_name = _other(encoder, data, settings)
  split = settings.split or data.config.data.test_split
  keys = [s if settings.spatial_size == 0 else f"{s}_s{settings.spatial_size}" for s in STAGES]

  def stage_representations(which):
    features, _ = data.stage_features(which, split, settings.spatial_size)
    return [features[k] for k in keys]

  rows_repr = stage_representations(encoder)
  columns_repr = rows_repr if other is encoder else stage_representations(other)
  result = {"other_encoder": other_name, "split": split, "stages": keys, "kernels": {}}
  matrices, rows = {}, []
  for kernel in settings.kernels:
    mean, std, size = cka_lib.subset_cka_matrix(
        rows_repr, columns_repr, kernel=kernel, sigma=settings.rbf_sigma,
        sigma_mode=settings.rbf_sigma_mode, num_subsets=settings.num_subsets,
        subset_size=settings.subset_size, seed=data.seed)
    subsets = 1 if size == rows_repr[0].shape[0] else settings.num_subsets
    result["kernels"][kernel] = {"matrix": mean.tolist(), "std_over_subsets": std.tolist(),
                                  "subset_size": size, "num_subsets": subsets}
    matrices[f"{kernel} CKA ({subsets} x {size} examples)"] = mean
    for i, row_key in enumerate(keys):
      rows.append((kernel, row_key) + tuple(fmt(v) for v in mean[i]))
  plots = []
  path = data.output_path("cka.png")
  if path:
    from ssl_jax.plots import evaluation as plot_lib
    plots.append(plot_lib.heatmaps(path, matrices, keys, keys, name,
                                   "other: " + os.path.basename(os.path.normpath(other_name)),
                                   source=data.figure_source))
  return Report({name: result}, ("kernel", f"{name} \\ other") + tuple(keys), rows, plots)


EVALUATOR = Evaluator(evaluate, check, multi_label=True)
