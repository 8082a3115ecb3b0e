"""EMA target networks: the decay schedule and the update.

The target (MoCo's key encoder, BYOL's target network) is a sibling of the online params in the
train state and follows them as `target <- tau * target + (1 - tau) * online`. Only the parameter
groups the target holds (`Objective.target_keys`, never the predictor) are updated; the target's
BatchNorm statistics are not averaged, they come from the target's own forward passes.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any

EMA_SCHEDULES = ("constant", "cosine")


def no_ema(step: jax.Array | int) -> jax.Array:
  """EMA off: tau = 0 at every step (the logged value). `update_target` recognises this schedule
  and makes the updated online params the target (so each step's target is the online network
  as it was at the start of the step), as a copy rather than by tau = 0 arithmetic, which XLA may
  round in the target's own kernel differently from the params' (by 1 ulp, seen with the older
  CPU emitters)."""
  del step
  return jnp.zeros([], jnp.float32)


def tau_schedule(ema_config: ml_collections.ConfigDict,
                 total_steps: int) -> Callable[[jax.Array | int], jax.Array]:
  """Returns `step -> tau` for `ema_config.schedule`.

  'constant': tau = tau_base at every step (MoCo's m = 0.999).
  `enabled=False`: tau = 0 at every step whatever the schedule (no EMA).
  'cosine': BYOL's schedule tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2, which starts at
  tau_base and reaches 1 at k = K = total_steps, so the target freezes as training ends.
  """
  if not ema_config.get("enabled", True):
    return no_ema
  tau_base = float(ema_config.tau_base)
  if not 0.0 <= tau_base <= 1.0:
    raise ValueError(f"ema.tau_base must be in [0, 1], got {tau_base}")
  if ema_config.schedule == "constant":
    def constant(step: jax.Array | int) -> jax.Array:
      del step
      return jnp.asarray(tau_base, jnp.float32)
    return constant
  if ema_config.schedule == "cosine":
    if total_steps <= 0:
      raise ValueError(f"the cosine EMA schedule needs total_steps > 0, got {total_steps}")

    def cosine(step: jax.Array | int) -> jax.Array:
      # Clip so that steps past the end (e.g. a few extra steps of a resumed run) keep tau = 1
      # instead of walking back down the cosine.
      progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
      return 1.0 - (1.0 - tau_base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0
    return cosine
  raise ValueError(
      f"unknown ema.schedule {ema_config.schedule!r}; allowed: {list(EMA_SCHEDULES)}")


def ema_update(target_params: PyTree, online_params: PyTree, tau: jax.Array | float) -> PyTree:
  """`target <- tau * target + (1 - tau) * online`, over the target's top-level keys only.

  The online params may hold more groups than the target (BYOL's predictor); those are ignored.
  """
  missing = set(target_params) - set(online_params)
  if missing:
    raise KeyError(f"target param groups {sorted(missing)} are not in the online params "
                   f"(which have {sorted(online_params)})")
  # optax.incremental_update(new, old, step_size) = step_size * new + (1 - step_size) * old.
  return {
      key: optax.incremental_update(online_params[key], target_params[key], 1.0 - tau)
      for key in target_params
  }


def update_target(target_params: PyTree, online_params: PyTree,
                  schedule: Callable[[jax.Array | int], jax.Array], tau: jax.Array) -> PyTree:
  """The target after a step: with `schedule` = no_ema, a copy of the online params' groups the
  target holds; otherwise `ema_update` at `tau` (= schedule(step))."""
  if schedule is no_ema:
    return {key: online_params[key] for key in target_params}
  return ema_update(target_params, online_params, tau)
