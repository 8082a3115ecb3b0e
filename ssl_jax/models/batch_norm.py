"""BatchNorm whose batch statistics can be computed per group of the batch.

Under one global `jax.jit` with the batch sharded over the mesh's 'data' axis, a plain BatchNorm
reduces over the whole global batch, i.e. it is synchronised BN across devices for free. Some
methods want the opposite: MoCo's shuffle-BN and the per-GPU BN of the original PyTorch code
normalise each device's shard with that shard's own statistics. `GroupedBatchNorm(num_groups=G)`
reproduces that by splitting the batch into G contiguous equal groups and normalising each group
with its own mean and variance; with the batch sharded over G devices each group is exactly one
device's shard, so normalising needs no cross-device communication (only the channel-sized
running-statistics update is averaged over groups). G may also be any multiple of the number of
batch shards (several groups per device), and, under the project's Auto-axes mesh, a divisor of
it (XLA then reduces within the devices of a group); under an Explicit-axes mesh the reshape
into groups needs G to be a multiple of the number of batch shards.

Numerics follow torch.nn.BatchNorm: the biased batch variance normalises in training, the
unbiased one feeds the running variance, and statistics are kept in float32 whatever the
activation dtype, because bfloat16 means/variances lose too much precision.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer


class GroupedBatchNorm(nn.Module):
  """BatchNorm over the leading (batch) axis, with statistics per group of `num_groups`.

  Attributes:
    num_groups: 1 = statistics over the whole (global) batch; G > 1 = the batch is split into G
      contiguous equal groups, each normalised with its own statistics (per-device BN).
    use_scale: learn a per-channel scale ('scale' param).
    use_bias: learn a per-channel offset ('bias' param). Both False = BN without affine.
    momentum: flax convention, running = momentum * running + (1 - momentum) * batch; 0.9 equals
      torch's momentum=0.1.
    epsilon: added to the variance before the square root.
    scale_init: initialiser of the scale (zeros for the last BN of a residual block, optionally).
    bias_init: initialiser of the bias.
    dtype: output dtype; None keeps the input's dtype.

  Variables: params 'scale', 'bias' (C,) float32 when enabled; batch_stats 'mean', 'var' (C,)
  float32, initialised to 0 and 1 like torch.
  """

  num_groups: int = 1
  use_scale: bool = True
  use_bias: bool = True
  momentum: float = 0.9
  epsilon: float = 1e-5
  scale_init: Initializer = nn.initializers.ones
  bias_init: Initializer = nn.initializers.zeros
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Normalises `x` of shape (N, ..., C); train=True uses (and records) batch statistics."""
    num_channels = x.shape[-1]
    output_dtype = self.dtype if self.dtype is not None else x.dtype
    running_mean = self.variable("batch_stats", "mean",
                                 lambda: jnp.zeros((num_channels,), jnp.float32))
    running_var = self.variable("batch_stats", "var",
                                lambda: jnp.ones((num_channels,), jnp.float32))
    x32 = x.astype(jnp.float32)

    if train:
      batch_size = x.shape[0]
      if self.num_groups < 1 or batch_size % self.num_groups != 0:
        raise ValueError(
            f"GroupedBatchNorm: batch size {batch_size} is not divisible by num_groups="
            f"{self.num_groups}; per-device BN needs equal groups (one per device shard).")
      group_size = batch_size // self.num_groups
      # (G, N/G, ..., C): keeping the group axis first means the leading-axis sharding of x maps
      # one group to one device, so the reductions below are device-local.
      grouped = x32.reshape((self.num_groups, group_size) + x.shape[1:])
      reduce_axes = tuple(range(1, grouped.ndim - 1))
      values_per_channel = group_size * math.prod(x.shape[1:-1])
      if values_per_channel < 2 and not self.is_initializing():
        # Same refusal as torch: the unbiased variance of one value is undefined.
        raise ValueError(
            f"GroupedBatchNorm: needs more than 1 value per channel per group in training, got "
            f"{values_per_channel} (batch {batch_size}, num_groups {self.num_groups}, input shape "
            f"{x.shape}).")
      group_mean = jnp.mean(grouped, axis=reduce_axes, keepdims=True)
      # Two-pass (centred) variance: E[x^2] - E[x]^2 cancels badly when |mean| >> std.
      group_var = jnp.mean(jnp.square(grouped - group_mean), axis=reduce_axes, keepdims=True)

      if not self.is_initializing():
        # Averaging per-group statistics is what the per-device running stats would average to.
        stat_shape = (self.num_groups, num_channels)
        batch_mean = jnp.mean(group_mean.reshape(stat_shape), axis=0)
        bessel = values_per_channel / max(values_per_channel - 1, 1)
        batch_unbiased_var = jnp.mean(group_var.reshape(stat_shape), axis=0) * bessel
        running_mean.value = (self.momentum * running_mean.value
                              + (1.0 - self.momentum) * batch_mean)
        running_var.value = (self.momentum * running_var.value
                             + (1.0 - self.momentum) * batch_unbiased_var)
      mean, var = group_mean, group_var
    else:
      grouped = x32
      mean, var = running_mean.value, running_var.value

    # Fold scale into one multiplier so the full-size tensor sees one multiply and one add.
    multiplier = jax.lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      scale = self.param("scale", self.scale_init, (num_channels,), jnp.float32)
      multiplier = multiplier * scale
    offset = -mean * multiplier
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (num_channels,), jnp.float32)
      offset = offset + bias
    normalised = grouped * multiplier + offset
    return normalised.reshape(x.shape).astype(output_dtype)
