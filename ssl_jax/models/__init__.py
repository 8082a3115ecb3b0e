"""Models: ResNet and DenseNet backbones, MLP heads, the SSL network, and grouped (per-device)
BatchNorm."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ssl_jax.models import densenet as densenet_lib
from ssl_jax.models import resnet as resnet_lib
from ssl_jax.models.batch_norm import GroupedBatchNorm
from ssl_jax.models.densenet import DENSENET_SPECS, DenseNet, densenet
from ssl_jax.models.heads import MLP
from ssl_jax.models.network import SSLNetwork
from ssl_jax.models.resnet import RESNET_SPECS, ResNet, resnet

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Every backbone name build_backbone accepts (an explicit list, not a registry).
BACKBONE_NAMES: tuple[str, ...] = tuple(RESNET_SPECS) + tuple(DENSENET_SPECS)


def _check_name(name: str) -> None:
  if name not in BACKBONE_NAMES:
    raise ValueError(f"Unknown backbone {name!r}; allowed names: {sorted(BACKBONE_NAMES)}.")


def build_backbone(model_config: ml_collections.ConfigDict, bn_groups: int = 1) -> nn.Module:
  """Builds the backbone named by `model_config` (fields name, stem, width, dtype).

  An optional `zero_init_residual` field is honoured by the ResNets when the config has one.
  """
  if model_config.dtype not in COMPUTE_DTYPES:
    raise ValueError(f"Unknown model dtype {model_config.dtype!r}; expected one of "
                     f"{sorted(COMPUTE_DTYPES)}.")
  _check_name(model_config.name)
  dtype = COMPUTE_DTYPES[model_config.dtype]
  if model_config.name in DENSENET_SPECS:
    return densenet(model_config.name, stem=model_config.stem, width=model_config.width,
                    dtype=dtype, bn_groups=bn_groups)
  return resnet(model_config.name, stem=model_config.stem, width=model_config.width,
                dtype=dtype, bn_groups=bn_groups,
                zero_init_residual=model_config.get("zero_init_residual", False))


def feature_dim(name: str, width: int = 64) -> int:
  """Dimension of `pooled` for a named backbone (resnet18: 512, resnet50: 2048, densenet121:
  1024 at width 64)."""
  _check_name(name)
  if name in DENSENET_SPECS:
    return densenet_lib.feature_dim(name, width)
  return resnet_lib.feature_dim(name, width)


__all__ = ["BACKBONE_NAMES", "COMPUTE_DTYPES", "DENSENET_SPECS", "DenseNet", "GroupedBatchNorm",
           "MLP", "RESNET_SPECS", "ResNet", "SSLNetwork", "build_backbone", "densenet",
           "feature_dim", "resnet"]
