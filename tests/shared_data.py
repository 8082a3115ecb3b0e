"""The real data files the tests read: `<repository root>/../shared/data` (CI keeps a `shared/`
directory beside the clone; its data/README.md describes the files)."""

from __future__ import annotations

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def shared_data_path(*relative: str) -> str:
  """The path of a shared data file; a missing one fails the test (not skips it), saying where
  the file was looked for."""
  path = os.path.join(SHARED_DATA, *relative)
  if not os.path.exists(path):
    pytest.fail(f"{path} is missing: the tests read real data from <repository root>/../shared/"
                f"data; put the shared data directory there (e.g. `ln -s /path/to/shared "
                f"{os.path.dirname(REPO)}/shared`)", pytrace=False)
  return path
