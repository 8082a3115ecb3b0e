"""MoCo + intermediate-layer losses (Kaku, Upadhya, Razavian, NeurIPS 2021, "Intermediate Layers
Matter in Momentum Contrastive Self Supervised Learning").

The base is the paper's MoCo: the MoCo v1 single-Linear head (`MocoV1`; the official code builds
pl_bolts' MoCo with use_mlp=False), query = online network on view 1, key = EMA key encoder on
view 2, InfoNCE against the queue. On top of it, each of the four ResNet stage outputs of the
query encoder (with gradient) is matched to the same stage of the key encoder on the *other* view
(no gradient: the key encoder only moves by EMA), sample by sample. As the official
train_ssl_moco_mse.py / train_ssl_moco_btwins.py: q1..q4 come from encoder_q(img_1), k1..k4 from
encoder_k(img_2) under no_grad, and loss = cross-entropy + p1(q1, k1) + ... + p4(q4, k4).

Two objectives:
- 'moco_mse' (`MocoMse`): each stage map is average-pooled, kept spatial, to 16x16 (stages 1-2)
  and 4x4 (stages 3-4) (the official ResNet's AdaptiveAvgPool2d((16, 16)) / ((4, 4))), and the
  stage loss is lambda_i * mean squared error over all elements (nn.MSELoss), lambda_i = 0.25.
  The pooling has torch's adaptive_avg_pool2d semantics exactly (`adaptive_avg_pool_2d`), which
  also covers maps smaller than the target (bins then repeat input pixels).
- 'moco_bt' (`MocoBarlowTwins`): each stage map is globally average-pooled and fed to its own
  projector (in -> w -> w -> w: Linear without bias + BN + ReLU twice, then a bias-free Linear;
  w = 2048 in the paper), the same projector for the query and the key features. The projectors
  are ordinary online parameters ('stage_projectors'): trained by the optimiser through both
  branches (the key *features* are constants, the projector applied to them is not), never
  EMA-copied (they are not in `target_keys`) and not exported with the encoder. With
  c = BN_noaffine(z_q)^T BN_noaffine(z_k) / N over the global batch,
  stage loss = lambda * s * sum_i (1 - c_ii)^2 + lambda * s * sum_{i != j} c_ij^2,
  lambda = 5e-5 and s = 1/32 (the official `Projection`): lambda weights *both* terms, unlike
  Barlow Twins, where it only weights the off-diagonal one.

Where the official code leaves a choice open:
- The official DDP path un-shuffles the keys after shuffle-BN but not the stage maps (its runs
  were single-GPU, where no shuffle happens); here every key-encoder output is un-shuffled, so a
  query's stage is always compared with the key stage of the same image.
- The stage projectors' BatchNorms (and the BN_noaffine of the loss) use the global batch
  whatever `bn_mode` says, as Barlow Twins' statistics over the whole batch.
Total loss = InfoNCE + sum of the four stage losses; each weighted stage loss is logged as
'stageK_loss', the InfoNCE term as 'info_nce'. Only the asymmetric MoCo of the paper is provided.
"""

from __future__ import annotations

import abc

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import losses
from ssl_jax.models import COMPUTE_DTYPES, MLP
from ssl_jax.objectives.base import LossInputs, LossOutput, PyTree
from ssl_jax.objectives.moco_v1 import MocoV1
from ssl_jax.objectives.moco_v2 import contrastive_loss

