"""Fine-tuning the whole encoder plus a linear head on a fraction of the training labels
(`ssl_jax.evaluation.fine_tune`), scored on the test split with a bootstrap interval.

Fine-tuning the 'random_init' baseline is supervised training from scratch at that label
fraction. Results per encoder: {'<pct>%': {'label_fraction', 'labelled_examples', 'top1',
'top1_ci95', 'mean_per_class', 'auc'[, 'encoder_dir']}}; with `export_encoders` the evaluated
(first) encoder's fine-tuned backbone is exported per fraction (e.g. for CKA against the
pretrained one).
"""

from __future__ import annotations

import ml_collections

from ssl_jax import export as export_lib
from ssl_jax.evaluation import fine_tune as fine_tune_lib
from ssl_jax.evaluation import metrics as metrics_lib
from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.evaluators.evaluator import Evaluator
from ssl_jax.evaluation.report import Report, fmt


def check(settings: ml_collections.ConfigDict) -> None:
  fractions = tuple(settings.label_fractions)
  if not fractions or not all(0.0 < f <= 1.0 for f in fractions):
    raise ValueError(f"eval.fine_tune.label_fractions={fractions} must be in (0, 1]")
  if settings.steps < 1 or settings.batch_size < 1:
    raise ValueError(f"eval.fine_tune: steps={settings.steps} and batch_size="
                     f"{settings.batch_size} must be positive")


def _label(fraction: float) -> str:
  return f"{100 * fraction:g}%"


def evaluate(encoders: dict, data: EvalData, settings: ml_collections.ConfigDict) -> Report:
  splits = data.config.data
  fractions = tuple(settings.label_fractions)
  train_images, train_labels = data.images(splits.train_split)
  test_images, test_labels = data.images(splits.test_split)
  subsets = fine_tune_lib.label_fraction_subsets(train_labels, fractions, data.seed)
  evaluated = next(iter(encoders))
  results, rows = {}, []
  for name, encoder in encoders.items():
    results[name] = {}
    for fraction in fractions:
      index = subsets[fraction]
      variables, predict_probabilities = fine_tune_lib.fine_tune(
          encoder, train_images[index], train_labels[index], num_classes=data.num_classes,
          steps=settings.steps, batch_size=settings.batch_size,
          learning_rate=settings.learning_rate, momentum=settings.momentum,
          weight_decay=settings.weight_decay, seed=data.seed)
      probabilities = predict_probabilities(test_images)
      predictions = probabilities.argmax(-1)
      top1, lower, upper = fine_tune_lib.bootstrap_interval(
          test_labels, predictions, metrics_lib.top1, num_samples=settings.bootstrap_samples,
          seed=data.seed)
      label = _label(fraction)
      entry = {"label_fraction": fraction, "labelled_examples": int(len(index)), "top1": top1,
               "top1_ci95": [lower, upper],
               "mean_per_class": metrics_lib.mean_per_class_accuracy(test_labels, predictions),
               "auc": metrics_lib.classification_auc(test_labels, probabilities)}
      path = data.output_path(f"fine_tuned_{label.rstrip('%')}pct")
      if settings.export_encoders and name == evaluated and path:
        entry["encoder_dir"] = export_lib.export_encoder(
            path, model_config=encoder.model_config, variables=variables,
            image_size=encoder.image_size, mean=encoder.mean, std=encoder.std,
            metadata={**encoder.metadata, "fine_tuned_label_fraction": fraction})
      results[name][label] = entry
      rows.append((name, label, str(len(index)), fmt(top1), f"[{lower:.4f}, {upper:.4f}]",
                   fmt(entry["auc"])))
  plots = []
  path = data.output_path("fine_tune.png")
  if path:
    from ssl_jax.plots import evaluation as plot_lib
    labels = [_label(f) for f in fractions]
    plots.append(plot_lib.lines(
        path, "fine-tuning with a label fraction (95% bootstrap CI)",
        "labelled fraction of the training split", "test top-1", list(range(len(labels))),
        {n: [r[l]["top1"] for l in labels] for n, r in results.items()},
        {n: [[r[l]["top1"] - r[l]["top1_ci95"][0] for l in labels],
             [r[l]["top1_ci95"][1] - r[l]["top1"] for l in labels]] for n, r in results.items()},
        x_ticks=labels, source=data.figure_source))
  return Report(results, ("encoder", "labels", "examples", "top-1", "95% CI", "AUC"), rows,
                plots)


EVALUATOR = Evaluator(evaluate, check)
