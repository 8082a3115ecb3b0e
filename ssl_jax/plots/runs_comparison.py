"""Several runs on one figure: online kNN and loss against epoch, one line per run (e.g. every
objective of a results protocol, `--mode=plot --workdir=runs/cifar10_cpu`), and the raw pixels'
kNN as a dashed line: the trivial baseline a trained encoder must beat. Each run's loss is
drawn scaled to its own range (0 its lowest, 1 its highest): objectives' losses differ by orders
of magnitude (Barlow Twins' ~1,000 against BYOL's < 2), and on one shared axis all but the
largest would be flat lines; scaled, a collapse or a rising contrastive loss shows as a shape.

The x axis is the epoch when every run knows its steps per epoch (a finished run's summary.json
says them), else the step: runs with different batch sizes or datasets are only comparable per
epoch, and one figure never mixes the two axes."""

from __future__ import annotations

import os
from typing import NamedTuple

from ssl_jax.plots._figure import legend_outside, plt, save, series

# (record key, panel title, y label).
PANELS = (("online_knn_top1", "online kNN top-1", "top-1"),
          ("online_knn_mean_auc", "online kNN mean AUC", "mean AUC"),
          ("loss", "training loss, scaled per run", "(loss - min) / (max - min)"))


class Run(NamedTuple):
  records: list[dict]             # its metrics records ({"step": n, ...})
  steps_per_epoch: int | None     # None where the run does not say
  # End-of-run baselines by record key, e.g. {"online_knn_top1": raw pixels' kNN top-1}.
  pixels: dict[str, float]


def scaled_to_range(values: list[float]) -> list[float]:
  """`values` mapped linearly onto [0, 1] by their own min and max (all 0 when constant)."""
  low, high = min(values, default=0.0), max(values, default=0.0)
  span = high - low
  return [(value - low) / span if span > 0 else 0.0 for value in values]


def plot(runs: dict[str, Run], out_dir: str) -> list[str]:
  """`runs` is {run name: Run}; draws the panels some run recorded."""
  panels = [(key, title, ylabel) for key, title, ylabel in PANELS
            if any(key in record for run in runs.values() for record in run.records)]
  if not panels:
    return []
  per_epoch = all(run.steps_per_epoch for run in runs.values())
  figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
  for axis, (key, title, ylabel) in zip(axes[0], panels):
    for name, run in sorted(runs.items()):
      steps, values = series(run.records, key)
      if key == "loss":
        values = scaled_to_range(values)
      if steps:
        x = [step / run.steps_per_epoch for step in steps] if per_epoch else steps
        axis.plot(x, values, marker="o" if key.startswith("online") else None,
                  markersize=3, label=name)
    # One line per distinct value: runs on one dataset share it.
    pixel_lines = [axis.axhline(value, color="grey", linestyle="--", linewidth=1,
                                label="raw pixels")
                   for value in sorted({run.pixels[key] for run in runs.values()
                                        if key in run.pixels})]
    if pixel_lines:
      axis.legend(handles=pixel_lines[:1], fontsize="x-small", loc="best")
    axis.set_title(title)
    axis.set_xlabel("epoch" if per_epoch else "step")
    axis.set_ylabel(ylabel)
  legend_outside(axes[0][-1], title="run")
  return [save(figure, os.path.join(out_dir, "runs_comparison.png"))]
