"""Loss and collapse monitors over training (every objective logs them)."""

from __future__ import annotations

import os

from ssl_jax.plots._figure import plt, save, series

PANELS = (("loss", "loss"), ("projection_std", "std of normalised projections"),
          ("rankme", "effective rank (RankMe)"), ("learning_rate", "learning rate"))


def plot(metrics: list[dict], analysis: list[dict], out_dir: str) -> list[str]:
  del analysis
  if not metrics:
    return []
  figure, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
  for axis, (key, title) in zip(axes, PANELS):
    steps, values = series(metrics, key)
    axis.plot(steps, values)
    axis.set_title(title)
    axis.set_xlabel("step")
  return [save(figure, os.path.join(out_dir, "training_curves.png"))]
