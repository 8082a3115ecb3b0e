"""Loss and collapse monitors over training (every objective logs them), one panel each."""

from __future__ import annotations

import math
import os

from ssl_jax.plots._figure import plt, save, series

# (record key, panel title, y label).
PANELS = (("loss", "training loss", "loss"),
          ("projection_std", "projection spread", "std of l2-normalised projections"),
          ("rankme", "effective rank (RankMe)", "dimensions"),
          ("learning_rate", "learning rate", "learning rate"))
# Drawn when the run recorded them (config.knn_every_steps > 0).
ONLINE_KNN_PANELS = (("online_knn_top1", "online kNN top-1", "top-1"),
                     ("online_knn_mean_auc", "online kNN mean AUC", "mean AUC"))


def projection_dim(run_config: dict | None) -> int | None:
  """The projection's width, from the run's config.json (objective_config.proj_dim), if any."""
  value = ((run_config or {}).get("objective_config") or {}).get("proj_dim")
  return int(value) if isinstance(value, (int, float)) and value > 0 else None


def plot(metrics: list[dict], analysis: list[dict], out_dir: str,
         run_config: dict | None = None) -> list[str]:
  """The panels of `metrics`; with the projection width known, the spread panel shows
  1/sqrt(d), the per-dimension std of l2-normalised vectors spread evenly over the sphere:
  a collapsing run falls towards 0, far below it (Chen & He 2021)."""
  del analysis
  if not metrics:
    return []
  panels = PANELS + tuple(panel for panel in ONLINE_KNN_PANELS
                          if any(panel[0] in record for record in metrics))
  figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2))
  width = projection_dim(run_config)
  for axis, (key, title, ylabel) in zip(axes, panels):
    steps, values = series(metrics, key)
    axis.plot(steps, values, marker="o" if key.startswith("online") else None, markersize=3)
    if key == "projection_std" and width:
      axis.axhline(1 / math.sqrt(width), color="grey", linestyle="--", linewidth=1,
                   label=f"1/sqrt({width}): no collapse")
      axis.set_ylim(bottom=0.0)
      axis.legend(fontsize="x-small", loc="lower right")
    axis.set_title(title)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
  name = (run_config or {}).get("name")
  if name:
    figure.suptitle(name)
  return [save(figure, os.path.join(out_dir, "training_curves.png"), name or "")]
