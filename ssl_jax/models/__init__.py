"""Models: ResNet and DenseNet backbones, MLP heads, the SSL network, and grouped (per-device)
BatchNorm."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.models import densenet as densenet_lib
from ssl_jax.models import resnet as resnet_lib
from ssl_jax.models.batch_norm import GroupedBatchNorm
from ssl_jax.models.bias_free_conv import ConvFunction
from ssl_jax.models.densenet import DENSENET_SPECS, DenseNet, densenet
from ssl_jax.models.heads import MLP
from ssl_jax.models.network import SSLNetwork
from ssl_jax.models.resnet import CONV_INITS, RESNET_SPECS, ResNet, resnet

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Every backbone name build_backbone accepts (an explicit list, not a registry).
BACKBONE_NAMES: tuple[str, ...] = tuple(RESNET_SPECS) + tuple(DENSENET_SPECS)

# The convolutions a backbone can train with (config.model.conv_impl): 'xla', the plain
# nn.Conv; 'cpu_native', ssl_jax.cpu's (same values, a faster weight gradient on CPU); 'auto',
# the CPU one in a single-process job on the CPU backend and the plain one elsewhere.
CONV_IMPLS = ("xla", "cpu_native", "auto")


def resolve_conv_impl(conv_impl: str) -> str:
  """'xla' or 'cpu_native': the convolution `conv_impl` names in this process ('auto' asks JAX
  for its default backend and process count, so the backends must be set up by then)."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"Unknown conv_impl {conv_impl!r}; allowed values: {list(CONV_IMPLS)}.")
  if conv_impl != "auto":
    return conv_impl
  # The CPU convolution is what single-process CPU training was measured and tested with; an
  # accelerator would get XLA's own rule from it anyway, and several processes stay plain.
  single_process_cpu = jax.default_backend() == "cpu" and jax.process_count() == 1
  return "cpu_native" if single_process_cpu else "xla"


def _convolution(conv_impl: str) -> ConvFunction | None:
  """The `conv_general_dilated` the backbone's convs apply (None: lax's)."""
  if resolve_conv_impl(conv_impl) == "xla":
    return None
  # Imported here: the models themselves never depend on the CPU package.
  from ssl_jax.cpu import convolution  # pylint: disable=import-outside-toplevel
  return convolution.conv_general_dilated


def _check_name(name: str) -> None:
  if name not in BACKBONE_NAMES:
    raise ValueError(f"Unknown backbone {name!r}; allowed names: {sorted(BACKBONE_NAMES)}.")


def build_backbone(model_config: ml_collections.ConfigDict, bn_groups: int = 1,
                   conv_impl: str = "xla") -> nn.Module:
  """Builds the backbone named by `model_config` (fields name, stem, width, dtype).

  Optional `zero_init_residual` and `conv_init` fields are honoured by the ResNets when the
  config has them (configs saved before they existed lack them).
  `conv_impl` (one of CONV_IMPLS) is the convolution it trains with; its params are the same
  whichever it is, so everything but a training step builds the plain model (the default).
  """
  if model_config.dtype not in COMPUTE_DTYPES:
    raise ValueError(f"Unknown model dtype {model_config.dtype!r}; expected one of "
                     f"{sorted(COMPUTE_DTYPES)}.")
  _check_name(model_config.name)
  dtype = COMPUTE_DTYPES[model_config.dtype]
  convolution = _convolution(conv_impl)
  conv_init = model_config.get("conv_init", "kaiming_normal_fan_out")
  if model_config.name in DENSENET_SPECS:
    if conv_init != "kaiming_normal_fan_out":
      raise ValueError(f"conv_init={conv_init!r} applies to the ResNets only; a DenseNet draws "
                       "its convs as torchvision's does, so leave conv_init at its default "
                       "'kaiming_normal_fan_out'.")
    return densenet(model_config.name, stem=model_config.stem, width=model_config.width,
                    dtype=dtype, bn_groups=bn_groups, conv_general_dilated=convolution)
  return resnet(model_config.name, stem=model_config.stem, width=model_config.width,
                dtype=dtype, bn_groups=bn_groups,
                zero_init_residual=model_config.get("zero_init_residual", False),
                conv_init=conv_init,
                conv_general_dilated=convolution)


def build_training_backbone(model_config: ml_collections.ConfigDict,
                            bn_groups: int = 1) -> nn.Module:
  """The backbone an objective trains: `build_backbone` with the convolution that
  `model_config.conv_impl` names (evaluation and export build the plain one). A model config
  written by hand without the field trains with 'auto', the configs' default."""
  return build_backbone(model_config, bn_groups,
                        conv_impl=model_config.get("conv_impl", "auto"))


def feature_dim(name: str, width: int = 64) -> int:
  """Dimension of `pooled` for a named backbone (resnet18: 512, resnet50: 2048, densenet121:
  1024 at width 64)."""
  _check_name(name)
  if name in DENSENET_SPECS:
    return densenet_lib.feature_dim(name, width)
  return resnet_lib.feature_dim(name, width)


__all__ = ["BACKBONE_NAMES", "COMPUTE_DTYPES", "CONV_IMPLS", "CONV_INITS", "DENSENET_SPECS",
           "DenseNet", "GroupedBatchNorm", "MLP", "RESNET_SPECS", "ResNet", "SSLNetwork",
           "build_backbone", "build_training_backbone", "densenet", "feature_dim", "resnet",
           "resolve_conv_impl"]
