"""Several runs on one figure: online kNN and loss against step, one line per run (e.g. every
objective of a results protocol, `--mode=plot --workdir=runs/cifar10_cpu`)."""

from __future__ import annotations

import os

from ssl_jax.plots._figure import legend_outside, plt, save, series

# (record key, panel title, y label).
PANELS = (("online_knn_top1", "online kNN top-1", "top-1"),
          ("online_knn_mean_auc", "online kNN mean AUC", "mean AUC"),
          ("loss", "training loss", "loss (each objective's own)"))


def plot(runs: dict[str, list[dict]], out_dir: str) -> list[str]:
  """`runs` is {run name: its metrics records}; draws the panels some run recorded."""
  panels = [(key, title, ylabel) for key, title, ylabel in PANELS
            if any(key in record for records in runs.values() for record in records)]
  if not panels:
    return []
  figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
  for axis, (key, title, ylabel) in zip(axes[0], panels):
    for name, records in sorted(runs.items()):
      steps, values = series(records, key)
      if steps:
        axis.plot(steps, values, marker="o" if key.startswith("online") else None,
                  markersize=3, label=name)
    axis.set_title(title)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
  legend_outside(axes[0][-1], title="run")
  return [save(figure, os.path.join(out_dir, "runs_comparison.png"))]
