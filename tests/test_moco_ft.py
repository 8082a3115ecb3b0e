"""MoCo + feature transformation: the transform and the loss against NumPy, the draws, the options,
the invariants (original keys enqueued, no gradient into the key encoder, MoCo v2's shuffle
untouched), the score statistics and the plot.

Same style as tests/test_objectives.py: a ResNet-10 of width 4 on 16 px images, variables drawn in
NumPy with the structure of `Objective.init`, one jitted function per test at XLA's lowest CPU
optimisation level, checks in NumPy (float64 references).
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import moco_ft as moco_ft_config
from engine_helpers import fast_jit
from ssl_jax import plots
from ssl_jax.objectives import OBJECTIVES, LossInputs, moco_ft
from ssl_jax.objectives.moco_ft import MocoFT, TransformDraws
from ssl_jax.objectives.moco_v2 import MocoV2
from ssl_jax.plots import feature_transform_scores

IMAGE_SHAPE = (16, 16, 3)
BATCH = 8
PROJ_DIM = 8
QUEUE_SIZE = 32
TEMPERATURE = 0.2



def ft_config(**overrides) -> ml_collections.ConfigDict:
  objective_config = dict(
      proj_hidden_dim=16, proj_dim=PROJ_DIM, temperature=TEMPERATURE, queue_size=QUEUE_SIZE,
      symmetric=False, bn_mode="global", bn_groups=0, positive_transform=True,
      negative_transform=True, positive_mode="extrapolate", distribution="beta",
      positive_alpha=2.0, negative_alpha=1.6, per_dimension="none", renormalize="none",
      stop_gradient_mixed_keys=False, start_epoch=0)
  objective_config.update(overrides)
  return ml_collections.ConfigDict(dict(
      objective="moco_ft",
      model=dict(name="resnet10", stem="cifar", width=4, dtype="float32"),
      data=dict(num_train_examples=10 * BATCH),   # 10 steps per epoch (for start_epoch)
      batch_size=BATCH,
      objective_config=objective_config,
  ))


# ------------------------------------------------------------------------------ NumPy references

def np_normalize(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_transform(q, k, queue, lam, mu, permutation):
  """FT in float64: positive extrapolation from the original pair, queue rows mixed with their
  permuted partners."""
  q, k, queue, lam, mu = (np.asarray(a, np.float64) for a in (q, k, queue, lam, mu))
  return (lam * q + (1 - lam) * k, lam * k + (1 - lam) * q,
          mu * queue + (1 - mu) * queue[np.asarray(permutation)])


def np_info_nce(q, k, queue, temperature):
  """InfoNCE on the vectors as given (no normalisation)."""
  q, k, queue = (np.asarray(a, np.float64) for a in (q, k, queue))
  logits = np.concatenate([np.sum(q * k, -1, keepdims=True), q @ queue.T], 1) / temperature
  log_z = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
  return np.mean(log_z - logits[:, 0]), np.mean(np.argmax(logits, 1) == 0)


def np_statistics(q, k, queue):
  positive = np.sum(np.asarray(q, np.float64) * np.asarray(k, np.float64), -1)
  negatives = np.asarray(q, np.float64) @ np.asarray(queue, np.float64).T
  return {"pos_mean": positive.mean(), "pos_var": positive.var(),
          "neg_mean": negatives.mean(), "neg_var": negatives.var()}


RNG = np.random.default_rng(0)
Q = np_normalize(RNG.normal(size=(6, 5))).astype(np.float32)
K = np_normalize(RNG.normal(size=(6, 5))).astype(np.float32)
QUEUE = np_normalize(RNG.normal(size=(10, 5))).astype(np.float32)
PERMUTATION = np.array([3, 7, 0, 9, 1, 4, 8, 2, 6, 5], np.int32)


# ------------------------------------------------------------------- the transform on fixed inputs

def _transformed(objective, lam, mu):
  draws = TransformDraws(jnp.asarray(lam, jnp.float32), jnp.asarray(mu, jnp.float32),
                         jnp.asarray(PERMUTATION))
  return [np.asarray(x) for x in objective.transform(Q, K, QUEUE, draws)]


def test_transform_with_fixed_coefficients_matches_numpy():
  lam, mu = 1.37, 0.42
  want = np_transform(Q, K, QUEUE, lam, mu, PERMUTATION)
  for got, expected in zip(_transformed(MocoFT(ft_config(), 1), lam, mu), want):
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  # Extrapolation pushes the pair apart along q - k: the positive score falls, norms grow.
  q_mixed, k_mixed, _ = want
  assert np.all(np.sum(q_mixed * k_mixed, -1) < np.sum(Q * K, -1))
  assert np.all(np.linalg.norm(q_mixed, axis=-1) > 1.0)

  # Each transform switches off on its own.
  only_negatives = _transformed(MocoFT(ft_config(positive_transform=False), 1), lam, mu)
  np.testing.assert_array_equal(only_negatives[0], Q)
  np.testing.assert_array_equal(only_negatives[1], K)
  np.testing.assert_allclose(only_negatives[2], want[2], rtol=1e-6, atol=1e-6)
  only_positives = _transformed(MocoFT(ft_config(negative_transform=False), 1), lam, mu)
  np.testing.assert_allclose(only_positives[0], want[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(only_positives[2], QUEUE)


def test_per_dimension_coefficients_match_numpy():
  rng = np.random.default_rng(1)
  lam = (1 + rng.uniform(size=Q.shape)).astype(np.float32)       # one per entry of q (N, d)
  mu = rng.uniform(size=QUEUE.shape).astype(np.float32)          # one per entry of the queue
  want = np_transform(Q, K, QUEUE, lam, mu, PERMUTATION)
  for got, expected in zip(_transformed(MocoFT(ft_config(per_dimension="both"), 1), lam, mu),
                           want):
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_renormalize_option_normalises_only_its_target():
  lam, mu = 1.8, 0.3
  q_mixed, k_mixed, queue_mixed = np_transform(Q, K, QUEUE, lam, mu, PERMUTATION)
  cases = {"none": (q_mixed, k_mixed, queue_mixed),
           "positive": (np_normalize(q_mixed), np_normalize(k_mixed), queue_mixed),
           "negative": (q_mixed, k_mixed, np_normalize(queue_mixed)),
           "both": (np_normalize(q_mixed), np_normalize(k_mixed), np_normalize(queue_mixed))}
  for renormalize, want in cases.items():
    got = _transformed(MocoFT(ft_config(renormalize=renormalize), 1), lam, mu)
    for got_part, want_part in zip(got, want):
      np.testing.assert_allclose(got_part, want_part, rtol=1e-5, atol=1e-6, err_msg=renormalize)
  # Interpolated queue rows are shorter than 1 unless re-normalised.
  assert np.all(np.linalg.norm(queue_mixed, axis=-1) < 1.0 + 1e-9)


def test_loss_and_statistics_after_the_transform_match_numpy():
  lam, mu = 1.6, 0.55
  q_mixed, k_mixed, queue_mixed = np_transform(Q, K, QUEUE, lam, mu, PERMUTATION)
  for temperature in (0.2, 0.07):
    positive, negatives = moco_ft.pair_scores(*(x.astype(np.float32)
                                                for x in (q_mixed, k_mixed, queue_mixed)))
    loss, accuracy = moco_ft.info_nce_from_scores(positive, negatives, temperature)
    want_loss, want_accuracy = np_info_nce(q_mixed, k_mixed, queue_mixed, temperature)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(accuracy, want_accuracy)
  statistics = moco_ft.score_statistics(positive, negatives)
  for name, value in np_statistics(q_mixed, k_mixed, queue_mixed).items():
    np.testing.assert_allclose(statistics[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def _np_loss_of_query(q_raw, k, queue, lam, mu, freeze_mixed_key_at=None):
  """The FT loss as a NumPy function of the raw query (normalised inside), for finite
  differences; `freeze_mixed_key_at` holds k' fixed at the value it had at that query."""
  q = np_normalize(q_raw)
  q_mixed, k_mixed, queue_mixed = np_transform(q, k, queue, lam, mu, PERMUTATION)
  if freeze_mixed_key_at is not None:
    k_mixed = np_transform(np_normalize(freeze_mixed_key_at), k, queue, lam, mu, PERMUTATION)[1]
  return np_info_nce(q_mixed, k_mixed, queue_mixed, TEMPERATURE)[0]


