"""MoCo family tests: MoCo v1's head, MoCo v2's per-device BN and per-view symmetric queues, and
the intermediate-layer losses of Kaku et al. (MSE and Barlow-Twins variants), each against NumPy.

Same style as tests/test_objectives.py (whose helpers are reused): ResNet-10 of width 4 on 16 px
images, variables drawn in NumPy, one O0 jit per test, checks in NumPy. The ResNet-10 stages are
16, 8, 4 and 2 px wide with 4, 8, 16 and 32 channels, so the MSE variant's pooling both shrinks
(stage 1 is already 16 px: identity; stage 3: 4 px) and repeats pixels (stage 2: 8 -> 16 px,
stage 4: 2 -> 4 px).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.objectives import OBJECTIVES, LossInputs
from ssl_jax.objectives import moco_intermediate
from ssl_jax.objectives.moco_intermediate import MocoBarlowTwins, MocoMse
from ssl_jax.objectives.moco_v1 import MocoV1
from ssl_jax.objectives.moco_v2 import MocoV2, contrastive_loss
from engine_helpers import fast_jit
from test_objectives import (BATCH, IMAGE_SHAPE, apply_train, init, make_config, np_info_nce,
                             np_normalize, tree_max_abs, views)

TEMPERATURE = 0.2
STAGE_CHANNELS = (4, 8, 16, 32)
ZERO_STEP = jnp.zeros([], jnp.int32)


def moco_fields(**overrides) -> dict:
  fields = dict(proj_hidden_dim=16, proj_dim=8, temperature=TEMPERATURE, queue_size=32,
                symmetric=False, symmetric_queues="per_view", bn_mode="global", bn_groups=0)
  fields.update(overrides)
  return fields


def intermediate_config(objective: str, **overrides):
  fields = moco_fields()
  del fields["proj_hidden_dim"], fields["symmetric_queues"]
  if objective == "moco_mse":
    fields.update(stage_weights=(0.25, 0.5, 1.0, 2.0), stage_pool_sizes=(16, 16, 4, 4))
  else:
    fields.update(stage_weights=(5e-5, 1e-4, 2e-4, 4e-4), stage_loss_scale=1 / 32,
                  stage_proj_dim=6)
  fields.update(overrides)
  return make_config(objective, **fields)


def param_shapes(objective):
  init_fn = functools.partial(objective.init, image_shape=IMAGE_SHAPE)
  params, batch_stats = jax.eval_shape(init_fn, jax.random.key(0))
  return (jax.tree.map(lambda leaf: leaf.shape, params),
          jax.tree.map(lambda leaf: leaf.shape, batch_stats))


# ------------------------------------------------------------------------- NumPy references


def np_adaptive_avg_pool(x, out_size):
  """torch adaptive_avg_pool2d on NHWC, by its definition: bin i covers
  [floor(i * H / out), ceil((i + 1) * H / out)) along each axis."""
  x = np.asarray(x, np.float64)
  n, height, width, channels = x.shape
  out = np.zeros((n, out_size, out_size, channels))
  for i in range(out_size):
    h0, h1 = math.floor(i * height / out_size), math.ceil((i + 1) * height / out_size)
    for j in range(out_size):
      w0, w1 = math.floor(j * width / out_size), math.ceil((j + 1) * width / out_size)
      out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return out


def np_stage_mse(query_stages, key_stages, pool_sizes, weights):
  return [weight * np.mean((np_adaptive_avg_pool(q, size) - np_adaptive_avg_pool(k, size)) ** 2)
          for q, k, size, weight in zip(query_stages, key_stages, pool_sizes, weights)]


def np_kaku_bt(z_query, z_key, weight, scale, eps=1e-5):
  def bn(z):
    z = np.asarray(z, np.float64)
    return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)   # biased variance, as torch in training

  c = bn(z_query).T @ bn(z_key) / z_query.shape[0]
  on_diagonal = sum((1 - c[i, i]) ** 2 for i in range(c.shape[0]))
  off_diagonal = sum(c[i, j] ** 2 for i in range(c.shape[0]) for j in range(c.shape[1]) if i != j)
  return weight * scale * on_diagonal + weight * scale * off_diagonal


# ---------------------------------------------------------------------------- pure functions


def test_adaptive_avg_pool_matches_torch_semantics():
  rng = np.random.default_rng(0)
  # (input side, output side): identity, shrink by an integer factor, uneven overlapping bins,
  # and maps smaller than the output (pixels repeated), as on 16 px digits.
  cases = [(16, 16), (56, 16), (7, 3), (5, 4), (8, 16), (2, 4), (3, 4), (1, 4)]
  inputs = [rng.normal(size=(2, side, side, 3)).astype(np.float32) for side, _ in cases]
  rectangular = rng.normal(size=(2, 6, 9, 2)).astype(np.float32)

  @fast_jit
  def pool_all():
    return ([moco_intermediate.adaptive_avg_pool_2d(x, out) for x, (_, out) in zip(inputs, cases)],
            moco_intermediate.adaptive_avg_pool_2d(rectangular, 4))

  pooled, pooled_rectangular = pool_all()
  for x, (_, out), got in zip(inputs, cases, pooled):
    assert got.shape == (2, out, out, 3) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, np_adaptive_avg_pool(x, out), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(pooled_rectangular, np_adaptive_avg_pool(rectangular, 4), atol=1e-6)
  # Bins of 7 -> 3 overlap: [0, 3), [2, 5), [4, 7).
  np.testing.assert_allclose(moco_intermediate.adaptive_pool_matrix(7, 3).sum(0),
                             [1 / 3, 1 / 3, 2 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3], rtol=1e-6)


def test_stage_mse_losses_match_numpy():
  rng = np.random.default_rng(1)
  shapes = [(3, 16, 16, 4), (3, 8, 8, 8), (3, 4, 4, 16), (3, 2, 2, 32)]
  query_stages = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
  key_stages = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
  weights, pool_sizes = (0.25, 0.5, 1.0, 2.0), (16, 16, 4, 4)
  got = fast_jit(moco_intermediate.stage_mse_losses, static_argnums=(2, 3))(
      query_stages, key_stages, pool_sizes, weights)
  want = np_stage_mse(query_stages, key_stages, pool_sizes, weights)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Repeating pixels leaves a mean unchanged: stage 2 (8 px pooled to 16) equals its plain MSE.
  np.testing.assert_allclose(got[1], 0.5 * np.mean((query_stages[1] - key_stages[1]) ** 2),
                             rtol=1e-5)


def test_kaku_barlow_twins_loss_matches_numpy():
  rng = np.random.default_rng(2)
  z_query = rng.normal(size=(8, 5)).astype(np.float32)
  z_key = (0.7 * z_query + 0.5 * rng.normal(size=(8, 5))).astype(np.float32)
  loss = fast_jit(moco_intermediate.kaku_barlow_twins_loss, static_argnums=(2, 3))
  got = loss(z_query, z_key, 5e-5, 1 / 32)
  np.testing.assert_allclose(got, np_kaku_bt(z_query, z_key, 5e-5, 1 / 32), rtol=1e-5)
  # lambda multiplies both terms: the loss is linear in lambda (Barlow Twins' own placement,
  # on the off-diagonal term only, would not be).
  np.testing.assert_allclose(loss(z_query, z_key, 1.0, 1 / 32), got / 5e-5, rtol=1e-5)
  # Identical, centred, decorrelated branches cost (almost: BN's epsilon) nothing.
  basis = np.linalg.qr(np.concatenate([np.ones((8, 1)), rng.normal(size=(8, 5))], 1))[0][:, 1:]
  np.testing.assert_allclose(loss(basis, basis, 1.0, 1.0), 0.0, atol=1e-4)


# ----------------------------------------------------------------------------------- MoCo v1


def test_moco_v1_head_is_one_linear_and_its_loss_is_moco_infonce():
  config = make_config("moco_v1", **moco_fields())
  objective = OBJECTIVES["moco_v1"](config, 1)
  assert isinstance(objective, MocoV1)
  params, batch_stats = param_shapes(objective)
  assert params["projector"] == {"output_dense": {"kernel": (32, 8), "bias": (8,)}}
  assert set(params) == {"backbone", "projector"} and set(batch_stats) == {"backbone"}

  params, batch_stats, target_params, target_batch_stats = init(objective)
  state = objective.init_objective_state(jax.random.key(1), BATCH)
  view_1, view_2 = views(6)

  @fast_jit
  def run():
    queries = apply_train(objective, params, batch_stats, view_1)
    keys = apply_train(objective, target_params, target_batch_stats, view_2)
    loss, aux = objective.loss(LossInputs(
        params=params, batch_stats=batch_stats, views=(view_1, view_2), rng=jax.random.key(0),
        step=ZERO_STEP, target_params=target_params, target_batch_stats=target_batch_stats,
        objective_state=state))
    return queries, keys, loss, aux, contrastive_loss(queries["projection"],
                                                      keys["projection"], state["queue"],
                                                      TEMPERATURE)

  queries, keys, loss, aux, v2_loss = run()
  # The head is the fc: projection = pooled @ W + b.
  head = params["projector"]["output_dense"]
  np.testing.assert_allclose(queries["projection"],
                             queries["pooled"] @ head["kernel"] + head["bias"], rtol=1e-5,
                             atol=1e-5)
  want_loss, want_accuracy = np_info_nce(queries["projection"], keys["projection"],
                                         state["queue"], TEMPERATURE)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
  np.testing.assert_allclose(loss, v2_loss[0], rtol=1e-5)
  np.testing.assert_allclose(aux.metrics["contrastive_acc"], want_accuracy)
  np.testing.assert_allclose(aux.extras["keys"], np_normalize(keys["projection"]), atol=1e-5)


# ---------------------------------------------------------------------------- MoCo v2 options


def test_per_device_bn_normalises_each_group_with_its_own_statistics():
  """bn_mode='per_device' with 2 groups on one host: queries and keys equal those of the global-BN
  network run on each half of the batch separately, and differ from one run on the whole batch."""
  per_device = MocoV2(make_config("moco_v2", **moco_fields(bn_mode="per_device", bn_groups=2)),
                      num_batch_shards=1)
  global_bn = MocoV2(make_config("moco_v2", **moco_fields()), num_batch_shards=1)
  assert per_device.bn_groups == 2
  params, batch_stats, target_params, target_batch_stats = init(global_bn)
  state = per_device.init_objective_state(jax.random.key(1), BATCH)
  view_1, view_2 = views(7)
  half = BATCH // 2

  @fast_jit
  def run():
    _, aux = per_device.loss(LossInputs(
        params=params, batch_stats=batch_stats, views=(view_1, view_2), rng=jax.random.key(0),
        step=ZERO_STEP, target_params=target_params, target_batch_stats=target_batch_stats,
        objective_state=state))
    halves = [(apply_train(global_bn, params, batch_stats, view_1[s])["projection"],
               apply_train(global_bn, target_params, target_batch_stats, view_2[s])["projection"])
              for s in (slice(0, half), slice(half, None))]
    whole = apply_train(global_bn, params, batch_stats, view_1)["projection"]
    return aux, halves, whole

  aux, halves, whole = run()
  queries_by_half = np.concatenate([queries for queries, _ in halves])
  keys_by_half = np.concatenate([keys for _, keys in halves])
  np.testing.assert_allclose(aux.projections, queries_by_half, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(aux.extras["keys"], np_normalize(keys_by_half), atol=1e-5)
  assert np.max(np.abs(np.asarray(aux.projections) - np.asarray(whole))) > 1e-3


def test_symmetric_moco_with_one_queue_per_view_matches_numpy():
  objective = MocoV2(make_config("moco_v2", **moco_fields(symmetric=True, queue_size=24)), 1)
  params, batch_stats, target_params, target_batch_stats = init(objective)
  # One queue per view, each written N keys a step: 24 needs only be a multiple of 8, not 16.
  state = objective.init_objective_state(jax.random.key(5), BATCH)
  assert set(state) == {"queue", "queue_2", "queue_ptr"}
  queue_1, queue_2 = np.asarray(state["queue"]), np.asarray(state["queue_2"])
  assert queue_1.shape == queue_2.shape == (24, 8)
  assert np.max(np.abs(queue_1 - queue_2)) > 0.1
  view_1, view_2 = views(8)

  @fast_jit
  def run():
    projections = [apply_train(objective, *variables, view)["projection"]
                   for variables in ((params, batch_stats), (target_params, target_batch_stats))
                   for view in (view_1, view_2)]
    loss, aux = objective.loss(LossInputs(
        params=params, batch_stats=batch_stats, views=(view_1, view_2), rng=jax.random.key(2),
        step=ZERO_STEP, target_params=target_params, target_batch_stats=target_batch_stats,
        objective_state=state))
    return projections, loss, aux, objective.update_objective_state(state, aux.extras)

  (q1, q2, k1, k2), loss, aux, new_state = run()
  # q1 vs k2 against earlier view-2 keys; q2 vs k1 against earlier view-1 keys.
  loss_12, accuracy_12 = np_info_nce(q1, k2, queue_2, TEMPERATURE)
  loss_21, accuracy_21 = np_info_nce(q2, k1, queue_1, TEMPERATURE)
  np.testing.assert_allclose(loss, 0.5 * (loss_12 + loss_21), rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["contrastive_acc"], 0.5 * (accuracy_12 + accuracy_21))
  # Swapping the queues gives another loss: the test above tells them apart.
  swapped = 0.5 * (np_info_nce(q1, k2, queue_1, TEMPERATURE)[0]
                   + np_info_nce(q2, k1, queue_2, TEMPERATURE)[0])
  assert abs(swapped - float(loss)) > 1e-3
  # Each view's keys go to its own queue, at the shared pointer.
  np.testing.assert_allclose(new_state["queue"][:BATCH], np_normalize(k1), atol=1e-5)
  np.testing.assert_allclose(new_state["queue_2"][:BATCH], np_normalize(k2), atol=1e-5)
  np.testing.assert_array_equal(new_state["queue"][BATCH:], queue_1[BATCH:])
  np.testing.assert_array_equal(new_state["queue_2"][BATCH:], queue_2[BATCH:])
  assert int(new_state["queue_ptr"]) == BATCH


def test_moco_option_errors_and_unchanged_asymmetric_state():
  asymmetric = MocoV2(make_config("moco_v2", **moco_fields()), 1)
  assert set(asymmetric.init_objective_state(jax.random.key(0), BATCH)) == {"queue", "queue_ptr"}
  with pytest.raises(ValueError, match="symmetric_queues 'both'.*per_view.*shared"):
    MocoV2(make_config("moco_v2", **moco_fields(symmetric_queues="both")), 1)
  with pytest.raises(ValueError, match="queue_size 20 .* 8"):
    MocoV2(make_config("moco_v2", **moco_fields(symmetric=True, queue_size=20)),
           1).init_objective_state(jax.random.key(0), BATCH)
  with pytest.raises(ValueError, match="'moco_mse'.*symmetric must be False"):
    MocoMse(intermediate_config("moco_mse", symmetric=True), 1)
  with pytest.raises(ValueError, match=r"stage_weights must give one value per ResNet stage"):
    MocoBarlowTwins(intermediate_config("moco_bt", stage_weights=(1.0, 1.0)), 1)
  with pytest.raises(ValueError, match=r"stage_pool_sizes"):
    MocoMse(intermediate_config("moco_mse", stage_pool_sizes=(16, 16, 0, 4)), 1)


# --------------------------------------------------------------- MoCo + intermediate losses


def run_intermediate(objective, seed: int):
  """The objective's loss, the gradient of its intermediate-layer part alone w.r.t. the online
  and the target params, and the reference network outputs (query: online on view 1; key:
  target on view 2)."""
  params, batch_stats, target_params, target_batch_stats = init(objective)
  state = objective.init_objective_state(jax.random.key(1), BATCH)
  view_1, view_2 = views(seed)

  @fast_jit
  def run():
    def intermediate_part(params, target_params):
      loss, aux = objective.loss(LossInputs(
          params=params, batch_stats=batch_stats, views=(view_1, view_2),
          rng=jax.random.key(0), step=ZERO_STEP, target_params=target_params,
          target_batch_stats=target_batch_stats, objective_state=state))
      return loss - aux.metrics["info_nce"], (loss, aux)

    (_, (loss, aux)), grads = jax.value_and_grad(intermediate_part, argnums=(0, 1),
                                                 has_aux=True)(params, target_params)
    network_params = {key: params[key] for key in ("backbone", "projector")}
    network_stats = {"backbone": batch_stats["backbone"]}
    queries = apply_train(objective, network_params, network_stats, view_1)
    keys = apply_train(objective, target_params, target_batch_stats, view_2)
    return loss, aux, grads, queries, keys

  return params, state, run()


def test_moco_mse_total_loss_and_gradients():
  objective = MocoMse(intermediate_config("moco_mse"), 1)
  params, batch_stats = param_shapes(objective)
  assert set(params) == {"backbone", "projector"}
  _, state, (loss, aux, (grads, target_grads), queries, keys) = run_intermediate(objective, 9)

  assert [stage.shape for stage in queries["stages"]] == [
      (BATCH, 16, 16, 4), (BATCH, 8, 8, 8), (BATCH, 4, 4, 16), (BATCH, 2, 2, 32)]
  info_nce, accuracy = np_info_nce(queries["projection"], keys["projection"], state["queue"],
                                   TEMPERATURE)
  stage_losses = np_stage_mse(queries["stages"], keys["stages"], (16, 16, 4, 4),
                              (0.25, 0.5, 1.0, 2.0))
  np.testing.assert_allclose(loss, info_nce + sum(stage_losses), rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["info_nce"], info_nce, rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["contrastive_acc"], accuracy)
  for index, want in enumerate(stage_losses):
    np.testing.assert_allclose(aux.metrics[f"stage{index + 1}_loss"], want, rtol=1e-4)
  assert set(aux.metrics) == set(objective.metric_names)
  np.testing.assert_allclose(aux.extras["keys"], np_normalize(keys["projection"]), atol=1e-5)

  # The intermediate losses train the query backbone only: nothing reaches the key encoder, and
  # the head (not on the stage path) gets nothing from them either.
  assert tree_max_abs(target_grads) == 0
  assert tree_max_abs(grads["projector"]) == 0
  for stage in ("stage1_block0", "stage4_block0"):
    assert tree_max_abs(grads["backbone"][stage]) > 0


def test_moco_bt_total_loss_gradients_and_stage_projectors():
  objective = MocoBarlowTwins(intermediate_config("moco_bt"), 1)
  params, batch_stats = param_shapes(objective)
  assert set(params) == {"backbone", "projector", "stage_projectors"}
  assert "stage_projectors" not in objective.target_keys
  for index, channels in enumerate(STAGE_CHANNELS):
    assert params["stage_projectors"][f"stage{index + 1}"] == {
        "hidden0_dense": {"kernel": (channels, 6)},
        "hidden0_bn": {"scale": (6,), "bias": (6,)},
        "hidden1_dense": {"kernel": (6, 6)},
        "hidden1_bn": {"scale": (6,), "bias": (6,)},
        "output_dense": {"kernel": (6, 6)}}

  variables, state, (loss, aux, (grads, target_grads), queries, keys) = run_intermediate(
      objective, 10)
  # Not exported, and a plain optimiser group (not EMA-updated: absent from the target).
  exported = objective.encoder_variables(variables, {"backbone": {}, "stage_projectors": {}})
  assert set(exported["params"]) == set(variables["backbone"])
  assert set(jax.tree.leaves(objective.param_labels(variables)["stage_projectors"])) == {"default"}

  projector_variables = {"params": variables["stage_projectors"],
                         "batch_stats": init(objective)[1]["stage_projectors"]}

  @fast_jit
  def project(stages):
    pooled = [jnp.mean(stage, axis=(1, 2)) for stage in stages]
    return objective.stage_projectors.apply(projector_variables, pooled, train=True,
                                            mutable=["batch_stats"])[0]

  z_query, z_key = project(queries["stages"]), project(keys["stages"])
  weights = (5e-5, 1e-4, 2e-4, 4e-4)
  stage_losses = [np_kaku_bt(zq, zk, weight, 1 / 32)
                  for zq, zk, weight in zip(z_query, z_key, weights)]
  info_nce, _ = np_info_nce(queries["projection"], keys["projection"], state["queue"],
                            TEMPERATURE)
  np.testing.assert_allclose(loss, info_nce + sum(stage_losses), rtol=1e-4)
  for index, want in enumerate(stage_losses):
    np.testing.assert_allclose(aux.metrics[f"stage{index + 1}_loss"], want, rtol=1e-4)
  assert set(aux.batch_stats) == {"backbone", "stage_projectors"}
  assert set(aux.target_batch_stats) == {"backbone"}

  assert tree_max_abs(target_grads) == 0
  assert tree_max_abs(grads["projector"]) == 0
  assert tree_max_abs(grads["backbone"]["stage1_block0"]) > 0
  for index in range(4):
    assert tree_max_abs(grads["stage_projectors"][f"stage{index + 1}"]) > 0
