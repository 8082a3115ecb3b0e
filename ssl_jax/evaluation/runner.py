"""Running the evaluators of `config.eval` on an encoder and its baselines.

Two callers, one path: the end of training (`train.py`, the encoder named 'trained') and
`python main.py --mode=eval --config=configs/eval/<name>.py:<dataset> --config.encoder=DIR`
(`run_evaluation`, the loaded encoder named 'encoder'). Both build `config.eval.baselines` with
`baselines.build` and run `config.eval.evaluators` in order, so the same encoder, data and seed
give the same numbers in both.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections

from ssl_jax import config_validation
from ssl_jax import export as export_lib
from ssl_jax import sharding as sharding_lib
from ssl_jax.evaluation import baselines
from ssl_jax.evaluation import results_files
from ssl_jax.evaluation.data import EvalData, capped_note
from ssl_jax.evaluation.evaluators import EVALUATORS
from ssl_jax.evaluation.report import Report

RESULTS_FILE = "results.json"


def evaluate(encoders: dict, data: EvalData, names=None) -> dict[str, Report]:
  """{evaluator: report} for each of `names` (default: config.eval.evaluators), on `encoders`
  ({name: encoder}, the evaluated one first); baselines without a network go only to the
  evaluators of frozen features."""
  reports = {}
  for name in (data.settings.evaluators if names is None else names):
    evaluator = EVALUATORS[name]
    chosen = {n: e for n, e in encoders.items()
              if evaluator.frozen_features or n not in baselines.FEATURE_ONLY}
    # A line before and after each evaluator: a full fine-tune runs for minutes.
    _progress(f"evaluation: {name} on {', '.join(chosen)} ...")
    start = time.perf_counter()
    reports[name] = evaluator.evaluate(chosen, data, data.settings[name])
    _progress(f"evaluation: {name} done in {time.perf_counter() - start:.0f} s")
  return reports


def _progress(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def evaluate_with_baselines(encoder, name: str, data: EvalData) -> dict[str, Report]:
  """`evaluate` on {name: encoder} followed by the baselines of config.eval.baselines."""
  encoders = {name: encoder, **baselines.build(encoder, data.settings.baselines, data)}
  return evaluate(encoders, data)


def _flatten_scalars(tree: dict, prefix: str) -> dict[str, float]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten_scalars(value, f"{prefix}{key}_"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      flat[f"{prefix}{key}"] = float(value)
  return flat


def summary_metrics(reports: dict[str, Report]) -> dict[str, dict[str, float]]:
  """{encoder: {'<evaluator>_<metric>': value}}: every scalar of every report, e.g.
  'knn_top1_k20', 'knn_top1' (the first k), 'linear_top1' (summary.json's `eval` section)."""
  metrics: dict[str, dict[str, float]] = {}
  for evaluator, report in reports.items():
    for encoder, results in report.results.items():
      metrics.setdefault(encoder, {}).update(_flatten_scalars(results, f"{evaluator}_"))
  return metrics


def tables(reports: dict[str, Report]) -> str:
  return "\n\n".join(f"{name}\n{report.table()}" for name, report in reports.items())


def run_evaluation(config: ml_collections.ConfigDict, workdir: str, *,
                   print_table: bool = True, devices=None) -> dict[str, Any]:
  """`--mode=eval`: config.eval's evaluators on `config.encoder` and its baselines; writes
  WORKDIR/results.json, the plots, and every scalar as results.csv and results.tex."""
  config_validation.validate_eval_config(config)
  workdir = config_validation.prepare_workdir(workdir)
  encoder = export_lib.load_encoder(config.encoder)
  config = config.copy_and_resolve_references()
  if config.data.image_size == 0:
    config.data.image_size = encoder.image_size
  data = EvalData(config, sharding_lib.make_mesh(config.mesh, devices), workdir)
  if config.data.num_classes == 0:   # 'whatever the data holds': recorded in results.json
    config.data.num_classes = data.num_classes
  reports = evaluate_with_baselines(encoder, "encoder", data)
  summary = {
      "config_name": config.name,
      "encoder": os.path.abspath(config.encoder),
      "encoder_metadata": encoder.metadata,
      "dataset": config.data.name,
      "splits": data.splits_read(),
      "evaluations": {name: {"results": report.results, "table": report.table(),
                             "plots": [os.path.basename(p) for p in report.plots]}
                      for name, report in reports.items()},
      "config": json.loads(config.to_json()),
  }
  if jax.process_index() == 0:
    with open(os.path.join(workdir, RESULTS_FILE), "w") as f:
      json.dump(summary, f, indent=2)
    results_files.write(workdir, summary_metrics(reports),
                        f"{config.name}: {config.encoder} on {config.data.name}")
  if print_table:
    note = capped_note(data.splits_read())
    print(f"{config.name} on {config.encoder}\n{tables(reports)}" + (f"\n{note}" if note else ""),
          flush=True)
  return summary
