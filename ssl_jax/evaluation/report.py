"""What an evaluator returns, and the text table that prints it."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Report:
  """JSON-able results keyed by encoder name, a table (header + rows), and plot paths."""
  results: dict[str, Any]
  header: tuple[str, ...]
  rows: list[tuple[str, ...]]
  plots: list[str] = dataclasses.field(default_factory=list)

  def table(self) -> str:
    return format_table(self.header, self.rows)


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
  widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]

  def line(row):
    return "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()

  return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def fmt(value: float) -> str:
  return f"{value:.4f}"
