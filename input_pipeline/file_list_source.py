"""A random-access source over a list of image files with labels, which survives bad files.

`ImageListSource(root, relative_paths, labels)` is what every file-based dataset (image folder,
CSV of labels, ChestX-ray14, histopathology, retinopathy, ImageNet-100) ends in: element `i` is
`{'image': decode(root/relative_paths[i]), 'label': labels[i]}` with labels of shape () (single
or ordinal) or (K,) (multi-hot).

How unreadable files are skipped (and why this way). grain's `MapDataset` asks for an element at
every index, so a bad file cannot just be left out of the index space once training has started.
Two designs were weighed:

- Scan every file at construction. `Image.verify()` is cheap but blind to a truncated JPEG (it
  checks PNG chunk CRCs, not JPEG entropy data), and a full decode of ImageNet's 1.28 M files
  takes the better part of an hour per run before the first step. Rejected.
- Detect at read time (chosen). A file that fails to decode is logged by name (once per process),
  remembered, and replaced by its nearest readable successor in index order (i+1, i+2, ...,
  wrapping). Whether a file decodes is a property of the file, not of the read order, so element
  `i` is still a pure function of `i`: training stays deterministic and a resumed run replays
  exactly what an uninterrupted one would have read.

The threshold is checked against what this process has read: with `bad` distinct files found
unreadable among `read` distinct files attempted, the read stops with `TooManyUnreadableImages`
(naming the files) when bad / read > max_skipped_fraction, once `read` reaches
min(len(source), 1000) -- before that the estimate is too noisy (one bad file among the first ten
reads is not 10 % of the dataset). Reads are a uniform random sample in training (shuffled) and the
whole split in evaluation, so the ratio estimates the dataset's fraction: at the default 1 %, a
dataset with 2 % bad files stops within its first ~1000 reads, while one with 0.5 % almost
surely trains on. Counters live in each process (grain worker processes each keep their own and
each samples the same distribution), so no cross-process state is needed.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Sequence

import numpy as np

from input_pipeline import image_files

# Distinct reads before the skipped fraction is compared with the threshold (or the whole
# source if it is smaller).
MIN_READS_FOR_THRESHOLD = 1000
_NAMED_FILES_IN_ERROR = 20


def check_root(root: str, name: str) -> str:
  """`data.root` as an absolute path, with an error if it is empty or not a directory."""
  if not root:
    raise ValueError(f"data.root is empty: give the directory of the {name} download, e.g. "
                     f"--config.data.root=/data/{name}")
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise ValueError(f"data.root={root} is not a directory")
  return root


class TooManyUnreadableImages(RuntimeError):
  """More than data.max_skipped_fraction of the image files read so far could not be decoded."""


class ImageListSource:
  """Images at root/relative_paths[i] with labels[i]; unreadable files are skipped (see module)."""

  def __init__(self, root: str, relative_paths: Sequence[str], labels: np.ndarray, *,
               max_skipped_fraction: float = 0.01, description: str = "image files",
               classes: Sequence[str] = ()):
    labels = np.asarray(labels)
    if len(relative_paths) == 0:
      raise ValueError(f"no {description} under {root}")
    if labels.shape[0] != len(relative_paths):
      raise ValueError(f"{len(relative_paths)} image paths but {labels.shape[0]} labels")
    if not 0.0 <= max_skipped_fraction < 1.0:
      raise ValueError(f"data.max_skipped_fraction={max_skipped_fraction} must be in [0, 1)")
    self.root = root
    self.relative_paths = list(relative_paths)
    self.labels = labels.astype(np.int32)
    self.classes = tuple(classes)
    self.max_skipped_fraction = float(max_skipped_fraction)
    self._description = description
    self._reset_read_state()

  def _reset_read_state(self) -> None:
    # Per-process bookkeeping; one bit per file keeps it small even for ImageNet.
    self._lock = threading.Lock()
    self._attempted = np.zeros(len(self.relative_paths), bool)
    self._unreadable = np.zeros(len(self.relative_paths), bool)
    self._num_attempted = 0
    self._num_unreadable = 0

  def __getstate__(self) -> dict[str, Any]:
    # Locks do not pickle; a grain worker process starts its own count.
    state = dict(self.__dict__)
    for key in ("_lock", "_attempted", "_unreadable", "_num_attempted", "_num_unreadable"):
      state.pop(key)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._reset_read_state()

  def __len__(self) -> int:
    return len(self.relative_paths)

  def path(self, index: int) -> str:
    return os.path.join(self.root, self.relative_paths[index])

  @property
  def skipped_files(self) -> list[str]:
    """Paths found unreadable so far in this process."""
    return [self.path(i) for i in np.flatnonzero(self._unreadable)]

  def __getitem__(self, index: int) -> dict[str, Any]:
    count = len(self)
    index = int(index)
    for offset in range(count):
      candidate = (index + offset) % count
      if self._unreadable[candidate]:
        continue
      try:
        image = image_files.decode_image_file(self.path(candidate))
      except image_files.UnreadableImageError as error:
        self._record(candidate, readable=False, error=error)
        continue
      self._record(candidate, readable=True)
      return {"image": image, "label": self.labels[candidate]}
    raise TooManyUnreadableImages(f"none of the {count} {self._description} under {self.root} "
                                  "could be decoded")

  def _record(self, index: int, *, readable: bool, error: Exception | None = None) -> None:
    with self._lock:
      first_time = not self._attempted[index]
      if first_time:
        self._attempted[index] = True
        self._num_attempted += 1
        if not readable:
          self._unreadable[index] = True
          self._num_unreadable += 1
      attempted, unreadable = self._num_attempted, self._num_unreadable
    if not readable and first_time:
      logging.warning("skipping unreadable image %s (%s); it is replaced by the next readable "
                      "file", self.path(index), error.__cause__ or error)
    if unreadable and attempted >= min(len(self), MIN_READS_FOR_THRESHOLD) \
        and unreadable / attempted > self.max_skipped_fraction:
      names = self.skipped_files
      shown = ", ".join(names[:_NAMED_FILES_IN_ERROR])
      more = f" and {len(names) - _NAMED_FILES_IN_ERROR} more" if len(names) > _NAMED_FILES_IN_ERROR else ""
      raise TooManyUnreadableImages(
          f"{unreadable} of the {attempted} {self._description} read so far under {self.root} "
          f"could not be decoded ({unreadable / attempted:.1%} > data.max_skipped_fraction="
          f"{self.max_skipped_fraction:.1%}): {shown}{more}. Repair or remove them, or raise "
          "data.max_skipped_fraction")

  def __repr__(self) -> str:
    return f"ImageListSource({self.root!r}, {len(self)} {self._description})"
