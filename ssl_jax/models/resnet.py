"""ResNet backbones in the torchvision layout, returning pooled and per-stage features.

The layout follows torchvision's ResNet so parameter counts match and public torch checkpoints can
be converted leaf by leaf: convolutions without bias, torch's explicit symmetric padding (not
'SAME', which pads stride-2 layers asymmetrically), the bottleneck's stride on its 3x3 conv
(ResNet v1.5), a 1x1-conv + BN projection shortcut whenever the shape changes, and kaiming-normal
(fan_out) initialisation of convolutions. There is no classifier: SSL heads sit on `pooled`.

`conv_init='torch_default'` draws the convolutions as torch's nn.Conv2d does when nobody
re-initialises them (uniform in +-1/sqrt(fan_in)), which is what lightly's ResNets start from.
Every conv here feeds a BatchNorm, so the forward pass ignores the kernel's scale, but an SGD
step turns a kernel by about lr / |w|^2, and torch's default has a 6x smaller |w|^2 than
kaiming-normal(fan_out) for a 3x3 conv with as many inputs as outputs: a 6x larger effective
learning rate for the backbone until weight decay brings the norms to equilibrium, which a run
of a few hundred steps never reaches (MoCo v2 on CIFAR-10 in docs/results.md).

Two stems:
- 'imagenet': 7x7 stride-2 conv + BN + ReLU + 3x3 stride-2 max-pool (224 px -> 56 px at stage 1);
- 'cifar':    3x3 stride-1 conv + BN + ReLU, no max-pool (the usual change for 32 px images).

The forward pass returns {'pooled': (N, C) float32, 'stages': (stage1, ..., stage4)}: probing and
intermediate-layer losses need the per-stage maps, not only the pooled vector.
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

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), an untruncated normal with
# std sqrt(2 / fan_out) ('normal' here is untruncated; flax's default convs would truncate).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch's nn.Conv2d default (kaiming_uniform_ with a=sqrt(5)): uniform in +-1/sqrt(fan_in), i.e.
# std 1/sqrt(3 fan_in).
torch_default_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# config.model.conv_init -> the ResNets' conv kernel initialiser.
CONV_INITS = {"kaiming_normal_fan_out": conv_kernel_init, "torch_default": torch_default_conv_init}

BOTTLENECK_EXPANSION = 4

# name -> (blocks per stage, block kind); an explicit table, not a registry.
RESNET_SPECS: dict[str, tuple[tuple[int, ...], str]] = {
    "resnet10": ((1, 1, 1, 1), "basic"),
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
    "resnet101": ((3, 4, 23, 3), "bottleneck"),
    "resnet152": ((3, 8, 36, 3), "bottleneck"),
    # He et al. 2016 (identity mappings), in the post-activation v1.5 layout above; with
    # width=128 it is the 'ResNet-200 (2x)' of SimCLR and BYOL.
    "resnet200": ((3, 24, 36, 3), "bottleneck"),
}


def _conv(features: int, kernel_size: int, stride: int, dtype: Dtype, name: str,
          conv_general_dilated: ConvFunction | None, conv_init: str) -> nn.Conv:
  if conv_init not in CONV_INITS:
    raise ValueError(f"Unknown conv_init {conv_init!r}; allowed values: {sorted(CONV_INITS)}.")
  return bias_free_conv(features, kernel_size, stride, dtype=dtype,
                        kernel_init=CONV_INITS[conv_init],
                        conv_general_dilated=conv_general_dilated, name=name)


class ResidualBlock(nn.Module):
  """A basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 x4) residual block.

  `width` is the block's inner width; the output has `width` channels for a basic block and
  4 * `width` for a bottleneck.
  """

  width: int
  stride: int
  kind: Literal["basic", "bottleneck"]
  bn_groups: int = 1
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  conv_general_dilated: ConvFunction | None = None
  conv_init: str = "kaiming_normal_fan_out"

  def _conv(self, features: int, kernel_size: int, stride: int, name: str) -> nn.Conv:
    return _conv(features, kernel_size, stride, self.dtype, name, self.conv_general_dilated,
                 self.conv_init)

  def _bn(self, name: str, zero_init: bool = False) -> GroupedBatchNorm:
    scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
    return GroupedBatchNorm(num_groups=self.bn_groups, scale_init=scale_init, dtype=self.dtype,
                            name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.kind == "basic":
      out_channels = self.width
      y = self._conv(self.width, 3, self.stride, "conv1")(x)
      y = nn.relu(self._bn("bn1")(y, train))
      y = self._conv(self.width, 3, 1, "conv2")(y)
      # Zero-init of the last BN's scale makes the block start as the identity (Goyal et al.).
      y = self._bn("bn2", zero_init=self.zero_init_residual)(y, train)
    elif self.kind == "bottleneck":
      out_channels = self.width * BOTTLENECK_EXPANSION
      y = self._conv(self.width, 1, 1, "conv1")(x)
      y = nn.relu(self._bn("bn1")(y, train))
      y = self._conv(self.width, 3, self.stride, "conv2")(y)  # v1.5: stride on the 3x3
      y = nn.relu(self._bn("bn2")(y, train))
      y = self._conv(out_channels, 1, 1, "conv3")(y)
      y = self._bn("bn3", zero_init=self.zero_init_residual)(y, train)
    else:
      raise ValueError(f"Unknown block kind {self.kind!r}; expected 'basic' or 'bottleneck'.")

    shortcut = x
    if self.stride != 1 or x.shape[-1] != out_channels:
      shortcut = self._conv(out_channels, 1, self.stride, "shortcut_conv")(x)
      shortcut = self._bn("shortcut_bn")(shortcut, train)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet backbone (no classifier). See the module docstring for the layout.

  Attributes:
    stage_sizes: number of blocks in each stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: 'basic' or 'bottleneck'.
    width: channels of stage 1 (stage i has width * 2**i; a bottleneck outputs 4x that).
    stem: 'imagenet' or 'cifar'.
    bn_groups: per-group BatchNorm statistics (see GroupedBatchNorm); 1 = global-batch BN.
    zero_init_residual: zero-initialise the scale of each block's last BN.
    dtype: compute dtype; params are always float32 and `pooled` is returned in float32.
    conv_general_dilated: the convolution every `nn.Conv` applies; None is
      `lax.conv_general_dilated`. Training may pass a faster one with the same values and params
      (`ssl_jax.models.build_backbone`, conv_impl); the params do not depend on it.
    conv_init: a key of CONV_INITS, how the convolutions' kernels are drawn.
  """

  stage_sizes: Sequence[int]
  block: Literal["basic", "bottleneck"]
  width: int = 64
  stem: Literal["imagenet", "cifar"] = "imagenet"
  bn_groups: int = 1
  zero_init_residual: bool = False
  dtype: Dtype = jnp.float32
  conv_general_dilated: ConvFunction | None = None
  conv_init: str = "kaiming_normal_fan_out"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array | tuple[jax.Array, ...]]:
    """Maps images (N, H, W, C) to {'pooled': (N, C_final) float32, 'stages': tuple of maps}."""
    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = _conv(self.width, 7, 2, self.dtype, "stem_conv", self.conv_general_dilated,
                self.conv_init)(x)
      x = GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype, name="stem_bn")(x, train)
      x = nn.relu(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "cifar":
      x = _conv(self.width, 3, 1, self.dtype, "stem_conv", self.conv_general_dilated,
                self.conv_init)(x)
      x = GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype, name="stem_bn")(x, train)
      x = nn.relu(x)
    else:
      raise ValueError(f"Unknown stem {self.stem!r}; expected 'imagenet' or 'cifar'.")

    stage_outputs = []
    for stage_index, num_blocks in enumerate(self.stage_sizes):
      for block_index in range(num_blocks):
        # Stage 1 keeps the stem's resolution; later stages halve it in their first block.
        stride = 2 if stage_index > 0 and block_index == 0 else 1
        x = ResidualBlock(width=self.width * 2**stage_index, stride=stride, kind=self.block,
                          bn_groups=self.bn_groups, zero_init_residual=self.zero_init_residual,
                          dtype=self.dtype, conv_general_dilated=self.conv_general_dilated,
                          conv_init=self.conv_init,
                          name=f"stage{stage_index + 1}_block{block_index}")(x, train)
      stage_outputs.append(x)

    # Pool in float32: a bfloat16 sum over H*W positions would lose precision.
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return {"pooled": pooled, "stages": tuple(stage_outputs)}


def _spec(name: str) -> tuple[tuple[int, ...], str]:
  if name not in RESNET_SPECS:
    raise ValueError(f"Unknown ResNet {name!r}; allowed names: {sorted(RESNET_SPECS)}.")
  return RESNET_SPECS[name]


def resnet(name: str, **kwargs) -> ResNet:
  """Builds a named ResNet (a key of RESNET_SPECS, e.g. 'resnet50'); kwargs go to ResNet."""
  stage_sizes, block = _spec(name)
  return ResNet(stage_sizes=stage_sizes, block=block, **kwargs)


def feature_dim(name: str, width: int = 64) -> int:
  """Dimension of `pooled` for a named ResNet (512 for resnet18, 2048 for resnet50 at width 64)."""
  stage_sizes, block = _spec(name)
  expansion = BOTTLENECK_EXPANSION if block == "bottleneck" else 1
  return width * 2**(len(stage_sizes) - 1) * expansion
