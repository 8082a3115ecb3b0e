"""Every orbax call of the project: train checkpoints (state + data iterator) and pytree files.

A train checkpoint holds the whole `TrainState` and, beside it, the input iterator's state, so a
restart with the same command resumes exactly where the last committed checkpoint left off,
neither skipping nor replaying data. The state is written collectively (each process writes the
shards it holds); the iterator state is one small JSON file per process, through grain's own orbax
handler, because every process reads its own part of the data. Saves are asynchronous: training goes on while the files
are written, and orbax only marks a step committed once it is complete.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

PyTree = Any


def abstract_like(tree: PyTree, shardings: PyTree) -> PyTree:
  """Shape/dtype skeleton of `tree` with the given shardings, for restoring into."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


class TrainCheckpointer:
  """Periodic, asynchronous checkpoints of the train state and the data iterator."""

  def __init__(self, directory: str, *, max_to_keep: int):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=True,
        create=True,
    )
    self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: PyTree, iterator: grain.DatasetIterator) -> None:
    """Starts an asynchronous save of `state` and of `iterator`'s position at `step` (the
    caller decides when a save is due; every process must call)."""
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
