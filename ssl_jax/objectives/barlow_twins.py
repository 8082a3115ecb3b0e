"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny 2021, "Barlow Twins: Self-Supervised Learning
via Redundancy Reduction").

No target network and no stop-gradient: both views go through the same online network, each in
its own forward pass (so each view is normalised with its own BatchNorm statistics, as the
official code's two `self.backbone(...)` calls). The embeddings z1, z2 (N, d) are standardised
per dimension over the batch (BatchNorm without affine parameters, training mode: batch mean and
*biased* variance, epsilon 1e-5 as torch's BatchNorm1d), and their cross-correlation matrix

  C = BN(z1)^T BN(z2) / N                                         (paper eq. 2)

is pushed towards the identity:

  L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2,  lambda = 0.0051   (paper eq. 1)

BatchNorm statistics and N are those of the *global* batch: the official code converts every BN
(including this last affine-free one) to SyncBatchNorm, divides C by the global batch size and
all-reduces it; under our single jit the batch is global already, so the plain formula is exact.

Projector (official main.py): `proj_layers` Linear layers; the hidden ones Linear(no bias) -> BN
-> ReLU, the last one a plain Linear without bias (8192-8192-8192 on ImageNet).

Learning rate of biases and BN parameters (`objective_config.bias_lr_group`): the paper trains
them at 0.0048 x batch/256 while the weights get 0.2 x batch/256 (LARS adapts only the weights).
With `bias_lr_group=True` every 1-D leaf (BN scale and offset; the projector has no biases) goes
to the optimiser's 'bias_and_norm' group, whose lr is `optim.bias_and_norm_lr_multiplier` x the
schedule, and the config sets the multiplier to 0.0048 / 0.2 = 0.024. This matters: the loss
sums ~d^2 terms, so at the weights' rate the BN parameters, which LARS does not adapt, take
large steps, and a run's rounding differences (between device counts, say) grow until runs that
should agree diverge; at the paper's bias rate they stay at rounding level.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.models import COMPUTE_DTYPES, MLP, SSLNetwork, build_training_backbone
from ssl_jax.objectives.base import LossInputs, LossOutput, Objective, PyTree

# torch.nn.BatchNorm1d's default epsilon, used by the official code's affine-free BN on z.
BATCH_NORM_EPSILON = 1e-5


def batch_standardize(z: jax.Array, epsilon: float = BATCH_NORM_EPSILON) -> jax.Array:
  """Affine-free training-mode BatchNorm of (N, d) embeddings over the batch axis, in float32:
  (z - mean) / sqrt(biased variance + epsilon), as torch's BatchNorm1d(affine=False) in train mode.
  """
  z = z.astype(jnp.float32)
  mean = jnp.mean(z, axis=0, keepdims=True)
  # Two-pass (centred) variance: E[z^2] - E[z]^2 cancels badly when |mean| >> std.
  variance = jnp.mean(jnp.square(z - mean), axis=0, keepdims=True)
  return (z - mean) * jax.lax.rsqrt(variance + epsilon)


def cross_correlation(z1: jax.Array, z2: jax.Array,
                      epsilon: float = BATCH_NORM_EPSILON) -> jax.Array:
  """C = BN(z1)^T BN(z2) / N, the (d, d) cross-correlation of the two views' embeddings."""
  batch_size = z1.shape[0]
  # HIGHEST: accelerators would otherwise run this float32 matmul at reduced (bf16 / tf32)
  # precision, and C_ii must be resolved close to 1.
  return jnp.matmul(batch_standardize(z1, epsilon).T, batch_standardize(z2, epsilon),
                    precision=jax.lax.Precision.HIGHEST) / batch_size


def barlow_twins_loss(z1: jax.Array, z2: jax.Array, lambda_offdiag: float,
                      epsilon: float = BATCH_NORM_EPSILON
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(loss, on-diagonal term, off-diagonal term) for (N, d) embeddings of the two views.

  on = sum_i (1 - C_ii)^2, off = sum_{i != j} C_ij^2 (unweighted), loss = on + lambda * off.
  """
  c = cross_correlation(z1, z2, epsilon)
  diagonal = jnp.diagonal(c)
  on_diagonal = jnp.sum(jnp.square(1.0 - diagonal))
  # Masking (rather than sum(C^2) - sum(diag^2)) avoids cancelling the ~d on-diagonal squares
  # against a total of the same size.
  is_diagonal = jnp.eye(c.shape[0], dtype=bool)
  off_diagonal = jnp.sum(jnp.square(jnp.where(is_diagonal, 0.0, c)))
  return on_diagonal + lambda_offdiag * off_diagonal, on_diagonal, off_diagonal


class BarlowTwins(Objective):
  """Barlow Twins: cross-correlation of the two views' embeddings towards the identity."""

  uses_target = False
  metric_names = ("bt_on_diagonal", "bt_off_diagonal")

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    objective_config = config.objective_config
    proj_layers = int(objective_config.proj_layers)
    if proj_layers < 1:
      raise ValueError(f"Barlow Twins proj_layers must be >= 1 (number of Linear layers), got "
                       f"{proj_layers}")
    self.bias_lr_group = bool(objective_config.bias_lr_group)
    self.lambda_offdiag = float(objective_config.lambda_offdiag)
    if self.lambda_offdiag < 0:
      raise ValueError(f"Barlow Twins lambda_offdiag must be >= 0 (the paper uses 0.0051), got "
                       f"{self.lambda_offdiag}")
    # Global-batch BN: the official code converts every BN to SyncBatchNorm.
    # Also validates config.model.dtype and conv_impl.
    backbone = build_training_backbone(config.model)
    self.network = SSLNetwork(
        backbone=backbone,
        projector=MLP(hidden_dims=(int(objective_config.proj_hidden_dim),) * (proj_layers - 1),
                      out_dim=int(objective_config.proj_dim), hidden_bias=False, hidden_bn=True,
                      out_bias=False, out_bn="none", dtype=COMPUTE_DTYPES[config.model.dtype]),
    )

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    variables = self.network.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def param_labels(self, params: PyTree) -> PyTree:
    """With `bias_lr_group`, biases and BN parameters (the 1-D leaves, as the official code's
    `param.ndim == 1` split) form the 'bias_and_norm' group; else everything is 'default'."""
    if not self.bias_lr_group:
      return super().param_labels(params)
    return jax.tree.map(lambda leaf: "bias_and_norm" if len(leaf.shape) == 1 else "default",
                        params)

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    views = inputs.views
    if len(views) < 2:
      raise ValueError(f"Barlow Twins needs 2 views per image, got {len(views)}")
    outputs_1, batch_stats = self.train_forward(inputs.params, inputs.batch_stats, views[0])
    outputs_2, batch_stats = self.train_forward(inputs.params, batch_stats, views[1])
    z1, z2 = outputs_1["projection"], outputs_2["projection"]
    loss, on_diagonal, off_diagonal = barlow_twins_loss(z1, z2, self.lambda_offdiag)
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats={},
        projections=z1.astype(jnp.float32),
        extras={},
        metrics={"bt_on_diagonal": on_diagonal, "bt_off_diagonal": off_diagonal},
    )
