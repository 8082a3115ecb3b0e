"""The plot command: `python main.py --mode=plot --workdir=W` draws what a run recorded (or,
for a directory of runs, one figure comparing them: runs_comparison.py).

Each plot is one module with a `plot(metrics, analysis, out_dir, run_config) -> list[str]`
function that reads the run's records (WORKDIR/metrics.jsonl: the training metrics at every log
step; WORKDIR/analysis.jsonl: the objective's analysis records; WORKDIR/config.json: the run's
config, or None), writes each figure as a PNG and a PDF into `out_dir` and returns the PNGs'
paths, or returns [] when the run did not record what it draws (e.g. FT score statistics in a
BYOL run). Adding a plot adds one module and one entry in `PLOTS`.

matplotlib is imported only here, with the non-interactive Agg backend, so training never
depends on it and plotting works on hosts without a display.
"""

from __future__ import annotations

import json
import os
from typing import Callable

from ssl_jax import run_records
from ssl_jax import workdir_config
from ssl_jax.plots import eigenspace
from ssl_jax.plots import feature_transform_scores
from ssl_jax.plots import runs_comparison
from ssl_jax.plots import training_curves
from ssl_jax.plots._figure import set_dpi

__all__ = ["PLOTS", "PLOTS_DIR", "set_dpi", "write_plots"]

PLOTS_DIR = "plots"

PlotFn = Callable[[list[dict], list[dict], str, "dict | None"], list[str]]
PLOTS: dict[str, PlotFn] = {
    "training_curves": training_curves.plot,
    "feature_transform_scores": feature_transform_scores.plot,
    "eigenspace": eigenspace.plot,
}


def _runs_below(directory: str) -> dict[str, str]:
  """{name: path} of the sub-directories of `directory` that hold a run's metrics."""
  if not os.path.isdir(directory):
    return {}
  return {entry.name: entry.path for entry in sorted(os.scandir(directory), key=lambda e: e.name)
          if entry.is_dir()
          and os.path.exists(os.path.join(entry.path, run_records.METRICS_FILE))}


def _read_run(run_dir: str) -> runs_comparison.Run:
  """A run's metrics records, plus its end-of-run kNN (summary.json) as the online kNN of the
  last step: training skips the online kNN there because the final evaluation measures the
  same thing (the first k of eval.knn.ks, on the same examples). Its raw pixels' kNN and its
  steps per epoch come from summary.json too (none while the run is still training; no steps
  per epoch in a summary written before it carried them)."""
  records = run_records.read_jsonl(os.path.join(run_dir, run_records.METRICS_FILE))
  summary_path = os.path.join(run_dir, run_records.SUMMARY_FILE)
  if not os.path.exists(summary_path):
    return runs_comparison.Run(records, None, {})
  with open(summary_path) as f:
    summary = json.load(f)
  evaluation = summary.get("eval", {})
  trained, pixels = evaluation.get("trained", {}), evaluation.get("pixels", {})
  pixels_knn = {}
  for metric in ("top1", "mean_auc"):
    if f"knn_{metric}" in trained:
      key = f"online_knn_{metric}"
      records = records + [{"step": summary["steps"], key: trained[f"knn_{metric}"]}]
      if f"knn_{metric}" in pixels:
        pixels_knn = {key: pixels[f"knn_{metric}"]}
      break
  return runs_comparison.Run(records, summary.get("steps_per_epoch"), pixels_knn)


def write_plots(workdir: str) -> list[str]:
  """Draws every plot whose data the run in `workdir` recorded; returns the PNG paths. A
  directory of runs (a protocol's or a sweep's) gets one figure comparing them instead."""
  metrics_path = os.path.join(workdir, run_records.METRICS_FILE)
  runs = _runs_below(workdir)
  if not os.path.exists(metrics_path) and runs:
    out_dir = os.path.join(workdir, PLOTS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    return runs_comparison.plot({name: _read_run(path)
                                 for name, path in runs.items()}, out_dir)
  if not os.path.exists(metrics_path):
    raise FileNotFoundError(f"{metrics_path} does not exist: --workdir must be the workdir of a "
                            "training run, or a directory of runs (train first with the same "
                            "--workdir)")
  metrics = run_records.read_jsonl(metrics_path)
  analysis = run_records.read_jsonl(os.path.join(workdir, run_records.ANALYSIS_FILE))
  config_path = os.path.join(workdir, workdir_config.CONFIG_FILE)
  run_config = None
  if os.path.exists(config_path):
    with open(config_path) as f:
      run_config = json.load(f)
  out_dir = os.path.join(workdir, PLOTS_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for plot in PLOTS.values():
    paths.extend(plot(metrics, analysis, out_dir, run_config))
  return paths
