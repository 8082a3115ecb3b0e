"""Figures of the evaluation suite (`python main.py --mode=eval`): one function per figure kind,
each writing one PNG (and its PDF) and returning the PNG's path; `source` names the evaluation
in the figure's corner."""

from __future__ import annotations

import numpy as np

from ssl_jax.plots._figure import (SEQUENTIAL_COLORMAP, legend_outside, plt, save,
                                   zoomed_limits)


def grouped_bars(path: str, title: str, categories: list[str],
                 values_by_encoder: dict[str, list[float]], ylabel: str,
                 source: str = "") -> str:
  """One group of bars per category, one bar per encoder, each bar labelled with its value; the
  y axis spans the values (scores in [0, 1]) rather than starting at 0."""
  figure, axis = plt.subplots(figsize=(max(4.5, 1.3 * len(categories) + 2.5), 3.4))
  width = 0.8 / max(len(values_by_encoder), 1)
  positions = np.arange(len(categories))
  for index, (encoder, values) in enumerate(values_by_encoder.items()):
    bars = axis.bar(positions + index * width, values, width, label=encoder)
    axis.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
  axis.set_xticks(positions + width * (len(values_by_encoder) - 1) / 2, categories)
  low, high = zoomed_limits(list(values_by_encoder.values()))
  top = high + 0.15 * (high - low)   # room for the value labels, above 1 if need be
  axis.set_ylim(low, top)
  axis.set_yticks([tick for tick in axis.get_yticks() if low <= tick <= min(1.0, top)])
  axis.set_ylabel(ylabel)
  axis.set_title(title)
  legend_outside(axis)
  return save(figure, path, source)


def lines(path: str, title: str, xlabel: str, ylabel: str, x_values, series: dict,
          errors: dict | None = None, log_x: bool = False, x_ticks=None,
          source: str = "") -> str:
  """One line (with its error bars or interval, where given) per entry of `series`. A log x
  axis is ticked at the x values themselves (1, 5, 20, 50 shots), not at powers of ten."""
  figure, axis = plt.subplots(figsize=(5.5, 3.4))
  extents = []
  for name, values in series.items():
    error = None if errors is None else np.asarray(errors[name], float)
    axis.errorbar(x_values, values, yerr=error, marker="o", capsize=3, label=name)
    spread = 0.0 if error is None else error
    extents += [np.asarray(values, float) - spread, np.asarray(values, float) + spread]
  if log_x:
    axis.set_xscale("log")
    axis.set_xticks(x_values, [str(x) for x in x_values])
    axis.minorticks_off()
  if x_ticks is not None:
    axis.set_xticks(range(len(x_ticks)), x_ticks, rotation=30, ha="right")
  axis.set_ylim(*zoomed_limits(extents))
  axis.set_xlabel(xlabel)
  axis.set_ylabel(ylabel)
  axis.set_title(title)
  legend_outside(axis)
  return save(figure, path, source)


def panels_of_lines(path: str, panels: dict[str, dict], ylabel: str, source: str = "") -> str:
  """One panel per entry: {'x': [...], 'xlabel': str, 'series': {name: [...]}} and optionally
  'baselines': {name: value}, drawn as a dashed line in the series' colour."""
  figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
  for axis, (title, panel) in zip(axes[0], panels.items()):
    for name, values in panel["series"].items():
      line, = axis.plot(panel["x"], values, marker="o", label=name)
      if name in panel.get("baselines", {}):
        axis.axhline(panel["baselines"][name], color=line.get_color(), linestyle="--",
                     linewidth=1)
    axis.set_title(title)
    axis.set_xlabel(panel["xlabel"])
    axis.set_ylim(min(0.0, axis.get_ylim()[0]), 1.02)
  axes[0][0].set_ylabel(ylabel)
  legend_outside(axes[0][-1], title="dashed: different images"
                 if any(p.get("baselines") for p in panels.values()) else None)
  return save(figure, path, source)


def heatmaps(path: str, matrices: dict[str, np.ndarray], row_labels: list[str],
             column_labels: list[str], row_title: str, column_title: str,
             source: str = "") -> str:
  """One annotated heatmap (values in [0, 1]) per matrix, side by side."""
  figure, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.8),
                              squeeze=False)
  for axis, (title, matrix) in zip(axes[0], matrices.items()):
    image = axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
    axis.set_xticks(range(len(column_labels)), column_labels, rotation=30, ha="right")
    axis.set_yticks(range(len(row_labels)), row_labels)
    axis.set_xlabel(column_title)
    axis.set_ylabel(row_title)
    axis.set_title(title)
    for (i, j), value in np.ndenumerate(matrix):
      axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046)
  return save(figure, path, source)


def saliency_overlays(path: str, images: np.ndarray, maps: dict[str, np.ndarray],
                      source: str = "") -> str:
  """Row 1: the images; then one row per saliency kind, each map (scaled to [0, 1] per image)
  over its image in a perceptually uniform colormap, with the row's colour bar at its end."""
  count = images.shape[0]
  rows = 1 + len(maps)
  figure, axes = plt.subplots(rows, count + 1, figsize=(1.6 * count + 0.9, 1.7 * rows),
                              squeeze=False, width_ratios=[1.0] * count + [0.07])
  axes[0][count].set_axis_off()
  for column in range(count):
    axes[0][column].imshow(images[column])
    for row, (name, kind_maps) in enumerate(maps.items(), start=1):
      axes[row][column].imshow(images[column].mean(-1), cmap="gray")
      saliency = np.asarray(kind_maps[column], float)   # non-negative: scaled by its maximum
      overlay = axes[row][column].imshow(saliency / max(saliency.max(), 1e-12),
                                         cmap=SEQUENTIAL_COLORMAP, alpha=0.6, vmin=0.0, vmax=1.0)
      if column == 0:
        axes[row][column].set_ylabel(name, fontsize="small")
      if column == count - 1:
        figure.colorbar(overlay, cax=axes[row][count])
        axes[row][count].tick_params(labelsize="x-small")
  for axis in axes[:, :count].ravel():
    axis.set_xticks([])
    axis.set_yticks([])
  figure.suptitle("saliency, scaled to each image's maximum", fontsize="small")
  return save(figure, path, source)
