"""`run_evaluation(config, workdir)`: the evaluation suite on an exported encoder.

`python main.py --mode=eval --config=configs/eval/<name>.py:<dataset> --config.encoder=DIR
--workdir=OUT` loads DIR with `load_encoder`, runs the evaluation the config names on the
dataset's splits, writes OUT/results.json (the config, the encoder and every number) and the
evaluation's PNG plots, and prints a short table. With `config.random_init_baseline` the same
architecture freshly initialised is evaluated alongside, so the table shows what training bought.

Each evaluation is one function `(context, encoders) -> Report` in the explicit `EVALUATIONS`
dict; the maths lives in the modules of ssl_jax/evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from input_pipeline import pipeline as input_pipeline
from input_pipeline import sources
from ssl_jax import config_validation
from ssl_jax import export as export_lib
from ssl_jax import sharding as sharding_lib
from ssl_jax.evaluation import cka as cka_lib
from ssl_jax.evaluation import features as features_lib
from ssl_jax.evaluation import fine_tune as fine_tune_lib
from ssl_jax.evaluation import few_shot as few_shot_lib
from ssl_jax.evaluation import frozen
from ssl_jax.evaluation import invariance as invariance_lib
from ssl_jax.evaluation import knn as knn_lib
from ssl_jax.evaluation import layer_probe
from ssl_jax.evaluation import linear_probe as linear_probe_lib
from ssl_jax.evaluation import metrics as metrics_lib
from ssl_jax.evaluation import saliency as saliency_lib

RESULTS_FILE = "results.json"
# Evaluations that handle multi-hot labels (mean AUC over labels); the others need one class each.
MULTI_LABEL_EVALUATIONS = ("linear", "knn", "cka", "saliency", "invariance")
RANDOM_INIT = "random_init"


@dataclasses.dataclass
class Report:
  """What an evaluation produced: JSON-able results, a table (header + rows), plot paths."""
  results: dict[str, Any]
  header: tuple[str, ...]
  rows: list[tuple[str, ...]]
  plots: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Context:
  config: ml_collections.ConfigDict   # data.image_size resolved to the encoder's
  mesh: jax.sharding.Mesh
  workdir: str

  def features(self, encoder, split: str, apply_fn=None):
    """(features, labels) of `split`; features are pooled unless `apply_fn` says otherwise."""
    return frozen.split_features(encoder, self.config, self.mesh, split, apply_fn=apply_fn,
                                 batch_size=self.config.batch_size,
                                 max_examples=self.config.max_examples)

  def images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All (uint8 images, labels) of `split` in host memory (capped by max_examples)."""
    batches = list(input_pipeline.eval_batches(self.config, split, self.config.batch_size,
                                               self.config.max_examples))
    if not batches:
      raise ValueError(f"the {split!r} split has no examples")
    return (np.concatenate([b["image"] for b in batches]),
            np.concatenate([b["label"] for b in batches]).astype(np.int32))

  def path(self, filename: str) -> str:
    return os.path.join(self.workdir, filename)


def random_init_encoder(encoder: export_lib.Encoder, seed: int) -> export_lib.Encoder:
  """The same architecture with freshly initialised variables (BN statistics 0 / 1, as at the
  start of training). Drawn with the 'rbg' generator, as training's initialisation (the same
  initialiser maths; XLA compiles it about 10x faster on CPU than threefry)."""
  images = jnp.zeros((1, encoder.image_size, encoder.image_size, 3), jnp.float32)
  variables = jax.jit(lambda key: encoder.module.init(key, images, train=False))(
      jax.random.key(seed, impl="rbg"))
  return encoder.with_variables(variables)


def _fmt(value: float) -> str:
  return f"{value:.4f}"


# --- the evaluations -----------------------------------------------------------------------------

