"""The plot command: `python main.py --mode=plot --workdir=W` draws what a run recorded.

Each plot is one module with a `plot(metrics, analysis, out_dir) -> list[str]` function that
reads the run's records (WORKDIR/metrics.jsonl: the training metrics at every log step;
WORKDIR/analysis.jsonl: the objective's analysis records), writes PNG files into `out_dir` and
returns their paths, or returns [] when the run did not record what it draws (e.g. FT score
statistics in a BYOL run). Adding a plot adds one module and one entry in `PLOTS`.

matplotlib is imported only here, with the non-interactive Agg backend, so training never
depends on it and plotting works on hosts without a display.
"""

from __future__ import annotations

import os
from typing import Callable

from ssl_jax import run_records
from ssl_jax.plots import eigenspace
from ssl_jax.plots import feature_transform_scores
from ssl_jax.plots import training_curves

PLOTS_DIR = "plots"

PlotFn = Callable[[list[dict], list[dict], str], list[str]]
PLOTS: dict[str, PlotFn] = {
    "training_curves": training_curves.plot,
    "feature_transform_scores": feature_transform_scores.plot,
    "eigenspace": eigenspace.plot,
}


def write_plots(workdir: str) -> list[str]:
  """Draws every plot whose data the run in `workdir` recorded; returns the PNG paths."""
  metrics_path = os.path.join(workdir, run_records.METRICS_FILE)
  if not os.path.exists(metrics_path):
    raise FileNotFoundError(f"{metrics_path} does not exist: --workdir must be the workdir of a "
                            "training run (train first with the same --workdir)")
  metrics = run_records.read_jsonl(metrics_path)
  analysis = run_records.read_jsonl(os.path.join(workdir, run_records.ANALYSIS_FILE))
  out_dir = os.path.join(workdir, PLOTS_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for plot in PLOTS.values():
    paths.extend(plot(metrics, analysis, out_dir))
  return paths