NUM_STAGES = 4
# torch BatchNorm1d's default epsilon, for the affine-free BN of the Barlow-Twins stage loss.
BATCH_NORM_EPS = 1e-5
HIGHEST = jax.lax.Precision.HIGHEST


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) averaging weights of torch's adaptive_avg_pool along one axis: output i
  averages inputs [floor(i * in / out), ceil((i + 1) * in / out))."""
  matrix = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -(-((i + 1) * in_size) // out_size)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool_2d(x: jax.Array, output_size: int) -> jax.Array:
  """torch.nn.functional.adaptive_avg_pool2d(x, output_size) for NHWC maps, in float32.

  A bin is a rectangle with uniform weights, so pooling separates into one small matrix per
  spatial axis; HIGHEST precision keeps the averages exact on accelerators (no TF32/bf16 passes).
  """
  _, height, width, _ = x.shape
  rows = adaptive_pool_matrix(height, output_size)
  cols = adaptive_pool_matrix(width, output_size)
  return jnp.einsum("ih,nhwc,jw->nijc", rows, x.astype(jnp.float32), cols, precision=HIGHEST)


def stage_mse_losses(query_stages: Sequence[jax.Array], key_stages: Sequence[jax.Array],
                     pool_sizes: Sequence[int], weights: Sequence[float]) -> list[jax.Array]:
  """lambda_i * MSE(pool_i(q_i), pool_i(sg(k_i))) per stage (the mean over all elements)."""
  return [weight * jnp.mean(jnp.square(
              adaptive_avg_pool_2d(query, size)
              - jax.lax.stop_gradient(adaptive_avg_pool_2d(key, size))))
          for query, key, size, weight in zip(query_stages, key_stages, pool_sizes, weights)]


def batch_norm_no_affine(z: jax.Array, eps: float = BATCH_NORM_EPS) -> jax.Array:
  """Training-mode BatchNorm1d(affine=False) over the (global) batch: biased variance."""
  z = z.astype(jnp.float32)
  mean = jnp.mean(z, axis=0, keepdims=True)
  variance = jnp.mean(jnp.square(z - mean), axis=0, keepdims=True)
  return (z - mean) * jax.lax.rsqrt(variance + eps)


def kaku_barlow_twins_loss(z_query: jax.Array, z_key: jax.Array, weight: float,
                           scale: float) -> jax.Array:
  """The Kaku et al. stage loss on the (N, d) projector outputs of the two branches:
  weight * scale * [sum_i (1 - c_ii)^2 + sum_{i != j} c_ij^2], c = BN(z_q)^T BN(z_k) / N."""
  batch_size = z_query.shape[0]
  cross_correlation = jnp.matmul(batch_norm_no_affine(z_query).T, batch_norm_no_affine(z_key),
                                 precision=HIGHEST) / batch_size
  diagonal = jnp.diagonal(cross_correlation)
  on_diagonal = jnp.sum(jnp.square(1.0 - diagonal))
  off_diagonal_mask = 1.0 - jnp.eye(cross_correlation.shape[0], dtype=jnp.float32)
  off_diagonal = jnp.sum(jnp.square(cross_correlation) * off_diagonal_mask)
  return weight * scale * on_diagonal + weight * scale * off_diagonal


def global_avg_pool(stage: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (N, C) mean over space, in float32."""
  return jnp.mean(stage.astype(jnp.float32), axis=(1, 2))


class StageProjectors(nn.Module):
  """One Barlow-Twins projector per stage: Linear(no bias)-BN-ReLU, Linear(no bias)-BN-ReLU,
  Linear(no bias), all `width` wide (the official `Projection`; BN over the global batch)."""

  width: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled_stages: Sequence[jax.Array], train: bool) -> tuple[jax.Array, ...]:
    return tuple(
        MLP(hidden_dims=(self.width, self.width), out_dim=self.width, hidden_bias=False,
            hidden_bn=True, out_bias=False, out_bn="none", bn_groups=1, dtype=self.dtype,
            name=f"stage{index + 1}")(features, train)
        for index, features in enumerate(pooled_stages))


def _float_tuple(objective_config: ml_collections.ConfigDict, name: str) -> tuple[float, ...]:
  values = tuple(float(value) for value in objective_config[name])
  if len(values) != NUM_STAGES:
    raise ValueError(f"objective_config.{name} must give one value per ResNet stage "
                     f"({NUM_STAGES}), got {values}")
  return values


