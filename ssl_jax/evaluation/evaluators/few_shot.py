"""N-way K-shot episodes on frozen pooled features (`ssl_jax.evaluation.few_shot`).

Results per encoder: {'<N>way_<K>shot': {'mean', 'ci95', 'episodes'}} for every K.
"""

from __future__ import annotations

import ml_collections

from ssl_jax.evaluation import few_shot as few_shot_lib
from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.evaluators.evaluator import Evaluator
from ssl_jax.evaluation.report import Report

CLASSIFIERS = ("prototype", "logistic")


def check(settings: ml_collections.ConfigDict) -> None:
  if settings.classifier not in CLASSIFIERS:
    raise ValueError(f"eval.few_shot.classifier={settings.classifier!r} is not allowed; choose "
                     f"one of {list(CLASSIFIERS)}")
  if settings.n_way < 2 or not settings.shots or min(settings.shots) < 1:
    raise ValueError(f"eval.few_shot: n_way={settings.n_way} must be >= 2 and shots="
                     f"{tuple(settings.shots)} positive")


def evaluate(encoders: dict, data: EvalData, settings: ml_collections.ConfigDict) -> Report:
  split = settings.split or data.config.data.train_split
  results, rows = {}, []
  for name, encoder in encoders.items():
    features, labels = data.features(encoder, split)
    results[name] = few_shot_lib.few_shot(
        features, labels, n_way=settings.n_way, shots=tuple(settings.shots),
        n_query=settings.n_query, num_episodes=settings.episodes, seed=data.seed,
        classifier=settings.classifier, logistic_l2=settings.logistic_l2)
    rows.append((name,) + tuple(f"{r['mean']:.4f} +- {r['ci95']:.4f}"
                                for r in results[name].values()))
  plots = []
  path = data.output_path("few_shot.png")
  if path:
    from ssl_jax.plots import evaluation as plot_lib
    keys = [f"{settings.n_way}way_{k}shot" for k in settings.shots]
    plots.append(plot_lib.lines(
        path, f"{settings.n_way}-way few-shot ({settings.classifier}, 95% CI)", "shots",
        "accuracy", list(settings.shots),
        {n: [r[k]["mean"] for k in keys] for n, r in results.items()},
        {n: [r[k]["ci95"] for k in keys] for n, r in results.items()}, log_x=True,
        source=data.figure_source))
  return Report(results, ("encoder",) + tuple(f"{k}-shot" for k in settings.shots), rows, plots)


EVALUATOR = Evaluator(evaluate, check, frozen_features=True)
