"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

No target network: both views go through the same online network, and the stop-gradient on the
projection of the other view is what prevents collapse.

Projector: `proj_layers` Linear layers (3 on ImageNet, 2 in the paper's CIFAR setup), hidden ones
Linear(no bias) -> BN -> ReLU, the last Linear -> BN without affine (the official code's last
Linear bias is frozen and cancelled by that BN, hence out_bias=False). Predictor: bottleneck
Linear(no bias) -> BN -> ReLU -> Linear(bias), hidden width `pred_hidden_dim`.

Loss: 0.5 * D(p1, sg(z2)) + 0.5 * D(p2, sg(z1)), with D(p, z) = -mean over the batch of cos(p, z).
With `fix_predictor_lr`, the predictor is trained at the constant peak learning rate (the
paper's 'fix lr' for the predictor) through the 'constant_lr' optimiser group.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.models import COMPUTE_DTYPES, MLP, SSLNetwork, build_backbone
from ssl_jax.objectives.base import LossOutput, Objective, PyTree


def negative_cosine(predictions: jax.Array, projections: jax.Array) -> jax.Array:
  """D(p, z) = -mean_i cos(p_i, sg(z_i)): the projection branch gets no gradient."""
  return -jnp.mean(losses.cosine_similarity(predictions, jax.lax.stop_gradient(projections)))


def simsiam_loss(predictions_1: jax.Array, predictions_2: jax.Array, projections_1: jax.Array,
                 projections_2: jax.Array) -> jax.Array:
  """SimSiam's symmetrised loss 0.5 * D(p1, z2) + 0.5 * D(p2, z1), in [-1, 1]."""
  return (0.5 * negative_cosine(predictions_1, projections_2)
          + 0.5 * negative_cosine(predictions_2, projections_1))


class SimSiam(Objective):
  """SimSiam: predictor on one branch, stop-gradient on the other (see the module docstring)."""

  uses_target = False

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    objective_config = config.objective_config
    proj_layers = int(objective_config.proj_layers)
    if proj_layers < 1:
      raise ValueError(f"SimSiam proj_layers must be >= 1 (number of Linear layers), got "
                       f"{proj_layers}")
    proj_dim = int(objective_config.proj_dim)
    self.fix_predictor_lr = bool(objective_config.fix_predictor_lr)
    # Global-batch BN: the official code converts every BN to SyncBatchNorm.
    backbone = build_backbone(config.model, bn_groups=1)   # also validates config.model.dtype
    dtype = COMPUTE_DTYPES[config.model.dtype]
    self.network = SSLNetwork(
        backbone=backbone,
        projector=MLP(hidden_dims=(int(objective_config.proj_hidden_dim),) * (proj_layers - 1),
                      out_dim=proj_dim, hidden_bias=False, hidden_bn=True, out_bias=False,
                      out_bn="no_affine", dtype=dtype),
        predictor=MLP(hidden_dims=(int(objective_config.pred_hidden_dim),), out_dim=proj_dim,
                      hidden_bias=False, hidden_bn=True, out_bias=True, out_bn="none",
                      dtype=dtype),
    )

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    variables = self.network.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def _forward(self, params: PyTree, batch_stats: PyTree,
               images: jax.Array) -> tuple[dict[str, jax.Array], PyTree]:
    outputs, mutated = self.network.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"])
    return outputs, mutated["batch_stats"]

  def loss(self, params: PyTree, batch_stats: PyTree, target_params: PyTree,
           target_batch_stats: PyTree, objective_state: PyTree, views: tuple[jax.Array, ...],
           rng: jax.Array) -> tuple[jax.Array, LossOutput]:
    del target_params, target_batch_stats, objective_state, rng
    if len(views) < 2:
      raise ValueError(f"SimSiam needs 2 views per image, got {len(views)}")
    # Separate forward per view, as the official code (each view has its own BN statistics).
    outputs_1, batch_stats = self._forward(params, batch_stats, views[0])
    outputs_2, batch_stats = self._forward(params, batch_stats, views[1])
    loss = simsiam_loss(outputs_1["prediction"], outputs_2["prediction"],
                        outputs_1["projection"], outputs_2["projection"])
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats={},
        projections=outputs_1["projection"].astype(jnp.float32),
        extras={},
        metrics={},
    )

  def param_labels(self, params: PyTree) -> PyTree:
    """The predictor is the 'constant_lr' group when `fix_predictor_lr` (the paper's section 4.4
    and its ImageNet recipe); everything else follows the schedule."""
    return {
        group: jax.tree.map(
            lambda _, group=group: ("constant_lr" if group == "predictor"
                                    and self.fix_predictor_lr else "default"), subtree)
        for group, subtree in params.items()
    }
