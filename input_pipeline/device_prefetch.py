"""Keeps the next batches already on their way to the devices while the current step runs.

The train loop turns each host batch into global device arrays (`host_batch_to_global`) and
dispatches the jitted step. JAX dispatches the step asynchronously, so in steady state the next
iteration's `next(iterator)` and transfer already overlap the running step; but every blocking
point (fetching metrics at log time, a checkpoint save, an evaluation) drains that overlap, and the
step after it waits for a host batch and a transfer. `DevicePrefetchIterator` starts the transfer
of the next `buffer_size` batches *before* handing out the current one, so a batch is in flight
whatever the loop blocks on.

Checkpoints must not skip the prefetched batches: `get_state()` is the wrapped iterator's state
from before the oldest batch not yet handed out, so a run restored from it continues with exactly
the batch the interrupted run would have used next.
"""

from __future__ import annotations

import collections
import copy
from typing import Any, Callable, Iterator

Batch = Any


class DevicePrefetchIterator:
  """Iterator over `put_on_device(batch)` of a grain iterator's batches, `buffer_size` ahead.

  Args:
    iterator: a grain `DatasetIterator` (anything with `__next__`, `get_state`, `set_state`).
    put_on_device: host batch -> device batch, e.g.
      `lambda batch: sharding_lib.host_batch_to_global(batch, mesh)`; it should return without
      waiting for the copy (JAX's transfers are asynchronous).
    buffer_size: batches transferred ahead of the one handed out (1 hides one transfer).
  """

  def __init__(self, iterator: Iterator[Batch], put_on_device: Callable[[Batch], Batch],
               buffer_size: int = 1):
    if buffer_size < 1:
      raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
    self._iterator = iterator
    self._put_on_device = put_on_device
    self._buffer_size = buffer_size
    # (state of `iterator` before this batch was read, the batch on its way to the devices)
    self._buffer: collections.deque[tuple[Any, Batch]] = collections.deque()
    self._exhausted = False

  def __iter__(self) -> DevicePrefetchIterator:
    return self

  def _fill(self, size: int) -> None:
    while len(self._buffer) < size and not self._exhausted:
      # Copied: the state must not change when the wrapped iterator advances.
      state = copy.deepcopy(self._iterator.get_state())
      try:
        host_batch = next(self._iterator)
      except StopIteration:
        self._exhausted = True
        return
      self._buffer.append((state, self._put_on_device(host_batch)))

  def __next__(self) -> Batch:
    self._fill(1)
    if not self._buffer:
      raise StopIteration
    _, batch = self._buffer.popleft()
    # Before returning: the caller dispatches its step on `batch` while these copies proceed.
    self._fill(self._buffer_size)
    return batch

  def get_state(self) -> Any:
    """The state to checkpoint after the batches handed out so far (prefetched ones excluded)."""
    if self._buffer:
      return copy.deepcopy(self._buffer[0][0])
    return self._iterator.get_state()

  def set_state(self, state: Any) -> None:
    """Restores the wrapped iterator; batches already prefetched are dropped."""
    self._buffer.clear()
    self._exhausted = False
    self._iterator.set_state(state)

  def close(self) -> None:
    self._buffer.clear()
    close = getattr(self._iterator, "close", None)
    if close is not None:
      close()
