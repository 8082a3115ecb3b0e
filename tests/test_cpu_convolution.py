"""Tests of ssl_jax.cpu.convolution: the training-time convolution must be flax's, value and
gradient.

The reference is XLA's own convolution and its autodiff rule (`nn.Conv` and `lax`), over the
shapes the backbones use and the awkward ones (stride 2 on odd sizes, a 1x1 stride-2 shortcut
whose weight gradient needs negative padding, the 7x7 stride-2 ImageNet stem). The CPU weight
gradient only moves a transpose, so everything is compared bitwise. (In a one-device process,
float32 layers with output channels in blocks of 64 take the native kernel instead; none of
these shapes does: tests/test_cpu_weight_grad_kernel.py.)
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_jax.cpu.convolution import (_cpu_backward, _tiled_batch_innermost, _xla_backward,
                                     conv2d, conv_general_dilated)

from conv_helpers import loss_gradients, random_normal, xla_convolution

# (batch, size, in channels, out channels, kernel, stride)
SHAPES = [
    (4, 8, 5, 6, 3, 1),
    (4, 9, 5, 6, 3, 2),
    (4, 8, 5, 6, 1, 2),
    (2, 11, 3, 4, 7, 2),
    (1, 4, 2, 3, 3, 1),
    (16, 6, 16, 8, 3, 1),   # batch and input channels are whole tiles: the two-pass transpose
]


def operands(shape):
  batch, size, channels_in, channels_out, window, stride = shape
  x = random_normal(0, (batch, size, size, channels_in))
  kernel = random_normal(1, (window, window, channels_in, channels_out))
  pad = window // 2
  return x, kernel, (stride, stride), ((pad, pad), (pad, pad))


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_are_xla_autodiff_bitwise(shape):
  x, kernel, strides, padding = operands(shape)
  expected = loss_gradients(xla_convolution, x, kernel, strides, padding)
  got = loss_gradients(conv2d, x, kernel, strides, padding)
  for name, want, have in zip(("input", "kernel"), expected, got):
    assert have.shape == want.shape, name
    np.testing.assert_array_equal(np.asarray(have), np.asarray(want), err_msg=name)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_cpu_and_default_backward_agree_bitwise(shape):
  """The branch other backends get (XLA's rule) and the CPU branch, run side by side here."""
  x, kernel, strides, padding = operands(shape)
  output_grad = jnp.cos(xla_convolution(x, kernel, strides, padding))
  static = dict(strides=strides, padding=padding)
  cpu = jax.jit(lambda *a: _cpu_backward(*a, **static))(x, kernel, output_grad)
  default = jax.jit(lambda *a: _xla_backward(*a, **static))(x, kernel, output_grad)
  for have, want in zip(cpu, default):
    np.testing.assert_array_equal(np.asarray(have), np.asarray(want))


def test_cpu_step_takes_the_conditional_and_other_platforms_do_not():
  x, kernel, strides, padding = operands(SHAPES[0])
  # x is an argument: the predicate reads it, and a constant x would fold the conditional away.
  grad = jax.jit(jax.grad(lambda k, x_: jnp.sum(conv2d(x_, k, strides, padding) ** 2)))
  assert "conditional(" in grad.lower(kernel, x).compile().as_text()
  # Lowered (not compiled) per platform: for a GPU, platform_dependent has already picked XLA's
  # own rule, which needs no transpose; the CPU branch transposes both operands and the result.
  lowered = {platform: grad.trace(kernel, x).lower(lowering_platforms=(platform,)).as_text()
             for platform in ("cuda", "cpu")}
  assert lowered["cuda"].count("stablehlo.transpose") == 0
  assert lowered["cpu"].count("stablehlo.transpose") >= 3


@pytest.mark.parametrize("shape,dtype", [
    ((16, 3, 5, 32), jnp.float32), ((48, 2, 2, 48), jnp.float32), ((64, 2, 3, 32), jnp.float32),
    ((32, 4, 4, 64), jnp.bfloat16), ((64, 2, 3, 32), jnp.bfloat16)])
def test_tiled_batch_innermost_is_the_transpose(shape, dtype):
  """Tiles of one cache line: 16 float32 or 32 bfloat16 values of N and of C."""
  x = random_normal(3, shape).astype(dtype)
  have = jax.jit(_tiled_batch_innermost)(x)
  np.testing.assert_array_equal(np.asarray(have, np.float32),
                                np.asarray(jnp.transpose(x, (3, 1, 2, 0)), np.float32))


def test_one_device_weight_gradient_transposes_x_in_two_passes(one_device_process):
  """The tile-shaped intermediate is materialised: XLA did not fuse the passes back into one."""
  x, kernel, strides, padding = operands(SHAPES[-1])
  grad = jax.jit(jax.grad(lambda k, x_: jnp.sum(conv2d(x_, k, strides, padding) ** 2)))
  # x is (16, 6, 6, 16): pass 1 writes (N1, H, W, C1, C2, N2) = (1, 6, 6, 1, 16, 16) as the
  # output of its own loop, which pass 2 reads.
  pass_1 = re.compile(r"= f32\[1,6,6,1,16,16\]\{5,4,3,2,1,0\} fusion\(")
  assert pass_1.search(grad.lower(kernel, x).compile().as_text())
  assert ",16,16]" not in grad.lower(kernel, x[:8]).compile().as_text()   # 8: not a tile


def test_convolutions_of_one_input_share_its_transpose(one_device_process):
  """The conditional depends on x alone, so XLA merges those of two convolutions of the same
  input (a downsampling block's first conv and its 1x1 shortcut): x is transposed once."""
  x, kernel, strides, padding = operands(SHAPES[1])
  shortcut = random_normal(2, (1, 1) + kernel.shape[2:])
  loss = lambda k, s, x_: jnp.sum(jnp.sin(conv2d(x_, k, strides, padding)
                                          + conv2d(x_, s, strides, ((0, 0), (0, 0)))))
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  compiled = grad.lower(kernel, shortcut, x).compile().as_text()
  assert len(re.findall(r" conditional\(", compiled)) == 1


def test_gradient_lowers_for_gpu_in_a_process_without_cpu_backend(monkeypatch):
  """`platform_dependent` traces the CPU branch for every platform; with JAX_PLATFORMS=cuda there
  is no CPU backend to count devices on, and the trace must not fail on it."""
  x, kernel, strides, padding = operands(SHAPES[-1])
  grad = jax.jit(jax.grad(lambda k, x_: jnp.sum(conv2d(x_, k, strides, padding) ** 2)))

  def device_count(backend=None):
    raise RuntimeError(f"Unknown backend {backend}")

  monkeypatch.setattr(jax, "device_count", device_count)
  jax.clear_caches()
  try:
    lowered = grad.trace(kernel, x).lower(lowering_platforms=("cuda",)).as_text()
  finally:
    jax.clear_caches()
  assert "stablehlo.convolution" in lowered


@pytest.mark.parametrize("nan_in", ["kernel", "input"])
def test_nan_where_the_predicate_reads_gives_xla_gradients_too(nan_in, request):
  """The predicate reads x's first value in a one-device process and the kernel's with several
  devices (as here); a NaN there makes it false, and both branches are one transpose."""
  x, kernel, strides, padding = operands(SHAPES[0])
  if nan_in == "input":
    request.getfixturevalue("one_device_process")
    x = x.at[0, 0, 0, 0].set(jnp.nan)
  else:
    kernel = kernel.at[0, 0, 0, 0].set(jnp.nan)
  expected = loss_gradients(xla_convolution, x, kernel, strides, padding)
  got = loss_gradients(conv2d, x, kernel, strides, padding)
  for have, want in zip(got, expected):
    np.testing.assert_array_equal(np.asarray(have), np.asarray(want))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("window,stride", [(3, 1), (3, 2), (1, 2), (7, 2)])
def test_in_nn_conv_it_is_the_plain_conv(window, stride, dtype):
  """Handed to `nn.Conv`, it keeps the params (name, shape, init), the output and the gradients
  of the plain `nn.Conv` (bias-free, torch's padding, as the backbones build it)."""
  init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
  pad = window // 2
  build = lambda convolution: nn.Conv(
      6, (window, window), strides=(stride, stride), padding=((pad, pad),) * 2, use_bias=False,
      dtype=dtype, param_dtype=jnp.float32, kernel_init=init,
      conv_general_dilated=convolution)
  ours, plain = build(conv_general_dilated), build(None)
  x = random_normal(2, (2, 9, 9, 5))
  params = jax.jit(ours.init)(jax.random.key(0), x)
  plain_params = jax.jit(plain.init)(jax.random.key(0), x)
  assert jax.tree.structure(params) == jax.tree.structure(plain_params)
  np.testing.assert_array_equal(params["params"]["kernel"], plain_params["params"]["kernel"])
  have = jax.jit(ours.apply)(params, x)
  want = jax.jit(plain.apply)(plain_params, x)
  assert have.dtype == want.dtype == dtype
  np.testing.assert_array_equal(np.asarray(have, np.float32), np.asarray(want, np.float32))
  loss = lambda module: jax.jit(jax.grad(
      lambda p, x_: jnp.sum(jnp.sin(module.apply(p, x_).astype(jnp.float32))), argnums=(0, 1)))
  # float32: bitwise. bfloat16: to its rounding, as the backbones' convs were before they were
  # nn.Convs; XLA folds the plain weight gradient's cast to the float32 param into the
  # convolution, while the custom gradient is rounded to bfloat16 before the cast.
  relative_tolerance = 0.0 if dtype == jnp.float32 else 2.0**-7
  for have_grad, want_grad in zip(jax.tree.leaves(loss(ours)(params, x)),
                                  jax.tree.leaves(loss(plain)(plain_params, x))):
    want_grad = np.asarray(want_grad, np.float32)
    np.testing.assert_allclose(np.asarray(have_grad, np.float32), want_grad, rtol=0,
                               atol=relative_tolerance * np.abs(want_grad).max())
  # It did take the custom gradient: a custom_vjp, which has no forward mode (training needs none;
  # everything else uses the plain conv).
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(lambda x_: ours.apply(params, x_), (x,), (x,))


@pytest.mark.parametrize("options", [
    dict(rhs_dilation=(2, 2)), dict(lhs_dilation=(2, 1)), dict(feature_group_count=2),
    dict(precision=lax.Precision.HIGHEST)])
def test_convolutions_it_does_not_cover_are_laxs_own(options):
  """Only the backbones' plain convolutions take the custom gradient; any other is lax's,
  forward-mode autodiff included."""
  x, kernel = random_normal(0, (2, 7, 7, 4)), random_normal(1, (3, 3, 2, 6))
  if options.get("feature_group_count") is None:
    kernel = random_normal(1, (3, 3, 4, 6))
  arguments = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)),
                   dimension_numbers=("NHWC", "HWIO", "NHWC"), **options)
  want = lax.conv_general_dilated(x, kernel, **arguments)
  have = conv_general_dilated(x, kernel, **arguments)
  np.testing.assert_array_equal(np.asarray(have), np.asarray(want))
  _, tangent = jax.jvp(lambda k: conv_general_dilated(x, k, **arguments), (kernel,), (kernel,))
  np.testing.assert_array_equal(np.asarray(tangent), np.asarray(want))   # linear in the kernel


