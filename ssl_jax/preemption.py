"""When to stop for a preemption: SIGTERM in one process, JAX's preemption sync point in many.

Schedulers (SLURM, Kubernetes, Cloud TPU maintenance) announce an eviction with SIGTERM and kill
the job a little later. The loop asks `should_stop(step)` after every step; when it says yes, the
loop saves a checkpoint of that step and exits with status 143, and relaunching the same command
resumes from it.

* One process: a Python SIGTERM handler sets a flag; the step in flight finishes first.
* Several processes: the signal may reach only some hosts, and all of them must save the *same*
  step (orbax writes checkpoints collectively). `jax.distributed` runs a preemption service whose
  own SIGTERM handler tells the coordinator, which agrees a step with every process;
  `multihost_utils.reached_preemption_sync_point(step)` turns true at that step on all of them.
  A Python handler must not be installed then, as it would replace the service's.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

import jax
from jax.experimental import multihost_utils


class _SignalFlag:
  """Single process: stop once SIGTERM has arrived."""

  def __init__(self):
    self.received = False

  def on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self.received = True

  def should_stop(self, step: int) -> bool:
    del step
    return self.received


class _SyncPoint:
  """Several processes: stop at the step the preemption service agreed with every process."""

  def should_stop(self, step: int) -> bool:
    return multihost_utils.reached_preemption_sync_point(step)


@contextlib.contextmanager
def preemption_watch() -> Iterator[_SignalFlag | _SyncPoint]:
  """Yields an object whose `should_stop(step)` is polled after each step (and must be called
  at every step, by every process, in multi-process runs)."""
  if jax.process_count() > 1:
    yield _SyncPoint()
    return
  flag = _SignalFlag()
  try:
    previous = signal.signal(signal.SIGTERM, flag.on_sigterm)
  except ValueError:  # not the main thread (e.g. a notebook worker): leave signals alone
    yield flag
    return
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)
