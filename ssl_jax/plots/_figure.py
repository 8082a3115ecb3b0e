"""matplotlib set-up shared by the plot modules: the Agg backend, the house style, and a figure
saved as PNG (for a look) and PDF (vector, for a paper) side by side, then closed."""

from __future__ import annotations

import os
import warnings

import matplotlib

matplotlib.use("Agg")   # no display on training hosts; must precede pyplot's import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Resolution of the PNGs (the PDFs are vector); `--plot_dpi` sets it (set_dpi).
_DPI = {"png": 150}
# A perceptually uniform colormap for maps (saliency): equal steps look equal, also in grey.
SEQUENTIAL_COLORMAP = "viridis"


def set_dpi(dpi: int) -> None:
  if not 30 <= dpi <= 1200:
    raise ValueError(f"plot dpi {dpi} is outside 30..1200")
  _DPI["png"] = int(dpi)


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of `key` over the records that have it, in step order."""
  points = sorted((record["step"], record[key]) for record in records if key in record)
  return [step for step, _ in points], [value for _, value in points]


def zoomed_limits(values, floor: float = 0.0, ceiling: float = 1.0) -> tuple[float, float]:
  """y limits around `values` with a margin, so that differences between bars or lines are
  visible (instead of every score bar rising from 0 to near the top), kept within
  [floor, ceiling]."""
  finite = [v for v in np.ravel(np.asarray(values, float)) if np.isfinite(v)]
  if not finite:
    return floor, ceiling
  low, high = min(finite), max(finite)
  margin = max(0.1 * (high - low), 0.02 * (ceiling - floor))
  return max(floor, low - 2 * margin), min(ceiling, high + margin)


def legend_outside(axis, **kwargs) -> None:
  """The legend to the right of the axes, off the data."""
  axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              fontsize="small", **kwargs)


def save(figure, path: str, source: str = "") -> str:
  """Writes `path` (a .png) and the same figure as a .pdf beside it; returns `path`. `source`
  (the run or evaluation that made the figure) is printed small in the bottom right corner, so
  a figure copied into a draft still says where it came from."""
  if source:
    figure.text(0.995, 0.003, source, ha="right", va="bottom", fontsize="x-small",
                color="grey")
  with warnings.catch_warnings():   # figures with shared colour bars: tight_layout declines
    warnings.simplefilter("ignore", UserWarning)
    figure.tight_layout()
  figure.savefig(path, dpi=_DPI["png"], bbox_inches="tight")
  figure.savefig(os.path.splitext(path)[0] + ".pdf", bbox_inches="tight")
  plt.close(figure)
  return path


__all__ = ["SEQUENTIAL_COLORMAP", "legend_outside", "plt", "save", "series", "set_dpi",
           "zoomed_limits"]
