"""Which examples of a split an evaluation reads when `max_examples` caps it.

Why not the first N. Many sources list their examples grouped by class (an image folder lists
class after class), so the first 10,000 of CIFAR-10's folder copy are two of its ten classes: the
kNN memory bank would hold 2 classes and every encoder would score near chance, with nothing to
say so. A cap therefore draws

- a stratified subset when the source can list its labels without decoding images (image
  folders, CSVs, the medical sets, MedMNIST, in-memory arrays, synthetic images): each class
  keeps its share of the split (largest-remainder rounding, so the kept counts add up to N
  exactly), the examples within a class drawn at random;
- a uniform random subset otherwise (multi-label targets, which have no single class to stratify
  by; TFDS and ArrayRecord sources, whose labels are only known by reading every record).

The draw is seeded by `data.split_seed` and the split's name (not by `config.seed`): every run,
every process and every encoder evaluated on a config sees the same examples. The kept examples
stay in the split's own order. `EvalSubset.description` is the line a results table prints,
e.g. "capped: 10,000 of 50,000, stratified".
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

ALL = "all"
STRATIFIED = "stratified"
UNIFORM = "uniform"


@dataclasses.dataclass(frozen=True)
class EvalSubset:
  """The examples of one split an evaluation reads."""
  indices: np.ndarray      # positions in the split, ascending
  num_total: int           # examples in the whole split
  method: str              # ALL (no cap applied) | STRATIFIED | UNIFORM

  @property
  def num_kept(self) -> int:
    return len(self.indices)

  @property
  def capped(self) -> bool:
    return self.method != ALL

  @property
  def description(self) -> str:
    if not self.capped:
      return f"all {self.num_total:,}"
    return f"capped: {self.num_kept:,} of {self.num_total:,}, {self.method}"


def _seed(split_seed: int, split: str) -> np.random.SeedSequence:
  # crc32, not hash(): Python salts str hashes per process.
  return np.random.SeedSequence([int(split_seed), zlib.crc32(split.encode())])


def stratified_counts(class_sizes: np.ndarray, num_kept: int) -> np.ndarray:
  """How many of each class to keep: proportional to `class_sizes`, summing to `num_kept`
  (largest remainder; ties go to the lower class index, so the result is deterministic)."""
  class_sizes = np.asarray(class_sizes, np.int64)
  total = int(class_sizes.sum())
  exact = class_sizes * num_kept / total
  counts = np.floor(exact).astype(np.int64)
  remainder = exact - counts
  order = np.lexsort((np.arange(len(counts)), -remainder))
  counts[order[:num_kept - int(counts.sum())]] += 1
  return counts


def choose(labels: np.ndarray | None, num_total: int, max_examples: int, *, split_seed: int,
           split: str) -> EvalSubset:
  """The subset of a split of `num_total` examples that a cap of `max_examples` (< 0: none)
  keeps; `labels` (N,) stratifies it, `labels` (N, K) or None gives a uniform draw."""
  if max_examples < 0 or max_examples >= num_total:
    return EvalSubset(np.arange(num_total), num_total, ALL)
  rng = np.random.default_rng(_seed(split_seed, split))
  if labels is None or np.ndim(labels) != 1:
    kept = rng.choice(num_total, size=max_examples, replace=False)
    return EvalSubset(np.sort(kept), num_total, UNIFORM)
  labels = np.asarray(labels)
  if len(labels) != num_total:
    raise ValueError(f"{len(labels)} labels for a split of {num_total} examples")
  _, class_of, class_sizes = np.unique(labels, return_inverse=True, return_counts=True)
  counts = stratified_counts(class_sizes, max_examples)
  # A random order, then grouped by class (stable), keeps a random subset of each class.
  order = rng.permutation(num_total)
  grouped = order[np.argsort(class_of[order], kind="stable")]
  starts = np.concatenate([[0], np.cumsum(class_sizes)[:-1]])
  kept = np.concatenate([grouped[start:start + count] for start, count in zip(starts, counts)])
  return EvalSubset(np.sort(kept), num_total, STRATIFIED)


def source_labels(source) -> np.ndarray | None:
  """The labels a source lists without decoding images (its `labels` attribute), or None."""
  labels = getattr(source, "labels", None)
  return None if labels is None else np.asarray(labels)
