"""Optimisers and learning-rate schedules for pretraining.

`build_optimizer` returns one optax transformation for the whole online network. Parameters are
labelled by the objective (`Objective.param_labels`) with one of `PARAM_GROUPS`; every group gets
the same update rule and differs only in its learning rate and weight decay:
- 'default' follows the warmup + cosine (or constant) schedule, weight decay `optim.weight_decay`.
- 'predictor', the predictor head: the same schedule unless `optim.predictor_schedule =
  'constant'` (SimSiam's fixed predictor lr: the peak rate throughout), times
  `optim.predictor_lr_multiplier`, with weight decay `optim.predictor_weight_decay` (negative: the
  same as `optim.weight_decay`), the separate predictor lr and wd of the non-contrastive dynamics
  study (Tian et al. 2021).
- 'bias_and_norm', biases and BatchNorm parameters where an objective trains them at their own
  rate (Barlow Twins: 0.0048 against the weights' 0.2): the schedule times
  `optim.bias_and_norm_lr_multiplier`, weight decay `optim.weight_decay`.
A group's fields set to anything but their neutral values while no parameter is in that group is
an error: the setting would otherwise be silently ignored. The learning rate is applied by one
transformation holding one step count, so the groups can never drift apart in steps.

Update rules (all with decoupled lr so the group lr can be the one differing piece):
- 'sgd': PyTorch SGD, as MoCo and SimSiam use it: weight decay is added to the gradient *before*
  momentum, `buf = m * buf + (g + wd * w)`, `w -= lr * buf` (nesterov: `w -= lr * (g' + m * buf)`).
- 'lars': optax.lars's chain (weight decay, trust-ratio scaling, lr, momentum), with weight decay
  and trust-ratio adaptation masked off for 1-D leaves (biases, BN scales/offsets) when
  `exclude_bias_and_norm`, as BYOL does.
- 'adamw': optax.adamw's chain (Adam moments, decoupled weight decay, lr).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any
Schedule = Callable[[jax.Array | int], jax.Array]

OPTIMIZERS = ("sgd", "lars", "adamw")
LR_SCHEDULES = ("cosine", "constant")
PARAM_GROUPS = ("default", "predictor", "bias_and_norm")
# The config fields that set each group apart, with their neutral values (the group then behaves
# as 'default').
GROUP_FIELDS = {
    "predictor": {"predictor_schedule": "same", "predictor_lr_multiplier": 1.0,
                  "predictor_weight_decay": -1.0},
    "bias_and_norm": {"bias_and_norm_lr_multiplier": 1.0},
}
PREDICTOR_SCHEDULES = ("same", "constant")
LARS_TRUST_COEFFICIENT = 1e-3   # BYOL / You et al. 2017


def peak_learning_rate(optim_config: ml_collections.ConfigDict, global_batch_size: int) -> float:
  """The linear scaling rule: base_lr is the rate for a batch of `lr_batch_scale` images."""
  return float(optim_config.base_lr) * global_batch_size / float(optim_config.lr_batch_scale)


def learning_rate_schedule(optim_config: ml_collections.ConfigDict, total_steps: int,
                           steps_per_epoch: int, global_batch_size: int) -> Schedule:
  """Linear warmup from 0 over `warmup_epochs`, then cosine decay to 0 at `total_steps` (or
  constant). Same shape as the official BYOL schedule: lr = 0 at step 0."""
  if optim_config.schedule not in LR_SCHEDULES:
    raise ValueError(
        f"unknown optim.schedule {optim_config.schedule!r}; allowed: {list(LR_SCHEDULES)}")
  peak = peak_learning_rate(optim_config, global_batch_size)
  warmup_steps = int(round(float(optim_config.warmup_epochs) * steps_per_epoch))
  if warmup_steps > total_steps:
    raise ValueError(f"warmup ({warmup_steps} steps = {optim_config.warmup_epochs} epochs) is "
                     f"longer than training ({total_steps} steps)")
  decay_steps = max(total_steps - warmup_steps, 1)
  cosine = optim_config.schedule == "cosine"

  def schedule(step: jax.Array | int) -> jax.Array:
    step = jnp.asarray(step, jnp.float32)
    warmup_lr = peak * step / max(warmup_steps, 1)
    if cosine:
      progress = jnp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
      after_warmup = 0.5 * peak * (1.0 + jnp.cos(jnp.pi * progress))
    else:
      after_warmup = jnp.full_like(step, peak)
    return jnp.where(step < warmup_steps, warmup_lr, after_warmup)

  return schedule


class ScaleByGroupScheduleState(NamedTuple):
  count: jax.Array   # the one step count every group's learning rate is read from


def scale_by_group_learning_rate(schedules: Mapping[str, Schedule],
                                 param_labels: PyTree | Callable[[PyTree], PyTree]
                                 ) -> optax.GradientTransformation:
  """Multiplies each leaf's update by `-schedules[label](count)`, one shared count."""

  def resolve_labels(tree: PyTree) -> PyTree:
    return param_labels(tree) if callable(param_labels) else param_labels

  def init_fn(params: PyTree) -> ScaleByGroupScheduleState:
    labels = resolve_labels(params)
    unknown = sorted({label for label in jax.tree.leaves(labels)} - set(schedules))
    if unknown:
      raise ValueError(f"unknown parameter group label(s) {unknown}; allowed: {sorted(schedules)}")
    return ScaleByGroupScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates: PyTree, state: ScaleByGroupScheduleState, params: PyTree = None):
    del params
    labels = resolve_labels(updates)
    # Evaluate each schedule once per step, not once per leaf.
    rates = {name: schedule(state.count) for name, schedule in schedules.items()}
    updates = jax.tree.map(
        lambda update, label: (-rates[label] * update).astype(update.dtype), updates, labels)
    return updates, ScaleByGroupScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def _is_matrix_or_kernel(params: PyTree) -> PyTree:
  """Mask: True for leaves that take weight decay / LARS adaptation (not biases or BN params)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def add_group_weight_decay(decays: Mapping[str, float], param_labels: PyTree | Callable,
                           mask: Callable[[PyTree], PyTree] | None
                           ) -> optax.GradientTransformation:
  """`update + decays[label] * param` per leaf (optax.add_decayed_weights with one rate per
  parameter group); leaves where `mask(params)` is False are left alone."""

  def update_fn(updates: PyTree, state, params: PyTree = None):
    if params is None:
      raise ValueError("weight decay needs the params: call update(grads, state, params)")
    labels = param_labels(updates) if callable(param_labels) else param_labels
    masked = jax.tree.map(lambda _: True, params) if mask is None else mask(params)
    updates = jax.tree.map(
        lambda update, param, label, on: (update + decays[label] * param
                                          if on and decays[label] else update),
        updates, params, labels, masked)
    return updates, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def check_groups_in_use(optim_config: ml_collections.ConfigDict, labels: PyTree) -> None:
  """Refuses a group's own setting (e.g. `optim.predictor_lr_multiplier`) when no parameter is in
  that group, naming the groups the parameters are in and the fields of each."""
  used = sorted(set(jax.tree.leaves(labels)))
  group_fields = {name: sorted(fields) for name, fields in GROUP_FIELDS.items()}
  for group, fields in GROUP_FIELDS.items():
    if group in used:
      continue
    for field, neutral in fields.items():
      value = optim_config.get(field, neutral)
      # Any negative predictor weight decay means "as everything else", not only -1.
      unchanged = value < 0 if field == "predictor_weight_decay" else value == neutral
      if not unchanged:
        raise ValueError(
            f"optim.{field}={value!r} sets the {group!r} parameter group, but no parameter is in "
            f"it (the objective's groups: {used}); leave it at {neutral!r}. Fields of each "
            f"group: {group_fields}")


def build_optimizer(optim_config: ml_collections.ConfigDict, total_steps: int,
                    steps_per_epoch: int, global_batch_size: int,
                    param_labels: PyTree | Callable[[PyTree], PyTree] | None = None
                    ) -> tuple[optax.GradientTransformation, Schedule]:
  """Returns (optimiser, default-group lr schedule).

  `param_labels`: a pytree like the params with leaves from `PARAM_GROUPS` (e.g.
  `Objective.param_labels(params)`, then checked by `check_groups_in_use`), a function params ->
  such a tree, or None (all 'default').
  """
  name = optim_config.name
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optim.name {name!r}; allowed: {list(OPTIMIZERS)}")
  predictor_schedule = optim_config.get("predictor_schedule", "same")
  if predictor_schedule not in PREDICTOR_SCHEDULES:
    raise ValueError(f"unknown optim.predictor_schedule {predictor_schedule!r}; allowed: "
                     f"{list(PREDICTOR_SCHEDULES)}")
  lr_schedule = learning_rate_schedule(optim_config, total_steps, steps_per_epoch,
                                       global_batch_size)
  peak = peak_learning_rate(optim_config, global_batch_size)
  predictor_multiplier = float(optim_config.get("predictor_lr_multiplier", 1.0))
  if predictor_schedule == "constant":
    predictor_lr = lambda step: jnp.asarray(predictor_multiplier * peak, jnp.float32)
  else:
    predictor_lr = lambda step: predictor_multiplier * lr_schedule(step)
  bias_and_norm_multiplier = float(optim_config.get("bias_and_norm_lr_multiplier", 1.0))
  bias_and_norm_lr = lambda step: bias_and_norm_multiplier * lr_schedule(step)
  schedules = {"default": lr_schedule, "predictor": predictor_lr,
               "bias_and_norm": bias_and_norm_lr}
  if param_labels is None:
    param_labels = lambda tree: jax.tree.map(lambda _: "default", tree)
  if not callable(param_labels):
    check_groups_in_use(optim_config, param_labels)
  group_lr = scale_by_group_learning_rate(schedules, param_labels)

  weight_decay = float(optim_config.weight_decay)
  predictor_weight_decay = float(optim_config.get("predictor_weight_decay", -1.0))
  decays = {"default": weight_decay,
            "predictor": weight_decay if predictor_weight_decay < 0 else predictor_weight_decay,
            "bias_and_norm": weight_decay}
  exclude = bool(optim_config.exclude_bias_and_norm)
  decay_mask = _is_matrix_or_kernel if exclude else None
  group_weight_decay = add_group_weight_decay(decays, param_labels, decay_mask)

  if name == "sgd":
    transform = optax.chain(
        group_weight_decay,
        optax.trace(decay=float(optim_config.momentum), nesterov=bool(optim_config.nesterov)),
        group_lr,
    )
  elif name == "lars":
    # optax.lars is exactly this chain with `scale_by_learning_rate` where `group_lr` is; it is
    # spelled out so that one shared step count drives both lr groups.
    adapt_mask = _is_matrix_or_kernel if exclude else True
    transform = optax.chain(
        group_weight_decay,
        optax.masked(optax.scale_by_trust_ratio(trust_coefficient=LARS_TRUST_COEFFICIENT),
                     mask=adapt_mask),
        group_lr,
        optax.trace(decay=float(optim_config.momentum), nesterov=bool(optim_config.nesterov)),
    )
  else:   # adamw
    transform = optax.chain(
        optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
        group_weight_decay,
        group_lr,
    )
  return transform, lr_schedule
