"""VICReg: the loss against an independent NumPy (float64) computation, its statistics over the
global batch when the batch is sharded, and the objective end to end on a tiny ResNet.

(That VICReg trains, builds its configs and agrees on 8 and 1 devices is covered by the tests
that iterate over `OBJECTIVES`: test_tiny_jobs.py, test_configs_and_bad_input.py,
test_sharded_vs_single.py.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import vicreg as vicreg_config
from engine_helpers import fast_jit
from ssl_jax import sharding as sharding_lib
from ssl_jax.objectives import OBJECTIVES, LossInputs
from ssl_jax.objectives.vicreg import VicReg, vicreg_loss
from test_objectives import (IMAGE_SHAPE, apply_train, make_config, random_variables,
                             tree_max_abs, tree_max_abs_diff, views)

PAPER_WEIGHTS = dict(invariance_weight=25.0, variance_weight=25.0, covariance_weight=1.0)


def small_vicreg_config(**overrides) -> ml_collections.ConfigDict:
  fields = dict(proj_hidden_dim=16, proj_dim=8, proj_layers=3, **PAPER_WEIGHTS)
  fields.update(overrides)
  return make_config("vicreg", **fields)


def np_vicreg(z1, z2, invariance_weight, variance_weight, covariance_weight):
  """Written from the paper's definitions: (loss, invariance, variance, covariance) in float64."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)

  def variance(z):
    std = np.sqrt(z.var(axis=0, ddof=1) + 1e-4)
    return np.mean(np.maximum(0.0, 1.0 - std))

  def covariance(z):
    c = np.cov(z, rowvar=False)          # (d, d), normalised by N - 1
    off_diagonal = c - np.diag(np.diag(c))
    return np.sum(off_diagonal ** 2) / z.shape[1]

  invariance = np.mean((z1 - z2) ** 2)
  variance_mean = (variance(z1) + variance(z2)) / 2
  covariance_sum = covariance(z1) + covariance(z2)
  loss = (invariance_weight * invariance + variance_weight * variance_mean
          + covariance_weight * covariance_sum)
  return loss, invariance, variance_mean, covariance_sum


def correlated_embeddings(seed: int, batch: int, dim: int):
  """Two views' embeddings with correlated dimensions and stds on both sides of the hinge's 1."""
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(dim, dim)) * np.linspace(0.2, 1.5, dim)
  z1 = rng.normal(size=(batch, dim)) @ mixing + 3.0
  z2 = z1 + 0.3 * rng.normal(size=(batch, dim))
  return z1.astype(np.float32), z2.astype(np.float32)


@pytest.mark.parametrize("weights", [PAPER_WEIGHTS,
                                     dict(invariance_weight=1.0, variance_weight=0.0,
                                          covariance_weight=2.0)])
def test_vicreg_loss_matches_numpy(weights):
  z1, z2 = correlated_embeddings(0, batch=32, dim=12)
  got = fast_jit(functools.partial(vicreg_loss, **weights))(z1, z2)
  want = np_vicreg(z1, z2, **weights)
  for name, got_value, want_value in zip(("loss", "invariance", "variance", "covariance"), got,
                                         want):
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5, err_msg=name)
  # The case exercises all three terms: hinge active on some dimensions, not on others.
  std = z1.std(axis=0, ddof=1)
  assert std.min() < 1.0 < std.max()
  assert min(want[1:]) > 1e-3


def test_vicreg_loss_closed_forms():
  """Hadamard columns (zero mean, orthogonal, unbiased variance 8/7): identical views have no
  invariance, variance or covariance term; halving one view's scale gives a known hinge."""
  hadamard = np.array([[1.0]])
  for _ in range(3):
    hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
  z = hadamard[:, 1:5].astype(np.float32)
  loss, invariance, variance, covariance = fast_jit(
      functools.partial(vicreg_loss, **PAPER_WEIGHTS))(z, z)
  assert float(invariance) == 0.0
  np.testing.assert_allclose(covariance, 0.0, atol=1e-12)
  np.testing.assert_allclose(variance, 0.0, atol=1e-12)   # std = sqrt(8/7 + 1e-4) > 1
  _, invariance, variance, _ = fast_jit(functools.partial(vicreg_loss, **PAPER_WEIGHTS))(
      z, 0.5 * z)
  np.testing.assert_allclose(invariance, 0.25, rtol=1e-6)   # mean of (z / 2)^2 with z^2 = 1
  np.testing.assert_allclose(variance, 0.5 * (1 - np.sqrt(0.25 * 8 / 7 + 1e-4)), rtol=1e-5)