@pytest.mark.parametrize("stop_gradient_mixed_keys", [False, True])
def test_gradient_flows_through_q_in_both_mixed_vectors_by_default(stop_gradient_mixed_keys):
  """Official behaviour: only the original k is detached, so the query's gradient includes the
  path through k' = l k + (1 - l) q; stop_gradient_mixed_keys cuts that path. Checked against
  central finite differences of the NumPy loss; the key and the queue get no gradient."""
  objective = MocoFT(ft_config(stop_gradient_mixed_keys=stop_gradient_mixed_keys), 1)
  lam, mu = 1.45, 0.6
  draws = TransformDraws(jnp.float32(lam), jnp.float32(mu), jnp.asarray(PERMUTATION))
  q_raw = (1.7 * Q + 0.1).astype(np.float32)

  def loss_fn(q_raw, k, queue):
    q = moco_ft.losses.l2_normalize(q_raw)
    return moco_ft.info_nce_from_scores(
        *moco_ft.pair_scores(*objective.transform(q, jax.lax.stop_gradient(k), queue, draws)),
        TEMPERATURE)[0]

  grad_q, grad_k, _ = jax.jit(jax.grad(loss_fn, argnums=(0, 1, 2)))(q_raw, K, QUEUE)
  assert np.max(np.abs(grad_k)) == 0
  epsilon = 1e-6
  numeric = np.zeros(q_raw.shape)
  for index in np.ndindex(q_raw.shape):
    step = np.zeros(q_raw.shape)
    step[index] = epsilon
    frozen = {"freeze_mixed_key_at": q_raw} if stop_gradient_mixed_keys else {}
    plus = _np_loss_of_query(q_raw + step, K, QUEUE, lam, mu, **frozen)
    minus = _np_loss_of_query(q_raw - step, K, QUEUE, lam, mu, **frozen)
    numeric[index] = (plus - minus) / (2 * epsilon)
  np.testing.assert_allclose(grad_q, numeric, rtol=2e-3, atol=2e-5)


