"""A training-time convolution for XLA:CPU: `nn.Conv`'s values, with a faster weight gradient.

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` that the backbones hand to
their `nn.Conv`s when `config.model.conv_impl` asks for it (`ssl_jax.models.build_backbone`).
The forward pass and the input gradient are exactly XLA's; params are the same whichever
convolution trained them, so encoders are always evaluated with the plain `nn.Conv`. It is a
`jax.custom_vjp`: reverse mode only (no jvp, jacfwd or Hessian-vector products), which is all
training needs.

On the CPU backend the weight gradient is computed one of two ways; other backends get XLA's
own rule (`lax.platform_dependent` picks the branch when the step is lowered).

- In a one-device CPU job, float32 layers whose output channels come in blocks of 64 (every
  ResNet layer) use a native kernel (`weight_grad_kernel`, an XLA FFI call) that reads x and the
  output gradient where they lie, with no transpose. It sums in another order than XLA, so it
  agrees with XLA to float32 rounding; it is deterministic.
- Everywhere else on CPU (several devices, bfloat16, other widths, no C++ compiler), it is the
  convolution XLA itself would compute, of the input with the output gradient, with the input
  transposed inside a `lax.cond`. XLA:CPU's Eigen convolution wants the activation operand batch
  innermost, (C, H, W, N); the transpose XLA inserts for that gets the elementwise chain that
  produced the activation (the previous BatchNorms, residual add, ReLU) fused into it, so the
  chain is re-computed reading several full tensors in transposed order instead of reading the
  stored activation once. `lax.optimization_barrier` cannot prevent that (XLA:CPU removes
  barriers before fusion), but a conditional's branches are separate computations: a branch
  receives the stored buffer, and the transpose is a plain copy. Both branches are the same
  transpose, so the result does not depend on the predicate, which only has to be unknown to the
  compiler. The gradients are bitwise those of XLA's own rule.

In a one-device process that transpose is done in two passes over tiles of one cache line
(`_tiled_batch_innermost`): XLA:CPU emits a transpose as one loop in the output's order, which
reads x with a stride of a whole image and uses one value of each cache line it fetches. Several
devices keep the single pass (see `_batch_innermost`). docs/performance.md has the current
figures and the benchmarks that measure them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.layout import Layout, with_layout_constraint

from ssl_jax.cpu import weight_grad_kernel

# Images and feature maps are NHWC, kernels HWIO (flax's layout).
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

Padding = tuple[tuple[int, int], ...]


def _convolve(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...],
              padding: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=_DIMENSION_NUMBERS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...],
           padding: Padding) -> jax.Array:
  """A 2-D convolution of NHWC `x` with an HWIO `kernel` (explicit padding per spatial axis)."""
  return _convolve(x, kernel, strides, padding)


def _is_plain_2d(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                 feature_group_count, batch_group_count, precision,
                 preferred_element_type) -> bool:
  """Whether a `lax.conv_general_dilated` call is one `conv2d` computes: 2-D, NHWC/HWIO,
  explicit padding, no dilation, no groups, default precision and output type."""
  if lhs.ndim != 4 or rhs.ndim != 4 or isinstance(padding, str) or dimension_numbers is None:
    return False
  ours = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSION_NUMBERS)
  return (lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == ours
          and all(d == 1 for d in (lhs_dilation or (1, 1)))
          and all(d == 1 for d in (rhs_dilation or (1, 1)))
          and feature_group_count == 1 and batch_group_count == 1
          and precision is None and preferred_element_type is None)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated`, for `nn.Conv(conv_general_dilated=...)`: the plain 2-D
  convolutions of the backbones go through `conv2d` (the module docstring), any other call is
  lax's own (same values either way)."""
  if _is_plain_2d(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                  feature_group_count, batch_group_count, precision, preferred_element_type):
    return conv2d(lhs, rhs, tuple(window_strides), tuple(tuple(pad) for pad in padding))
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)


def _conv2d_forward(x, kernel, strides, padding):
  return _convolve(x, kernel, strides, padding), (x, kernel)


def _xla_backward(x, kernel, output_grad, *, strides, padding):
  _, vjp = jax.vjp(lambda x_, kernel_: _convolve(x_, kernel_, strides, padding), x, kernel)
  return vjp(output_grad)


# Bytes in a cache line: the tile of the two-pass transpose.
_CACHE_LINE_BYTES = 64


def _values_per_line(x: jax.Array) -> int:
  return _CACHE_LINE_BYTES // x.dtype.itemsize


def _one_cpu_device() -> bool:
  """True when the whole job has one CPU device. `lax.platform_dependent` traces the CPU branch
  for every platform, and a process without a CPU backend (JAX_PLATFORMS=cuda) has none to
  count: that branch never runs there, so the answer does not matter."""
  try:
    return jax.device_count("cpu") == 1
  except RuntimeError:   # "Unknown backend cpu"
    return False


def _row_major(x: jax.Array) -> jax.Array:
  """x, stored row-major: without this, layout assignment turns a transpose into a relabelling
  of the layout and the two passes below fuse back into one."""
  return with_layout_constraint(x, Layout(tuple(range(x.ndim))))


