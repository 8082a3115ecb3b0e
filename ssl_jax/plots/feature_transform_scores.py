"""MoCo FT's visualisation signal (Zhu, Zhao et al. 2021): positive and negative score statistics
over training, before and after the feature transformation.

The paper tracks the distributions of the positive scores q.k and negative scores q.n through
their mean and variance; the objective logs both for the original features ('before') and for the
transformed ones the loss sees ('after'), metrics `ft_{pos,neg}_{mean,var}_{before,after}`
(ssl_jax/objectives/moco_ft.py). One panel per statistic, before and after overlaid; a dotted
line marks the step where mixing started when the run had a start epoch.
"""

from __future__ import annotations

import os

from ssl_jax.plots._figure import plt, save, series

FILENAME = "feature_transform_scores.png"
PANELS = (("pos_mean", "positive score q.k: mean"), ("pos_var", "positive score: variance"),
          ("neg_mean", "negative score q.n: mean"), ("neg_var", "negative score: variance"))
STAGES = (("before", "before FT", "-"), ("after", "after FT", "--"))


def _start_step(metrics: list[dict]) -> float | None:
  """The step where mixing started, when logged intervals before it did not mix: `ft_active` is
  the fraction of mixing steps in each log interval, so the first interval that mixed started
  mixing that fraction of its length before its end."""
  steps, active = series(metrics, "ft_active")
  if not steps or active[0] > 0:
    return None
  for previous_step, step, fraction in zip(steps, steps[1:], active[1:]):
    if fraction > 0:
      return step - fraction * (step - previous_step)
  return None


def plot(metrics: list[dict], analysis: list[dict], out_dir: str,
         run_config: dict | None = None) -> list[str]:
  del run_config
  del analysis
  if not any(f"ft_{PANELS[0][0]}_before" in record for record in metrics):
    return []
  start = _start_step(metrics)
  figure, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
  for axis, (statistic, title) in zip(axes, PANELS):
    for stage, label, style in STAGES:
      steps, values = series(metrics, f"ft_{statistic}_{stage}")
      axis.plot(steps, values, style, label=label)
    if start is not None:
      axis.axvline(start, color="grey", linestyle=":", label="FT starts")
    axis.set_title(title)
    axis.set_xlabel("step")
  axes[0].legend()
  return [save(figure, os.path.join(out_dir, FILENAME))]
