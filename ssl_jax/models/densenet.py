"""DenseNet backbones in the torchvision layout, returning pooled and per-stage features.

torchvision's DenseNet-121 (Huang et al. 2017, the "BC" variant): a 7x7 stride-2 conv0 + norm0 +
ReLU + 3x3 stride-2 max-pool stem, then four dense blocks of (6, 12, 24, 16) layers with growth
rate 32. Each dense layer is BN-ReLU-1x1 conv (bn_size * growth = 128 channels) - BN-ReLU-3x3 conv
(growth channels) and appends its output to the concatenation of everything before it in the
block. Between blocks a transition (BN-ReLU-1x1 conv halving the channels - 2x2 average pool)
compresses and downsamples. After the last block: norm5, ReLU, global average pool (1024-d).
Convolutions have no bias and torch's symmetric padding, so a torch checkpoint converts leaf by
leaf; module names mirror torchvision's (conv0, norm0, denseblock1/denselayer1/norm1, ...,
transition1/conv, norm5).

`stages` are the feature maps at strides 4, 8, 16 and 32 (the resolutions of the ResNet's four
stages): the full concatenated output of dense blocks 1-3, and relu(norm5(block 4)) for the last.
We take the block outputs rather than the transition outputs because a transition's average pool
already moves to the next resolution and its 1x1 conv discards half the channels; the block
output is the richest map at each resolution, and per-layer probes then compare a DenseNet and a
ResNet at the same strides. The last stage is taken after norm5 + ReLU so that, as for the ResNet,
`pooled` is the spatial mean of the last stage.

Two stems as for the ResNet: 'imagenet' (above) and 'cifar' (3x3 stride-1 conv0, no max-pool).
`width` is the stem's output channels (torchvision's num_init_features, 64); the growth rate and
block sizes are fixed by the architecture's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from ssl_jax.models.batch_norm import GroupedBatchNorm
from ssl_jax.models.bias_free_conv import ConvFunction, bias_free_conv

# torchvision's DenseNet initialises convs with kaiming_normal_ in its default fan_in mode.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# name -> (layers per dense block, growth rate, bottleneck factor bn_size)
DENSENET_SPECS: dict[str, tuple[tuple[int, ...], int, int]] = {
    "densenet121": ((6, 12, 24, 16), 32, 4),
}


def _conv(features: int, kernel_size: int, stride: int, dtype: Dtype, name: str,
          conv_general_dilated: ConvFunction | None) -> nn.Conv:
  return bias_free_conv(features, kernel_size, stride, dtype=dtype, kernel_init=conv_kernel_init,
                        conv_general_dilated=conv_general_dilated, name=name)


class DenseLayer(nn.Module):
  """BN-ReLU-1x1 conv (bn_size * growth) - BN-ReLU-3x3 conv (growth); returns only the new maps."""

  growth_rate: int
  bn_size: int
  bn_groups: int = 1
  dtype: Dtype = jnp.float32
  conv_general_dilated: ConvFunction | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype, name="norm1")(x, train)
    y = _conv(self.bn_size * self.growth_rate, 1, 1, self.dtype, "conv1",
              self.conv_general_dilated)(nn.relu(y))
    y = GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype, name="norm2")(y, train)
    return _conv(self.growth_rate, 3, 1, self.dtype, "conv2", self.conv_general_dilated)(
        nn.relu(y))


class DenseBlock(nn.Module):
  """`num_layers` dense layers, each fed the concatenation of the block input and all earlier
  layers' outputs (in that order, as torch.cat(features, 1) does)."""

  num_layers: int
  growth_rate: int
  bn_size: int
  bn_groups: int = 1
  dtype: Dtype = jnp.float32
  conv_general_dilated: ConvFunction | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = [x]
    for layer_index in range(self.num_layers):
      concatenated = jnp.concatenate(features, axis=-1)
      features.append(DenseLayer(self.growth_rate, self.bn_size, self.bn_groups, self.dtype,
                                 conv_general_dilated=self.conv_general_dilated,
                                 name=f"denselayer{layer_index + 1}")(concatenated, train))
    return jnp.concatenate(features, axis=-1)