def _batch_innermost(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (C, H, W, N): tiled (`_tiled_batch_innermost`) when the process has one CPU
  device and N and C are whole tiles, else one plain transpose.

  The layout constraint the tiled form needs is a custom call that XLA's SPMD partitioner does
  not see through: with the batch sharded over several devices it all-gathers x on every device
  (tests/test_cpu_convolution.py). So several devices (forced host devices, several processes)
  keep the plain transpose, and so does an N or C that is not a whole number of tiles (the RGB
  stem, small batches).
  """
  n, _, _, c = x.shape
  tile = _values_per_line(x)
  if _one_cpu_device() and n % tile == 0 and c % tile == 0:
    return _tiled_batch_innermost(x)
  return jnp.transpose(x, (3, 1, 2, 0))


def _tiled_batch_innermost(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (C, H, W, N), in two passes that each read and write whole cache lines.

  N and C (multiples of the tile) are cut into tiles of one cache line (16 float32 values).
  Pass 1 moves the batch tile innermost, (N1, N2, H, W, C1, C2) -> (N1, H, W, C1, C2, N2): each
  output row of N2 values gathers from N2 input rows that the next C2 outputs reuse while they
  are in L1. Pass 2 moves whole N2 rows (one line each) into place, (C1, C2, H, W, N1, N2).
  """
  n, h, w, c = x.shape
  tile = _values_per_line(x)
  tiles = x.reshape(n // tile, tile, h, w, c // tile, tile)
  batch_tile_innermost = _row_major(jnp.transpose(tiles, (0, 2, 3, 4, 5, 1)))
  return _row_major(jnp.transpose(batch_tile_innermost, (3, 4, 1, 2, 0, 5)).reshape(c, h, w, n))


def _native_weight_grad_applies(x: jax.Array, output_grad: jax.Array) -> bool:
  """Whether the native CPU kernel computes this weight gradient (`weight_grad_kernel`).

  Only in a one-device CPU job: XLA's partitioner cannot see inside the custom call, and with x
  sharded it would gather x and dy onto every device. An accelerator host also traces this
  branch (`platform_dependent` lowers only the accelerator's), so it does not build the kernel
  there; a step placed on that host's CPU takes the other way.
  """
  return (x.dtype == output_grad.dtype == jnp.float32
          and output_grad.shape[-1] % weight_grad_kernel.OUTPUT_CHANNEL_BLOCK == 0
          and jax.default_backend() == "cpu" and _one_cpu_device()
          and weight_grad_kernel.available())


def transposed_weight_grad(x: jax.Array, kernel: jax.Array, output_grad: jax.Array, *,
                           strides: tuple[int, ...], padding: Padding) -> jax.Array:
  """The weight gradient as XLA:CPU computes it (Eigen), with x transposed inside a conditional
  (the module docstring says why); bitwise XLA's own."""
  # Any value the compiler cannot fold will do; it is true unless that value is NaN, and either
  # way both branches return the same transpose. When the job has one CPU device it is read from
  # x alone, so the conditionals of two convolutions of one input (a downsampling block's conv1
  # and its shortcut) are identical and XLA merges them: x is transposed once. With several
  # devices x is sharded and reading one of its values would broadcast it, so the kernel's value
  # is read: free for a replicated (data-parallel) kernel; an FSDP-sharded one costs one scalar
  # all-reduce per convolution.
  source = x if _one_cpu_device() else kernel
  unknown_to_compiler = source[0, 0, 0, 0] == source[0, 0, 0, 0]
  x_batch_innermost = lax.cond(unknown_to_compiler, _batch_innermost, _batch_innermost, x)
  # dK[i, j, c, o] = sum over n, h, w of x[n, s*h + i - pad, s*w + j - pad, c] * dY[n, h, w, o]:
  # a convolution of x (batch axis C, contracted 'feature' axis N) with dY as the kernel
  # (spatial H_out x W_out, dilated by the forward stride), whose output spans the kernel window.
  window_padding = []
  for axis, (pad_low, _) in enumerate(padding):
    window = kernel.shape[axis]
    input_size, output_size = x.shape[1 + axis], output_grad.shape[1 + axis]
    window_padding.append(
        (pad_low, window + (output_size - 1) * strides[axis] - input_size - pad_low))
  kernel_grad = lax.conv_general_dilated(
      x_batch_innermost, jnp.transpose(output_grad, (1, 2, 0, 3)), (1, 1), window_padding,
      rhs_dilation=strides, dimension_numbers=_DIMENSION_NUMBERS)   # (C_in, kh, kw, C_out)
  return jnp.transpose(kernel_grad, (1, 2, 0, 3))


def _cpu_backward(x, kernel, output_grad, *, strides, padding):
  _, input_vjp = jax.vjp(lambda x_: _convolve(x_, kernel, strides, padding), x)
  (input_grad,) = input_vjp(output_grad)
  if _native_weight_grad_applies(x, output_grad):
    kernel_grad = weight_grad_kernel.weight_grad(x, output_grad, kernel.shape[:2], strides,
                                                 padding)
  else:
    kernel_grad = transposed_weight_grad(x, kernel, output_grad, strides=strides,
                                         padding=padding)
  return input_grad, kernel_grad


def _conv2d_backward(strides, padding, residuals, output_grad):
  x, kernel = residuals
  static = dict(strides=strides, padding=padding)
  return lax.platform_dependent(x, kernel, output_grad,
                                cpu=functools.partial(_cpu_backward, **static),
                                default=functools.partial(_xla_backward, **static))


conv2d.defvjp(_conv2d_forward, _conv2d_backward)
