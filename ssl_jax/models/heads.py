"""MLP heads: the projectors and predictors that sit on top of the backbone's pooled features.

One `MLP` covers every head used here: hidden layers Dense [-> BN] -> ReLU, then an output Dense
[-> BN]. The papers' configurations:

| head               | hidden_dims    | hidden_bias | hidden_bn | out_dim | out_bias | out_bn      |
|--------------------|----------------|-------------|-----------|---------|----------|-------------|
| MoCo v2 projector  | (2048,)        | True        | False     | 128     | True     | 'none'      |
| BYOL projector     | (4096,)        | True        | True      | 256     | True     | 'none'      |
| BYOL predictor     | (4096,)        | True        | True      | 256     | True     | 'none'      |
| SimSiam projector  | (2048, 2048)   | False       | True      | 2048    | False    | 'no_affine' |
| SimSiam predictor  | (512,)         | False       | True      | 2048    | True     | 'none'      |

SimSiam's projector ends in Linear -> BN(affine=False); the official code freezes that Linear's
bias (requires_grad=False), and an affine-free BN right after subtracts the batch mean, which
cancels any bias anyway, so out_bias=False is the faithful (and cheaper) equivalent.

Dense layers are initialised like torch's nn.Linear default (weights and bias uniform in
+-1/sqrt(fan_in)) because the papers' heads were trained with that initialisation, not with
flax's lecun-normal / zero-bias default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer

from ssl_jax.models.batch_norm import GroupedBatchNorm

# torch's kaiming_uniform_(a=sqrt(5)) on a Linear weight gives bound sqrt(3 * (1/3) / fan_in)
# = 1/sqrt(fan_in); variance_scaling(1/3, fan_in, uniform) gives exactly that bound.
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias_init(fan_in: int) -> Initializer:
  """torch nn.Linear's bias init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The bias shape alone does not reveal fan_in, so it is bound here from the layer's input.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


OUT_BN_CHOICES = ("none", "affine", "no_affine")


class MLP(nn.Module):
  """Projector / predictor MLP (see the module docstring for the papers' settings).

  Attributes:
    hidden_dims: widths of the hidden layers (may be empty: a single linear layer).
    out_dim: output width.
    hidden_bias: bias in the hidden Dense layers.
    hidden_bn: BatchNorm after each hidden Dense (before the ReLU).
    out_bias: bias in the output Dense.
    out_bn: 'none' | 'affine' | 'no_affine' BatchNorm after the output Dense.
    bn_groups: per-group BatchNorm statistics (see GroupedBatchNorm).
    dtype: compute dtype; params are float32 and the output is returned in float32.
  """

  hidden_dims: Sequence[int]
  out_dim: int
  hidden_bias: bool = True
  hidden_bn: bool = False
  out_bias: bool = True
  out_bn: Literal["none", "affine", "no_affine"] = "none"
  bn_groups: int = 1
  dtype: Dtype = jnp.float32

  def _dense(self, features: int, use_bias: bool, fan_in: int, name: str) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=torch_linear_kernel_init,
                    bias_init=torch_linear_bias_init(fan_in), name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps (N, D_in) features to (N, out_dim) float32."""
    if self.out_bn not in OUT_BN_CHOICES:
      raise ValueError(f"Unknown out_bn {self.out_bn!r}; expected one of {OUT_BN_CHOICES}.")
    for layer_index, hidden_dim in enumerate(self.hidden_dims):
      x = self._dense(hidden_dim, self.hidden_bias, x.shape[-1], f"hidden{layer_index}_dense")(x)
      if self.hidden_bn:
        x = GroupedBatchNorm(num_groups=self.bn_groups, dtype=self.dtype,
                             name=f"hidden{layer_index}_bn")(x, train)
      x = nn.relu(x)
    x = self._dense(self.out_dim, self.out_bias, x.shape[-1], "output_dense")(x)
    if self.out_bn != "none":
      affine = self.out_bn == "affine"
      x = GroupedBatchNorm(num_groups=self.bn_groups, use_scale=affine, use_bias=affine,
                           dtype=self.dtype, name="output_bn")(x, train)
    return x.astype(jnp.float32)
