"""Figures of the evaluation suite (`python main.py --mode=eval`): one function per figure kind,
each writing one PNG and returning its path."""

from __future__ import annotations

import numpy as np

from ssl_jax.plots._figure import plt, save


def grouped_bars(path: str, title: str, categories: list[str],
                 values_by_encoder: dict[str, list[float]], ylabel: str) -> str:
  """One group of bars per category, one bar per encoder."""
  figure, axis = plt.subplots(figsize=(max(4.0, 1.1 * len(categories) + 2), 3.4))
  width = 0.8 / max(len(values_by_encoder), 1)
  positions = np.arange(len(categories))
  for index, (encoder, values) in enumerate(values_by_encoder.items()):
    axis.bar(positions + index * width, values, width, label=encoder)
  axis.set_xticks(positions + width * (len(values_by_encoder) - 1) / 2, categories)
  axis.set_ylabel(ylabel)
  axis.set_title(title)
  axis.legend(fontsize="small")
  return save(figure, path)


def lines(path: str, title: str, xlabel: str, ylabel: str, x_values, series: dict,
          errors: dict | None = None, log_x: bool = False, x_ticks=None) -> str:
  """One line (with optional error bars) per entry of `series`."""
  figure, axis = plt.subplots(figsize=(5.0, 3.4))
  for name, values in series.items():
    axis.errorbar(x_values, values, yerr=None if errors is None else errors[name], marker="o",
                  capsize=3, label=name)
  if log_x:
    axis.set_xscale("log")
  if x_ticks is not None:
    axis.set_xticks(range(len(x_ticks)), x_ticks, rotation=30, ha="right")
  axis.set_xlabel(xlabel)
  axis.set_ylabel(ylabel)
  axis.set_title(title)
  axis.legend(fontsize="small")
  return save(figure, path)


def panels_of_lines(path: str, panels: dict[str, dict], ylabel: str) -> str:
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
  axes[0][-1].legend(fontsize="small", title="dashed: different images"
                     if any(p.get("baselines") for p in panels.values()) else None)
  return save(figure, path)


def heatmaps(path: str, matrices: dict[str, np.ndarray], row_labels: list[str],
             column_labels: list[str], row_title: str, column_title: str) -> str:
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
  return save(figure, path)


def saliency_overlays(path: str, images: np.ndarray, maps: dict[str, np.ndarray]) -> str:
  """Row 1: the images; then one row per saliency kind, each map over its image."""
  count = images.shape[0]
  rows = 1 + len(maps)
  figure, axes = plt.subplots(rows, count, figsize=(1.6 * count, 1.7 * rows), squeeze=False)
  for column in range(count):
    axes[0][column].imshow(images[column])
    for row, (name, kind_maps) in enumerate(maps.items(), start=1):
      axes[row][column].imshow(images[column].mean(-1), cmap="gray")
      axes[row][column].imshow(kind_maps[column], cmap="jet", alpha=0.5)
      if column == 0:
        axes[row][column].set_ylabel(name, fontsize="small")
  for axis in axes.ravel():
    axis.set_xticks([])
    axis.set_yticks([])
  return save(figure, path)
