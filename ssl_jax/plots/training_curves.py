"""Loss and collapse monitors over training (every objective logs them)."""

from __future__ import annotations

import os

from ssl_jax.plots._figure import plt, save, series

PANELS = (("loss", "loss"), ("projection_std", "std of normalised projections"),
          ("rankme", "effective rank (RankMe)"), ("learning_rate", "learning rate"))
# Drawn when the run recorded them (config.knn_every_steps > 0).
ONLINE_KNN_PANELS = (("online_knn_top1", "online kNN top-1"),
                     ("online_knn_mean_auc", "online kNN mean AUC"))


def plot(metrics: list[dict], analysis: list[dict], out_dir: str) -> list[str]:
  del analysis
  if not metrics:
    return []
  panels = PANELS + tuple(panel for panel in ONLINE_KNN_PANELS
                          if any(panel[0] in record for record in metrics))
  figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
  for axis, (key, title) in zip(axes, panels):
    steps, values = series(metrics, key)
    axis.plot(steps, values)
    axis.set_title(title)
    axis.set_xlabel("step")
  return [save(figure, os.path.join(out_dir, "training_curves.png"))]