def _l2_grid(section: ml_collections.ConfigDict) -> np.ndarray:
  if section.l2_num < 1 or section.l2_min <= 0 or section.l2_max < section.l2_min:
    raise config_validation.ConfigError(
        f"linear.l2_min={section.l2_min}, l2_max={section.l2_max}, l2_num={section.l2_num}: need "
        "0 < l2_min <= l2_max and l2_num >= 1")
  return np.logspace(np.log10(section.l2_min), np.log10(section.l2_max), section.l2_num)


def _probe_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  section = config.linear
  if section.select_by not in linear_probe_lib.SELECTION_METRICS:
    raise config_validation.ConfigError(
        f"linear.select_by={section.select_by!r} is not allowed; choose one of "
        f"{list(linear_probe_lib.SELECTION_METRICS)}")
  return dict(l2_grid=_l2_grid(section), holdout_fraction=section.holdout_fraction,
              select_by=section.select_by, iterations=section.iterations, seed=config.seed)


def evaluate_linear(context: Context, encoders: dict) -> Report:
  config = context.config
  if frozen.is_multi_label(config):
    return _evaluate_linear_multi_label(context, encoders)
  results, rows = {}, []
  for name, encoder in encoders.items():
    train = context.features(encoder, config.data.train_split)
    test = context.features(encoder, config.data.test_split)
    probe = linear_probe_lib.linear_probe(*train, *test, num_classes=config.data.num_classes,
                                          **_probe_kwargs(config))
    results[name] = probe
    rows.append((name, _fmt(probe["top1"]), _fmt(probe["mean_per_class"]),
                 _fmt(probe["kappa"]), f"{probe['l2']:.2g}"))
  from ssl_jax.plots import evaluation as plots
  plot = plots.grouped_bars(context.path("linear.png"), "linear probe (test split)",
                            ["top-1", "mean per class"],
                            {n: [r["top1"], r["mean_per_class"]] for n, r in results.items()},
                            "accuracy")
  return Report(results, ("encoder", "top-1", "mean per class", "kappa", "chosen L2"), rows,
                [plot])


def _evaluate_linear_multi_label(context: Context, encoders: dict) -> Report:
  """One sigmoid head per label, scored by the mean AUC over labels (multi-label data)."""
  config = context.config
  kwargs = _probe_kwargs(config)
  kwargs.pop("select_by")   # the multi-label probe selects by validation mean AUC
  results, rows = {}, []
  for name, encoder in encoders.items():
    train = context.features(encoder, config.data.train_split)
    test = context.features(encoder, config.data.test_split)
    probe = linear_probe_lib.multilabel_linear_probe(*train, *test, **kwargs)
    results[name] = probe
    rows.append((name, _fmt(probe["mean_auc"]), f"{probe['l2']:.2g}"))
  return Report(results, ("encoder", "mean AUC", "chosen L2"), rows)


def evaluate_knn(context: Context, encoders: dict) -> Report:
  config = context.config
  ks = tuple(config.knn.ks)
  if not ks or min(ks) < 1:
    raise config_validation.ConfigError(f"knn.ks={ks} must be positive integers")
  results, rows = {}, []
  if frozen.is_multi_label(config):
    for name, encoder in encoders.items():
      train_features, train_targets = context.features(encoder, config.data.train_split)
      test_features, test_targets = context.features(encoder, config.data.test_split)
      results[name] = {
          f"mean_auc_k{k}": metrics_lib.multilabel_mean_auc(test_targets, knn_lib.knn_multilabel_scores(
              train_features, train_targets, test_features, k=k,
              temperature=config.knn.temperature))
          for k in ks}
      rows.append((name,) + tuple(_fmt(results[name][f"mean_auc_k{k}"]) for k in ks))
    return Report(results, ("encoder",) + tuple(f"mean AUC k={k}" for k in ks), rows)
  for name, encoder in encoders.items():
    train_features, train_labels = context.features(encoder, config.data.train_split)
    test_features, test_labels = context.features(encoder, config.data.test_split)
    results[name] = {
        f"top1_k{k}": knn_lib.knn_top1(train_features, train_labels, test_features, test_labels,
                                       k=k, temperature=config.knn.temperature,
                                       num_classes=config.data.num_classes)
        for k in ks}
    rows.append((name,) + tuple(_fmt(results[name][f"top1_k{k}"]) for k in ks))
  from ssl_jax.plots import evaluation as plots
  plot = plots.grouped_bars(context.path("knn.png"), f"weighted kNN (T={config.knn.temperature})",
                            [f"k={k}" for k in ks],
                            {n: [r[f"top1_k{k}"] for k in ks] for n, r in results.items()},
                            "top-1")
  return Report(results, ("encoder",) + tuple(f"top-1 k={k}" for k in ks), rows, [plot])


