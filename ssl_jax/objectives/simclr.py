"""SimCLR v1 (Chen, Kornblith, Norouzi, Hinton 2020, "A Simple Framework for Contrastive Learning
of Visual Representations").

No target network, no queue: both views go through the same online network and every sample is
contrasted against the rest of the *global* batch.

BatchNorm over the views (`objective_config.view_bn`): the official code concatenates the two
views along the batch and runs ONE forward pass (`model.py`: `tf.concat(features_list, 0)`), so
every BN normalises with statistics of all 2N images ('joint', the default); 'per_view' runs one
forward per view instead (each view with its own statistics, as BYOL / SimSiam / Barlow Twins).
With 'joint' the BN running statistics take one update per step, from all 2N images.

NT-Xent (paper eq. 1, official `objective.add_contrastive_loss`): the 2N l2-normalised
projections h of the two views form a (2N, 2N) cosine-similarity matrix divided by the
temperature; self-similarities are removed by subtracting a large constant (1e9, the official
LARGE_NUM) from the diagonal, not by dropping columns, so each anchor's softmax runs over its one
positive and 2N - 2 negatives. The loss is the cross-entropy of the positive, averaged over the
2N anchors (the paper's 1/(2N) sum over both orderings of each pair); `sum_both_directions=True`
gives the official code's `loss_a + loss_b` instead, exactly twice as large. Under LARS that is
not a no-op: for the adapted weights it halves the weight decay relative to the gradient, and it
doubles the steps of the unadapted BN parameters.

Projection head (official v1 `model_util.projection_head`, 'nonlinear' mode): every Linear
is followed by BN, so none has a bias; the hidden layers are Linear -> BN -> ReLU, the output
layer Linear -> BN with a scale but no offset (`center=False` in the TF code). `proj_layers` = 2
is v1's head (2048 -> 128 on ResNet-50); 1 is its 'linear' mode; 3 is SimCLR v2's.
The official head's kernels start from normal(0, 0.01); ours use the project's torch-style init:
each Linear feeds a BN, which removes the kernel's overall scale from the forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.typing import Dtype

from ssl_jax import losses
from ssl_jax.models import (COMPUTE_DTYPES, MLP, GroupedBatchNorm, SSLNetwork,
                            build_training_backbone)
from ssl_jax.objectives.base import LossInputs, LossOutput, Objective, PyTree

VIEW_BN_MODES = ("joint", "per_view")

# The official code's mask constant: exp(-1e9 / anything) underflows to exactly 0 in float32.
LARGE_NUM = 1e9


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float,
            sum_both_directions: bool = False) -> tuple[jax.Array, jax.Array]:
  """NT-Xent over a batch of positive pairs (z1[i], z2[i]); returns (loss, top-1 accuracy).

  Args:
    z1, z2: (N, d) projections of the two views (l2-normalised here, in float32).
    temperature: tau; logits are cosine similarities / tau.
    sum_both_directions: False = mean over the 2N anchors (paper eq. 1); True = the official
      code's sum of the view-1 and view-2 anchor means (2x the former).
  Returns:
    (loss, accuracy): accuracy is the fraction of the 2N anchors whose positive has the largest
    logit among its 2N - 1 candidates (the positive and the 2N - 2 negatives).
  """
  batch_size = z1.shape[0]
  h = jnp.concatenate([losses.l2_normalize(z1), losses.l2_normalize(z2)], axis=0)   # (2N, d)
  logits = jnp.matmul(h, h.T, precision=jax.lax.Precision.HIGHEST) / temperature
  logits = logits - LARGE_NUM * jnp.eye(2 * batch_size, dtype=logits.dtype)
  # Anchor i < N (view 1) has its positive at N + i (view 2), and anchor N + i at i.
  positives = jnp.concatenate([jnp.arange(batch_size) + batch_size, jnp.arange(batch_size)])
  per_anchor = optax.softmax_cross_entropy_with_integer_labels(logits, positives)
  loss = jnp.mean(per_anchor) * (2.0 if sum_both_directions else 1.0)
  accuracy = jnp.mean((jnp.argmax(logits, axis=1) == positives).astype(jnp.float32))
  return loss, accuracy


class SimClrProjector(nn.Module):
  """SimCLR's projection head (see the module docstring): `hidden_dims` Linear(no bias) -> BN ->
  ReLU layers, then Linear(no bias) -> BN with scale and no offset."""

  hidden_dims: Sequence[int]
  out_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = MLP(hidden_dims=self.hidden_dims, out_dim=self.out_dim, hidden_bias=False, hidden_bn=True,
            out_bias=False, out_bn="none", dtype=self.dtype, name="mlp")(x, train)
    x = GroupedBatchNorm(use_scale=True, use_bias=False, dtype=self.dtype, name="output_bn")(
        x, train)
    return x.astype(jnp.float32)


class SimClr(Objective):
  """SimCLR: NT-Xent between the two views over the global batch (see the module docstring)."""

  uses_target = False
  metric_names = ("contrastive_acc",)

  def __init__(self, config: ml_collections.ConfigDict, num_batch_shards: int):
    super().__init__(config, num_batch_shards)
    objective_config = config.objective_config
    proj_layers = int(objective_config.proj_layers)
    if proj_layers < 1:
      raise ValueError(f"SimCLR proj_layers must be >= 1 (number of Linear layers), got "
                       f"{proj_layers}")
    self.temperature = float(objective_config.temperature)
    if self.temperature <= 0:
      raise ValueError(f"SimCLR temperature must be > 0 (the paper uses 0.1 or 0.5), got "
                       f"{self.temperature}")
    self.sum_both_directions = bool(objective_config.sum_both_directions)
    self.view_bn = objective_config.view_bn
    if self.view_bn not in VIEW_BN_MODES:
      raise ValueError(f"unknown SimCLR view_bn {self.view_bn!r}; allowed: {list(VIEW_BN_MODES)}")
    # Global-batch BN: the official code's `global_bn` (cross-replica BN on TPU pods).
    # Also validates config.model.dtype and conv_impl.
    backbone = build_training_backbone(config.model)
    self.network = SSLNetwork(
        backbone=backbone,
        projector=SimClrProjector(
            hidden_dims=(int(objective_config.proj_hidden_dim),) * (proj_layers - 1),
            out_dim=int(objective_config.proj_dim), dtype=COMPUTE_DTYPES[config.model.dtype]),
    )

  def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> tuple[PyTree, PyTree]:
    variables = self.network.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return variables["params"], variables["batch_stats"]

  def _project(self, params: PyTree, batch_stats: PyTree,
               images: jax.Array) -> tuple[jax.Array, PyTree]:
    outputs, batch_stats = self.train_forward(params, batch_stats, images)
    return outputs["projection"], batch_stats

  def loss(self, inputs: LossInputs) -> tuple[jax.Array, LossOutput]:
    views, params, batch_stats = inputs.views, inputs.params, inputs.batch_stats
    if len(views) < 2:
      raise ValueError(f"SimCLR needs 2 views per image, got {len(views)}")
    view_1, view_2 = views[0], views[1]
    if self.view_bn == "joint":
      both, batch_stats = self._project(params, batch_stats,
                                        jnp.concatenate([view_1, view_2], axis=0))
      z1, z2 = both[:view_1.shape[0]], both[view_1.shape[0]:]
    else:
      z1, batch_stats = self._project(params, batch_stats, view_1)
      z2, batch_stats = self._project(params, batch_stats, view_2)
    loss, accuracy = nt_xent(z1, z2, self.temperature, self.sum_both_directions)
    return loss, LossOutput(
        batch_stats=batch_stats,
        target_batch_stats={},
        projections=z1.astype(jnp.float32),
        extras={},
        metrics={"contrastive_acc": accuracy},
    )