# --------------------------------------------------------------------------------------- draws

def test_draws_follow_the_configured_laws():
  """Scalar Beta draws by default (moments over 4,000 steps), per-entry uniform draws when asked,
  and a fresh permutation of the queue each step. Beta sampling is costly to compile, so one jit
  holds both samplers and the per-entry Beta shapes come from eval_shape."""
  default = MocoFT(ft_config(), 1)
  uniform = MocoFT(ft_config(per_dimension="positive", distribution="uniform",
                             positive_mode="interpolate"), 1)
  rngs = jax.random.split(jax.random.key(0), 4000)

  @fast_jit
  def draws():
    return (jax.vmap(lambda rng: default.draw_transform(rng, BATCH, PROJ_DIM))(rngs),
            jax.vmap(lambda rng: uniform.draw_transform(rng, BATCH, PROJ_DIM))(rngs[:200]))

  default_draws, uniform_draws = draws()
  lam, mu = np.asarray(default_draws.positive_weight), np.asarray(default_draws.negative_weight)
  assert lam.shape == (4000,) and mu.shape == (4000,)   # one scalar each per step
  assert lam.min() >= 1.0 and lam.max() <= 2.0
  # Beta(2, 2) + 1: mean 1.5, variance 1/20; Beta(1.6, 1.6): mean 0.5, variance 1/16.8.
  np.testing.assert_allclose([lam.mean(), lam.var()], [1.5, 1 / 20], atol=0.01)
  np.testing.assert_allclose([mu.mean(), mu.var()], [0.5, 1 / 16.8], atol=0.01)
  permutations = np.asarray(default_draws.queue_permutation)
  assert np.all(np.sort(permutations, axis=1) == np.arange(QUEUE_SIZE))
  assert len({tuple(p) for p in permutations[:50]}) == 50

  lam, mu = np.asarray(uniform_draws.positive_weight), np.asarray(uniform_draws.negative_weight)
  assert lam.shape == (200, BATCH, PROJ_DIM) and mu.shape == (200,)
  assert lam.min() >= 0.0 and lam.max() < 1.0
  np.testing.assert_allclose([lam.mean(), lam.var()], [0.5, 1 / 12], atol=0.01)
  assert np.std(lam[0]) > 0.1    # every entry its own coefficient

  for per_dimension, positive_shape, negative_shape in (
      ("negative", (), (QUEUE_SIZE, PROJ_DIM)),
      ("both", (BATCH, PROJ_DIM), (QUEUE_SIZE, PROJ_DIM))):
    objective = MocoFT(ft_config(per_dimension=per_dimension), 1)
    shapes = jax.eval_shape(lambda rng: objective.draw_transform(rng, BATCH, PROJ_DIM),
                            jax.random.key(0))
    assert shapes.positive_weight.shape == positive_shape, per_dimension
    assert shapes.negative_weight.shape == negative_shape, per_dimension