def evaluate_few_shot(context: Context, encoders: dict) -> Report:
  config = context.config
  section = config.few_shot
  split = section.split or config.data.train_split
  results, rows = {}, []
  for name, encoder in encoders.items():
    features, labels = context.features(encoder, split)
    results[name] = few_shot_lib.few_shot(
        features, labels, n_way=section.n_way, shots=tuple(section.shots),
        n_query=section.n_query, num_episodes=section.episodes, seed=config.seed,
        classifier=section.classifier, logistic_l2=section.logistic_l2)
    rows.append((name,) + tuple(f"{r['mean']:.4f} +- {r['ci95']:.4f}"
                                for r in results[name].values()))
  from ssl_jax.plots import evaluation as plots
  keys = [f"{section.n_way}way_{k}shot" for k in section.shots]
  plot = plots.lines(context.path("few_shot.png"),
                     f"{section.n_way}-way few-shot ({section.classifier}, 95% CI)", "shots",
                     "accuracy", list(section.shots),
                     {n: [r[k]["mean"] for k in keys] for n, r in results.items()},
                     {n: [r[k]["ci95"] for k in keys] for n, r in results.items()}, log_x=True)
  return Report(results, ("encoder",) + tuple(f"{k}-shot" for k in section.shots), rows, [plot])


def evaluate_layers(context: Context, encoders: dict) -> Report:
  config = context.config
  results, rows = {}, []
  for name, encoder in encoders.items():
    apply_fn = features_lib.stage_feature_fn(encoder, config.layers.spatial_size)
    train_features, train_labels = context.features(encoder, config.data.train_split, apply_fn)
    test_features, test_labels = context.features(encoder, config.data.test_split, apply_fn)
    results[name] = layer_probe.probe_layers(train_features, train_labels, test_features,
                                             test_labels, num_classes=config.data.num_classes,
                                             **_probe_kwargs(config))
    for layer, probe in results[name].items():
      rows.append((name, layer, str(train_features[layer].shape[1]), _fmt(probe["top1"]),
                   _fmt(probe["mean_per_class"])))
  from ssl_jax.plots import evaluation as plots
  layers = list(next(iter(results.values())))
  plot = plots.lines(context.path("layers.png"), "linear probe per layer", "layer", "top-1",
                     list(range(len(layers))),
                     {n: [r[layer]["top1"] for layer in layers] for n, r in results.items()},
                     x_ticks=layers)
  return Report(results, ("encoder", "layer", "dim", "top-1", "mean per class"), rows, [plot])


STAGES = ("stage1", "stage2", "stage3", "stage4")


