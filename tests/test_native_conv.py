"""Tests of the native CPU weight-gradient kernel (ssl_jax/models/native_conv.py and its C++).

The reference is an independent float64 NumPy sum over x's zero-padded windows. The kernel sums
in float32 in another order than XLA, so results agree to rounding, not bitwise; they must
however be bitwise repeatable (the partitions and their order are fixed by the shape).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models import native_conv
from ssl_jax.models.conv import conv2d

TARGET_CALL = re.compile(r'custom_call_target="ssl_jax_conv_weight_grad"')


def random_normal(seed: int, shape: tuple[int, ...]) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def reference_weight_grad(x, output_grad, window, strides, padding) -> np.ndarray:
  """dW[i, j, c, o] = sum over n, h, w of x_padded[n, s*h + i, s*w + j, c] * dy[n, h, w, o]."""
  (top, bottom), (left, right) = padding
  padded = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
  _, out_h, out_w, _ = output_grad.shape
  grad = np.zeros((*window, x.shape[-1], output_grad.shape[-1]))
  for i in range(window[0]):
    for j in range(window[1]):
      taps = padded[:, i:i + strides[0] * (out_h - 1) + 1:strides[0],
                    j:j + strides[1] * (out_w - 1) + 1:strides[1]]
      grad[i, j] = np.einsum("nhwc,nhwo->co", taps, output_grad.astype(np.float64))
  return grad


def output_size(size, window, stride, pad_low, pad_high):
  return (size + pad_low + pad_high - window) // stride + 1


# (batch, height, width, in channels, out channels, window, strides, padding)
CASES = [
    (2, 32, 32, 3, 64, (3, 3), (1, 1), ((1, 1), (1, 1))),       # the CIFAR stem: 3 channels
    (2, 16, 16, 13, 64, (3, 3), (2, 2), ((1, 1), (1, 1))),      # 13 = two blocks of 6 and 1
    (3, 9, 9, 8, 128, (1, 1), (2, 2), ((0, 0), (0, 0))),        # 1x1 stride-2 shortcut, odd size
    (1, 15, 15, 6, 64, (7, 7), (2, 2), ((3, 3), (3, 3))),       # the ImageNet stem's window
    (2, 7, 10, 5, 64, (3, 2), (2, 1), ((1, 0), (2, 1))),        # rectangular, uneven padding
    (2, 3, 3, 4, 64, (7, 7), (2, 2), ((3, 3), (3, 3))),         # window wider than the image
    (64, 4, 4, 16, 192, (3, 3), (1, 1), ((1, 1), (1, 1))),      # 1024 positions: two partitions
    (8, 32, 32, 16, 64, (3, 3), (1, 1), ((1, 1), (1, 1))),      # 8192 rows of positions: several
]


@pytest.fixture(scope="module")
def kernel_available():
  assert native_conv.available(), "the native kernel did not build (see the warning)"


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case[:5])))
def test_weight_grad_matches_float64_reference(case, kernel_available):
  batch, height, width, channels, features, window, strides, padding = case
  out_h = output_size(height, window[0], strides[0], *padding[0])
  out_w = output_size(width, window[1], strides[1], *padding[1])
  x = random_normal(0, (batch, height, width, channels))
  output_grad = random_normal(1, (batch, out_h, out_w, features))
  got = jax.jit(lambda x_, dy: native_conv.weight_grad(x_, dy, window, strides, padding))(
      x, output_grad)
  want = reference_weight_grad(x, output_grad, window, strides, padding)
  assert got.shape == want.shape and got.dtype == jnp.float32
  # float32 sums of up to 8192 products of unit normals: errors of a few 1e-6 of the largest.
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_weight_grad_is_bitwise_repeatable(kernel_available):
  """Threads take partitions in any order; each partition's sum and their total are ordered."""
  x = random_normal(2, (16, 32, 32, 8))
  output_grad = random_normal(3, (16, 32, 32, 64))
  grad = jax.jit(lambda x_, dy: native_conv.weight_grad(x_, dy, (3, 3), (1, 1), ((1, 1),) * 2))
  first = np.asarray(grad(x, output_grad))
  for _ in range(5):
    np.testing.assert_array_equal(np.asarray(grad(x, output_grad)), first)


