"""An evaluation's numbers as files a paper draft takes in: one CSV and one LaTeX table.

Both hold every scalar of every evaluator (`runner.summary_metrics`: 'knn_top1_k20',
'linear_auc', 'fine_tune_...', ...) for every encoder of the run (the evaluated one first, then
the baselines). The CSV has one row per encoder and one column per metric, for pandas and
spreadsheets; the LaTeX table (booktabs) has one row per metric and one column per encoder, so
that any number of metrics fits the page width.
"""

from __future__ import annotations

import csv
import io
import math
import os

from ssl_jax import run_records

CSV_FILE = "results.csv"
LATEX_FILE = "results.tex"


def metric_names(metrics: dict[str, dict[str, float]]) -> list[str]:
  """Every metric of any encoder, in the order the evaluators reported them."""
  names: dict[str, None] = {}
  for values in metrics.values():
    names.update(dict.fromkeys(values))
  return list(names)


def csv_text(metrics: dict[str, dict[str, float]]) -> str:
  """Header 'encoder,<metric>,...'; a metric an encoder lacks is an empty cell; full precision."""
  names = metric_names(metrics)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["encoder", *names])
  for encoder, values in metrics.items():
    writer.writerow([encoder, *(repr(values[name]) if name in values else "" for name in names)])
  return out.getvalue()


def _latex_escape(text: str) -> str:
  return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%") \
      .replace("&", r"\&").replace("#", r"\#")


def latex_number(value: float) -> str:
  """Whole numbers (counts) as such, values from 0.001 to 1 (scores) to 4 decimals, anything
  else (an L2 strength of 1e-06, a loss) to 3 significant digits; NaN as a dash."""
  if math.isnan(value):
    return "--"
  if value == int(value) and abs(value) < 1e15:
    return str(int(value))
  return f"{value:.4f}" if 1e-3 <= abs(value) <= 1.0 else f"{value:.3g}"


def latex_text(metrics: dict[str, dict[str, float]], caption: str) -> str:
  encoders = list(metrics)
  lines = [r"\begin{table}[t]", r"\centering", r"\small",
           r"\begin{tabular}{l" + "r" * len(encoders) + "}", r"\toprule",
           " & ".join(["metric", *(_latex_escape(e) for e in encoders)]) + r" \\", r"\midrule"]
  for name in metric_names(metrics):
    cells = [latex_number(metrics[e][name]) if name in metrics[e] else "" for e in encoders]
    lines.append(" & ".join([_latex_escape(name), *cells]) + r" \\")
  lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_escape(caption)}}}",
            r"\end{table}", ""]
  return "\n".join(lines)


def write(directory: str, metrics: dict[str, dict[str, float]], caption: str) -> list[str]:
  """Writes CSV_FILE and LATEX_FILE into `directory`; returns their paths."""
  paths = [os.path.join(directory, CSV_FILE), os.path.join(directory, LATEX_FILE)]
  run_records.write_text_atomically(paths[0], csv_text(metrics))
  run_records.write_text_atomically(paths[1], latex_text(metrics, caption))
  return paths
