"""DirectPred / DirectCopy, the predictor options of BYOL and SimSiam, and eigenspace tracking.

Each predictor-setting rule is checked against an independent NumPy computation on fixed F
(float64 eigendecompositions), the DirectPred objective end to end on a tiny ResNet (the F EMA,
W from the state for the predictions, W set every `freq` steps), the options of BYOL / SimSiam
(linear predictor, symmetry regulariser, EMA on/off, the predictor's own lr) through the engine's
train step, and the analysis record and its plot. Style of tests/test_objectives.py (whose
helpers are reused): ResNet-10 of width 4 on 16 px images, one O0 jit per test, checks in NumPy.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from engine_helpers import fast_jit, host_batches, small_config
from ssl_jax import eigenspace, optim, train
from ssl_jax import step as step_lib
from ssl_jax.objectives import LossInputs
from ssl_jax.objectives import predictor_from_correlation as correlation_lib
from ssl_jax.objectives.byol import Byol
from ssl_jax.objectives.directcopy import DirectCopy
from ssl_jax.objectives.directpred import DirectPred
from ssl_jax.objectives.simsiam import SimSiam, simsiam_loss
from ssl_jax.plots import eigenspace as eigenspace_plot
from test_objectives import (BATCH, apply_train, init, make_config, np_cos, tree_max_abs, views)

PROJ_DIM = 8


def random_psd(seed: int, dim: int = 6, negative: bool = False) -> np.ndarray:
  """A symmetric matrix with spread eigenvalues (one negative one with `negative`, to exercise
  the clamp at 0 that DirectPred applies to a correlation estimate's rounding errors)."""
  rng = np.random.default_rng(seed)
  basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
  # Normalised eigenvalues down to 1e-4 only: float32 eigh is accurate to ~1e-7 of the largest,
  # and sqrt(s) would amplify errors in smaller ones beyond any useful tolerance.
  values = np.array([4.0, 1.5, 0.6, 0.09, 0.004, 0.0004])[:dim]
  if negative:
    values[-1] = -0.3
  return ((basis * values) @ basis.T).astype(np.float32)


def np_directpred(correlation, eps, eps_inside):
  values, vectors = np.linalg.eigh(np.asarray(correlation, np.float64))
  values = np.clip(values, 0.0, None) / values.max()
  if eps_inside:
    p = np.sqrt(np.maximum(values + eps, 1e-4))
  else:
    p = np.maximum(np.sqrt(values) + eps, 1e-4)
  return vectors @ np.diag(p) @ vectors.T


# ------------------------------------------------------------------- the F -> W rules, in NumPy


def test_directpred_weights_match_numpy_both_eps_placements_and_clamps():
  correlations = [random_psd(0), random_psd(1, negative=True)]
  # eps = -0.05 pushes the smallest p below 1e-4 (outside) / s + eps below 1e-4 (inside): the
  # official code allows a negative eps, and both clamps then bite.
  settings = [(0.01, False), (0.01, True), (-0.05, False), (-0.05, True)]
  got = fast_jit(lambda fs: [[correlation_lib.directpred_weights(f, eps, inside)
                              for eps, inside in settings] for f in fs])(correlations)
  for correlation, row in zip(correlations, got):
    for (eps, inside), weights in zip(settings, row):
      want = np_directpred(correlation, eps, inside)
      np.testing.assert_allclose(weights, want, atol=2e-5)
      # Invariant: symmetric PSD, with every eigenvalue at or above the floor.
      np.testing.assert_array_equal(weights, np.asarray(weights).T)
      eigenvalues = np.linalg.eigvalsh(np.asarray(weights, np.float64))
      floor = 1e-2 if inside else 1e-4   # sqrt of the 1e-4 floor inside the root
      assert eigenvalues.min() > floor - 1e-5 and eigenvalues.max() <= 1.0 + abs(eps) + 1e-5
  # The clamps made a difference (the test would pass without them otherwise).
  values = np.clip(np.linalg.eigvalsh(correlations[1].astype(np.float64)), 0, None)
  assert (np.sqrt(values / values.max()) - 0.05).min() < 1e-4


def test_directcopy_weights_match_numpy_for_each_normalization():
  correlation = random_psd(2)
  eps = 0.3
  got = fast_jit(lambda f: {name: correlation_lib.directcopy_weights(f, eps, name)
                            for name in correlation_lib.DIRECTCOPY_NORMALIZATIONS})(correlation)
  f64 = correlation.astype(np.float64)
  identity = np.eye(6)
  np.testing.assert_allclose(got["none"], f64 + eps * identity, atol=1e-6)
  np.testing.assert_allclose(got["frobenius"], f64 / np.sqrt(np.sum(f64 ** 2)) + eps * identity,
                             atol=1e-6)
  np.testing.assert_allclose(got["spectral"], f64 / np.linalg.eigvalsh(f64).max()
                             + eps * identity, atol=1e-6)
  with pytest.raises(ValueError, match="'trace'.*none.*frobenius.*spectral"):
    correlation_lib.directcopy_weights(correlation, eps, "trace")


def test_correlation_first_update_is_the_batch_estimate_then_rho_ema():
  rng = np.random.default_rng(3)
  f1, f2, g1, g2 = (rng.normal(size=(5, 4)).astype(np.float32) for _ in range(4))
  rho = 0.3

  @fast_jit
  def run():
    first = correlation_lib.update_correlation(
        jnp.zeros((4, 4)), correlation_lib.batch_correlation((f1, f2)), rho)
    second = correlation_lib.update_correlation(
        first, correlation_lib.batch_correlation((g1, g2)), rho)
    return first, second

  first, second = run()
  rows = np.concatenate([f1, f2]).astype(np.float64)
  batch_1 = sum(np.outer(row, row) for row in rows) / len(rows)   # E[f f^T] over both views
  rows = np.concatenate([g1, g2]).astype(np.float64)
  batch_2 = sum(np.outer(row, row) for row in rows) / len(rows)
  np.testing.assert_allclose(first, batch_1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(second, rho * batch_1 + (1 - rho) * batch_2, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- DirectPred on a tiny network


def directpred_config(objective: str = "directpred", **overrides) -> ml_collections.ConfigDict:
  fields = dict(proj_hidden_dim=16, proj_dim=PROJ_DIM, correlation_rho=0.3, eps=0.01, freq=2)
  if objective == "directpred":
    fields["eps_inside"] = False
  else:
    fields["normalization"] = "frobenius"
  fields.update(overrides)
  return make_config(objective, **fields)


def test_directpred_steps_set_w_from_the_ema_of_f_every_freq_steps():
  """Three steps with freq = 2 (step 0 sets W, step 1 keeps it, step 2 sets it again): the loss
  uses the W of the state, the new F folds in this step's batch, the new W comes from it."""
  objective = DirectPred(directpred_config(), 1)
  params, batch_stats, target_params, target_batch_stats = init(objective)
  assert set(params) == {"backbone", "projector"}   # the predictor is not a parameter
  state = objective.init_objective_state(jax.random.key(0), BATCH)
  bound = 1 / np.sqrt(PROJ_DIM)   # the nn.Linear-like initial W of the first step
  assert np.abs(state["predictor_weights"]).max() <= bound
  assert np.std(state["predictor_weights"]) > 0.3 * bound
  np.testing.assert_array_equal(state["correlation"], 0)

  @fast_jit
  def run(objective_state, view_1, view_2, step):
    loss, aux = objective.loss(LossInputs(
        params=params, batch_stats=batch_stats, views=(view_1, view_2), rng=jax.random.key(0),
        step=step, target_params=target_params, target_batch_stats=target_batch_stats,
        objective_state=objective_state))
    online = [apply_train(objective, params, batch_stats, v, use_predictor=False)["projection"]
              for v in (view_1, view_2)]
    target = [apply_train(objective, target_params, target_batch_stats, v,
                          use_predictor=False)["projection"] for v in (view_1, view_2)]
    return loss, aux.extras, online, target, objective.update_objective_state(objective_state,
                                                                              aux.extras)

  correlation = np.zeros((PROJ_DIM, PROJ_DIM))
  weights = np.asarray(state["predictor_weights"], np.float64)
  weights_after_step = []
  for step in range(3):
    loss, extras, (f1, f2), (t1, t2), new_state = run(state, *views(10 + step), jnp.int32(step))
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    # The predictions use the W of the state (set after an earlier step, or the initial one).
    want_loss = np.mean(2 - 2 * np_cos(f1 @ weights.T, t2) + 2 - 2 * np_cos(f2 @ weights.T, t1))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
    rows = np.concatenate([f1, f2])
    batch = rows.T @ rows / len(rows)
    correlation = batch if step == 0 else 0.3 * correlation + 0.7 * batch
    np.testing.assert_allclose(new_state["correlation"], correlation, rtol=1e-4, atol=1e-5)
    if step % 2 == 0:   # freq = 2: set at steps 0 and 2, kept at step 1
      weights = np_directpred(new_state["correlation"], 0.01, False)
      # Invariant: every W DirectPred sets is symmetric positive definite.
      assert np.linalg.eigvalsh(np.asarray(new_state["predictor_weights"], np.float64)).min() > 0
    np.testing.assert_allclose(new_state["predictor_weights"], weights, atol=3e-5)
    np.testing.assert_array_equal(extras["predictor_weights"], new_state["predictor_weights"])
    weights_after_step.append(np.asarray(new_state["predictor_weights"]))
    state = new_state
  np.testing.assert_array_equal(weights_after_step[1], weights_after_step[0])
  assert np.abs(weights_after_step[2] - weights_after_step[1]).max() > 1e-4


def test_directcopy_sets_w_from_f_and_rejects_unknown_normalization():
  objective = DirectCopy(directpred_config("directcopy", freq=1, eps=0.3), 1)
  params, batch_stats, target_params, target_batch_stats = init(objective)
  state = objective.init_objective_state(jax.random.key(1), BATCH)
  view_1, view_2 = views(20)

  @fast_jit
  def run():
    _, aux = objective.loss(LossInputs(
        params=params, batch_stats=batch_stats, views=(view_1, view_2), rng=jax.random.key(0),
        step=jnp.int32(0), target_params=target_params, target_batch_stats=target_batch_stats,
        objective_state=state))
    return aux.extras

  extras = run()
  f64 = np.asarray(extras["correlation"], np.float64)
  np.testing.assert_allclose(extras["predictor_weights"],
                             f64 / np.linalg.norm(f64) + 0.3 * np.eye(PROJ_DIM), atol=1e-6)
  with pytest.raises(ValueError, match="normalization 'trace'.*none.*frobenius.*spectral"):
    DirectCopy(directpred_config("directcopy", normalization="trace"), 1)
  with pytest.raises(ValueError, match="freq .* >= 1"):
    DirectPred(directpred_config(freq=0), 1)


# ------------------------------------------------------------- BYOL / SimSiam predictor options


def test_predictor_option_errors_and_default_state_unchanged():
  byol_fields = dict(proj_hidden_dim=16, proj_dim=PROJ_DIM, pred_hidden_dim=16)
  simsiam_fields = dict(proj_hidden_dim=16, proj_dim=PROJ_DIM, proj_layers=2, pred_hidden_dim=4)
  # Defaults: no objective state, the MLP predictor (checkpoints of default runs are unchanged).
  assert Byol(make_config("byol", **byol_fields), 1).init_objective_state(None, 8) == {}
  assert SimSiam(make_config("simsiam", **simsiam_fields), 1).init_objective_state(None, 8) == {}
  linear = Byol(make_config("byol", predictor="linear", **byol_fields), 1)
  assert set(linear.init_objective_state(None, 8)) == {"correlation"}
  with pytest.raises(ValueError, match="'conv'.*mlp.*linear"):
    Byol(make_config("byol", predictor="conv", **byol_fields), 1)
  with pytest.raises(ValueError, match="symmetric_predictor.*predictor='linear'"):
    SimSiam(make_config("simsiam", symmetric_predictor=True, **simsiam_fields), 1)
  config = make_config("byol", **byol_fields)
  config.analysis_every_steps = 10
  with pytest.raises(ValueError, match="eigenspace tracking.*predictor='linear'"):
    Byol(config, 1)
  config = make_config("simsiam", stop_gradient=False, **simsiam_fields)
  config.ema = dict(enabled=True)
  with pytest.raises(ValueError, match="stop_gradient=False.*ema.enabled=False"):
    SimSiam(config, 1)


def test_simsiam_ema_target_gives_z_and_stop_gradient_ablation():
  config = make_config("simsiam", proj_hidden_dim=16, proj_dim=PROJ_DIM, proj_layers=2,
                       pred_hidden_dim=4, predictor="linear")
  config.ema = dict(enabled=True)
  objective = SimSiam(config, 1)
  assert objective.uses_target and not SimSiam.uses_target   # per instance
  params, batch_stats, target_params, target_batch_stats = init(objective)
  assert set(params["predictor"]) == {"output_dense"}
  assert set(params["predictor"]["output_dense"]) == {"kernel"}   # Dense(d, d), no bias
  state = objective.init_objective_state(None, BATCH)
  view_1, view_2 = views(30)

  @fast_jit
  def run():
    loss, aux = objective.loss(LossInputs(
        params=params, batch_stats=batch_stats, views=(view_1, view_2), rng=jax.random.key(0),
        step=jnp.int32(0), target_params=target_params, target_batch_stats=target_batch_stats,
        objective_state=state))
    online = [apply_train(objective, params, batch_stats, v) for v in (view_1, view_2)]
    target = [apply_train(objective, target_params, target_batch_stats, v, use_predictor=False)
              for v in (view_1, view_2)]
    projections = (online[0]["prediction"], online[1]["prediction"], target[0]["projection"],
                   target[1]["projection"])
    gradients = [jax.grad(lambda *z, sg=sg: simsiam_loss(*z, stop_gradient=sg),
                          argnums=(2, 3))(*projections) for sg in (True, False)]
    return loss, aux, online, target, gradients

  loss, aux, (online_1, online_2), (target_1, target_2), gradients = run()
  want = (-0.5 * np.mean(np_cos(online_1["prediction"], target_2["projection"]))
          - 0.5 * np.mean(np_cos(online_2["prediction"], target_1["projection"])))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert set(aux.target_batch_stats) == {"backbone", "projector"}
  assert tree_max_abs(gradients[0]) == 0 and tree_max_abs(gradients[1]) > 0
  kernel = np.asarray(params["predictor"]["output_dense"]["kernel"], np.float64)
  np.testing.assert_allclose(online_1["prediction"],
                             np.asarray(online_1["projection"], np.float64) @ kernel, atol=1e-5)


def test_predictor_group_gets_its_own_learning_rate():
  """The optimiser's 'predictor' group (Objective.param_labels) scales the linear predictor's
  update by predictor_lr_multiplier and leaves the rest alone."""
  objective = Byol(make_config("byol", proj_hidden_dim=16, proj_dim=PROJ_DIM, pred_hidden_dim=16,
                               predictor="linear"), 1)
  params = init(objective)[0]
  gradients = jax.tree.map(lambda p: np.ones_like(p), params)
  updates = {}
  for multiplier in (1.0, 3.0):
    optim_config = ml_collections.ConfigDict(dict(
        name="sgd", base_lr=0.1, lr_batch_scale=256, schedule="constant", warmup_epochs=0.0,
        momentum=0.9, nesterov=False, weight_decay=0.0, exclude_bias_and_norm=False,
        predictor_schedule="same", predictor_lr_multiplier=multiplier,
        predictor_weight_decay=-1.0))
    optimizer, _ = optim.build_optimizer(optim_config, 10, 10, 256,
                                         objective.param_labels(params))
    updates[multiplier], _ = jax.jit(optimizer.update)(gradients, optimizer.init(params), params)
  np.testing.assert_allclose(updates[3.0]["predictor"]["output_dense"]["kernel"],
                             3 * updates[1.0]["predictor"]["output_dense"]["kernel"], rtol=1e-6)
  np.testing.assert_array_equal(updates[3.0]["projector"]["output_dense"]["kernel"],
                                updates[1.0]["projector"]["output_dense"]["kernel"])
  assert np.abs(updates[1.0]["predictor"]["output_dense"]["kernel"]).min() > 0


def run_engine_steps(config, num_steps: int):
  """The engine's train step (as `train.Experiment` builds it) on one device, at O0."""
  experiment = train.Experiment(config, devices=jax.devices()[:1])
  state, _ = experiment.initial_state()
  initial = jax.device_get(state)
  train_step, _ = step_lib.make_train_step(
      experiment.objective, experiment.optimizer, experiment.lr_schedule,
      experiment.tau_schedule, config.augment, tuple(config.data.mean), tuple(config.data.std),
      experiment.step_rng)
  step = fast_jit(train_step)
  for batch in host_batches(config, num_steps):
    state, _ = step(state, batch)
  return experiment, initial, jax.device_get(state)


def test_byol_linear_symmetric_predictor_without_ema_through_the_engine():
  config = small_config("byol", **{"objective_config.predictor": "linear",
                                   "objective_config.symmetric_predictor": True,
                                   "ema.enabled": False, "analysis_every_steps": 5})
  experiment, initial, state = run_engine_steps(config, 2)
  kernel = np.asarray(state.params["predictor"]["output_dense"]["kernel"])
  initial_kernel = np.asarray(initial.params["predictor"]["output_dense"]["kernel"])
  # The regulariser runs after each update: exactly symmetric, and the predictor did move.
  np.testing.assert_array_equal(kernel, kernel.T)
  assert np.abs(kernel - 0.5 * (initial_kernel + initial_kernel.T)).max() > 1e-4
  # EMA off: after a step the target is exactly the online network (the next step's target is
  # the online network of that step, under stop-gradient).
  assert set(state.target_params) == {"backbone", "projector"}
  jax.tree.map(np.testing.assert_array_equal, state.target_params,
               {key: state.params[key] for key in ("backbone", "projector")})
  assert np.abs(np.asarray(state.params["backbone"]["stem_conv"]["kernel"])
                - np.asarray(initial.params["backbone"]["stem_conv"]["kernel"])).max() > 0
  # F is tracked (symmetric PSD, nonzero) and the analysis record reads W and F.
  correlation = np.asarray(state.objective_state["correlation"], np.float64)
  assert np.linalg.eigvalsh(correlation).min() > -1e-5 and np.abs(correlation).max() > 0
  record = experiment.objective.analysis(state.params, state.objective_state)
  assert record[eigenspace.ASYMMETRY] == 0.0
  np.testing.assert_allclose(record[eigenspace.PREDICTOR_EIGENVALUES],
                             np.sort(np.linalg.eigvalsh(kernel.astype(np.float64)))[::-1],
                             atol=1e-6)


# --------------------------------------------------------------------- eigenspace tracking


def test_eigenspace_record_matches_constructed_spectra():
  """F = U diag(a) U^T and W = V diag(b) V^T + S (S skew): the record must give a and b in
  decreasing order, |<u_i, v_i>| for that order, and ||2S|| / ||W||."""
  rng = np.random.default_rng(4)
  dim = 5
  u, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
  v, _ = np.linalg.qr(u + 0.3 * rng.normal(size=(dim, dim)))
  a = np.array([0.5, 3.0, 0.01, 1.2, 0.2])
  b = np.array([-0.4, 0.9, 2.0, 0.1, 0.6])
  skew = rng.normal(size=(dim, dim))
  skew = 0.1 * (skew - skew.T)
  correlation = (u * a) @ u.T
  weights = (v * b) @ v.T + skew
  record = eigenspace.eigenspace_record(weights, correlation)
  np.testing.assert_allclose(record[eigenspace.CORRELATION_EIGENVALUES], np.sort(a)[::-1],
                             atol=1e-10)
  np.testing.assert_allclose(record[eigenspace.PREDICTOR_EIGENVALUES], np.sort(b)[::-1],
                             atol=1e-10)
  want_alignment = np.abs(np.sum(u[:, np.argsort(-a)] * v[:, np.argsort(-b)], axis=0))
  np.testing.assert_allclose(record[eigenspace.ALIGNMENT], want_alignment, atol=1e-8)
  assert record[eigenspace.TOP_ALIGNMENT] == pytest.approx(want_alignment[0])
  assert record[eigenspace.MEAN_ALIGNMENT] == pytest.approx(want_alignment.mean())
  assert record[eigenspace.ASYMMETRY] == pytest.approx(
      np.linalg.norm(2 * skew) / np.linalg.norm(weights))
  # Identical eigenbases align perfectly; a symmetric W has no asymmetry.
  same = eigenspace.eigenspace_record((u * a ** 0.5) @ u.T, correlation)
  np.testing.assert_allclose(same[eigenspace.ALIGNMENT], 1.0, atol=1e-8)
  assert same[eigenspace.ASYMMETRY] < 1e-12


def test_eigenspace_plot_writes_png_and_skips_runs_without_records(tmp_path):
  rng = np.random.default_rng(5)
  records = []
  for step in (10, 20, 30):
    weights = rng.normal(size=(4, 4))
    correlation = np.cov(rng.normal(size=(4, 50)))
    records.append({"step": step, **eigenspace.eigenspace_record(weights, correlation)})
  other = [{"step": 10, "positive_mean": 0.3}]   # another objective's analysis record
  assert eigenspace_plot.plot([], other, str(tmp_path)) == []
  paths = eigenspace_plot.plot([], records + other, str(tmp_path))
  assert paths == [os.path.join(str(tmp_path), "eigenspace.png")]
  with open(paths[0], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(paths[0]) > 10_000