class MocoIntermediate(MocoV1):
  """MoCo (v1 head) + a loss between matching stages of query and key encoders; subclasses
  define `stage_losses`. See the module docstring."""

  metric_names = (("contrastive_acc", "info_nce")
                  + tuple(f"stage{index + 1}_loss" for index in range(NUM_STAGES)))

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    if self.symmetric:
      raise ValueError(f"objective {config.objective!r} follows the paper's asymmetric MoCo: "
                       f"objective_config.symmetric must be False")
    self.stage_weights = _float_tuple(config.objective_config, "stage_weights")

  @abc.abstractmethod
  def stage_losses(self, params: PyTree, batch_stats: PyTree, query_stages: Sequence[jax.Array],
                   key_stages: Sequence[jax.Array]) -> tuple[list[jax.Array], PyTree]:
    """(weighted loss of each stage, online batch_stats after any extra forward passes)."""

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    views, params, batch_stats = inputs.views, inputs.params, inputs.batch_stats
    if len(views) < 2:
      raise ValueError(f"MoCo needs 2 views per image, got {len(views)}")
    view_1, view_2 = views[0], views[1]
    # The same rng half as MocoV2's asymmetric loss shuffles view 2's keys with.
    _, shuffle_rng = jax.random.split(inputs.rng)
    network_variables = {"params": {key: params[key] for key in ("backbone", "projector")},
                         "batch_stats": {key: batch_stats[key] for key in batch_stats
                                         if key in ("backbone", "projector")}}
    query_outputs, mutated = self.network.apply(network_variables, view_1, train=True,
                                                mutable=["batch_stats"])
    batch_stats = {**batch_stats, **mutated["batch_stats"]}
    key_outputs, target_batch_stats = self.key_forward(inputs.target_params,
                                                       inputs.target_batch_stats, view_2,
                                                       shuffle_rng)
    keys = losses.l2_normalize(key_outputs["projection"])
    info_nce, accuracy = contrastive_loss(query_outputs["projection"], keys,
                                          inputs.objective_state["queue"], self.temperature)
    query_stages, key_stages = query_outputs["stages"], key_outputs["stages"]
    if len(query_stages) != NUM_STAGES:
      raise ValueError(f"intermediate-layer MoCo needs a backbone with {NUM_STAGES} stages, got "
                       f"{len(query_stages)}")
    stage_losses, batch_stats = self.stage_losses(params, batch_stats, query_stages, key_stages)
    loss = info_nce + sum(stage_losses)
    metrics = {"contrastive_acc": accuracy, "info_nce": info_nce}
    metrics.update({f"stage{index + 1}_loss": stage_loss
                    for index, stage_loss in enumerate(stage_losses)})
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats=target_batch_stats,
        projections=query_outputs["projection"].astype(jnp.float32),
        extras={"keys": keys},
        metrics=metrics,
    )


class MocoMse(MocoIntermediate):
  """'moco_mse': lambda_i * MSE between spatially pooled stage maps (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    self.pool_sizes = tuple(int(size) for size in config.objective_config.stage_pool_sizes)
    if len(self.pool_sizes) != NUM_STAGES or min(self.pool_sizes) < 1:
      raise ValueError(f"objective_config.stage_pool_sizes must give one positive size per "
                       f"ResNet stage ({NUM_STAGES}), got {self.pool_sizes}")

  def stage_losses(self, params, batch_stats, query_stages, key_stages):
    del params
    return stage_mse_losses(query_stages, key_stages, self.pool_sizes,
                            self.stage_weights), batch_stats


class MocoBarlowTwins(MocoIntermediate):
  """'moco_bt': Kaku et al.'s Barlow-Twins loss on projected, globally pooled stages."""

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    objective_config = config.objective_config
    self.loss_scale = float(objective_config.stage_loss_scale)
    self.stage_projectors = StageProjectors(width=int(objective_config.stage_proj_dim),
                                            dtype=COMPUTE_DTYPES[config.model.dtype])

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    # The network gets `rng` itself, so its initial weights are MoCo v1's for the same seed.
    outputs, variables = self.network.init_with_output(
        rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    stage_features = [jnp.zeros((1, stage.shape[-1]), jnp.float32)
                      for stage in outputs["stages"]]
    projector_variables = self.stage_projectors.init(jax.random.fold_in(rng, 1), stage_features,
                                                     train=False)
    return ({**variables["params"], "stage_projectors": projector_variables["params"]},
            {**variables["batch_stats"],
             "stage_projectors": projector_variables["batch_stats"]})

  def stage_losses(self, params, batch_stats, query_stages, key_stages):
    projector_variables = {"params": params["stage_projectors"],
                           "batch_stats": batch_stats["stage_projectors"]}
    projected = []
    # Two forward passes, as the official projector is called once per branch: each branch's
    # hidden BNs normalise with its own batch statistics.
    for stages in (query_stages, key_stages):
      z, mutated = self.stage_projectors.apply(
          projector_variables, [global_avg_pool(stage) for stage in stages], train=True,
          mutable=["batch_stats"])
      projector_variables = {**projector_variables, "batch_stats": mutated["batch_stats"]}
      projected.append(z)
    stage_losses = [kaku_barlow_twins_loss(z_query, z_key, weight, self.loss_scale)
                    for z_query, z_key, weight in zip(*projected, self.stage_weights)]
    return stage_losses, {**batch_stats, "stage_projectors": projector_variables["batch_stats"]}
