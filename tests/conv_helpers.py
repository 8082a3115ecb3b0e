"""Shared helpers of the CPU convolution tests (test_cpu_convolution.py,
test_cpu_weight_grad_kernel.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def random_normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def xla_convolution(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def sin_loss_gradient(convolution, strides, padding):
  """The jitted gradient (x, kernel) of a loss whose output gradient is not constant (sin), so
  every tap matters."""
  loss = lambda x_, kernel_: jnp.sum(jnp.sin(convolution(x_, kernel_, strides, padding)))
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def loss_gradients(convolution, x, kernel, strides, padding):
  return sin_loss_gradient(convolution, strides, padding)(x, kernel)
