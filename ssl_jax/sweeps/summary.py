"""The summary table of a sweep: every run's summary.json metrics, sorted by a chosen metric.

Writes SWEEP_DIR/sweep_summary.csv (every numeric metric of every run, full precision) and
returns a printable table of the main ones. Runs that failed or have not finished are listed
with their status and sorted last.
"""

from __future__ import annotations

import csv
import json
import os
import re
from typing import Any, Sequence

from ssl_jax.sweeps.definition import Run, SweepError, format_value
from ssl_jax.sweeps.local import EXIT_PREEMPTED, STATUS_FILE, SUMMARY_FILE

CSV_FILE = "sweep_summary.csv"
DEFAULT_METRIC = "eval.trained.knn_top1"
# The columns of the printed table (the CSV has every metric).
SHOWN_METRICS = ("eval.trained.knn_top1", "eval.trained.linear_top1", "final_loss",
                 "images_per_second", "wall_time_seconds")
# What summary.json can hold (ssl_jax.train): checked before a sweep starts, so a misspelt
# metric fails before hours of training rather than after.
_POSSIBLE_METRIC = re.compile(
    r"^(final_loss|images_per_second|wall_time_seconds|steps"
    r"|eval\.(trained|random_init|random_init_data_bn|pixels|supervised)\."
    r"(knn_(top1|mean_auc)(_k\d+)?|linear_(top1|mean_per_class|kappa|auc|mean_auc|l2)))$")


def check_metric_name(metric: str) -> None:
  if not _POSSIBLE_METRIC.match(metric):
    raise SweepError(
        f"--sweep_metric={metric!r} is not a summary.json metric; allowed: final_loss, "
        "images_per_second, wall_time_seconds, steps, or eval.<encoder>.<metric> with <encoder> "
        "in trained, random_init, random_init_data_bn, pixels, supervised and <metric> in "
        "knn_top1, knn_top1_k<k>, knn_mean_auc[_k<k>], linear_top1, linear_mean_per_class, "
        "linear_kappa, linear_auc, linear_mean_auc, linear_l2 (the probe's chosen weight decay)")


def flatten_metrics(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
  """The numeric entries of a summary.json as {'eval.trained.knn_top1': 0.95, ...}, without
  its copy of the run's config."""
  flat = {}
  for key, value in summary.items():
    if not prefix and key == "config":
      continue
    if isinstance(value, dict):
      flat.update(flatten_metrics(value, f"{prefix}{key}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      flat[f"{prefix}{key}"] = float(value)
  return flat


def run_status(run_dir: str) -> tuple[str, dict[str, float]]:
  """('done', metrics) for a finished run, else ('failed (exit N)' | 'stopped' | 'not run', {})."""
  summary_path = os.path.join(run_dir, SUMMARY_FILE)
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      return "done", flatten_metrics(json.load(f))
  status_path = os.path.join(run_dir, STATUS_FILE)
  if os.path.exists(status_path):
    with open(status_path) as f:
      returncode = json.load(f)["returncode"]
    if returncode == EXIT_PREEMPTED:
      return "stopped (resumable)", {}
    return f"failed (exit {returncode})", {}
  return ("started" if os.path.isdir(run_dir) else "not run"), {}


def _sort_key(metric: str, descending: bool):
  def key(row: dict[str, Any]):
    value = row["metrics"].get(metric)
    if value is None or value != value:   # missing or NaN: last
      return (1, 0.0)
    return (0, -value if descending else value)
  return key


def collect(runs: Sequence[Run], sweep_dir: str, metric: str, *,
            descending: bool = True) -> list[dict[str, Any]]:
  """One row per run ({'run', 'overrides', 'status', 'metrics'}), sorted by `metric`; a metric
  no finished run reports is an error naming the ones they do."""
  rows = []
  for run in runs:
    status, metrics = run_status(os.path.join(sweep_dir, run.name))
    rows.append({"run": run.name, "overrides": run.overrides, "status": status,
                 "metrics": metrics})
  available = sorted({key for row in rows for key in row["metrics"]})
  if available and metric not in available:
    raise SweepError(f"--sweep_metric={metric!r} is in no run's summary.json; available: "
                     f"{available}")
  return sorted(rows, key=_sort_key(metric, descending))   # stable: ties keep the sweep order


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
  override_keys = list(dict.fromkeys(key for row in rows for key in row["overrides"]))
  metric_keys = sorted({key for row in rows for key in row["metrics"]})
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["run", "status", *override_keys, *metric_keys])
    for row in rows:
      writer.writerow([row["run"], row["status"],
                       *[format_value(row["overrides"][key]) if key in row["overrides"] else ""
                         for key in override_keys],
                       *[repr(row["metrics"][key]) if key in row["metrics"] else ""
                         for key in metric_keys]])


# Rates and durations need no four decimals.
_ONE_DECIMAL = ("images_per_second", "wall_time_seconds", "steps")


def _format_metric(key: str, value: float | None) -> str:
  if value is None:
    return "-"
  return f"{value:.1f}" if key in _ONE_DECIMAL else f"{value:.4f}"


def format_table(rows: Sequence[dict[str, Any]], metric: str) -> str:
  """A fixed-width table: the swept values, the status, the sort metric and the main metrics."""
  override_keys = list(dict.fromkeys(key for row in rows for key in row["overrides"]))
  metric_keys = [metric] + [key for key in SHOWN_METRICS if key != metric]
  metric_keys = [key for key in metric_keys
                 if key == metric or any(key in row["metrics"] for row in rows)]
  header = [*(override_keys or ["run"]), "status", *metric_keys]
  table = [header]
  for row in rows:
    swept = ([format_value(row["overrides"][key]) if key in row["overrides"] else "-"
              for key in override_keys] if override_keys else [row["run"]])
    table.append([*swept, row["status"],
                  *[_format_metric(key, row["metrics"].get(key)) for key in metric_keys]])
  widths = [max(len(line[i]) for line in table) for i in range(len(header))]
  lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
           for line in table]
  lines.insert(1, "  ".join("-" * width for width in widths))
  return "\n".join(lines)


def summarize(runs: Sequence[Run], sweep_dir: str, metric: str = DEFAULT_METRIC, *,
              descending: bool = True) -> str:
  """Writes SWEEP_DIR/sweep_summary.csv and returns the printable table."""
  rows = collect(runs, sweep_dir, metric, descending=descending)
  write_csv(rows, os.path.join(sweep_dir, CSV_FILE))
  order = "descending" if descending else "ascending"
  return (f"sweep {sweep_dir}: {sum(row['status'] == 'done' for row in rows)}/{len(rows)} runs "
          f"done, sorted by {metric} ({order}); all metrics in {CSV_FILE}\n"
          + format_table(rows, metric))