def evaluate_cka(context: Context, encoders: dict) -> Report:
  config = context.config
  section = config.cka
  encoder = encoders["encoder"]
  if section.other_encoder == RANDOM_INIT:
    other, other_name = random_init_encoder(encoder, config.seed), RANDOM_INIT
  elif section.other_encoder:
    other, other_name = export_lib.load_encoder(section.other_encoder), section.other_encoder
  else:
    other, other_name = encoder, "encoder"
  for kernel in section.kernels:
    if kernel not in cka_lib.KERNELS:
      raise config_validation.ConfigError(
          f"cka.kernels has {kernel!r}; allowed: {list(cka_lib.KERNELS)}")
  if section.rbf_sigma_mode not in cka_lib.RBF_SIGMA_MODES:
    raise config_validation.ConfigError(
        f"cka.rbf_sigma_mode={section.rbf_sigma_mode!r} is not allowed; choose one of "
        f"{list(cka_lib.RBF_SIGMA_MODES)}")
  split = section.split or config.data.test_split
  keys = [s if section.spatial_size == 0 else f"{s}_s{section.spatial_size}" for s in STAGES]

  def stage_representations(which):
    features, _ = context.features(which, split,
                                   features_lib.stage_feature_fn(which, section.spatial_size))
    return [features[k] for k in keys]

  rows_repr = stage_representations(encoder)
  columns_repr = rows_repr if other is encoder else stage_representations(other)
  results = {"encoder": config.encoder, "other_encoder": other_name, "split": split,
             "stages": keys, "kernels": {}}
  matrices, rows = {}, []
  for kernel in section.kernels:
    mean, std, size = cka_lib.subset_cka_matrix(
        rows_repr, columns_repr, kernel=kernel, sigma=section.rbf_sigma,
        sigma_mode=section.rbf_sigma_mode, num_subsets=section.num_subsets,
        subset_size=section.subset_size, seed=config.seed)
    subsets = 1 if size == rows_repr[0].shape[0] else section.num_subsets
    results["kernels"][kernel] = {"matrix": mean.tolist(), "std_over_subsets": std.tolist(),
                                  "subset_size": size, "num_subsets": subsets}
    matrices[f"{kernel} CKA ({subsets} x {size} examples)"] = mean
    for i, row_key in enumerate(keys):
      rows.append((kernel, row_key) + tuple(_fmt(v) for v in mean[i]))
  from ssl_jax.plots import evaluation as plots
  plot = plots.heatmaps(context.path("cka.png"), matrices, keys, keys,
                        "encoder", "other: " + os.path.basename(os.path.normpath(other_name)))
  return Report(results, ("kernel", "encoder \\ other") + tuple(keys), rows, [plot])


def evaluate_fine_tune(context: Context, encoders: dict) -> Report:
  config = context.config
  section = config.fine_tune
  fractions = tuple(section.label_fractions)
  train_images, train_labels = context.images(config.data.train_split)
  test_images, test_labels = context.images(config.data.test_split)
  subsets = fine_tune_lib.label_fraction_subsets(train_labels, fractions, config.seed)
  results, rows = {}, []
  for name, encoder in encoders.items():
    results[name] = {}
    for fraction in fractions:
      index = subsets[fraction]
      variables, predict = fine_tune_lib.fine_tune(
          encoder, train_images[index], train_labels[index], num_classes=config.data.num_classes,
          steps=section.steps, batch_size=section.batch_size, learning_rate=section.learning_rate,
          momentum=section.momentum, weight_decay=section.weight_decay, seed=config.seed)
      predictions = predict(test_images)
      top1, lower, upper = fine_tune_lib.bootstrap_interval(
          test_labels, predictions, metrics_lib.top1, num_samples=section.bootstrap_samples,
          seed=config.seed)
      label = f"{100 * fraction:g}%"
      entry = {"label_fraction": fraction, "labelled_examples": int(len(index)), "top1": top1,
               "top1_ci95": [lower, upper],
               "mean_per_class": metrics_lib.mean_per_class_accuracy(test_labels, predictions)}
      if section.export_encoders and name == "encoder":
        # The fine-tuned backbone as an encoder directory, e.g. for CKA against the pretrained one.
        entry["encoder_dir"] = export_lib.export_encoder(
            context.path(f"fine_tuned_{label.rstrip('%')}pct"), model_config=encoder.model_config,
            variables=variables, image_size=encoder.image_size, mean=encoder.mean,
            std=encoder.std, metadata={**encoder.metadata, "fine_tuned_label_fraction": fraction})
      results[name][label] = entry
      rows.append((name, label, str(len(index)), _fmt(top1), f"[{lower:.4f}, {upper:.4f}]"))
  from ssl_jax.plots import evaluation as plots
  labels = [f"{100 * f:g}%" for f in fractions]
  plot = plots.lines(
      context.path("fine_tune.png"), "fine-tuning with a label fraction (95% bootstrap CI)",
      "labelled fraction of the training split", "test top-1", list(range(len(labels))),
      {n: [r[l]["top1"] for l in labels] for n, r in results.items()},
      {n: [[r[l]["top1"] - r[l]["top1_ci95"][0] for l in labels],
           [r[l]["top1_ci95"][1] - r[l]["top1"] for l in labels]] for n, r in results.items()},
      x_ticks=labels)
  return Report(results, ("encoder", "labels", "examples", "top-1", "95% CI"), rows, [plot])


