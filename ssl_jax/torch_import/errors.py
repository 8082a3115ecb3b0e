"""The one exception of the checkpoint converter: bad input the user can fix (unknown source or
architecture, unreadable or unsafe file, missing or mis-shaped encoder weights)."""

from __future__ import annotations


class ConversionError(ValueError):
  """A checkpoint that cannot be converted; the message names the problem and the way out."""
