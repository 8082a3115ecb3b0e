"""Leakage-free train/test splits by patient (or any group): no group has images in two splits.

Images of one patient are strongly correlated (same anatomy, same scanner, follow-up scans), so a
split by image lets a model score on test patients it has seen in training. Here whole groups go
to one split: the distinct groups, sorted so the result does not depend on file or row order, are
permuted by a generator seeded with `seed`, and the first round(test_fraction x groups) of them
form the test split. The same (groups, test_fraction, seed) always gives the same split.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SPLITS = ("train", "test")


def patient_split_indices(groups: Sequence[str], test_fraction: float, seed: int
                          ) -> dict[str, np.ndarray]:
  """{'train': sorted indices, 'test': sorted indices} of the examples, split by group."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"data.test_fraction={test_fraction} must be in (0, 1)")
  groups = np.asarray([str(g) for g in groups])
  distinct = np.unique(groups)   # sorted
  if len(distinct) < 2:
    raise ValueError(f"a patient-wise split needs at least 2 patients, found {len(distinct)}")
  order = np.random.default_rng(seed).permutation(len(distinct))
  num_test = min(max(1, int(round(test_fraction * len(distinct)))), len(distinct) - 1)
  test_groups = distinct[order[:num_test]]
  is_test = np.isin(groups, test_groups)
  return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


def select_split(split: str, groups: Sequence[str], test_fraction: float, seed: int
                 ) -> np.ndarray:
  """Indices of `split` ('train' or 'test'), with an error listing the allowed split names."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} of a patient-wise split; allowed: {list(SPLITS)}")
  return patient_split_indices(groups, test_fraction, seed)[split]