@pytest.fixture
def one_device_process(monkeypatch):
  """`jax.device_count()` is 1, as in a one-device process; traces are not shared with other
  tests (the conv's backward is traced once per shape otherwise)."""
  monkeypatch.setattr(jax, "device_count", lambda backend=None: 1)
  jax.clear_caches()
  yield
  jax.clear_caches()


def conv_gradients(x, kernel, strides, padding):
  loss = lambda x_, kernel_: jnp.sum(jnp.sin(conv2d(x_, kernel_, strides, padding)))
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return grad.lower(x, kernel).compile().as_text(), grad(x, kernel)


def xla_gradients(x, kernel, strides, padding):
  conv = lambda x_, kernel_: jax.lax.conv_general_dilated(
      x_, kernel_, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  loss = lambda x_, kernel_: jnp.sum(jnp.sin(conv(x_, kernel_)))
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)


def test_one_device_conv2d_takes_the_kernel_and_keeps_xla_gradients(one_device_process,
                                                                    kernel_available):
  x = jnp.asarray(random_normal(4, (4, 16, 16, 8)))
  kernel = jnp.asarray(random_normal(5, (3, 3, 8, 64)) * 0.1)
  padding = ((1, 1), (1, 1))
  compiled, (input_grad, kernel_grad) = conv_gradients(x, kernel, (1, 1), padding)
  assert len(TARGET_CALL.findall(compiled)) == 1
  assert " conditional(" not in compiled       # no transpose of x is needed
  want_input, want_kernel = xla_gradients(x, kernel, (1, 1), padding)
  np.testing.assert_array_equal(np.asarray(input_grad), np.asarray(want_input))
  np.testing.assert_allclose(np.asarray(kernel_grad), np.asarray(want_kernel), rtol=0,
                             atol=2e-6 * float(jnp.abs(want_kernel).max()))


@pytest.mark.parametrize("reason,features,dtype", [
    ("32 output channels: not a whole block", 32, jnp.float32),
    ("bfloat16 compute: the kernel is float32", 64, jnp.bfloat16),
])
def test_one_device_conv2d_keeps_xla_outside_the_kernel_shapes(one_device_process, reason,
                                                                features, dtype):
  x = jnp.asarray(random_normal(4, (4, 16, 16, 8))).astype(dtype)
  kernel = jnp.asarray(random_normal(5, (3, 3, 8, features))).astype(dtype)
  compiled, _ = conv_gradients(x, kernel, (1, 1), ((1, 1), (1, 1)))
  assert not TARGET_CALL.search(compiled), reason


def test_several_devices_keep_xla_weight_gradient(kernel_available):
  """With the 8 forced host devices of the test run, x may be sharded: no custom call."""
  assert jax.device_count() == 8
  x = jnp.asarray(random_normal(4, (8, 16, 16, 8)))
  kernel = jnp.asarray(random_normal(5, (3, 3, 8, 64)))
  compiled, _ = conv_gradients(x, kernel, (1, 1), ((1, 1), (1, 1)))
  assert not TARGET_CALL.search(compiled)


def test_opt_out_and_bad_values(monkeypatch):
  assert native_conv.enabled({}) and native_conv.enabled({native_conv.OPT_OUT_VARIABLE: "1"})
  assert not native_conv.register({native_conv.OPT_OUT_VARIABLE: "0"})
  with pytest.raises(ValueError, match=r"SSL_JAX_NATIVE_CONV='yes'.*1 .*or 0"):
    native_conv.enabled({native_conv.OPT_OUT_VARIABLE: "yes"})


@pytest.mark.parametrize("compiler,error", [("/nonexistent/c++", "No such file"),
                                            ("false", "false failed on conv_weight_grad_cpu.cc")])
def test_no_compiler_warns_and_keeps_xla(tmp_path, compiler, error):
  environ = {"CXX": compiler, native_conv.CACHE_VARIABLE: str(tmp_path)}
  with pytest.warns(RuntimeWarning, match=f"kernel is unavailable.*{error}"):
    assert not native_conv.register(environ)
  assert not list(tmp_path.glob("*.so"))   # nothing half-built is left to load


def test_build_is_cached(tmp_path):
  environ = {native_conv.CACHE_VARIABLE: str(tmp_path)}
  library = native_conv.build(environ)
  built_at = library.stat().st_mtime_ns
  assert native_conv.build(environ) == library
  assert library.stat().st_mtime_ns == built_at
  assert [path.name for path in tmp_path.iterdir()] == [library.name]   # no scratch left behind