def test_batch_sharded_gradients_match_one_device():
  """Under the data-parallel layout the conditional runs per shard; the gradient is all-reduced,
  and x is never gathered (the tiled transpose's layout constraint would gather it, so several
  devices get the plain transpose)."""
  x, kernel, strides, padding = operands((128, 6, 16, 6, 3, 1))   # 16 a shard: whole tiles
  devices = jax.devices()
  assert len(devices) == 8
  mesh = Mesh(np.array(devices), ("data",))
  loss = lambda x_, kernel_: jnp.sum(jnp.sin(conv2d(x_, kernel_, strides, padding)))
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)),
                 in_shardings=(NamedSharding(mesh, PartitionSpec("data")),
                               NamedSharding(mesh, PartitionSpec())))
  compiled = grad.lower(x, kernel).compile().as_text()
  assert "all-gather" not in compiled
  # The one all-reduce sums the weight gradient: the conditional's predicate (the replicated
  # kernel's value) costs none, not even one merged into it.
  assert len(re.findall(r" all-reduce(-start)?\(", compiled)) == 1
  assert not re.search(r"= \(?f32\[(1,1,1,1)?\]", "\n".join(
      line for line in compiled.splitlines() if " all-reduce" in line))
  sharded = grad(x, kernel)
  single = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)
  for have, want in zip(sharded, single):
    # Summation order differs (per-shard sums, then the all-reduce): float32 rounding of the
    # largest entries, scaled by them.
    np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=0,
                               atol=1e-6 * float(jnp.max(jnp.abs(want))))
