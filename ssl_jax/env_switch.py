"""On/off switches read from environment variables: 1 (the default) or 0, nothing else."""

from __future__ import annotations

from collections.abc import Mapping


def switch_is_on(environ: Mapping[str, str], variable: str, on: str, off: str) -> bool:
  """Whether `variable` is 1 (or unset); ValueError naming both values and what they mean (`on`,
  `off`) for anything else."""
  choice = environ.get(variable, "1")
  if choice not in ("0", "1"):
    raise ValueError(f"{variable}={choice!r}: use 1 ({on}) or 0 ({off})")
  return choice == "1"
