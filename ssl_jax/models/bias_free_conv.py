"""The backbones' convolution: flax's `nn.Conv` in torch's layout, bias-free with float32 params.

torch's padding is explicit and symmetric (kernel_size // 2 on each side), not 'SAME', which pads
stride-2 layers asymmetrically; with it and the same param names and shapes, torch checkpoints
convert leaf by leaf.

`conv_general_dilated` is the primitive the conv applies (None: `lax.conv_general_dilated`).
Training may hand in a faster one with the same values (`ssl_jax.models.build_backbone`,
`config.model.conv_impl`); the params do not depend on it, so a model trained with one is
evaluated with the plain conv.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer

ConvFunction = Callable[..., jax.Array]


def bias_free_conv(features: int, kernel_size: int, stride: int, *, dtype: Dtype,
                   kernel_init: Initializer, conv_general_dilated: ConvFunction | None,
                   name: str) -> nn.Conv:
  """A square bias-free `nn.Conv` with torch's symmetric padding and float32 params."""
  pad = kernel_size // 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init,
                 conv_general_dilated=conv_general_dilated, name=name)