def test_variance_and_covariance_are_over_the_global_batch_when_sharded():
  """With the batch split over the 8 devices by the step's own sharding, the loss is still that
  of the whole batch, not an average of per-device losses (the official code all-gathers z)."""
  z1, z2 = correlated_embeddings(1, batch=32, dim=6)
  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)))
  assert mesh.size == 8
  sharding = sharding_lib.batch_sharding(mesh)
  loss_fn = jax.jit(functools.partial(vicreg_loss, **PAPER_WEIGHTS),
                    in_shardings=(sharding, sharding))
  got = loss_fn(jax.device_put(z1, sharding), jax.device_put(z2, sharding))
  want = np_vicreg(z1, z2, **PAPER_WEIGHTS)
  for got_value, want_value in zip(got, want):
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
  per_device = np.mean([np_vicreg(z1[i:i + 4], z2[i:i + 4], **PAPER_WEIGHTS)[0]
                        for i in range(0, 32, 4)])
  assert abs(per_device - want[0]) > 0.1 * want[0]   # the check can tell the two apart


def test_init_builds_the_papers_expander():
  """Hidden Linear layers with bias + BN + ReLU, a last Linear without bias and no last BN
  (ResNet-10 width 4 pools to 32 features)."""
  objective = VicReg(small_vicreg_config(), 1)
  params, batch_stats = jax.eval_shape(functools.partial(objective.init,
                                                         image_shape=IMAGE_SHAPE),
                                       jax.random.key(0))
  shapes = jax.tree.map(lambda leaf: leaf.shape, params)
  assert set(params) == {"backbone", "projector"}
  assert shapes["projector"] == {"hidden0_dense": {"kernel": (32, 16), "bias": (16,)},
                                 "hidden0_bn": {"scale": (16,), "bias": (16,)},
                                 "hidden1_dense": {"kernel": (16, 16), "bias": (16,)},
                                 "hidden1_bn": {"scale": (16,), "bias": (16,)},
                                 "output_dense": {"kernel": (16, 8)}}
  assert set(batch_stats["projector"]) == {"hidden0_bn", "hidden1_bn"}
  # One learning rate for every parameter (LARS leaves biases and BN parameters unadapted).
  assert set(jax.tree.leaves(objective.param_labels(params))) == {"default"}


def test_registered_with_the_papers_config_and_bad_values_rejected():
  assert OBJECTIVES["vicreg"] is VicReg
  config = vicreg_config.get_config("imagenet")
  assert (config.objective_config.proj_hidden_dim, config.objective_config.proj_dim,
          config.objective_config.proj_layers) == (8192, 8192, 3)
  assert {name: config.objective_config[name] for name in PAPER_WEIGHTS} == PAPER_WEIGHTS
  assert (config.optim.name, config.optim.base_lr, config.optim.weight_decay,
          config.optim.warmup_epochs, config.batch_size) == ("lars", 0.2, 1e-6, 10.0, 2048)
  assert config.optim.exclude_bias_and_norm and config.model.zero_init_residual
  assert config.augment.solarize_prob == (0.0, 0.2)   # BYOL's augmentation
  with pytest.raises(ValueError, match="proj_layers must be >= 1.*got 0"):
    VicReg(small_vicreg_config(proj_layers=0), 1)
  with pytest.raises(ValueError, match="variance_weight must be >= 0.*-1.0"):
    VicReg(small_vicreg_config(variance_weight=-1.0), 1)


def test_vicreg_end_to_end():
  """The loss is VICReg of the two views' projections from *separate* forward passes (each view
  with its own BN statistics), its metrics are the three terms, and the gradient reaches the
  backbone and the expander."""
  objective = VicReg(small_vicreg_config(), 1)
  params, batch_stats = random_variables(objective, seed=0)
  view_1, view_2 = views(1)

  @fast_jit
  def run():
    z1 = apply_train(objective, params, batch_stats, view_1)["projection"]
    z2 = apply_train(objective, params, batch_stats, view_2)["projection"]
    joint = apply_train(objective, params, batch_stats,
                        jnp.concatenate([view_1, view_2]))["projection"]

    def loss_fn(params):
      return objective.loss(LossInputs(params=params, batch_stats=batch_stats,
                                       views=(view_1, view_2), rng=jax.random.key(0),
                                       step=jnp.zeros([], jnp.int32)))

    return z1, z2, joint, jax.value_and_grad(loss_fn, has_aux=True)(params)

  z1, z2, joint, ((loss, aux), grads) = run()
  want_loss, want_invariance, want_variance, want_covariance = np_vicreg(z1, z2, **PAPER_WEIGHTS)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["vicreg_invariance"], want_invariance, rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["vicreg_variance"], want_variance, rtol=1e-4)
  np.testing.assert_allclose(aux.metrics["vicreg_covariance"], want_covariance, rtol=1e-4)
  batch = view_1.shape[0]
  joint_loss = np_vicreg(joint[:batch], joint[batch:], **PAPER_WEIGHTS)[0]
  assert abs(joint_loss - want_loss) > 1e-3 * want_loss   # the test can tell the two apart
  np.testing.assert_allclose(aux.projections, z1, rtol=1e-5, atol=1e-6)
  assert tree_max_abs(grads["backbone"]) > 0 and tree_max_abs(grads["projector"]) > 0
  assert aux.target_batch_stats == {} and aux.extras == {}
  assert tree_max_abs_diff(aux.batch_stats, batch_stats) > 0