def _float_pooled_fn(encoder):
  """jit(float images in [0, 1]) -> pooled features: differentiable, variables as an argument."""
  pooled = jax.jit(lambda variables, images: encoder.apply_unjitted(variables, images)["pooled"])
  return lambda images: pooled(encoder.variables, images)


def _sample_images(context: Context, split: str, count: int) -> np.ndarray:
  """The first `count` images of `split` as floats in [0, 1]."""
  batches = input_pipeline.eval_batches(context.config, split, count, count)
  return np.asarray(next(iter(batches))["image"], np.float32) / 255.0


def evaluate_saliency(context: Context, encoders: dict) -> Report:
  config = context.config
  section = config.saliency
  images = _sample_images(context, section.split or config.data.test_split, section.num_images)
  side = images.shape[1]
  stride = section.occluder_stride or max(1, round(side / 56))   # 1 up to 84 px, 4 at 224 px
  results, rows, plot_paths = {}, [], []
  from ssl_jax.plots import evaluation as plots
  for name, encoder in encoders.items():
    feature_fn = _float_pooled_fn(encoder)
    maps = {
        "occlusion": saliency_lib.occlusion_saliency(
            feature_fn, images, patch=min(section.occluder_size, side), stride=stride,
            fill=encoder.mean),
        "gradient": saliency_lib.gradient_saliency(feature_fn, images),
    }
    results[name] = {}
    for kind, kind_maps in maps.items():
      diffusion = saliency_lib.attentive_diffusion(kind_maps)
      results[name][kind] = {"attentive_diffusion_percent": float(diffusion.mean()),
                             "per_image": diffusion.tolist()}
      rows.append((name, kind, f"{diffusion.mean():.1f}"))
    results[name]["occluder"] = {"size": min(section.occluder_size, side), "stride": stride}
    plot_paths.append(plots.saliency_overlays(context.path(f"saliency_{name}.png"), images, maps))
  return Report(results, ("encoder", "saliency", "attentive diffusion %"), rows, plot_paths)


def evaluate_invariance(context: Context, encoders: dict) -> Report:
  config = context.config
  section = config.invariance
  images = _sample_images(context, section.split or config.data.test_split, section.num_images)
  sweeps = {name: list(section.sweeps[name]) for name in section.sweeps}
  for name in sweeps:
    if name not in invariance_lib.TRANSFORMS:
      raise config_validation.ConfigError(
          f"invariance.sweeps has {name!r}; allowed: {list(invariance_lib.TRANSFORMS)}")
  results, rows = {}, []
  for name, encoder in encoders.items():
    feature_fn = _float_pooled_fn(encoder)
    results[name] = {
        "transforms": invariance_lib.invariance_sweeps(feature_fn, images, sweeps),
        "different_images_cosine": invariance_lib.different_images_cosine(feature_fn, images)}
    for transform, sweep in results[name]["transforms"].items():
      rows.append((name, transform, " ".join(f"{p:g}:{c:.3f}" for p, c in
                                             zip(sweep["params"], sweep["cosine"]))))
    rows.append((name, "(different images)", f"{results[name]['different_images_cosine']:.3f}"))
  from ssl_jax.plots import evaluation as plots
  panels = {transform: {"x": sweeps[transform], "xlabel": transform,
                        "series": {n: r["transforms"][transform]["cosine"]
                                   for n, r in results.items()},
                        "baselines": {n: r["different_images_cosine"] for n, r in results.items()}}
            for transform in sweeps}
  plot = plots.panels_of_lines(context.path("invariance.png"), panels, "cosine f(x), f(T(x))")
  return Report(results, ("encoder", "transform", "strength:cosine"), rows, [plot])


