"""MoCo v1 (He, Fan, Wu, Xie, Girshick 2020, "Momentum Contrast for Unsupervised Visual
Representation Learning").

Everything but the head is MoCo v2's machinery (`moco_v2.MocoV2`: EMA key encoder, queue of
negatives, InfoNCE, shuffle / per-device / global BN, the symmetric options): MoCo v2 only added
the MLP head, blur augmentation and the cosine schedule on top of v1. The v1 head is the
backbone's `fc` layer resized to the embedding: a single Linear(D, 128) with bias on the pooled
features, no hidden layer and no BN (section 3.3: "the output of the fc is L2-normalized"; the
official builder constructs the torchvision ResNet with num_classes=dim and only swaps the fc for
an MLP when --mlp is given).
"""

from __future__ import annotations

import ml_collections

from ssl_jax.models import MLP
from ssl_jax.objectives.moco_v2 import MocoV2


class MocoV1(MocoV2):
  """MoCo v1: MoCo v2 with the single-Linear head (see the module docstring)."""

  def build_projector(self, objective_config: ml_collections.ConfigDict, dtype) -> MLP:
    # MLP with no hidden layers is one Dense (torch nn.Linear initialisation) named
    # 'output_dense': exactly the fc of the paper's ResNet.
    del objective_config
    return MLP(hidden_dims=(), out_dim=self.proj_dim, out_bias=True, out_bn="none",
               bn_groups=self.bn_groups, dtype=dtype)
