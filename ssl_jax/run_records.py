"""The run's records in its workdir, written so that a crash or a full disk never costs one.

- `metrics.jsonl`, `analysis.jsonl`: one JSON object per line ({"step": n, ...}), the input of the
  plot command and of the summary. metrics.jsonl has a record per log step and one per online
  kNN ({"step": n, "online_knn_top1": x}). A record is appended with one write of a whole line and
  flushed to disk; a resumed run drops the records after its checkpoint's step (those steps are
  recomputed) and repairs a torn last line (a kill or a full disk mid-write leaves one), saying
  so. Every rewrite goes to a temporary file that then replaces the original, so an interrupted
  rewrite leaves the old file whole.
- `summary.json`: strict JSON (a non-finite number is written as null), replaced atomically.

The summary's training figures (final loss, training throughput) are computed from
`metrics.jsonl`, not from what one process saw: a relaunch of a finished run, or a resume after
a kill during the final evaluation, writes the same figures again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from typing import Any

METRICS_FILE = "metrics.jsonl"     # the training metrics at every log step
ANALYSIS_FILE = "analysis.jsonl"   # the objective's analysis records (Objective.analysis)
SUMMARY_FILE = "summary.json"      # the end-of-run figures and evaluation (ssl_jax.train)
# Key of a metrics record: the seconds of its interval that count as training time (0 for the
# interval that includes compilation or an evaluation). See `training_figures`.
TIMED_SECONDS = "timed_seconds"


class RecordError(ValueError):
  """A records file that cannot be read (a damaged line that is not the last one)."""


def write_text_atomically(path: str, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, syncs it, then renames it over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
  try:
    with os.fdopen(handle, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def strict_json(value: Any) -> Any:
  """`value` with every non-finite float replaced by None (NaN and inf are not JSON)."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {key: strict_json(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(item) for item in value]
  return value


def write_json_atomically(path: str, value: Any) -> None:
  write_text_atomically(path, json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n")


def _parse_lines(path: str) -> tuple[list[dict], int]:
  """(records, bytes of a torn last line) of a JSON-lines file. A torn line is a last line that
  does not parse; a line before it that does not parse is damage we must not paper over."""
  with open(path, "rb") as f:
    content = f.read()
  lines = content.split(b"\n")
  records, torn = [], 0
  for index, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or "step" not in record:
        raise ValueError("not a record with a 'step'")
    except ValueError as error:
      if index == len(lines) - 1:   # the last line, without its newline: cut off mid-write
        torn = len(line)
        break
      raise RecordError(f"{path}, line {index + 1}: not a JSON record ({error}); the lines "
                        "before it are intact: remove or fix this line by hand") from None
    records.append(record)
  return records, torn


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file, in file order ([] when it does not exist). A torn last
  line is left out (with a warning); damage before it raises `RecordError` naming the line."""
  if not os.path.exists(path):
    return []
  records, torn = _parse_lines(path)
  if torn:
    logging.warning("%s: ignoring a torn last line (%d bytes; a run stopped while writing it)",
                    path, torn)
  return records


class JsonlHistory:
  """An append-only JSON-lines record of a run, written by the lead process only."""

  def __init__(self, path: str, enabled: bool):
    self.path = path
    self.enabled = enabled

  def truncate_after(self, step: int) -> None:
    """Keeps the records up to `step` (a resumed run recomputes the later ones, and keeping both
    copies would draw the curve twice) and repairs a torn last line, reporting it."""
    if not self.enabled or not os.path.exists(self.path):
      return
    records, torn = _parse_lines(self.path)
    kept = [record for record in records if record["step"] <= step]
    if torn:
      logging.warning("%s: repaired a torn last line (%d bytes dropped; a run stopped while "
                      "writing it)", self.path, torn)
      print(f"repaired {self.path}: dropped a torn last line of {torn} bytes", flush=True)
    # A whole last record cut just before its newline would fuse with the next append.
    unterminated = False
    if os.path.getsize(self.path) > 0:
      with open(self.path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        unterminated = f.read(1) != b"\n"
    if torn or unterminated or len(kept) != len(records):
      write_text_atomically(self.path, "".join(json.dumps(record) + "\n" for record in kept))

  def append(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    line = json.dumps(strict_json({"step": int(step), **values}), allow_nan=False) + "\n"
    # One write of the whole line in append mode, then flushed to disk: a crash leaves at most
    # this line torn, which the next resume repairs.
    with open(self.path, "a") as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())


def training_figures(records: list[dict], batch_size: int, total_steps: int) -> dict[str, Any]:
  """The summary's training figures from the metrics records of the whole run (every resume).

  final_loss: the loss of the record at `total_steps` (None if the run has none).
  images_per_second: training images over training seconds, summed over the records' timed
  intervals (intervals with compilation or evaluation have `timed_seconds` 0); None if none."""
  final = [record for record in records if record["step"] == total_steps]
  final_loss = final[-1].get("loss") if final else None
  images, seconds, previous_step = 0, 0.0, 0
  for record in records:
    if TIMED_SECONDS not in record:   # not a log step's record (e.g. an online kNN)
      continue
    if record[TIMED_SECONDS] > 0:
      images += (record["step"] - previous_step) * batch_size
      seconds += record[TIMED_SECONDS]
    previous_step = record["step"]
  return {"final_loss": final_loss,
          "images_per_second": images / seconds if seconds > 0 else None}
