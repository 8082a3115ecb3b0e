"""The pure train step: (state, batch) -> (state, metrics), jitted once with declared shardings.

Per step: draw keys by folding the step into the base key, augment both views on the device,
differentiate the objective's loss, apply the optimiser, EMA-update the target, run the
objective's post-update hook (e.g. the MoCo enqueue). A step whose loss or gradient is not
finite changes nothing but the step counter and the skip counter, so NaNs never reach params,
the target, BN statistics or the objective's state.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from input_pipeline import device_augment
from ssl_jax import collapse
from ssl_jax import ema as ema_lib
from ssl_jax import monitoring
from ssl_jax import sharding as sharding_lib
from ssl_jax.objectives.base import LossInputs, Objective
from ssl_jax.train_state import TrainState


def _all_finite(tree) -> jax.Array:
  """Whether every entry of every leaf is finite, computed once per step.

  The non-finite entries are counted and the count goes through a square root. XLA:CPU copies a
  cheap scalar computation into each fusion that consumes it, and the guard's consumers are the
  selects of every state leaf. A plain `and` over the leaves would therefore be duplicated into
  every one of those fusions, which inflates the step's HLO and its compile time with the number
  of leaves. A square root counts as expensive, so XLA computes it once. The value, and so every
  select, is the same as with the `and` (docs/performance.md#compile-time has the figures)."""
  nonfinite = sum(jnp.sum(~jnp.isfinite(leaf), dtype=jnp.float32)
                  for leaf in jax.tree.leaves(tree))
  return jnp.sqrt(nonfinite) == 0


def make_train_step(
    objective: Objective,
    optimizer: optax.GradientTransformation,
    lr_schedule: Callable[[jax.Array], jax.Array],
    tau_schedule: Callable[[jax.Array], jax.Array],
    augment_config: ml_collections.ConfigDict,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    base_rng: jax.Array,
):
  """Returns (train_step, metrics_collection_class); train_step is pure and not yet jitted."""
  metric_names = monitoring.ENGINE_METRICS + tuple(objective.metric_names)
  metrics_collection = monitoring.make_metrics_collection(metric_names)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    step_rng = jax.random.fold_in(base_rng, state.step)
    augment_rng, loss_rng = jax.random.split(step_rng)
    # The named scopes label each phase in profiles (benchmarks/profile_step.py).
    with jax.named_scope("augment"):
      views = device_augment.augment_views(augment_rng, batch, augment_config, mean, std)

    def loss_fn(params):
      with jax.named_scope("loss"):
        return objective.loss(LossInputs(
            params=params, batch_stats=state.batch_stats, views=views, rng=loss_rng,
            step=state.step, target_params=state.target_params,
            target_batch_stats=state.target_batch_stats, objective_state=state.objective_state,
            labels=batch.get("label")))

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    with jax.named_scope("optimizer"):
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = objective.after_update(optax.apply_updates(state.params, updates))
    tau = tau_schedule(state.step)
    with jax.named_scope("ema"):
      if objective.uses_target:
        target_params = ema_lib.update_target(state.target_params, params, tau_schedule, tau)
      else:
        target_params = state.target_params
    with jax.named_scope("objective_state"):
      objective_state = objective.update_objective_state(state.objective_state, aux.extras)

    with jax.named_scope("nonfinite_guard"):
      finite = jnp.isfinite(loss) & _all_finite(grads)
      updated = state.replace(
          params=params, batch_stats=aux.batch_stats, target_params=target_params,
          target_batch_stats=aux.target_batch_stats, opt_state=opt_state,
          objective_state=objective_state)
      kept_or_updated = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
      new_state = kept_or_updated.replace(
          step=state.step + 1,
          nonfinite_steps=jnp.where(finite, 0, state.nonfinite_steps + 1))

    unknown = set(aux.metrics) - set(objective.metric_names)
    if unknown:
      raise ValueError(f"objective returned undeclared metrics {sorted(unknown)}; declare them "
                       f"in {type(objective).__name__}.metric_names")
    with jax.named_scope("monitors"):
      metrics = metrics_collection.single_from_model_output(
          loss=loss,
          learning_rate=lr_schedule(state.step),
          tau=jnp.asarray(tau, jnp.float32),
          projection_std=collapse.normalized_std(aux.projections),
          rankme=collapse.rankme(aux.projections),
          grad_norm=optax.tree.norm(grads),
          skipped_step=1.0 - finite.astype(jnp.float32),
          **aux.metrics)
    return new_state, metrics

  return train_step, metrics_collection


def jit_train_step(train_step, state_shardings, mesh: Mesh, compiler_options: dict | None = None):
  """One jit with declared shardings: batch split over all devices, state by rule, donated."""
  return _jit_state_update(train_step, state_shardings, sharding_lib.batch_sharding(mesh), mesh,
                           compiler_options)


def _jit_state_update(fn, state_shardings, input_sharding, mesh: Mesh,
                      compiler_options: dict | None):
  """jit of fn(state, input) -> (state, metrics): state by rule and donated, metrics replicated."""
  return jax.jit(
      fn,
      in_shardings=(state_shardings, input_sharding),
      out_shardings=(state_shardings, sharding_lib.replicated(mesh)),
      donate_argnums=0,
      compiler_options=compiler_options,
  )


def jit_multi_step(train_step, state_shardings, mesh: Mesh, steps_per_dispatch: int,
                   compiler_options: dict | None = None):
  """`steps_per_dispatch` train steps in one dispatch: `lax.scan` of the step over a
  device-resident buffer of that many batches (`sharding.host_batches_to_global_buffer`).

  Returns jit(state, batches) -> (state, metrics merged over the steps). For small models on an
  accelerator the host's per-step dispatch, not the device, bounds throughput; one dispatch per
  several steps amortises it. The steps compute what as many `jit_train_step` calls compute
  (keys still come from each step's counter), up to XLA's freedom to fuse a loop body
  differently from a lone step."""
  if steps_per_dispatch < 1:
    raise ValueError(f"steps_per_dispatch={steps_per_dispatch} must be a positive integer")

  def multi_step(state, batches):
    # `length` makes a buffer of another number of batches an error, not a silent mismatch.
    state, stacked_metrics = jax.lax.scan(train_step, state, batches, length=steps_per_dispatch)
    per_step = [jax.tree.map(lambda leaf, i=i: leaf[i], stacked_metrics)
                for i in range(steps_per_dispatch)]
    return state, functools.reduce(lambda merged, metrics: merged.merge(metrics), per_step)

  return _jit_state_update(multi_step, state_shardings, sharding_lib.stacked_batch_sharding(mesh),
                           mesh, compiler_options)