@pytest.mark.parametrize("field, value, expected", [
    ("distribution", "gauss", r"distribution 'gauss' is not allowed.*'beta', 'uniform'"),
    ("per_dimension", "all", r"per_dimension 'all' .*'none', 'positive', 'negative', 'both'"),
    ("renormalize", "yes", r"renormalize 'yes' .*'none', 'positive', 'negative', 'both'"),
    ("positive_mode", "push", r"positive_mode 'push' .*'extrapolate', 'interpolate'"),
    ("symmetric", True, r"symmetric must be False"),
    ("positive_alpha", 0.0, r"Beta parameters must be > 0"),
    ("start_epoch", -1, r"start_epoch must be >= 0"),
])
def test_bad_options_fail_clearly(field, value, expected):
  with pytest.raises(ValueError, match=expected):
    MocoFT(ft_config(**{field: value}), 1)


# ---------------------------------------------------------------------- end to end, tiny ResNet

def random_variables(objective, seed: int):
  """Variables with the structure `objective.init` gives, filled with NumPy draws."""
  shapes = jax.eval_shape(functools.partial(objective.init, image_shape=IMAGE_SHAPE),
                          jax.random.key(0))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      values = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    elif name in ("scale", "var"):
      values = 1.0 + (0.1 * rng.normal(size=leaf.shape) if name == "scale" else 0.0)
    else:   # bias, mean
      values = (0.1 if name == "bias" else 0.0) * rng.normal(size=leaf.shape)
    return np.asarray(values, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def views(seed: int):
  rng = np.random.default_rng(seed)
  return tuple(rng.normal(size=(BATCH, *IMAGE_SHAPE)).astype(np.float32) for _ in range(2))


def projection(objective, params, batch_stats, images):
  outputs, _ = objective.network.apply({"params": params, "batch_stats": batch_stats}, images,
                                       train=True, mutable=["batch_stats"])
  return outputs["projection"]


def test_end_to_end_loss_metrics_queue_and_gradients():
  """One jit: the FT loss of the networks' projections against NumPy (with the draws the loss
  made), its score statistics, the queue after the step (exactly the key encoder's normalised
  keys of the batch, never mixed ones), and gradients (none into the key encoder)."""
  objective = MocoFT(ft_config(), 1)
  params, batch_stats = random_variables(objective, 0)
  other_params, _ = random_variables(objective, 1)
  target_params = {key: other_params[key] for key in objective.target_keys}
  target_batch_stats = {key: batch_stats[key] for key in objective.target_keys
                        if key in batch_stats}
  state = objective.init_objective_state(jax.random.key(5), BATCH)
  view_1, view_2 = views(0)
  rng = jax.random.key(11)

  @fast_jit
  def run():
    def loss_fn(params, target_params):
      return objective.loss(LossInputs(
          params=params, batch_stats=batch_stats, views=(view_1, view_2), rng=rng,
          step=jnp.asarray(3, jnp.int32), target_params=target_params,
          target_batch_stats=target_batch_stats, objective_state=state))

    (loss, aux), (grads, target_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(params, target_params)
    new_state = objective.update_objective_state(state, aux.extras)
    queries = projection(objective, params, batch_stats, view_1)
    keys = projection(objective, target_params, target_batch_stats, view_2)
    draws = objective.draw_transform(rng, BATCH, PROJ_DIM)
    return loss, aux, grads, target_grads, new_state, queries, keys, draws

  loss, aux, grads, target_grads, new_state, queries, keys, draws = run()
  q, k, queue = np_normalize(queries), np_normalize(keys), np.asarray(state["queue"])
  lam, mu = float(draws.positive_weight), float(draws.negative_weight)
  assert 1.0 <= lam <= 2.0 and 0.0 <= mu <= 1.0
  mixed = np_transform(q, k, queue, lam, mu, draws.queue_permutation)
  want_loss, want_accuracy = np_info_nce(*mixed, TEMPERATURE)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["contrastive_acc"], want_accuracy)
  assert abs(float(loss) - np_info_nce(q, k, queue, TEMPERATURE)[0]) > 1e-3   # FT changed it

  for stage, vectors in (("before", (q, k, queue)), ("after", mixed)):
    for name, value in np_statistics(*vectors).items():
      np.testing.assert_allclose(aux.metrics[f"ft_{name}_{stage}"], value, rtol=1e-4, atol=1e-6,
                                 err_msg=f"{name} {stage}")
  assert aux.metrics["ft_active"] == 1.0
  assert set(aux.metrics) == set(objective.metric_names)

  # The queue: the key encoder's normalised keys of the batch at the pointer, the rest untouched.
  np.testing.assert_allclose(new_state["queue"][:BATCH], k, atol=1e-6)
  np.testing.assert_array_equal(new_state["queue"][BATCH:], queue[BATCH:])
  assert int(new_state["queue_ptr"]) == BATCH
  k_mixed = mixed[1]
  assert np.min(np.abs(np.asarray(new_state["queue"][:BATCH]) - k_mixed).max(axis=1)) > 1e-3

  # Gradients: the query encoder gets them, the key encoder none (k' carries none into it).
  assert max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(grads)) > 0
  assert max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(target_grads)) == 0
  np.testing.assert_allclose(aux.projections, queries, rtol=1e-5, atol=1e-6)


