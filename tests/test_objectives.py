"""Objective tests: each loss against NumPy on fixed projections, the MoCo queue and shuffle-BN, and
end-to-end losses on a tiny ResNet (loss value from the networks' projections, gradient flow).

Models are ResNet-10 of width 4 on 16 px images with heads of a few units. Compilation dominates
the cost of such tiny graphs, so each test compiles one jitted function at XLA's lowest CPU
optimisation level, variables are drawn in NumPy with the structure of `Objective.init`, and
checks run in NumPy (eager jnp ops on many leaf shapes would each compile a kernel).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from engine_helpers import fast_jit
from ssl_jax.objectives import OBJECTIVES, LossInputs, Objective, build_objective, moco_v2
from ssl_jax.objectives.byol import Byol, byol_loss
from ssl_jax.objectives.moco_v2 import MocoV2, contrastive_loss, symmetric_contrastive_loss
from ssl_jax.objectives.simsiam import SimSiam, simsiam_loss

IMAGE_SHAPE = (16, 16, 3)
BATCH = 8


def make_config(objective: str, **objective_config) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      objective=objective,
      model=dict(name="resnet10", stem="cifar", width=4, dtype="float32"),
      objective_config=objective_config,
  ))


def moco_config(**overrides) -> ml_collections.ConfigDict:
  fields = dict(proj_hidden_dim=16, proj_dim=8, temperature=0.2, queue_size=32, symmetric=False,
                bn_mode="global", bn_groups=0)
  fields.update(overrides)
  return make_config("moco_v2", **fields)


def byol_config() -> ml_collections.ConfigDict:
  return make_config("byol", proj_hidden_dim=16, proj_dim=8, pred_hidden_dim=16)


def simsiam_config() -> ml_collections.ConfigDict:
  return make_config("simsiam", proj_hidden_dim=16, proj_dim=8, proj_layers=3, pred_hidden_dim=4)


def views(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return tuple(rng.normal(size=(BATCH, *IMAGE_SHAPE)).astype(np.float32) for _ in range(2))


def random_variables(objective, seed: int):
  """Variables with the structure `objective.init` gives (from eval_shape: traced, not compiled)
  filled with NumPy draws at He-like scales. Compiling the real init of each network would cost
  more than all the checks here, and the checks do not depend on the initial values."""
  init_fn = functools.partial(objective.init, image_shape=IMAGE_SHAPE)
  shapes = jax.eval_shape(init_fn, jax.random.key(0))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      values = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    elif name == "scale":
      values = 1.0 + 0.1 * rng.normal(size=leaf.shape)
    elif name == "bias":
      values = 0.1 * rng.normal(size=leaf.shape)
    elif name == "mean":
      values = np.zeros(leaf.shape)
    elif name == "var":
      values = np.ones(leaf.shape)
    else:
      raise AssertionError(f"unexpected variable {jax.tree_util.keystr(path)}")
    return values.astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def init(objective):
  """Online variables and a target that differs from them (as after some EMA steps)."""
  params, batch_stats = random_variables(objective, seed=0)
  if not objective.uses_target:
    return params, batch_stats, {}, {}
  other_params, _ = random_variables(objective, seed=1)
  target_params = {k: other_params[k] for k in objective.target_keys}
  target_batch_stats = {k: batch_stats[k] for k in objective.target_keys if k in batch_stats}
  return params, batch_stats, target_params, target_batch_stats


def apply_train(objective, params, batch_stats, images, use_predictor=True):
  """Train-mode forward of the objective's network: the outputs a loss sees."""
  outputs, _ = objective.network.apply({"params": params, "batch_stats": batch_stats}, images,
                                       train=True, use_predictor=use_predictor,
                                       mutable=["batch_stats"])
  return outputs


