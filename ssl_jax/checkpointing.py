"""Every orbax call of the project: train checkpoints (state + data iterator) and pytree files.

A train checkpoint holds the whole `TrainState` and, beside it, the input iterator's state, so a
restart with the same command resumes exactly where the last committed checkpoint left off,
neither skipping nor replaying data. The state is written collectively (each process writes the
shards it holds); the iterator state is one small JSON file per process, through grain's own orbax
handler, because every process reads its own part of the data. Saves are asynchronous: training
goes on while the files are written, and orbax only marks a step committed once it is complete.

A committed checkpoint can still be damaged later (a truncated file, a deleted manifest, an
emptied step directory). Resuming takes the newest checkpoint that restores, and moves each newer
one that did not into WORKDIR/checkpoints_set_aside/ (never deleting it), saying why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from ssl_jax import disk_space

PyTree = Any
# Beside the checkpoint directory: the checkpoints that did not restore, kept for inspection.
SET_ASIDE_DIR = "checkpoints_set_aside"


class NoUsableCheckpoint(RuntimeError):
  """Every checkpoint in the directory failed to restore."""


def short_reason(error: BaseException) -> str:
  """The first line of an error (orbax's can run to hundreds of lines), with its type, without
  tensorstore's spec dump."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  first = lines[0].split(" [tensorstore_spec=")[0] if lines else ""
  return f"{type(error).__name__}: {first[:300]}".rstrip(": ")


@contextlib.contextmanager
def _asyncio_task_reports_silenced():
  """A damaged checkpoint fails every array's read at once; asyncio then logs each of the
  hundreds of failed reads ("Task exception was never retrieved"). The first failure, which
  restore raises, is reported by the caller instead."""
  asyncio_logger = logging.getLogger("asyncio")
  level = asyncio_logger.level
  asyncio_logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    asyncio_logger.setLevel(level)


def quiet_closed_event_loop_reports(default_hook=None):
  """An `sys.unraisablehook` that drops the "Event loop is closed" reports a failed orbax
  restore or save leaves behind (tensorstore completes its futures on the asyncio loop orbax
  already closed; dozens of identical tracebacks, none of them the error) and passes every other
  report to `default_hook`. main.py installs it; importing this module changes nothing."""
  default_hook = default_hook or sys.unraisablehook

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    default_hook(unraisable)
  return hook


def abstract_like(tree: PyTree, shardings: PyTree) -> PyTree:
  """Shape/dtype skeleton of `tree` with the given shardings, for restoring into."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


class TrainCheckpointer:
  """Periodic, asynchronous checkpoints of the train state and the data iterator."""

  def __init__(self, directory: str, *, max_to_keep: int):
    self.directory = os.path.abspath(directory)
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=True,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)

  def _reopen(self) -> None:
    """A fresh manager: after a failed restore orbax's may be left unusable, and after a step
    directory moved away its list of steps is stale."""
    try:
      self._manager.close()
    except Exception:  # a manager that a failed restore broke: a new one replaces it anyway
      pass
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: PyTree, iterator: grain.DatasetIterator) -> None:
    """Starts an asynchronous save of `state` and of `iterator`'s position at `step` (the
    caller decides when a save is due; every process must call). Raises `DiskFull` first if the
    disk has no room for it: as much as the newest checkpoint takes on disk, or at least the
    state's bytes."""
    needed = max(sum(leaf.nbytes for leaf in jax.tree.leaves(state)),
                 disk_space.newest_checkpoint_bytes(self.directory) or 0)
    disk_space.check_room(self.directory, needed, f"the checkpoint at step {step}")
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data_iter=grain.checkpoint.CheckpointSave(iterator)),
        force=True)

  def restore(self, step: int, abstract_state: PyTree,
              iterator: grain.DatasetIterator | None = None) -> PyTree:
    """The state at `step`, each leaf placed with the abstract sharding; `iterator` (if given)
    is moved to the position saved with it."""
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if iterator is not None:
      args["data_iter"] = grain.checkpoint.CheckpointRestore(iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**args))["state"]

  def restore_newest_good(self, abstract_state: PyTree,
                          iterator: grain.DatasetIterator | None, set_aside_dir: str, *,
                          move_aside: bool = True) -> tuple[int, PyTree]:
    """(step, state) of the newest checkpoint that restores (see `restore`). Each newer one
    that failed is reported and, once an older one has restored (so the failure was the
    checkpoint's, not the config's or the machine's), moved into `set_aside_dir`. When none
    restores, nothing is moved and `NoUsableCheckpoint` lists every step's reason."""
    failures = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        with _asyncio_task_reports_silenced():
          state = self.restore(step, abstract_state, iterator)
      except Exception as error:  # orbax raises many types for damaged files
        failures.append((step, short_reason(error)))
        logging.warning("checkpoint %d in %s does not restore: %s", step, self.directory,
                        failures[-1][1])
        self._reopen()
        continue
      for bad_step, reason in failures:
        kept = (f"moved to {self._set_aside(bad_step, set_aside_dir)}" if move_aside
                else "left in place")
        print(f"skipped the checkpoint at step {bad_step} ({reason}); {kept}; resuming from "
              f"step {step}", flush=True)
      if failures:
        self._reopen()
      return step, state
    raise NoUsableCheckpoint(
        f"no checkpoint in {self.directory} restores: " +
        "; ".join(f"step {step}: {reason}" for step, reason in failures) +
        ". Nothing was moved. If the workdir holds another run, use a new --workdir")

  def _set_aside(self, step: int, set_aside_dir: str) -> str:
    os.makedirs(set_aside_dir, exist_ok=True)
    target = os.path.join(set_aside_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(os.path.join(self.directory, str(step)), target)
    return target

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def save_pytree(directory: str, tree: PyTree) -> None:
  """Writes a pytree of arrays to `directory` synchronously (used for exported encoders)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(directory), tree, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()


def restore_pytree(directory: str, abstract_tree: PyTree | None = None) -> PyTree:
  """Reads a pytree written by `save_pytree` (onto the default device unless `abstract_tree`
  carries shardings)."""
  checkpointer = ocp.StandardCheckpointer()
  try:
    return checkpointer.restore(os.path.abspath(directory), abstract_tree)
  finally:
    checkpointer.close()
