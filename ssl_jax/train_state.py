"""The one train-state pytree, and its shape-first, sharded initialisation.

Everything a step reads or writes lives here, so checkpointing, donation and sharding treat the
state as one object. There is no RNG in the state: step keys are `fold_in(base_key, step)`.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ssl_jax import sharding as sharding_lib
from ssl_jax.objectives.base import Objective

PyTree = Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array                 # int32 scalar: optimiser steps taken (skipped ones included)
  params: PyTree                  # online network: backbone, projector[, predictor]
  batch_stats: PyTree             # online BN statistics
  target_params: PyTree           # EMA target (backbone, projector); {} without a target
  target_batch_stats: PyTree      # target's own BN statistics; {} without a target
  opt_state: optax.OptState
  objective_state: PyTree         # e.g. the MoCo queue; {} when none
  nonfinite_steps: jax.Array      # int32: consecutive steps skipped for a non-finite loss/grad


def target_subtree(objective: Objective, tree: PyTree) -> PyTree:
  """The part of an online-network collection that the EMA target copies."""
  if not objective.uses_target:
    return {}
  # A collection may lack a group (a projector without BatchNorm has no batch_stats).
  return {key: tree[key] for key in objective.target_keys if key in tree}


def make_init_fn(objective: Objective, optimizer: optax.GradientTransformation,
                 image_shape: tuple[int, int, int], global_batch_size: int):
  """A pure function rng -> TrainState, for `jax.eval_shape` and a sharded `jax.jit`."""

  def init(rng: jax.Array) -> TrainState:
    params_rng, objective_rng = jax.random.split(rng)
    params, batch_stats = objective.init(params_rng, image_shape)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        target_params=target_subtree(objective, params),
        target_batch_stats=target_subtree(objective, batch_stats),
        opt_state=optimizer.init(params),
        objective_state=objective.init_objective_state(objective_rng, global_batch_size),
        nonfinite_steps=jnp.zeros((), jnp.int32),
    )

  return init


def create_train_state(init_fn, rng: jax.Array, mesh: Mesh, fsdp_min_size: int,
                       compiler_options: dict | None = None):
  """Shape first, then shardings by rule, then one jitted init placing every leaf directly.

  Returns (state, state_shardings)."""
  abstract_state = jax.eval_shape(init_fn, rng)
  shardings = sharding_lib.state_shardings(abstract_state, mesh, fsdp_min_size)
  state = jax.jit(init_fn, out_shardings=shardings, compiler_options=compiler_options)(rng)
  return state, shardings
