"""EMA schedule/update and optimiser tests, each against an independent NumPy computation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ssl_jax import ema, optim


def optim_config(**overrides) -> ml_collections.ConfigDict:
  fields = dict(name="sgd", base_lr=0.1, lr_batch_scale=256, schedule="constant",
                warmup_epochs=0.0, momentum=0.9, nesterov=False, weight_decay=0.01,
                exclude_bias_and_norm=False, predictor_schedule="same",
                predictor_lr_multiplier=1.0, predictor_weight_decay=-1.0,
                bias_and_norm_lr_multiplier=1.0)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def run_steps(transform: optax.GradientTransformation, params, gradients: list):
  """Applies the transform for each gradient tree; returns the list of params after each step."""
  state = transform.init(params)
  history = []
  for grads in gradients:
    updates, state = transform.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history


# ------------------------------------------------------------------------------------------- EMA


def test_cosine_tau_schedule_matches_byol_formula():
  tau_base, total = 0.996, 1000
  schedule = ema.tau_schedule(ml_collections.ConfigDict(dict(tau_base=tau_base,
                                                             schedule="cosine")), total)
  np.testing.assert_allclose(schedule(0), tau_base, rtol=0, atol=1e-7)
  np.testing.assert_allclose(schedule(total), 1.0, rtol=0, atol=1e-7)
  np.testing.assert_allclose(schedule(total // 2), 1.0 - (1.0 - tau_base) / 2, atol=1e-7)
  for step in (1, 137, 600, 999):
    expected = 1.0 - (1.0 - tau_base) * (math.cos(math.pi * step / total) + 1.0) / 2.0
    np.testing.assert_allclose(schedule(step), expected, rtol=0, atol=1e-7)
  # Past the end the target stays frozen instead of following the cosine back down.
  np.testing.assert_allclose(schedule(total + 50), 1.0, atol=1e-7)
  # Usable on traced step counts inside jit.
  np.testing.assert_allclose(jax.jit(schedule)(jnp.int32(250)),
                             1.0 - (1.0 - tau_base) * (math.cos(math.pi / 4) + 1.0) / 2.0,
                             atol=1e-7)


def test_constant_tau_schedule_and_unknown_schedule():
  schedule = ema.tau_schedule(ml_collections.ConfigDict(dict(tau_base=0.99,
                                                             schedule="constant")), 100)
  for step in (0, 50, 100):
    np.testing.assert_allclose(schedule(step), 0.99, atol=1e-7)
  with pytest.raises(ValueError, match="'linear'.*constant.*cosine"):
    ema.tau_schedule(ml_collections.ConfigDict(dict(tau_base=0.99, schedule="linear")), 100)


def test_ema_update_matches_numpy_on_target_keys_only():
  rng = np.random.default_rng(0)
  target = {"backbone": {"w": rng.normal(size=(3, 2)).astype(np.float32)},
            "projector": {"b": rng.normal(size=(4,)).astype(np.float32)}}
  online = {"backbone": {"w": rng.normal(size=(3, 2)).astype(np.float32)},
            "projector": {"b": rng.normal(size=(4,)).astype(np.float32)},
            "predictor": {"b": rng.normal(size=(5,)).astype(np.float32)}}
  tau = 0.9
  updated = ema.ema_update(target, online, tau)
  assert set(updated) == {"backbone", "projector"}   # the predictor is never copied in
  np.testing.assert_allclose(updated["backbone"]["w"],
                             tau * target["backbone"]["w"] + (1 - tau) * online["backbone"]["w"],
                             rtol=1e-6)
  np.testing.assert_allclose(updated["projector"]["b"],
                             tau * target["projector"]["b"] + (1 - tau) * online["projector"]["b"],
                             rtol=1e-6)
  # tau = 1 freezes the target; tau = 0 copies the online network.
  np.testing.assert_array_equal(ema.ema_update(target, online, 1.0)["backbone"]["w"],
                                target["backbone"]["w"])
  np.testing.assert_allclose(ema.ema_update(target, online, 0.0)["backbone"]["w"],
                             online["backbone"]["w"])


def test_update_target_copies_the_online_groups_with_ema_off_and_averages_otherwise():
  rng = np.random.default_rng(1)
  target = {"backbone": {"w": rng.normal(size=(3, 2)).astype(np.float32)}}
  online = {"backbone": {"w": rng.normal(size=(3, 2)).astype(np.float32)},
            "predictor": {"b": rng.normal(size=(5,)).astype(np.float32)}}
  off = ema.tau_schedule(ml_collections.ConfigDict(dict(enabled=False)), 100)
  copied = ema.update_target(target, online, off, off(0))
  assert set(copied) == {"backbone"}
  assert copied["backbone"]["w"] is online["backbone"]["w"]   # the same array, not arithmetic
  constant = ema.tau_schedule(ml_collections.ConfigDict(dict(tau_base=0.9, schedule="constant")),
                              100)
  averaged = ema.update_target(target, online, constant, constant(0))
  np.testing.assert_allclose(averaged["backbone"]["w"],
                             0.9 * target["backbone"]["w"] + 0.1 * online["backbone"]["w"],
                             rtol=1e-6)


# ------------------------------------------------------------------------------------- optimiser


def test_warmup_cosine_learning_rates():
  config = optim_config(base_lr=0.1, schedule="cosine", warmup_epochs=2.0)
  # peak = 0.1 * 512 / 256 = 0.2; warmup 2 epochs x 10 steps = 20 steps; decay over 80 steps.
  _, schedule = optim.build_optimizer(config, total_steps=100, steps_per_epoch=10,
                                      global_batch_size=512, param_labels=None)
  expected = {0: 0.0, 5: 0.05, 10: 0.1, 20: 0.2, 40: 0.1 * (1 + math.cos(math.pi * 20 / 80)),
              60: 0.1, 99: 0.1 * (1 + math.cos(math.pi * 79 / 80)), 100: 0.0}
  for step, lr in expected.items():
    np.testing.assert_allclose(schedule(step), lr, rtol=1e-5, atol=1e-7, err_msg=f"step {step}")

  constant = optim.learning_rate_schedule(optim_config(base_lr=0.1, schedule="constant",
                                                       warmup_epochs=1.0), 100, 10, 256)
  for step, lr in {0: 0.0, 5: 0.05, 10: 0.1, 99: 0.1}.items():
    np.testing.assert_allclose(constant(step), lr, rtol=1e-6, atol=1e-8)


def test_torch_style_sgd_two_steps_match_numpy():
  rng = np.random.default_rng(1)
  params = {"w": rng.normal(size=(3, 2)).astype(np.float32),
            "b": rng.normal(size=(2,)).astype(np.float32)}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(2)]
  lr, momentum, wd = 0.1 * 128 / 256, 0.9, 0.01

  for nesterov in (False, True):
    transform, _ = optim.build_optimizer(
        optim_config(nesterov=nesterov, weight_decay=wd, momentum=momentum), total_steps=10,
        steps_per_epoch=5, global_batch_size=128, param_labels=None)
    history = run_steps(transform, params, grads)
    for name in params:
      w = params[name].astype(np.float64)
      buf = np.zeros_like(w)
      for step in range(2):
        # torch.optim.SGD: d = g + wd * w; buf = m * buf + d; w -= lr * (d + m * buf | buf).
        d = grads[step][name] + wd * w
        buf = momentum * buf + d
        w = w - lr * ((d + momentum * buf) if nesterov else buf)
        np.testing.assert_allclose(history[step][name], w, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name} step {step} nesterov={nesterov}")


def test_lars_masks_one_dimensional_leaves():
  rng = np.random.default_rng(2)
  params = {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
            "bias": rng.normal(size=(3,)).astype(np.float32),
            "bn_scale": rng.normal(size=(3,)).astype(np.float32)}
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
  wd, lr, eta = 0.1, 0.2, 1e-3
  config = optim_config(name="lars", base_lr=lr, weight_decay=wd, exclude_bias_and_norm=True)
  transform, _ = optim.build_optimizer(config, 10, 5, 256, None)
  updates, _ = transform.update(grads, transform.init(params), params)

  # First step (momentum buffer empty): kernel gets weight decay and the trust ratio
  # eta * ||w|| / ||g + wd w||; 1-D leaves get neither, just -lr * g.
  w, g = params["kernel"].astype(np.float64), grads["kernel"].astype(np.float64)
  decayed = g + wd * w
  trust = eta * np.linalg.norm(w) / np.linalg.norm(decayed)
  np.testing.assert_allclose(updates["kernel"], -lr * trust * decayed, rtol=1e-5)
  for name in ("bias", "bn_scale"):
    np.testing.assert_allclose(updates[name], -lr * grads[name], rtol=1e-6)

  # Without the exclusion every leaf is decayed and adapted.
  transform, _ = optim.build_optimizer(optim_config(name="lars", base_lr=lr, weight_decay=wd),
                                       10, 5, 256, None)
  updates, _ = transform.update(grads, transform.init(params), params)
  w, g = params["bias"].astype(np.float64), grads["bias"].astype(np.float64)
  decayed = g + wd * w
  trust = eta * np.linalg.norm(w) / np.linalg.norm(decayed)
  np.testing.assert_allclose(updates["bias"], -lr * trust * decayed, rtol=1e-5)


def test_lars_equals_optax_lars_for_default_group():
  rng = np.random.default_rng(3)
  params = {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
            "bias": rng.normal(size=(3,)).astype(np.float32)}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(3)]
  config = optim_config(name="lars", base_lr=0.3, weight_decay=1e-2, schedule="cosine",
                        warmup_epochs=1.0, exclude_bias_and_norm=True)
  ours, schedule = optim.build_optimizer(config, 6, 2, 256, None)
  mask = {"kernel": True, "bias": False}
  reference = optax.lars(schedule, weight_decay=1e-2, weight_decay_mask=mask,
                         trust_ratio_mask=mask, momentum=0.9)
  for got, want in zip(run_steps(ours, params, grads), run_steps(reference, params, grads)):
    for name in params:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-6)


def test_constant_predictor_schedule_keeps_peak_lr_while_default_decays():
  params = {"backbone": {"w": np.zeros((2, 2), np.float32)},
            "predictor": {"w": np.zeros((2, 2), np.float32)}}
  labels = {"backbone": {"w": "default"}, "predictor": {"w": "predictor"}}
  ones = jax.tree.map(np.ones_like, params)
  # Plain steps (no momentum, no decay) so each update is exactly -lr * 1.
  config = optim_config(schedule="cosine", warmup_epochs=1.0, momentum=0.0, weight_decay=0.0,
                        predictor_schedule="constant")
  total, per_epoch, batch = 12, 3, 512
  transform, schedule = optim.build_optimizer(config, total, per_epoch, batch, labels)
  peak = 0.1 * batch / 256
  state = transform.init(params)
  for step in range(total):
    updates, state = transform.update(ones, state, params)
    np.testing.assert_allclose(updates["predictor"]["w"], -peak, rtol=1e-6)
    if step < 3:
      expected = peak * step / 3
    else:
      expected = 0.5 * peak * (1 + math.cos(math.pi * (step - 3) / (total - 3)))
    np.testing.assert_allclose(updates["backbone"]["w"], -expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5, atol=1e-7)
  # The two groups share one step counter.
  assert len([leaf for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.integer)
              ]) == 1


def test_predictor_group_has_its_own_lr_multiplier_and_weight_decay():
  rng = np.random.default_rng(3)
  params = {"backbone": {"w": rng.normal(size=(3, 2)).astype(np.float32)},
            "predictor": {"w": rng.normal(size=(2, 2)).astype(np.float32)}}
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
  labels = {"backbone": {"w": "default"}, "predictor": {"w": "predictor"}}
  config = optim_config(momentum=0.0, weight_decay=0.01, predictor_lr_multiplier=10.0,
                        predictor_weight_decay=0.5)
  transform, _ = optim.build_optimizer(config, 10, 5, 256, labels)
  updates, _ = transform.update(grads, transform.init(params), params)
  lr = 0.1
  np.testing.assert_allclose(updates["backbone"]["w"],
                             -lr * (grads["backbone"]["w"] + 0.01 * params["backbone"]["w"]),
                             rtol=1e-5)
  np.testing.assert_allclose(updates["predictor"]["w"],
                             -10 * lr * (grads["predictor"]["w"] + 0.5 * params["predictor"]["w"]),
                             rtol=1e-5)
  # A negative predictor weight decay means "the same as everything else".
  same, _ = optim.build_optimizer(optim_config(momentum=0.0, weight_decay=0.01), 10, 5, 256,
                                  labels)
  updates, _ = same.update(grads, same.init(params), params)
  np.testing.assert_allclose(updates["predictor"]["w"],
                             -lr * (grads["predictor"]["w"] + 0.01 * params["predictor"]["w"]),
                             rtol=1e-5)


def test_bias_and_norm_group_has_its_own_lr_multiplier_and_the_default_weight_decay():
  """The group Barlow Twins trains its biases and BN parameters in: its own rate, nothing else
  apart (the predictor's settings do not reach it)."""
  rng = np.random.default_rng(4)
  params = {"kernel": rng.normal(size=(3, 2)).astype(np.float32),
            "bias": rng.normal(size=(2,)).astype(np.float32)}
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
  labels = {"kernel": "default", "bias": "bias_and_norm"}
  config = optim_config(momentum=0.0, weight_decay=0.01, bias_and_norm_lr_multiplier=0.024)
  transform, _ = optim.build_optimizer(config, 10, 5, 256, labels)
  updates, _ = transform.update(grads, transform.init(params), params)
  lr = 0.1
  np.testing.assert_allclose(updates["kernel"], -lr * (grads["kernel"] + 0.01 * params["kernel"]),
                             rtol=1e-5)
  np.testing.assert_allclose(updates["bias"],
                             -0.024 * lr * (grads["bias"] + 0.01 * params["bias"]), rtol=1e-5)


@pytest.mark.parametrize("field, value, group", [
    ("predictor_lr_multiplier", 0.024, "predictor"),
    ("predictor_schedule", "constant", "predictor"),
    ("predictor_weight_decay", 0.0, "predictor"),
    ("bias_and_norm_lr_multiplier", 0.024, "bias_and_norm"),
])
def test_a_groups_setting_without_parameters_in_that_group_is_rejected(field, value, group):
  """E.g. Barlow Twins' bias rate set on the predictor group (where it lived before it had a
  group of its own) would otherwise be silently ignored."""
  labels = {"kernel": "default", "bias": "default"}
  with pytest.raises(ValueError, match=rf"optim.{field}=.* sets the '{group}' parameter group, "
                                       rf"but no parameter is in it .*\['default'\]"):
    optim.build_optimizer(optim_config(**{field: value}), 10, 5, 256, labels)
  labels["bias"] = group
  optim.build_optimizer(optim_config(**{field: value}), 10, 5, 256, labels)
  # Any negative predictor weight decay means "as 'default'": nothing set apart.
  optim.build_optimizer(optim_config(predictor_weight_decay=-0.5), 10, 5, 256,
                        {"kernel": "default"})


def test_ema_disabled_gives_tau_zero_whatever_the_schedule():
  for schedule in ("constant", "cosine"):
    tau = ema.tau_schedule(ml_collections.ConfigDict(dict(tau_base=0.99, schedule=schedule,
                                                          enabled=False)), total_steps=10)
    assert float(tau(0)) == float(tau(7)) == 0.0


def test_adamw_first_step_matches_numpy():
  params = {"w": np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)}
  grads = {"w": np.array([[0.1, -0.3], [2.0, 0.0]], np.float32)}
  transform, _ = optim.build_optimizer(optim_config(name="adamw", base_lr=0.01, weight_decay=0.1),
                                       10, 5, 256, None)
  updates, _ = transform.update(grads, transform.init(params), params)
  g = grads["w"].astype(np.float64)
  m_hat, v_hat = g, g**2   # bias-corrected first moments after one step
  expected = -0.01 * (m_hat / (np.sqrt(v_hat) + 1e-8) + 0.1 * params["w"])
  np.testing.assert_allclose(updates["w"], expected, rtol=1e-5, atol=1e-7)


def test_bad_optimizer_schedule_and_label_are_rejected():
  with pytest.raises(ValueError, match="'adam'.*sgd.*lars.*adamw"):
    optim.build_optimizer(optim_config(name="adam"), 10, 5, 256, None)
  with pytest.raises(ValueError, match="'step'.*cosine.*constant"):
    optim.build_optimizer(optim_config(schedule="step"), 10, 5, 256, None)
  transform, _ = optim.build_optimizer(optim_config(), 10, 5, 256, {"w": "frozen"})
  with pytest.raises(ValueError, match="frozen"):
    transform.init({"w": np.zeros(2, np.float32)})
