"""Every orbax call of the project: train checkpoints (state + data iterator) and pytree files.

A train checkpoint holds the whole `TrainState` and, beside it, the input iterator's state, so a
restart with the same command resumes exactly where the last committed checkpoint left off,
neither skipping nor replaying data. Saves are asynchronous: training goes on while the files
are written, and orbax only marks a step committed once it is complete.
"""

from __future__ import annotations

import os
from typing import Any

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

  def save(self, step: int, state: PyTree, data_state: dict) -> None:
    """Starts an asynchronous save of `state` and the iterator state at `step` (the caller
    decides when a save is due)."""
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data_iter=ocp.args.JsonSave(data_state)),
        force=True)

  def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
    """Restores (state, data_state) at `step`, each leaf placed with the abstract sharding."""
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                data_iter=ocp.args.JsonRestore()))
    return restored["state"], restored["data_iter"]

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
