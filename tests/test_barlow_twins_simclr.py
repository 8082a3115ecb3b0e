"""Barlow Twins and SimCLR: each loss against NumPy on fixed inputs, closed-form cases, stated
invariances, the papers' projection heads, and the full objectives on a tiny ResNet (loss from the
networks' projections, BN over the views, gradient flow).

As in tests/test_objectives.py: ResNet-10 of width 4 on 16 px images, one jitted function per
test compiled at XLA's lowest CPU optimisation level, variables drawn in NumPy with the structure
of `Objective.init`, checks in NumPy (float64 references).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from engine_helpers import fast_jit
from ssl_jax.objectives import OBJECTIVES, LossInputs, build_objective
from ssl_jax.objectives.barlow_twins import BarlowTwins, barlow_twins_loss, cross_correlation
from ssl_jax.objectives.simclr import SimClr, nt_xent

IMAGE_SHAPE = (16, 16, 3)
BATCH = 8
BN_EPSILON = 1e-5   # torch BatchNorm1d's default, as in the official Barlow Twins code



def make_config(objective: str, **objective_config) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      objective=objective,
      model=dict(name="resnet10", stem="cifar", width=4, dtype="float32"),
      objective_config=objective_config,
  ))


def barlow_twins_config(**overrides) -> ml_collections.ConfigDict:
  fields = dict(proj_hidden_dim=16, proj_dim=8, proj_layers=3, lambda_offdiag=0.0051,
                bias_lr_group=True)
  fields.update(overrides)
  return make_config("barlow_twins", **fields)


def simclr_config(**overrides) -> ml_collections.ConfigDict:
  fields = dict(proj_hidden_dim=16, proj_dim=8, proj_layers=2, temperature=0.5,
                sum_both_directions=False, view_bn="joint")
  fields.update(overrides)
  return make_config("simclr", **fields)


def random_variables(objective, seed: int = 0):
  """Variables with `objective.init`'s structure (via eval_shape, not compiled), NumPy-filled."""
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


