"""Training metrics (clu) and the console progress bar; all clu imports are here.

Metrics are built inside the step as a clu `Collection`, merged on the host without a sync
(merging is lazy device arithmetic), and computed (fetched) only at log steps. Where they are
written besides metrics.jsonl: `metric_writers`.
"""

from __future__ import annotations

import time

import jax
from clu import metrics as clu_metrics

# Metrics every objective's step reports; objectives add their own (`Objective.metric_names`).
ENGINE_METRICS = ("loss", "learning_rate", "tau", "projection_std", "rankme", "grad_norm",
                  "skipped_step")


def make_metrics_collection(names: tuple[str, ...]) -> type[clu_metrics.Collection]:
  """A clu Collection averaging each named scalar over the steps between two log steps."""
  return clu_metrics.Collection.create(**{name: clu_metrics.Average.from_output(name)
                                          for name in names})


class Progress:
  """A tqdm bar with loss and images/s, refreshed at log steps only (no per-step host sync).

  It also times the training: the interval that includes compilation (the first after a start
  or resume) and intervals with an evaluation do not count (see run_records.training_figures)."""

  def __init__(self, total_steps: int, initial_step: int, images_per_step: int, enabled: bool):
    self._images_per_step = images_per_step
    self._last_step = initial_step
    self._last_time = time.perf_counter()
    self._skip_next_interval = True   # the first interval includes compilation
    self._bar = None
    if enabled and jax.process_index() == 0:
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)

  def update(self, step: int, loss: float) -> tuple[float, float]:
    """Advances to `step` (metrics of which were just fetched, so the device is in sync) and
    returns (images/s over the interval since the previous update, the seconds of it that count
    as training time: 0 when it includes compilation or an evaluation)."""
    now = time.perf_counter()
    images = (step - self._last_step) * self._images_per_step
    seconds = max(now - self._last_time, 1e-9)
    timed_seconds = 0.0 if self._skip_next_interval else seconds
    self._skip_next_interval = False
    if self._bar is not None:
      self._bar.update(step - self._last_step)
      self._bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images / seconds:.0f}")
    self._last_step, self._last_time = step, now
    return images / seconds, timed_seconds

  def exclude_since_last_update(self) -> None:
    """Leaves the current interval (it contains an evaluation) out of the throughput."""
    self._skip_next_interval = True

  def write(self, message: str) -> None:
    if self._bar is not None:
      self._bar.write(message)
    elif jax.process_index() == 0:
      print(message, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
