"""The linear probe on frozen pooled features (`ssl_jax.evaluation.linear_probe`): the L2
strength chosen on a validation part of the training split from a log-spaced grid, refit on the
whole training split, scored on the test split. With `memo_dir` set, a probe whose features,
labels and settings match an earlier one's reads that one's results (`probe_memo`).

Results per encoder: 'top1', 'mean_per_class', 'kappa' (quadratic-weighted), 'auc' (binary: of
class 1; more classes: mean one-vs-rest), 'l2' (chosen) and the validation score; multi-label
data gives 'mean_auc' over labels.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from ssl_jax.evaluation import linear_probe as linear_probe_lib
from ssl_jax.evaluation import probe_memo
from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.evaluators.evaluator import Evaluator
from ssl_jax.evaluation.report import Report, fmt


def check(settings: ml_collections.ConfigDict) -> None:
  if settings.l2_num < 1 or settings.l2_min <= 0 or settings.l2_max < settings.l2_min:
    raise ValueError(
        f"eval.linear: l2_min={settings.l2_min}, l2_max={settings.l2_max}, "
        f"l2_num={settings.l2_num}: need 0 < l2_min <= l2_max and l2_num >= 1")
  if settings.select_by not in linear_probe_lib.SELECTION_METRICS:
    raise ValueError(f"eval.linear.select_by={settings.select_by!r} is not allowed; choose one "
                     f"of {list(linear_probe_lib.SELECTION_METRICS)}")
  if not 0.0 <= settings.holdout_fraction < 1.0:
    raise ValueError(f"eval.linear.holdout_fraction={settings.holdout_fraction} must be in "
                     "[0, 1)")


def probe_settings(settings: ml_collections.ConfigDict, seed: int) -> dict[str, Any]:
  """Keyword arguments of `linear_probe.linear_probe` from config.eval.linear."""
  return dict(l2_grid=np.logspace(np.log10(settings.l2_min), np.log10(settings.l2_max),
                                   settings.l2_num),
              holdout_fraction=settings.holdout_fraction, select_by=settings.select_by,
              iterations=settings.iterations, seed=seed)


def _remembered_probe(memo_dir: str, probe, train, test, kwargs) -> dict[str, float]:
  """probe(*train, *test, **kwargs), or its stored results from an identical earlier call."""
  if not memo_dir:   # no hashing of the features when nothing is remembered
    return probe(*train, *test, **kwargs)
  key = probe_memo.probe_key(probe.__name__, (*train, *test), kwargs)
  return probe_memo.remembered(memo_dir, key, lambda: probe(*train, *test, **kwargs))


def evaluate(encoders: dict, data: EvalData, settings: ml_collections.ConfigDict) -> Report:
  splits = data.config.data
  kwargs = probe_settings(settings, data.seed)
  results, rows = {}, []
  for name, encoder in encoders.items():
    train = data.features(encoder, splits.train_split)
    test = data.features(encoder, splits.test_split)
    if data.multi_label:
      kwargs.pop("select_by", None)   # the multi-label probe selects by validation mean AUC
      probe = _remembered_probe(settings.memo_dir, linear_probe_lib.multilabel_linear_probe,
                                train, test, kwargs)
      rows.append((name, fmt(probe["mean_auc"]), f"{probe['l2']:.2g}"))
    else:
      probe = _remembered_probe(settings.memo_dir, linear_probe_lib.linear_probe, train, test,
                                dict(kwargs, num_classes=data.num_classes))
      rows.append((name, fmt(probe["top1"]), fmt(probe["mean_per_class"]),
                   fmt(probe["kappa"]), fmt(probe["auc"]), f"{probe['l2']:.2g}"))
    results[name] = probe
  if data.multi_label:
    return Report(results, ("encoder", "mean AUC", "chosen L2"), rows)
  plots = []
  path = data.output_path("linear.png")
  if path:
    from ssl_jax.plots import evaluation as plot_lib
    plots.append(plot_lib.grouped_bars(
        path, "linear probe (test split)", ["top-1", "mean per class", "AUC"],
        {n: [r["top1"], r["mean_per_class"], r["auc"]] for n, r in results.items()}, "score",
        source=data.figure_source))
  return Report(results, ("encoder", "top-1", "mean per class", "kappa", "AUC", "chosen L2"),
                rows, plots)


EVALUATOR = Evaluator(evaluate, check, multi_label=True, frozen_features=True)
