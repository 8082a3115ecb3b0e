"""matplotlib set-up shared by the plot modules: the Agg backend and a saved, closed figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")   # no display on training hosts; must precede pyplot's import

import matplotlib.pyplot as plt  # noqa: E402


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of `key` over the records that have it, in step order."""
  points = sorted((record["step"], record[key]) for record in records if key in record)
  return [step for step, _ in points], [value for _, value in points]


def save(figure, path: str) -> str:
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


__all__ = ["plt", "save", "series"]