def test_start_epoch_and_moco_v2_equivalence_with_shuffle_bn():
  """Before `start_epoch` full epochs (10 steps each here) the loss, keys and accuracy are MoCo
  v2's exactly, with the same shuffle-BN draw from the same rng; from that step on, FT mixes."""
  shuffle = dict(bn_mode="shuffle", bn_groups=4)
  late = MocoFT(ft_config(start_epoch=2, **shuffle), 1)
  assert late.start_step == 20
  moco = MocoV2(ft_config(**shuffle), 1)
  params, batch_stats = random_variables(moco, 2)
  other_params, _ = random_variables(moco, 3)
  target_params = {key: other_params[key] for key in moco.target_keys}
  target_batch_stats = {key: batch_stats[key] for key in moco.target_keys
                        if key in batch_stats}
  state = moco.init_objective_state(jax.random.key(6), BATCH)
  images = views(1)
  rng = jax.random.key(4)

  @fast_jit
  def run():
    def loss_at(objective, step):
      return objective.loss(LossInputs(
          params=params, batch_stats=batch_stats, views=images, rng=rng,
          step=jnp.asarray(step, jnp.int32), target_params=target_params,
          target_batch_stats=target_batch_stats, objective_state=state))
    return loss_at(moco, 19), loss_at(late, 19), loss_at(late, 20)

  (moco_loss, moco_aux), (before_loss, before_aux), (after_loss, after_aux) = run()
  np.testing.assert_allclose(before_loss, moco_loss, rtol=1e-6)
  np.testing.assert_allclose(before_aux.extras["keys"], moco_aux.extras["keys"], atol=1e-7)
  np.testing.assert_allclose(after_aux.extras["keys"], moco_aux.extras["keys"], atol=1e-7)
  assert before_aux.metrics["ft_active"] == 0.0 and after_aux.metrics["ft_active"] == 1.0
  for name in moco_ft.SCORE_STATISTICS:
    np.testing.assert_allclose(before_aux.metrics[f"ft_{name}_after"],
                               before_aux.metrics[f"ft_{name}_before"], rtol=1e-6)
  assert abs(float(after_loss) - float(moco_loss)) > 1e-3
  assert abs(float(after_aux.metrics["ft_pos_mean_after"])
             - float(after_aux.metrics["ft_pos_mean_before"])) > 1e-4


