"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

Online network: backbone -> projector MLP (4096 hidden, BN, 256 out) -> predictor MLP (same shape).
Target network: an EMA of the online backbone + projector (no predictor), with its own BatchNorm
statistics. As in the official code, the target runs in training mode (BN uses batch statistics
and its forward updates the target's running statistics), and every view goes through each
network in its own forward pass, so each view is normalised with its own batch statistics.

Loss, as the official code (which sums both directions rather than averaging them):
  mean over the batch of [2 - 2 cos(p1, sg(z2')) + 2 - 2 cos(p2, sg(z1'))],
with p the online predictions and z' the target projections. The EMA decay follows the cosine
schedule in `ssl_jax/ema.py` (config.ema.schedule = 'cosine').

Options from the study of non-contrastive dynamics (Tian et al. 2021; ssl_jax/objectives/
predictor_options.py): `objective_config.predictor` = 'mlp' (default) | 'linear',
`objective_config.symmetric_predictor`, eigenspace tracking (`config.analysis_every_steps`), and,
in the engine, `config.ema.enabled = False` (tau = 0: the target is the online network of the
step, under stop-gradient) and the predictor's own lr / weight decay (`config.optim.predictor_*`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.models import COMPUTE_DTYPES, MLP, SSLNetwork, build_training_backbone
from ssl_jax.objectives.base import LossInputs, LossOutput, Objective, PyTree
from ssl_jax.objectives.predictor_options import PredictorOptions


def regression_loss(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-sample 2 - 2 cos(p, sg(z)) = ||normalize(p) - normalize(z)||^2, shape (N,)."""
  return 2.0 - 2.0 * losses.cosine_similarity(predictions, jax.lax.stop_gradient(targets))


def byol_loss(predictions_1: jax.Array, predictions_2: jax.Array,
              target_projections_1: jax.Array, target_projections_2: jax.Array) -> jax.Array:
  """BYOL's symmetrised loss: view 1's prediction regresses view 2's target projection and
  vice versa; summed over the two directions, averaged over the batch."""
  return jnp.mean(regression_loss(predictions_1, target_projections_2)
                  + regression_loss(predictions_2, target_projections_1))


class Byol(Objective):
  """BYOL: online network with predictor regresses an EMA target (see the module docstring)."""

  uses_target = True

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    objective_config = config.objective_config
    self.proj_dim = int(objective_config.proj_dim)
    # Global-batch BN everywhere: the official code uses cross-replica BN (bn_groups = 1).
    # Also validates config.model.dtype and conv_impl.
    backbone = build_training_backbone(config.model)
    self.dtype = COMPUTE_DTYPES[config.model.dtype]
    self.network = SSLNetwork(
        backbone=backbone,
        projector=MLP(hidden_dims=(int(objective_config.proj_hidden_dim),), out_dim=self.proj_dim,
                      hidden_bias=True, hidden_bn=True, out_bias=True, out_bn="none",
                      dtype=self.dtype),
        predictor=self._build_predictor(objective_config),
    )

  def _build_predictor(self, objective_config: ml_collections.ConfigDict) -> MLP | None:
    """Builds the online predictor head and what it needs (BYOL: its options). DirectPred
    overrides this: its predictor is set from F, not learned, so the network has none."""
    self.predictor_options = PredictorOptions(self.config, "BYOL")
    return self.predictor_options.head(
        MLP(hidden_dims=(int(objective_config.pred_hidden_dim),), out_dim=self.proj_dim,
            hidden_bias=True, hidden_bn=True, out_bias=True, out_bn="none", dtype=self.dtype))

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    variables = self.network.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def init_objective_state(self, rng: jax.Array, global_batch_size: int) -> PyTree:
    del rng, global_batch_size
    return self.predictor_options.init_state()

  def forward_views(self, params: PyTree, batch_stats: PyTree, target_params: PyTree,
                    target_batch_stats: PyTree, views: tuple[jax.Array, ...]):
    """Online and target outputs for both views: ((online_1, online_2), (target_1, target_2),
    batch_stats, target_batch_stats). Also used by DirectPred, which shares BYOL's networks."""
    if len(views) < 2:
      raise ValueError(f"{type(self).__name__} needs 2 views per image, got {len(views)}")
    view_1, view_2 = views[0], views[1]
    online_1, batch_stats = self.train_forward(params, batch_stats, view_1, use_predictor=True)
    online_2, batch_stats = self.train_forward(params, batch_stats, view_2, use_predictor=True)
    # The target has no predictor; use_predictor=False lets its params omit that group.
    target_1, target_batch_stats = self.target_forward(target_params, target_batch_stats, view_1,
                                                       use_predictor=False)
    target_2, target_batch_stats = self.target_forward(target_params, target_batch_stats, view_2,
                                                       use_predictor=False)
    return (online_1, online_2), (target_1, target_2), batch_stats, target_batch_stats

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    (online_1, online_2), (target_1, target_2), batch_stats, target_batch_stats = (
        self.forward_views(inputs.params, inputs.batch_stats, inputs.target_params,
                           inputs.target_batch_stats, inputs.views))
    loss = byol_loss(online_1["prediction"], online_2["prediction"],
                     target_1["projection"], target_2["projection"])
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats=target_batch_stats,
        projections=online_1["projection"].astype(jnp.float32),
        extras=self.predictor_options.loss_extras(
            inputs.objective_state, (online_1["projection"], online_2["projection"])),
        metrics={},
    )

  def update_objective_state(self, objective_state: PyTree,
                             extras: dict[str, jax.Array]) -> PyTree:
    return self.predictor_options.update_state(objective_state, extras)

  def after_update(self, params: PyTree) -> PyTree:
    return self.predictor_options.symmetrize(params)

  def analysis(self, params: PyTree, objective_state: PyTree) -> dict:
    return self.predictor_options.analysis(params, objective_state)
