"""Occlusion and gradient saliency of the pooled features (`ssl_jax.evaluation.saliency`) on the
first `num_images` images of a split, with attentive diffusion (the percentage of a map's pixels
above its mean); one overlay figure per encoder."""

from __future__ import annotations

import jax
import ml_collections

from ssl_jax.evaluation import saliency as saliency_lib
from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.evaluators.evaluator import Evaluator
from ssl_jax.evaluation.report import Report


def float_pooled_fn(encoder):
  """jit(float images in [0, 1]) -> pooled features: differentiable, variables an argument."""
  pooled = jax.jit(lambda variables, images: encoder.apply_unjitted(variables, images)["pooled"])
  return lambda images: pooled(encoder.variables, images)


def evaluate(encoders: dict, data: EvalData, settings: ml_collections.ConfigDict) -> Report:
  images = data.sample_images(settings.split or data.config.data.test_split,
                              settings.num_images)
  side = images.shape[1]
  stride = settings.occluder_stride or max(1, round(side / 56))   # 1 up to 84 px, 4 at 224 px
  results, rows, plots = {}, [], []
  for name, encoder in encoders.items():
    feature_fn = float_pooled_fn(encoder)
    maps = {
        "occlusion": saliency_lib.occlusion_saliency(
            feature_fn, images, patch=min(settings.occluder_size, side), stride=stride,
            fill=encoder.mean),
        "gradient": saliency_lib.gradient_saliency(feature_fn, images),
    }
    results[name] = {}
    for kind, kind_maps in maps.items():
      diffusion = saliency_lib.attentive_diffusion(kind_maps)
      results[name][kind] = {"attentive_diffusion_percent": float(diffusion.mean()),
                             "per_image": diffusion.tolist()}
      rows.append((name, kind, f"{diffusion.mean():.1f}"))
    results[name]["occluder"] = {"size": min(settings.occluder_size, side), "stride": stride}
    path = data.output_path(f"saliency_{name}.png")
    if path:
      from ssl_jax.plots import evaluation as plot_lib
      plots.append(plot_lib.saliency_overlays(path, images, maps,
                                                     source=data.figure_source))
  return Report(results, ("encoder", "saliency", "attentive diffusion %"), rows, plots)


EVALUATOR = Evaluator(evaluate, multi_label=True)
