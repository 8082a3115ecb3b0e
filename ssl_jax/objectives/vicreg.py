"""VICReg (Bardes, Ponce, LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning").

No target network and no stop-gradient: both views go through the same online network, each in
its own forward pass (each view normalised with its own BatchNorm statistics, as the official
code's two `self.backbone(...)` calls). The expander's embeddings z1, z2 (N, d) are compared by
three terms (paper section 3.1, official main_vicreg.py):

  invariance  s(z1, z2) = mean over the N x d entries of (z1 - z2)^2
  variance    v(z) = mean_j max(0, 1 - sqrt(Var(z_j) + 1e-4)),  Var over the batch, unbiased
  covariance  c(z) = sum_{i != j} C(z)_ij^2 / d,  C(z) = (z - mean)^T (z - mean) / (N - 1)

  L = 25 s(z1, z2) + 25 (v(z1) + v(z2)) / 2 + 1 (c(z1) + c(z2))

The variance term is averaged over the two branches and the covariance term summed, as the
official code computes them (the paper's eq. 6 writes both as sums); the 25 / 25 / 1 weights
were tuned with that code.

Variance and covariance are statistics of the *global* batch: the official code all-gathers z
from every GPU before computing them and divides by the global batch size minus one; under our
single jit the batch is global already, so the plain formulas are exact. The invariance term is a
mean, so per-device means averaged by data parallelism (the official code) equal the global one.

Expander (the paper's name for the projector; official `Projector`): the hidden layers Linear
(with bias) -> BN -> ReLU, the last one a plain Linear without bias (8192-8192-8192 on ImageNet).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.models import COMPUTE_DTYPES, MLP, SSLNetwork, build_training_backbone
from ssl_jax.objectives.base import LossInputs, LossOutput, Objective, PyTree

# The hinge's target std (gamma) and the epsilon under its square root (paper section 3.1).
VARIANCE_TARGET = 1.0
VARIANCE_EPSILON = 1e-4


def variance_term(z: jax.Array) -> jax.Array:
  """v(z): how far each dimension's std over the batch falls below VARIANCE_TARGET, averaged."""
  z = z.astype(jnp.float32)
  # jnp.var centres before squaring (E[z^2] - E[z]^2 would cancel badly when |mean| >> std).
  std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + VARIANCE_EPSILON)
  return jnp.mean(jax.nn.relu(VARIANCE_TARGET - std))


def covariance_term(z: jax.Array) -> jax.Array:
  """c(z): the sum of squared off-diagonal entries of z's (d, d) covariance matrix, over d."""
  z = z.astype(jnp.float32)
  batch_size, dim = z.shape
  centred = z - jnp.mean(z, axis=0, keepdims=True)
  # HIGHEST: accelerators would otherwise run this float32 matmul at reduced (bf16 / tf32)
  # precision, and the off-diagonal entries are small differences of large sums.
  covariance = jnp.matmul(centred.T, centred,
                          precision=jax.lax.Precision.HIGHEST) / (batch_size - 1)
  # Masking (rather than sum(C^2) - sum(diag^2)) avoids cancelling the variances on the diagonal
  # against a total of the same size.
  is_diagonal = jnp.eye(dim, dtype=bool)
  return jnp.sum(jnp.square(jnp.where(is_diagonal, 0.0, covariance))) / dim


def vicreg_loss(z1: jax.Array, z2: jax.Array, invariance_weight: float, variance_weight: float,
                covariance_weight: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(loss, invariance, variance, covariance) for (N, d) embeddings of the two views; the three
  terms unweighted, the variance averaged and the covariance summed over the two branches."""
  z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
  invariance = jnp.mean(jnp.square(z1 - z2))
  variance = 0.5 * (variance_term(z1) + variance_term(z2))
  covariance = covariance_term(z1) + covariance_term(z2)
  loss = (invariance_weight * invariance + variance_weight * variance
          + covariance_weight * covariance)
  return loss, invariance, variance, covariance


class VicReg(Objective):
  """VICReg: invariance between the views, variance and decorrelation within each."""

  uses_target = False
  metric_names = ("vicreg_invariance", "vicreg_variance", "vicreg_covariance")

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    objective_config = config.objective_config
    proj_layers = int(objective_config.proj_layers)
    if proj_layers < 1:
      raise ValueError(f"VICReg proj_layers must be >= 1 (number of Linear layers), got "
                       f"{proj_layers}")
    self.weights = {name: float(objective_config[name])
                    for name in ("invariance_weight", "variance_weight", "covariance_weight")}
    for name, weight in self.weights.items():
      if weight < 0:
        raise ValueError(f"VICReg {name} must be >= 0 (the paper uses 25 / 25 / 1), got {weight}")
    # Global-batch BN: the official code converts every BN to SyncBatchNorm.
    backbone = build_training_backbone(config.model)   # also validates config.model.dtype
    self.network = SSLNetwork(
        backbone=backbone,
        projector=MLP(hidden_dims=(int(objective_config.proj_hidden_dim),) * (proj_layers - 1),
                      out_dim=int(objective_config.proj_dim), hidden_bias=True, hidden_bn=True,
                      out_bias=False, out_bn="none", dtype=COMPUTE_DTYPES[config.model.dtype]),
    )

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    variables = self.network.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    views = inputs.views
    if len(views) < 2:
      raise ValueError(f"VICReg needs 2 views per image, got {len(views)}")
    outputs_1, batch_stats = self.train_forward(inputs.params, inputs.batch_stats, views[0])
    outputs_2, batch_stats = self.train_forward(inputs.params, batch_stats, views[1])
    z1, z2 = outputs_1["projection"], outputs_2["projection"]
    loss, invariance, variance, covariance = vicreg_loss(z1, z2, **self.weights)
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats={},
        projections=z1.astype(jnp.float32),
        extras={},
        metrics={"vicreg_invariance": invariance, "vicreg_variance": variance,
                 "vicreg_covariance": covariance},
    )
