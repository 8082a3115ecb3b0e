"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

No target network: both views go through the same online network, and the stop-gradient on the
projection of the other view is what prevents collapse.

Projector: `proj_layers` Linear layers (3 on ImageNet, 2 in the paper's CIFAR setup), hidden ones
Linear(no bias) -> BN -> ReLU, the last Linear -> BN without affine (the official code's last
Linear bias is frozen and cancelled by that BN, hence out_bias=False). Predictor: bottleneck
Linear(no bias) -> BN -> ReLU -> Linear(bias), hidden width `pred_hidden_dim`.

Loss: 0.5 * D(p1, sg(z2)) + 0.5 * D(p2, sg(z1)), with D(p, z) = -mean over the batch of cos(p, z).
The paper keeps the predictor's learning rate fixed at the peak ('fix lr', section 4.4): the
config sets `optim.predictor_schedule = 'constant'` for the 'predictor' optimiser group.

Options:
- `objective_config.stop_gradient` (default True). False is the paper's ablation (section 4.1,
  figure 2): gradients also flow through z, and the representation collapses.
- From the study of non-contrastive dynamics (Tian et al. 2021; ssl_jax/objectives/
  predictor_options.py): `objective_config.predictor` = 'mlp' (default) | 'linear',
  `objective_config.symmetric_predictor`, eigenspace tracking (`config.analysis_every_steps`),
  the predictor's own lr / weight decay (`config.optim.predictor_*`), and
  `config.ema.enabled = True`: an EMA target (backbone + projector, its own BN statistics, decay
  from `config.ema`) computes the stop-gradient branch z, making SimSiam a BYOL with SimSiam's
  heads and loss. Without it (the default) z comes from the online network itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.models import COMPUTE_DTYPES, MLP, SSLNetwork, build_training_backbone
from ssl_jax.objectives.base import LossInputs, LossOutput, Objective, PyTree
from ssl_jax.objectives.predictor_options import PredictorOptions


def negative_cosine(predictions: jax.Array, projections: jax.Array,
                    stop_gradient: bool = True) -> jax.Array:
  """D(p, z) = -mean_i cos(p_i, sg(z_i)): the projection branch gets no gradient (unless
  `stop_gradient=False`, the collapse ablation)."""
  if stop_gradient:
    projections = jax.lax.stop_gradient(projections)
  return -jnp.mean(losses.cosine_similarity(predictions, projections))


def simsiam_loss(predictions_1: jax.Array, predictions_2: jax.Array, projections_1: jax.Array,
                 projections_2: jax.Array, stop_gradient: bool = True) -> jax.Array:
  """SimSiam's symmetrised loss 0.5 * D(p1, z2) + 0.5 * D(p2, z1), in [-1, 1]."""
  return (0.5 * negative_cosine(predictions_1, projections_2, stop_gradient)
          + 0.5 * negative_cosine(predictions_2, projections_1, stop_gradient))


class SimSiam(Objective):
  """SimSiam: predictor on one branch, stop-gradient on the other (see the module docstring)."""

  uses_target = False   # per instance: True with config.ema.enabled

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    objective_config = config.objective_config
    proj_layers = int(objective_config.proj_layers)
    if proj_layers < 1:
      raise ValueError(f"SimSiam proj_layers must be >= 1 (number of Linear layers), got "
                       f"{proj_layers}")
    proj_dim = int(objective_config.proj_dim)
    self.stop_gradient = bool(objective_config.get("stop_gradient", True))
    ema_config = config.get("ema")
    self.uses_target = bool(ema_config.get("enabled", False)) if ema_config else False
    if self.uses_target and not self.stop_gradient:
      raise ValueError("SimSiam stop_gradient=False (the collapse ablation) needs ema.enabled="
                       "False: with an EMA target, z never receives a gradient anyway")
    self.predictor_options = PredictorOptions(config, "SimSiam")
    # Global-batch BN: the official code converts every BN to SyncBatchNorm.
    # Also validates config.model.dtype and conv_impl.
    backbone = build_training_backbone(config.model)
    dtype = COMPUTE_DTYPES[config.model.dtype]
    self.network = SSLNetwork(
        backbone=backbone,
        projector=MLP(hidden_dims=(int(objective_config.proj_hidden_dim),) * (proj_layers - 1),
                      out_dim=proj_dim, hidden_bias=False, hidden_bn=True, out_bias=False,
                      out_bn="no_affine", dtype=dtype),
        predictor=self.predictor_options.head(
            MLP(hidden_dims=(int(objective_config.pred_hidden_dim),), out_dim=proj_dim,
                hidden_bias=False, hidden_bn=True, out_bias=True, out_bn="none", dtype=dtype)),
    )

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    variables = self.network.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def init_objective_state(self, rng: jax.Array, global_batch_size: int) -> PyTree:
    del rng, global_batch_size
    return self.predictor_options.init_state()

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    views = inputs.views
    if len(views) < 2:
      raise ValueError(f"SimSiam needs 2 views per image, got {len(views)}")
    # Separate forward per view, as the official code (each view has its own BN statistics).
    outputs_1, batch_stats = self.train_forward(inputs.params, inputs.batch_stats, views[0])
    outputs_2, batch_stats = self.train_forward(inputs.params, batch_stats, views[1])
    if self.uses_target:
      # The EMA target (train-mode BN, its own statistics, no predictor) gives the z branch.
      target_1, target_batch_stats = self.target_forward(
          inputs.target_params, inputs.target_batch_stats, views[0], use_predictor=False)
      target_2, target_batch_stats = self.target_forward(
          inputs.target_params, target_batch_stats, views[1], use_predictor=False)
      projections_1, projections_2 = target_1["projection"], target_2["projection"]
    else:
      projections_1, projections_2 = outputs_1["projection"], outputs_2["projection"]
      target_batch_stats = {}
    loss = simsiam_loss(outputs_1["prediction"], outputs_2["prediction"],
                        projections_1, projections_2, self.stop_gradient)
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats=target_batch_stats,
        projections=outputs_1["projection"].astype(jnp.float32),
        extras=self.predictor_options.loss_extras(
            inputs.objective_state, (outputs_1["projection"], outputs_2["projection"])),
        metrics={},
    )

  def update_objective_state(self, objective_state: PyTree,
                             extras: dict[str, jax.Array]) -> PyTree:
    return self.predictor_options.update_state(objective_state, extras)

  def after_update(self, params: PyTree) -> PyTree:
    return self.predictor_options.symmetrize(params)

  def analysis(self, params: PyTree, objective_state: PyTree) -> dict:
    return self.predictor_options.analysis(params, objective_state)