def views(seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return tuple(rng.normal(size=(BATCH, *IMAGE_SHAPE)).astype(np.float32) for _ in range(2))


def projections(objective, params, batch_stats, images):
  """Train-mode projections of one forward pass over `images`."""
  outputs, _ = objective.network.apply({"params": params, "batch_stats": batch_stats}, images,
                                       train=True, mutable=["batch_stats"])
  return outputs["projection"]


def tree_max_abs(tree) -> float:
  return max(float(np.max(np.abs(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


def tree_max_abs_diff(tree_a, tree_b) -> float:
  return tree_max_abs(jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), tree_a, tree_b))


# ------------------------------------------------------------------------- NumPy references


def np_batch_norm(z, epsilon=BN_EPSILON, unbiased=False):
  z = np.asarray(z, np.float64)
  variance = z.var(axis=0, ddof=1 if unbiased else 0)
  return (z - z.mean(axis=0)) / np.sqrt(variance + epsilon)


def np_barlow_twins(z1, z2, lambda_offdiag, epsilon=BN_EPSILON):
  """Written element by element: C_ij = sum_n a_ni b_nj / N, squared terms split by i == j."""
  a, b = np_batch_norm(z1, epsilon), np_batch_norm(z2, epsilon)
  n, d = a.shape
  on_diagonal = off_diagonal = 0.0
  for i in range(d):
    for j in range(d):
      c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
      if i == j:
        on_diagonal += (1.0 - c_ij) ** 2
      else:
        off_diagonal += c_ij ** 2
  return on_diagonal + lambda_offdiag * off_diagonal, on_diagonal, off_diagonal


def np_nt_xent(z1, z2, temperature):
  """Per anchor: softmax over its positive and the 2N - 2 other samples, self dropped from the
  candidate list (the opposite of the implementation's masking); returns (loss, accuracy)."""
  h = np.concatenate([z1, z2]).astype(np.float64)
  h /= np.linalg.norm(h, axis=1, keepdims=True)
  n = len(z1)
  losses, hits = [], []
  for anchor in range(2 * n):
    positive = (anchor + n) % (2 * n)
    candidates = [k for k in range(2 * n) if k != anchor]
    logits = np.array([h[anchor] @ h[k] for k in candidates]) / temperature
    log_normaliser = logits.max() + np.log(np.sum(np.exp(logits - logits.max())))
    losses.append(log_normaliser - logits[candidates.index(positive)])
    hits.append(candidates[int(np.argmax(logits))] == positive)
  assert len(candidates) == 2 * n - 1   # the positive and 2N - 2 negatives
  return np.mean(losses), np.mean(hits)


RNG = np.random.default_rng(0)
Z1, Z2 = (RNG.normal(size=(6, 5)).astype(np.float32) for _ in range(2))


# --------------------------------------------------------------------------- Barlow Twins loss


def test_cross_correlation_uses_biased_global_batch_statistics_and_epsilon():
  # Small spreads around large offsets: epsilon 1e-5 against variances ~1e-4 matters at the
  # percent level, and so does biased vs unbiased variance with N = 6.
  rng = np.random.default_rng(1)
  z1 = (3.0 + 0.01 * rng.normal(size=(6, 4))).astype(np.float32)
  z2 = (-2.0 + 0.01 * rng.normal(size=(6, 4))).astype(np.float32)
  got = np.asarray(fast_jit(cross_correlation)(z1, z2))
  want = np_batch_norm(z1).T @ np_batch_norm(z2) / 6
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # The reference is sharp enough to tell the official statistics from near misses.
  for near_miss in (np_batch_norm(z1, unbiased=True).T @ np_batch_norm(z2, unbiased=True) / 6,
                    np_batch_norm(z1, 0.0).T @ np_batch_norm(z2, 0.0) / 6):
    assert np.max(np.abs(near_miss - want)) > 100 * np.max(np.abs(got - want))


LAMBDAS = (0.0051, 1.0, 0.0)


def test_barlow_twins_loss_matches_numpy():
  got = fast_jit(lambda: [barlow_twins_loss(Z1, Z2, lambda_offdiag)
                          for lambda_offdiag in LAMBDAS])()
  for lambda_offdiag, (loss, on_diagonal, off_diagonal) in zip(LAMBDAS, got):
    want_loss, want_on, want_off = np_barlow_twins(Z1, Z2, lambda_offdiag)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(on_diagonal, want_on, rtol=1e-5)
    np.testing.assert_allclose(off_diagonal, want_off, rtol=1e-5)


def hadamard_columns() -> np.ndarray:
  """4 columns of an 8 x 8 Hadamard matrix: zero mean, variance 1, mutually orthogonal."""
  hadamard = np.array([[1.0]])
  for _ in range(3):
    hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
  return hadamard[:, 1:5].astype(np.float32)   # skip the constant column


def test_barlow_twins_closed_forms():
  """Hadamard columns give C = M / (1 + eps) for the column map M between the views, so both
  terms are known exactly."""
  z = hadamard_columns()
  d, shrink = 4, 1.0 / (1.0 + BN_EPSILON)
  cases = {
      "identical views": (z, d * (1 - shrink) ** 2, 0.0),
      "negated views": (-z, d * (1 + shrink) ** 2, 0.0),
      "dimensions swapped in pairs": (z[:, [1, 0, 3, 2]], d * 1.0, d * shrink ** 2),
  }
  got = fast_jit(lambda: {name: barlow_twins_loss(z, z2, 0.0051)
                          for name, (z2, _, _) in cases.items()})()
  for name, (_, want_on, want_off) in cases.items():
    loss, on_diagonal, off_diagonal = got[name]
    np.testing.assert_allclose(on_diagonal, want_on, rtol=1e-5, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(off_diagonal, want_off, rtol=1e-5, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(loss, want_on + 0.0051 * want_off, rtol=1e-5, atol=1e-9)


def test_barlow_twins_invariances():
  rng = np.random.default_rng(2)
  scale_1, scale_2 = rng.uniform(0.5, 3.0, size=(2, 5)).astype(np.float32)
  shift_1, shift_2 = rng.normal(scale=5.0, size=(2, 5)).astype(np.float32)
  rescaled_1, rescaled_2 = scale_1 * Z1 + shift_1, scale_2 * Z2 + shift_2
  permutation = rng.permutation(6)

  @fast_jit
  def losses():
    def loss(a, b, epsilon=BN_EPSILON):
      return barlow_twins_loss(a, b, 0.0051, epsilon)[0]
    return dict(base=loss(Z1, Z2), base_no_eps=loss(Z1, Z2, 0.0),
                rescaled=loss(rescaled_1, rescaled_2),
                rescaled_no_eps=loss(rescaled_1, rescaled_2, 0.0),
                swapped=loss(Z2, Z1), permuted=loss(Z1[permutation], Z2[permutation]),
                unpaired=loss(Z1, Z2[permutation]))

  got = {name: float(value) for name, value in losses().items()}
  # Without epsilon, BN makes the loss exactly invariant to a per-dimension positive affine map
  # of z; with the official epsilon only up to eps / variance.
  np.testing.assert_allclose(got["rescaled_no_eps"], got["base_no_eps"], rtol=1e-5)
  np.testing.assert_allclose(got["rescaled"], got["base"], rtol=1e-4)
  # Swapping the views transposes C, which leaves both terms unchanged.
  np.testing.assert_allclose(got["swapped"], got["base"], rtol=1e-5)
  # The same permutation of the samples in both views changes nothing...
  np.testing.assert_allclose(got["permuted"], got["base"], rtol=1e-5)
  # ... but breaking the pairing does.
  assert abs(got["unpaired"] - got["base"]) > 1e-2


# ------------------------------------------------------------------------------ NT-Xent loss

TEMPERATURES = (0.1, 0.5, 1.0)


def test_nt_xent_matches_numpy():
  # Noisy copies of the first view: most positives rank first, not all.
  noisy = Z1 + 0.8 * np.random.default_rng(3).normal(size=Z1.shape).astype(np.float32)

  @fast_jit
  def results():
    return ([nt_xent(Z1, Z2, temperature) for temperature in TEMPERATURES],
            [nt_xent(Z1, Z2, temperature, sum_both_directions=True)[0]
             for temperature in TEMPERATURES],
            nt_xent(Z1, noisy, 0.1))

  means, sums, (noisy_loss, noisy_accuracy) = results()
  for temperature, (loss, accuracy), summed in zip(TEMPERATURES, means, sums):
    want_loss, want_accuracy = np_nt_xent(Z1, Z2, temperature)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(accuracy, want_accuracy)
    # The official code's loss_a + loss_b is exactly twice the mean over the 2N anchors.
    np.testing.assert_allclose(summed, 2 * want_loss, rtol=1e-5)
  want_loss, want_accuracy = np_nt_xent(Z1, noisy, 0.1)
  assert 0 < want_accuracy < 1
  np.testing.assert_allclose(noisy_loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(noisy_accuracy, want_accuracy)


def test_nt_xent_closed_form_with_orthogonal_negatives():
  """Identical positives and mutually orthogonal samples: each anchor scores e^(1/tau) for its
  positive and e^0 = 1 for each of its 2N - 2 negatives, and itself not at all, so the loss is
  log(1 + (2N - 2) e^(-1/tau)) and every positive ranks first."""
  n = 4
  rng = np.random.default_rng(4)
  basis = np.eye(6, dtype=np.float32)[:n]
  z1 = basis * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)   # norms do not matter
  z2 = basis * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)
  got = fast_jit(lambda: [nt_xent(z1, z2, temperature) for temperature in TEMPERATURES])()
  for temperature, (loss, accuracy) in zip(TEMPERATURES, got):
    # atol: at tau = 0.1 the loss is ~3e-4, below float32 resolution of the logits' scale (10).
    np.testing.assert_allclose(loss, np.log1p((2 * n - 2) * np.exp(-1.0 / temperature)),
                               rtol=1e-5, atol=2e-6)
    assert accuracy == 1.0
  # Had the anchor's own similarity stayed among the candidates, the loss would be ~log 2.
  assert float(got[0][0]) < 1e-3


def test_nt_xent_invariances():
  rng = np.random.default_rng(5)
  row_scales = rng.uniform(0.1, 10.0, size=(2, 6, 1)).astype(np.float32)
  permutation = rng.permutation(6)

  @fast_jit
  def results():
    return dict(base=nt_xent(Z1, Z2, 0.2), swapped=nt_xent(Z2, Z1, 0.2),
                rescaled=nt_xent(Z1 * row_scales[0], Z2 * row_scales[1], 0.2),
                permuted=nt_xent(Z1[permutation], Z2[permutation], 0.2))

  got = results()
  loss, accuracy = got["base"]
  for name in ("swapped", "rescaled", "permuted"):
    # Symmetric in the two views; cosine similarity ignores each projection's norm; the pairs'
    # order does not matter.
    np.testing.assert_allclose(got[name][0], loss, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(got[name][1], accuracy, err_msg=name)


def test_pure_losses_have_gradients_for_both_views():
  """No stop-gradient in either loss: both views' projections receive gradient."""
  @fast_jit
  def gradients():
    return (jax.grad(lambda a, b: barlow_twins_loss(a, b, 0.0051)[0], argnums=(0, 1))(Z1, Z2),
            jax.grad(lambda a, b: nt_xent(a, b, 0.5)[0], argnums=(0, 1))(Z1, Z2))

  for grads in gradients():
    assert min(tree_max_abs(grad) for grad in grads) > 0


# ---------------------------------------------------------------------------- heads and config


def test_init_builds_the_papers_heads():
  """ResNet-10 width 4 pools to 32 features."""
  def param_shapes(objective):
    init_fn = functools.partial(objective.init, image_shape=IMAGE_SHAPE)
    params, batch_stats = jax.eval_shape(init_fn, jax.random.key(0))
    return (jax.tree.map(lambda leaf: leaf.shape, params),
            jax.tree.map(lambda leaf: leaf.shape, batch_stats))

  # Barlow Twins: bias-free Linear + BN + ReLU twice, then a plain bias-free Linear, no last BN.
  params, batch_stats = param_shapes(BarlowTwins(barlow_twins_config(), 1))
  assert set(params) == {"backbone", "projector"}
  assert params["projector"] == {"hidden0_dense": {"kernel": (32, 16)},
                                 "hidden0_bn": {"scale": (16,), "bias": (16,)},
                                 "hidden1_dense": {"kernel": (16, 16)},
                                 "hidden1_bn": {"scale": (16,), "bias": (16,)},
                                 "output_dense": {"kernel": (16, 8)}}
  assert set(batch_stats["projector"]) == {"hidden0_bn", "hidden1_bn"}

  # SimCLR v1: bias-free Linear + BN + ReLU, bias-free Linear + BN with a scale and no offset.
  params, batch_stats = param_shapes(SimClr(simclr_config(), 1))
  assert params["projector"] == {"mlp": {"hidden0_dense": {"kernel": (32, 16)},
                                         "hidden0_bn": {"scale": (16,), "bias": (16,)},
                                         "output_dense": {"kernel": (16, 8)}},
                                 "output_bn": {"scale": (8,)}}
  assert batch_stats["projector"]["output_bn"] == {"mean": (8,), "var": (8,)}


def test_barlow_twins_bias_and_norm_parameter_group():
  """bias_lr_group: every BN scale / offset (the 1-D leaves, backbone and projector) goes to the
  optimiser's 'bias_and_norm' group, whose lr the config sets to the paper's bias rate; kernels
  stay in 'default'. Off: everything is 'default'."""
  objective = BarlowTwins(barlow_twins_config(), 1)
  params = jax.eval_shape(functools.partial(objective.init, image_shape=IMAGE_SHAPE),
                          jax.random.key(0))[0]
  labels = objective.param_labels(params)
  leaves = jax.tree_util.tree_leaves_with_path(params)
  label_of = dict(jax.tree_util.tree_leaves_with_path(labels))
  kinds = {path[-1].key for path, _ in leaves}
  assert kinds == {"kernel", "scale", "bias"}
  for path, leaf in leaves:
    want = "default" if path[-1].key == "kernel" else "bias_and_norm"
    assert label_of[path] == want, jax.tree_util.keystr(path)
  assert {label_of[path] for path, _ in leaves if path[0].key == "projector"} == {
      "default", "bias_and_norm"}
  off = BarlowTwins(barlow_twins_config(bias_lr_group=False), 1).param_labels(params)
  assert set(jax.tree.leaves(off)) == {"default"}


def test_registered_and_bad_values_rejected():
  assert OBJECTIVES["barlow_twins"] is BarlowTwins and OBJECTIVES["simclr"] is SimClr
  assert isinstance(build_objective(simclr_config(), 1), SimClr)
  with pytest.raises(ValueError, match="proj_layers must be >= 1.*got 0"):
    BarlowTwins(barlow_twins_config(proj_layers=0), 1)
  with pytest.raises(ValueError, match="lambda_offdiag must be >= 0.*-0.1"):
    BarlowTwins(barlow_twins_config(lambda_offdiag=-0.1), 1)
  with pytest.raises(ValueError, match="temperature must be > 0.*got 0.0"):
    SimClr(simclr_config(temperature=0.0), 1)
  with pytest.raises(ValueError, match="view_bn 'shared'.*joint.*per_view"):
    SimClr(simclr_config(view_bn="shared"), 1)


# ----------------------------------------------------------------------- end to end, tiny model


def objective_loss_and_grads(objective, params, batch_stats, images):
  def loss_fn(params):
    return objective.loss(LossInputs(params=params, batch_stats=batch_stats, views=images,
                                     rng=jax.random.key(0), step=jnp.zeros([], jnp.int32)))
  return jax.value_and_grad(loss_fn, has_aux=True)(params)


def test_barlow_twins_end_to_end():
  """The loss is Barlow Twins of the two views' projections from *separate* forward passes (each
  view with its own BN statistics), its metrics are the two terms, and the gradient reaches the
  backbone and the projector."""
  objective = BarlowTwins(barlow_twins_config(), 1)
  params, batch_stats = random_variables(objective)
  view_1, view_2 = views(1)

  @fast_jit
  def run():
    z1 = projections(objective, params, batch_stats, view_1)
    z2 = projections(objective, params, batch_stats, view_2)
    joint = projections(objective, params, batch_stats, jnp.concatenate([view_1, view_2]))
    return z1, z2, joint, objective_loss_and_grads(objective, params, batch_stats,
                                                   (view_1, view_2))

  z1, z2, joint, ((loss, aux), grads) = run()
  want_loss, want_on, want_off = np_barlow_twins(z1, z2, 0.0051)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["bt_on_diagonal"], want_on, rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["bt_off_diagonal"], want_off, rtol=1e-4)
  joint_loss = np_barlow_twins(joint[:BATCH], joint[BATCH:], 0.0051)[0]
  assert abs(joint_loss - want_loss) > 1e-3 * want_loss   # the test can tell the two apart
  np.testing.assert_allclose(aux.projections, z1, rtol=1e-5, atol=1e-6)
  assert tree_max_abs(grads["backbone"]) > 0 and tree_max_abs(grads["projector"]) > 0
  assert aux.target_batch_stats == {}
  assert tree_max_abs_diff(aux.batch_stats, batch_stats) > 0


def test_simclr_end_to_end():
  """'joint' (the official code): one forward over both views, so BN statistics come from all 2N
  images; 'per_view': one forward per view. Either way the loss is NT-Xent of those projections,
  the accuracy metric matches NumPy, and the gradient reaches the backbone and the projector."""
  objectives = {mode: SimClr(simclr_config(view_bn=mode), 1) for mode in ("joint", "per_view")}
  params, batch_stats = random_variables(objectives["joint"])
  view_1, view_2 = views(2)

  @fast_jit
  def run():
    network = objectives["joint"]
    joint = projections(network, params, batch_stats, jnp.concatenate([view_1, view_2]))
    per_view = (projections(network, params, batch_stats, view_1),
                projections(network, params, batch_stats, view_2))
    results = {
        "joint": objective_loss_and_grads(objectives["joint"], params, batch_stats,
                                          (view_1, view_2)),
        # The gradient path is the same in both modes: the loss alone suffices here.
        "per_view": (objectives["per_view"].loss(LossInputs(
            params=params, batch_stats=batch_stats, views=(view_1, view_2),
            rng=jax.random.key(0), step=jnp.zeros([], jnp.int32))), None),
    }
    return (joint[:BATCH], joint[BATCH:]), per_view, results

  joint, per_view, results = run()
  for mode, (z1, z2) in (("joint", joint), ("per_view", per_view)):
    (loss, aux), grads = results[mode]
    want_loss, want_accuracy = np_nt_xent(z1, z2, 0.5)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4, err_msg=mode)
    np.testing.assert_allclose(aux.metrics["contrastive_acc"], want_accuracy, err_msg=mode)
    np.testing.assert_allclose(aux.projections, z1, rtol=1e-5, atol=1e-6, err_msg=mode)
    assert tree_max_abs_diff(aux.batch_stats, batch_stats) > 0
    if grads is not None:
      assert tree_max_abs(grads["backbone"]) > 0 and tree_max_abs(grads["projector"]) > 0
  # The two BN modes give different projections, so the checks above tell them apart.
  assert np.max(np.abs(np.asarray(joint[0]) - np.asarray(per_view[0]))) > 1e-3
