"""Models: ResNet backbones, MLP heads, the SSL network, and grouped (per-device) BatchNorm."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ssl_jax.models.batch_norm import GroupedBatchNorm
from ssl_jax.models.heads import MLP
from ssl_jax.models.network import SSLNetwork
from ssl_jax.models.resnet import RESNET_SPECS, ResNet, feature_dim, resnet

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_backbone(model_config: ml_collections.ConfigDict, bn_groups: int = 1) -> nn.Module:
  """Builds the backbone named by `model_config` (fields name, stem, width, dtype).

  An optional `zero_init_residual` field is honoured when the config has one.
  """
  if model_config.dtype not in COMPUTE_DTYPES:
    raise ValueError(f"Unknown model dtype {model_config.dtype!r}; expected one of "
                     f"{sorted(COMPUTE_DTYPES)}.")
  return resnet(model_config.name, stem=model_config.stem, width=model_config.width,
                dtype=COMPUTE_DTYPES[model_config.dtype], bn_groups=bn_groups,
                zero_init_residual=model_config.get("zero_init_residual", False))


__all__ = ["COMPUTE_DTYPES", "GroupedBatchNorm", "MLP", "RESNET_SPECS", "ResNet", "SSLNetwork",
           "build_backbone", "feature_dim", "resnet"]