def np_normalize(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_info_nce(q, k, queue, temperature):
  q, k = np_normalize(q), np_normalize(k)
  logits = np.concatenate([np.sum(q * k, -1, keepdims=True), q @ np.asarray(queue).T], 1)
  logits /= temperature
  log_z = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
  return np.mean(log_z - logits[:, 0]), np.mean(np.argmax(logits, 1) == 0)


def np_cos(a, b):
  return np.sum(np_normalize(a) * np_normalize(b), -1)


def tree_max_abs(tree) -> float:
  return max(float(np.max(np.abs(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


def tree_max_abs_diff(tree_a, tree_b) -> float:
  return tree_max_abs(jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), tree_a, tree_b))


# ------------------------------------------------------------------- losses on fixed projections

RNG = np.random.default_rng(0)
Q1, Q2, K1, K2 = (RNG.normal(size=(6, 5)).astype(np.float32) for _ in range(4))
QUEUE = np_normalize(RNG.normal(size=(10, 5))).astype(np.float32)


def test_moco_infonce_matches_numpy():
  for temperature in (0.2, 0.07, 1.0):
    loss, accuracy = contrastive_loss(Q1, K1, QUEUE, temperature)
    want_loss, want_accuracy = np_info_nce(Q1, K1, QUEUE, temperature)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(accuracy, want_accuracy)
  # A query equal to its key beats random negatives: accuracy 1, and the loss falls with tau.
  loss_hot, accuracy = contrastive_loss(K1, K1, QUEUE, 0.07)
  assert accuracy == 1.0
  assert loss_hot < contrastive_loss(K1, K1, QUEUE, 1.0)[0]


def test_symmetric_moco_matches_numpy():
  loss, accuracy = symmetric_contrastive_loss(Q1, Q2, K1, K2, QUEUE, 0.2)
  loss_12, accuracy_12 = np_info_nce(Q1, K2, QUEUE, 0.2)
  loss_21, accuracy_21 = np_info_nce(Q2, K1, QUEUE, 0.2)
  np.testing.assert_allclose(loss, 0.5 * (loss_12 + loss_21), rtol=1e-5)
  np.testing.assert_allclose(accuracy, 0.5 * (accuracy_12 + accuracy_21), rtol=1e-6)


def test_byol_loss_matches_numpy():
  want = np.mean(2 - 2 * np_cos(Q1, K2) + 2 - 2 * np_cos(Q2, K1))
  np.testing.assert_allclose(byol_loss(Q1, Q2, K1, K2), want, rtol=1e-5)
  np.testing.assert_allclose(byol_loss(Q1, Q2, Q2, Q1), 0.0, atol=1e-5)   # perfect predictions


def test_simsiam_loss_matches_numpy():
  want = 0.5 * -np.mean(np_cos(Q1, K2)) + 0.5 * -np.mean(np_cos(Q2, K1))
  np.testing.assert_allclose(simsiam_loss(Q1, Q2, K1, K2), want, rtol=1e-5)
  np.testing.assert_allclose(simsiam_loss(Q1, Q2, Q2, Q1), -1.0, rtol=1e-6)


def test_pure_losses_stop_gradients_into_targets():
  """Gradients reach only the online side: keys, queue, target projections and SimSiam's z."""
  @fast_jit
  def gradients():
    return (jax.grad(lambda q, k, queue: contrastive_loss(q, k, queue, 0.2)[0],
                     argnums=(0, 1, 2))(Q1, K1, QUEUE),
            jax.grad(byol_loss, argnums=(0, 1, 2, 3))(Q1, Q2, K1, K2),
            jax.grad(simsiam_loss, argnums=(0, 1, 2, 3))(Q1, Q2, K1, K2))

  moco_grads, byol_grads, simsiam_grads = gradients()
  assert tree_max_abs(moco_grads[0]) > 0
  assert tree_max_abs(moco_grads[1:]) == 0
  assert tree_max_abs(byol_grads[:2]) > 0 and tree_max_abs(byol_grads[2:]) == 0
  assert tree_max_abs(simsiam_grads[:2]) > 0 and tree_max_abs(simsiam_grads[2:]) == 0


# -------------------------------------------------------------------------------- the MoCo queue


def test_moco_queue_ring_buffer_matches_numpy():
  objective = MocoV2(moco_config(queue_size=12, proj_dim=3), num_batch_shards=1)
  state = objective.init_objective_state(jax.random.key(0), global_batch_size=4)
  queue = np.array(state["queue"])
  assert queue.shape == (12, 3) and state["queue_ptr"].dtype == jnp.int32
  np.testing.assert_allclose(np.linalg.norm(queue, axis=1), 1.0, rtol=1e-6)
  pointer = 0
  update = jax.jit(objective.update_objective_state)
  for step in range(5):   # 5 x 4 keys through a 12-row queue: wraps around once, then again
    keys = np.full((4, 3), step + 1, np.float32) + np.arange(4, dtype=np.float32)[:, None]
    state = update(state, {"keys": keys})
    queue[pointer:pointer + 4] = keys
    pointer = (pointer + 4) % 12
    np.testing.assert_array_equal(state["queue"], queue)
    assert int(state["queue_ptr"]) == pointer
  assert pointer == 8   # 20 keys written: 12 + 8


def test_moco_queue_size_must_divide_by_global_batch():
  with pytest.raises(ValueError, match=r"queue_size 30 .* 8"):
    MocoV2(moco_config(queue_size=30), 1).init_objective_state(jax.random.key(0), 8)
  # Symmetric MoCo with a shared queue enqueues both key sets: 24 is a multiple of 8 but not
  # of 16.
  with pytest.raises(ValueError, match=r"queue_size 24 .* 16"):
    MocoV2(moco_config(queue_size=24, symmetric=True, symmetric_queues="shared"),
           1).init_objective_state(jax.random.key(0), 8)
  MocoV2(moco_config(queue_size=32, symmetric=True, symmetric_queues="shared"),
         1).init_objective_state(jax.random.key(0), 8)
  with pytest.raises(ValueError, match="bn_mode 'sideways'.*global.*per_device.*shuffle"):
    MocoV2(moco_config(bn_mode="sideways"), 1)


def test_init_builds_the_papers_heads():
  """Head layouts from `Objective.init` (shapes via eval_shape): ResNet-10 width 4 pools to 32."""
  def shapes(objective):
    init_fn = functools.partial(objective.init, image_shape=IMAGE_SHAPE)
    params, batch_stats = jax.eval_shape(init_fn, jax.random.key(0))
    return (jax.tree.map(lambda leaf: leaf.shape, params),
            jax.tree.map(lambda leaf: leaf.shape, batch_stats))

  params, batch_stats = shapes(MocoV2(moco_config(), 1))
  assert params["projector"] == {"hidden0_dense": {"kernel": (32, 16), "bias": (16,)},
                                 "output_dense": {"kernel": (16, 8), "bias": (8,)}}
  assert set(params) == {"backbone", "projector"} and set(batch_stats) == {"backbone"}

  params, batch_stats = shapes(Byol(byol_config(), 1))
  for head, fan_in in (("projector", 32), ("predictor", 8)):
    assert params[head] == {"hidden0_dense": {"kernel": (fan_in, 16), "bias": (16,)},
                            "hidden0_bn": {"scale": (16,), "bias": (16,)},
                            "output_dense": {"kernel": (16, 8), "bias": (8,)}}

  params, batch_stats = shapes(SimSiam(simsiam_config(), 1))
  # 3 Linear layers; bias-free hidden and output layers; the last BN has no affine params.
  assert params["projector"] == {"hidden0_dense": {"kernel": (32, 16)},
                                 "hidden0_bn": {"scale": (16,), "bias": (16,)},
                                 "hidden1_dense": {"kernel": (16, 16)},
                                 "hidden1_bn": {"scale": (16,), "bias": (16,)},
                                 "output_dense": {"kernel": (16, 8)}}
  assert batch_stats["projector"]["output_bn"] == {"mean": (8,), "var": (8,)}
  assert params["predictor"] == {"hidden0_dense": {"kernel": (8, 4)},
                                 "hidden0_bn": {"scale": (4,), "bias": (4,)},
                                 "output_dense": {"kernel": (4, 8), "bias": (8,)}}


def test_build_objective_dict_and_unknown_name():
  # (That each name has its config file: test_configs_and_bad_input.py.)
  assert all(issubclass(objective, Objective) for objective in OBJECTIVES.values())
  assert (OBJECTIVES["moco_v2"], OBJECTIVES["byol"], OBJECTIVES["simsiam"]) == (MocoV2, Byol,
                                                                                SimSiam)
  assert isinstance(build_objective(byol_config(), 1), Byol)
  with pytest.raises(ValueError, match=re.escape(f"'mocov3'; allowed objectives: "
                                                 f"{sorted(OBJECTIVES)}")):
    build_objective(make_config("mocov3"), 1)


# ------------------------------------------------------------------------------------ shuffle-BN


def test_shuffle_bn_keys():
  """With 4 BN groups the shuffled key encoder normalises each sample with another group's
  statistics (keys change), yet returns keys in the input order; with global BN shuffling is a
  no-op on the keys."""
  images, _ = views(3)
  rng = jax.random.key(7)
  objectives = {
      "global": MocoV2(moco_config(bn_mode="global"), 1),
      "shuffle_1": MocoV2(moco_config(bn_mode="shuffle", bn_groups=1), 1),
      "per_device_4": MocoV2(moco_config(bn_mode="per_device", bn_groups=4), 1),
      "shuffle_4": MocoV2(moco_config(bn_mode="shuffle"), num_batch_shards=4),
  }
  assert objectives["shuffle_4"].bn_groups == 4   # bn_groups=0 means one group per shard
  params, batch_stats, _, _ = init(objectives["global"])
  permutation, inverse = moco_v2.shuffle_permutation(rng, BATCH)
  permutation = np.asarray(permutation)

  @fast_jit
  def encode_all():
    outputs = {name: objective.encode_keys(params, batch_stats, images, rng)
               for name, objective in objectives.items()}
    keys_of_permuted, _ = objectives["per_device_4"].encode_keys(params, batch_stats,
                                                                 images[permutation], rng)
    return outputs, keys_of_permuted

  outputs, keys_of_permuted = encode_all()
  keys = {name: np.asarray(keys) for name, (keys, _) in outputs.items()}
  np.testing.assert_allclose(np.linalg.norm(keys["shuffle_4"], axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(keys["shuffle_1"], keys["global"], atol=1e-5)
  # Different statistics per sample: not the same keys as unshuffled per-group BN.
  assert np.min(np.abs(keys["shuffle_4"] - keys["per_device_4"]).max(axis=1)) > 1e-3

  # Exactly: per-group BN over the permuted batch, with the outputs put back in input order.
  assert sorted(permutation.tolist()) == list(range(BATCH))
  assert not np.array_equal(permutation, np.arange(BATCH))
  np.testing.assert_array_equal(np.asarray(inverse)[permutation], np.arange(BATCH))
  expected = np.empty_like(keys["shuffle_4"])
  expected[permutation] = np.asarray(keys_of_permuted)
  np.testing.assert_allclose(keys["shuffle_4"], expected, atol=1e-5)

  # The key encoder's own forward updates its BN statistics.
  assert tree_max_abs_diff(outputs["shuffle_4"][1], batch_stats) > 0


# --------------------------------------------------------------------- end to end on a tiny model


def loss_and_grads(objective, params, batch_stats, target_params, target_batch_stats, state,
                   images, rng):
  """value_and_grad w.r.t. online *and* target params: only the online side may get any."""
  def loss_fn(params, target_params):
    return objective.loss(LossInputs(
        params=params, batch_stats=batch_stats, views=images, rng=rng,
        step=jnp.zeros([], jnp.int32), target_params=target_params,
        target_batch_stats=target_batch_stats, objective_state=state))
  return jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(params, target_params)


def test_moco_symmetric_end_to_end():
  objective = MocoV2(moco_config(symmetric=True, symmetric_queues="shared"), 1)
  params, batch_stats, target_params, target_batch_stats = init(objective)
  state = objective.init_objective_state(jax.random.key(5), BATCH)
  view_1, view_2 = views(1)

  @fast_jit
  def run():
    # The reference projections: plain train-mode forwards of each network on each view.
    projections = [apply_train(objective, *variables, view)["projection"]
                   for variables in ((params, batch_stats), (target_params, target_batch_stats))
                   for view in (view_1, view_2)]
    return projections, loss_and_grads(objective, params, batch_stats, target_params,
                                       target_batch_stats, state, (view_1, view_2),
                                       jax.random.key(2))

  (q1, q2, k1, k2), ((loss, aux), (grads, target_grads)) = run()
  queue = np.asarray(state["queue"])
  loss_12, accuracy_12 = np_info_nce(q1, k2, queue, 0.2)
  loss_21, accuracy_21 = np_info_nce(q2, k1, queue, 0.2)
  np.testing.assert_allclose(loss, 0.5 * (loss_12 + loss_21), rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["contrastive_acc"], 0.5 * (accuracy_12 + accuracy_21))
  # Keys of the whole batch, both views (view 1's keys first), normalised, get enqueued.
  np.testing.assert_allclose(aux.extras["keys"], np.concatenate([np_normalize(k1),
                                                                 np_normalize(k2)]), atol=1e-5)
  np.testing.assert_allclose(aux.projections, q1, rtol=1e-5, atol=1e-6)
  assert tree_max_abs(grads["backbone"]) > 0 and tree_max_abs(grads["projector"]) > 0
  assert tree_max_abs(target_grads) == 0
  assert tree_max_abs_diff(aux.target_batch_stats, target_batch_stats) > 0
  assert tree_max_abs_diff(aux.batch_stats, batch_stats) > 0
  new_state = objective.update_objective_state(state, aux.extras)
  np.testing.assert_array_equal(new_state["queue"][:2 * BATCH], aux.extras["keys"])
  np.testing.assert_array_equal(new_state["queue"][2 * BATCH:], queue[2 * BATCH:])
  assert int(new_state["queue_ptr"]) == 2 * BATCH


def test_moco_shuffle_end_to_end_keys():
  """Non-symmetric MoCo with shuffle-BN: q from view 1, the enqueued keys are view 2's (in sample
  order, whatever the shuffle) and the loss is InfoNCE of exactly these."""
  objective = MocoV2(moco_config(bn_mode="shuffle", bn_groups=4), 1)
  params, batch_stats, target_params, target_batch_stats = init(objective)
  state = objective.init_objective_state(jax.random.key(5), BATCH)
  view_1, view_2 = views(2)
  rng = jax.random.key(3)

  @fast_jit
  def run():
    loss, aux = objective.loss(LossInputs(
        params=params, batch_stats=batch_stats, views=(view_1, view_2), rng=rng,
        step=jnp.zeros([], jnp.int32), target_params=target_params,
        target_batch_stats=target_batch_stats, objective_state=state))
    queries = apply_train(objective, params, batch_stats, view_1)["projection"]
    # The loss shuffles view 2's key batch with the second half of its split rng.
    keys_of_view_2, _ = objective.encode_keys(target_params, target_batch_stats, view_2,
                                              jax.random.split(rng)[1])
    return loss, aux, queries, keys_of_view_2

  loss, aux, queries, keys_of_view_2 = run()
  keys = np.asarray(aux.extras["keys"])
  assert keys.shape == (BATCH, 8)
  np.testing.assert_allclose(keys, keys_of_view_2, atol=1e-6)
  want_loss, want_accuracy = np_info_nce(queries, keys, np.asarray(state["queue"]), 0.2)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["contrastive_acc"], want_accuracy)


def test_byol_end_to_end():
  objective = Byol(byol_config(), 1)
  params, batch_stats, target_params, target_batch_stats = init(objective)
  assert set(params) == {"backbone", "projector", "predictor"}
  assert set(target_batch_stats) == {"backbone", "projector"}
  view_1, view_2 = views(4)

  @fast_jit
  def run():
    online = [apply_train(objective, params, batch_stats, view) for view in (view_1, view_2)]
    target = [apply_train(objective, target_params, target_batch_stats, view,
                          use_predictor=False) for view in (view_1, view_2)]
    return online, target, loss_and_grads(objective, params, batch_stats, target_params,
                                          target_batch_stats, {}, (view_1, view_2),
                                          jax.random.key(0))

  (online_1, online_2), (target_1, target_2), ((loss, aux), (grads, target_grads)) = run()
  assert "prediction" not in target_1
  want = np.mean(2 - 2 * np_cos(online_1["prediction"], target_2["projection"])
                 + 2 - 2 * np_cos(online_2["prediction"], target_1["projection"]))
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  np.testing.assert_allclose(aux.projections, online_1["projection"], rtol=1e-5, atol=1e-6)
  for group in ("backbone", "projector", "predictor"):
    assert tree_max_abs(grads[group]) > 0
  assert tree_max_abs(target_grads) == 0
  assert set(aux.target_batch_stats) == {"backbone", "projector"}
  assert tree_max_abs_diff(aux.target_batch_stats, target_batch_stats) > 0


def test_simsiam_end_to_end_gradient_treats_z_as_constant():
  objective = SimSiam(simsiam_config(), 1)
  params, batch_stats, _, _ = init(objective)
  view_1, view_2 = views(5)

  @fast_jit
  def both_gradients():
    def objective_loss(params):
      return objective.loss(LossInputs(params=params, batch_stats=batch_stats,
                                       views=(view_1, view_2), rng=jax.random.key(0),
                                       step=jnp.zeros([], jnp.int32)))[0]

    # Re-derivation: z computed once outside the differentiated function (a constant), and the
    # loss written out directly, -0.5 mean cos(p1, z2) - 0.5 mean cos(p2, z1).
    z1 = apply_train(objective, params, batch_stats, view_1)["projection"]
    z2 = apply_train(objective, params, batch_stats, view_2)["projection"]

    def cos(a, b):
      return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1))

    def rederived_loss(params):
      p1 = apply_train(objective, params, batch_stats, view_1)["prediction"]
      p2 = apply_train(objective, params, batch_stats, view_2)["prediction"]
      return -0.5 * jnp.mean(cos(p1, z2)) - 0.5 * jnp.mean(cos(p2, z1))

    return (jax.value_and_grad(objective_loss)(params),
            jax.value_and_grad(rederived_loss)(params))

  (loss, grads), (want_loss, want_grads) = both_gradients()
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6),
               grads, want_grads)
  assert tree_max_abs(grads["projector"]) > 0

  labels = objective.param_labels(params)
  assert set(jax.tree.leaves(labels["predictor"])) == {"predictor"}
  assert set(jax.tree.leaves(labels["backbone"])) == {"default"}
  assert set(jax.tree.leaves(labels["projector"])) == {"default"}