class Transition(nn.Module):
  """BN-ReLU-1x1 conv to `out_channels` - 2x2 stride-2 average pool."""

  out_channels: int
  bn_groups: int = 1
  dtype: Dtype = jnp.float32
  conv_general_dilated: ConvFunction | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype, name="norm")(x, train)
    y = _conv(self.out_channels, 1, 1, self.dtype, "conv", self.conv_general_dilated)(
        nn.relu(y))
    return nn.avg_pool(y, (2, 2), strides=(2, 2), padding="VALID")


class DenseNet(nn.Module):
  """DenseNet backbone (no classifier). See the module docstring for the layout and stages.

  Attributes:
    block_sizes: dense layers per block, e.g. (6, 12, 24, 16) for DenseNet-121.
    growth_rate: channels each dense layer adds.
    bn_size: bottleneck factor (the 1x1 conv outputs bn_size * growth_rate channels).
    width: channels of the stem (torchvision's num_init_features).
    stem: 'imagenet' or 'cifar'.
    bn_groups: per-group BatchNorm statistics (see GroupedBatchNorm); 1 = global-batch BN.
    dtype: compute dtype; params are always float32 and `pooled` is returned in float32.
    conv_general_dilated: the convolution every `nn.Conv` applies; None is
      `lax.conv_general_dilated`. Training may pass a faster one with the same values and params
      (`ssl_jax.models.build_backbone`, conv_impl); the params do not depend on it.
  """

  block_sizes: Sequence[int]
  growth_rate: int = 32
  bn_size: int = 4
  width: int = 64
  stem: Literal["imagenet", "cifar"] = "imagenet"
  bn_groups: int = 1
  dtype: Dtype = jnp.float32
  conv_general_dilated: ConvFunction | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array | tuple[jax.Array, ...]]:
    """Maps images (N, H, W, C) to {'pooled': (N, C_final) float32, 'stages': tuple of maps}."""
    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = _conv(self.width, 7, 2, self.dtype, "conv0", self.conv_general_dilated)(x)
      x = nn.relu(GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype, name="norm0")(
          x, train))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "cifar":
      x = _conv(self.width, 3, 1, self.dtype, "conv0", self.conv_general_dilated)(x)
      x = nn.relu(GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype, name="norm0")(
          x, train))
    else:
      raise ValueError(f"Unknown stem {self.stem!r}; expected 'imagenet' or 'cifar'.")

    stage_outputs = []
    for block_index, num_layers in enumerate(self.block_sizes):
      x = DenseBlock(num_layers, self.growth_rate, self.bn_size, self.bn_groups, self.dtype,
                     conv_general_dilated=self.conv_general_dilated,
                     name=f"denseblock{block_index + 1}")(x, train)
      if block_index < len(self.block_sizes) - 1:
        stage_outputs.append(x)
        # Compression 0.5, as in DenseNet-BC.
        x = Transition(x.shape[-1] // 2, self.bn_groups, self.dtype,
                       conv_general_dilated=self.conv_general_dilated,
                       name=f"transition{block_index + 1}")(x, train)
    x = nn.relu(GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype, name="norm5")(
        x, train))
    stage_outputs.append(x)

    # Pool in float32: a bfloat16 sum over H*W positions would lose precision.
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return {"pooled": pooled, "stages": tuple(stage_outputs)}


def _spec(name: str) -> tuple[tuple[int, ...], int, int]:
  if name not in DENSENET_SPECS:
    raise ValueError(f"Unknown DenseNet {name!r}; allowed names: {sorted(DENSENET_SPECS)}.")
  return DENSENET_SPECS[name]


def densenet(name: str, **kwargs) -> DenseNet:
  """Builds a named DenseNet ('densenet121'); kwargs go to DenseNet."""
  block_sizes, growth_rate, bn_size = _spec(name)
  return DenseNet(block_sizes=block_sizes, growth_rate=growth_rate, bn_size=bn_size, **kwargs)


def feature_dim(name: str, width: int = 64) -> int:
  """Dimension of `pooled` for a named DenseNet (1024 for densenet121 at width 64)."""
  block_sizes, growth_rate, _ = _spec(name)
  channels = width
  for block_index, num_layers in enumerate(block_sizes):
    channels += num_layers * growth_rate
    if block_index < len(block_sizes) - 1:
      channels //= 2
  return channels