# -------------------------------------------------------------------------- registration, config

def test_registered_with_the_papers_config():
  assert OBJECTIVES["moco_ft"] is MocoFT
  assert plots.PLOTS["feature_transform_scores"] is feature_transform_scores.plot
  config = moco_ft_config.get_config("imagenet")
  ft = config.objective_config
  assert config.objective == "moco_ft"
  assert (ft.proj_hidden_dim, ft.proj_dim, ft.temperature, ft.queue_size) == (2048, 128, 0.2,
                                                                              65536)
  assert (ft.positive_alpha, ft.negative_alpha, ft.distribution, ft.positive_mode) == (
      2.0, 1.6, "beta", "extrapolate")
  assert (ft.per_dimension, ft.renormalize, ft.start_epoch) == ("none", "none", 0)
  assert ft.positive_transform and ft.negative_transform and not ft.stop_gradient_mixed_keys
  assert (config.optim.name, config.optim.base_lr, config.ema.tau_base) == ("sgd", 0.03, 0.999)


# ------------------------------------------------------------------------------------------ plot

def synthetic_metrics(with_ft: bool, start: int = 0) -> list[dict]:
  records = []
  for step in range(10, 110, 10):
    record = {"step": step, "loss": 5.0 - step / 100}
    if with_ft:
      for stage, shift in (("before", 0.0), ("after", -0.05)):
        record.update({f"ft_pos_mean_{stage}": 0.5 + step / 400 + shift,
                       f"ft_pos_var_{stage}": 0.01 + shift / 10,
                       f"ft_neg_mean_{stage}": 0.3 - step / 1000,
                       f"ft_neg_var_{stage}": 0.02 + step / 10_000})
      record["ft_active"] = float(step > start)
    records.append(record)
  return records


def test_plot_writes_a_png_and_skips_runs_without_ft(tmp_path):
  out_dir = str(tmp_path)
  assert feature_transform_scores.plot(synthetic_metrics(False), [], out_dir) == []
  assert feature_transform_scores.plot([], [], out_dir) == []
  assert os.listdir(out_dir) == []
  metrics = synthetic_metrics(True, start=40)
  assert feature_transform_scores._start_step(metrics) == 40   # log step 50 mixed all of 40..49
  metrics[4]["ft_active"] = 0.3   # 3 of the steps 40..49 mixed: the start was step 47
  assert feature_transform_scores._start_step(metrics) == pytest.approx(47)
  assert feature_transform_scores._start_step(synthetic_metrics(True)) is None
  paths = feature_transform_scores.plot(metrics, [], out_dir)
  assert paths == [os.path.join(out_dir, "feature_transform_scores.png")]
  with open(paths[0], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(paths[0]) > 10_000
  # Through the plot command's reader too: a run directory with metrics.jsonl.
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  with open(run_dir / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(record) + "\n" for record in synthetic_metrics(True))
  written = plots.write_plots(str(run_dir))
  assert str(run_dir / "plots" / "feature_transform_scores.png") in written