Evaluation = Callable[[Context, dict], Report]
EVALUATIONS: dict[str, Evaluation] = {
    "linear": evaluate_linear,
    "knn": evaluate_knn,
    "few_shot": evaluate_few_shot,
    "layers": evaluate_layers,
    "cka": evaluate_cka,
    "fine_tune": evaluate_fine_tune,
    "saliency": evaluate_saliency,
    "invariance": evaluate_invariance,
}


# --- the driver ----------------------------------------------------------------------------------

def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
  widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
  def line(row):
    return "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
  return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def _validate(config: ml_collections.ConfigDict) -> None:
  if config.evaluation not in EVALUATIONS:
    raise config_validation.ConfigError(
        f"unknown evaluation {config.evaluation!r}; allowed: {sorted(EVALUATIONS)}")
  if not config.encoder:
    raise config_validation.ConfigError(
        "config.encoder is empty: give the exported encoder to evaluate, e.g. "
        "--config.encoder=runs/default/encoder")
  if config.data.source not in sources.SOURCES:
    raise config_validation.ConfigError(
        f"data.source={config.data.source!r} is not allowed; choose one of {list(sources.SOURCES)}")
  if config.batch_size < 1:
    raise config_validation.ConfigError(f"batch_size={config.batch_size} must be positive")
  config_validation.validate_data_fields(config)
  if frozen.is_multi_label(config) and config.evaluation not in MULTI_LABEL_EVALUATIONS:
    raise config_validation.ConfigError(
        f"evaluation {config.evaluation!r} needs one class per image, but {config.data.name} "
        f"labels are multi-label; evaluations for multi-label data: "
        f"{sorted(MULTI_LABEL_EVALUATIONS)}")


def run_evaluation(config: ml_collections.ConfigDict, workdir: str, *,
                   print_table: bool = True, devices=None) -> dict[str, Any]:
  """Runs `config.evaluation` on `config.encoder`; writes WORKDIR/results.json and plots."""
  _validate(config)
  workdir = config_validation.prepare_workdir(workdir)
  encoder = export_lib.load_encoder(config.encoder)
  config = config.copy_and_resolve_references()
  if config.data.image_size == 0:
    config.data.image_size = encoder.image_size
  if config.data.num_classes == 0:   # 'whatever the data holds' (folder and csv presets)
    config.data.num_classes = len(sources.make_source(config.data, config.data.train_split).classes)
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  encoders = {"encoder": encoder}
  if config.random_init_baseline:
    encoders[RANDOM_INIT] = random_init_encoder(encoder, config.seed)
  context = Context(config, mesh, workdir)
  report = EVALUATIONS[config.evaluation](context, encoders)
  table = format_table(report.header, report.rows)
  summary = {
      "evaluation": config.evaluation,
      "config_name": config.name,
      "encoder": os.path.abspath(config.encoder),
      "encoder_metadata": encoder.metadata,
      "dataset": config.data.name,
      "results": report.results,
      "plots": [os.path.basename(p) for p in report.plots],
      "table": table,
      "config": json.loads(config.to_json()),
  }
  with open(os.path.join(workdir, RESULTS_FILE), "w") as f:
    json.dump(summary, f, indent=2)
  if print_table:
    print(f"{config.name} on {config.encoder}\n{table}", flush=True)
  return summary
