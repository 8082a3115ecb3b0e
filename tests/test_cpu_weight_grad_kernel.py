"""Tests of the native CPU weight-gradient kernel (ssl_jax/cpu/weight_grad_kernel.py and its C++).

The reference is an independent float64 NumPy sum over x's zero-padded windows. The kernel sums
in float32 in another order than XLA, so results agree to rounding, not bitwise; they must
however be bitwise repeatable (the partitions and their order are fixed by the shape).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import models
from ssl_jax.cpu import weight_grad_kernel
from ssl_jax.cpu.convolution import conv2d

from conv_helpers import loss_gradients, random_normal, sin_loss_gradient, xla_convolution

TARGET_CALL = re.compile(r'custom_call_target="ssl_jax_conv_weight_grad"')


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


# (batch, height, width, in channels, out channels, window, strides, padding). Channel blocks
# are 6 wide with AVX-512 (1 without): 3, 13 and 5 channels leave remainders of 3, 1 and 5.
CASES = [
    (2, 32, 32, 3, 64, (3, 3), (1, 1), ((1, 1), (1, 1))),       # the CIFAR stem: 3 channels
    (2, 16, 16, 13, 64, (3, 3), (2, 2), ((1, 1), (1, 1))),      # 13 = two blocks of 6 and 1
    (3, 9, 9, 8, 128, (1, 1), (2, 2), ((0, 0), (0, 0))),        # 1x1 stride-2 shortcut, odd size
    (1, 15, 15, 6, 64, (7, 7), (2, 2), ((3, 3), (3, 3))),       # the ImageNet stem's window
    (2, 7, 10, 5, 64, (3, 2), (2, 1), ((1, 0), (2, 1))),        # rectangular, uneven padding
    (2, 3, 3, 4, 64, (7, 7), (2, 2), ((3, 3), (3, 3))),         # window wider than the image
    (1, 1, 5, 4, 64, (3, 3), (1, 1), ((1, 1), (1, 1))),         # one row: one partition
    (64, 4, 4, 16, 192, (3, 3), (1, 1), ((1, 1), (1, 1))),      # 1024 positions: two partitions
    (8, 32, 32, 16, 64, (3, 3), (1, 1), ((1, 1), (1, 1))),      # 8192 positions: two
    (8, 64, 64, 3, 64, (3, 3), (1, 1), ((1, 1), (1, 1))),       # 32768 positions: eight
]


@pytest.fixture(scope="module")
def kernel_available():
  assert weight_grad_kernel.available(), "the native kernel did not build (see the warning)"


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case[:5])))
def test_weight_grad_matches_float64_reference(case, kernel_available):
  batch, height, width, channels, features, window, strides, padding = case
  out_h = output_size(height, window[0], strides[0], *padding[0])
  out_w = output_size(width, window[1], strides[1], *padding[1])
  x = np.asarray(random_normal(0, (batch, height, width, channels)))
  output_grad = np.asarray(random_normal(1, (batch, out_h, out_w, features)))
  got = jax.jit(lambda x_, dy: weight_grad_kernel.weight_grad(x_, dy, window, strides, padding))(
      x, output_grad)
  want = reference_weight_grad(x, output_grad, window, strides, padding)
  assert got.shape == want.shape and got.dtype == jnp.float32
  # float32 sums of up to 32768 products of unit normals: errors of a few 1e-6 of the largest.
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-6 * np.abs(want).max())


@pytest.mark.parametrize("x_shape,output_grad_shape", [
    ((0, 8, 8, 4), (0, 8, 8, 64)),     # an empty batch
    ((2, 4, 2, 4), (2, 4, 0, 64)),     # no output columns (a 3-wide window, no padding)
])
def test_weight_grad_of_no_positions_is_zero(x_shape, output_grad_shape, kernel_available):
  x, output_grad = np.zeros(x_shape, np.float32), np.zeros(output_grad_shape, np.float32)
  padding = ((1, 1), (0, 0))
  got = jax.jit(lambda x_, dy: weight_grad_kernel.weight_grad(x_, dy, (3, 3), (1, 1), padding))(
      x, output_grad)
  np.testing.assert_array_equal(np.asarray(got), np.zeros((3, 3, 4, 64), np.float32))


# Computed in a child process whose XLA thread pool has as many threads as the cores it may run
# on: 8192 positions (two partitions), and one row of 192 output channels (one partition, whose
# three blocks of 64 channels are split between the threads when there are several).
_WEIGHT_GRADS_IN_A_CHILD = textwrap.dedent("""
    import json, os, sys
    os.sched_setaffinity(0, json.loads(sys.argv[1]))
    import jax, numpy as np
    from ssl_jax.cpu import weight_grad_kernel
    assert weight_grad_kernel.available()
    rng = np.random.default_rng(2)
    grads = {}
    for name, x_shape, dy_shape in [("partitions", (8, 32, 32, 8), (8, 32, 32, 64)),
                                    ("one_row", (1, 1, 9, 8), (1, 1, 9, 192))]:
      x = rng.normal(size=x_shape).astype(np.float32)
      dy = rng.normal(size=dy_shape).astype(np.float32)
      grad = jax.jit(lambda x_, dy_: weight_grad_kernel.weight_grad(x_, dy_, (3, 3), (1, 1),
                                                                    ((1, 1), (1, 1))))
      grads[name] = np.asarray(grad(x, dy))
    np.savez(sys.argv[2], **grads)
""")


def test_weight_grad_does_not_depend_on_the_number_of_threads(tmp_path, kernel_available):
  """Threads take work in any order; each partition's sum and their total are ordered, so one
  core and every core give the same bits."""
  cores = {"one": sorted(os.sched_getaffinity(0))[:1], "all": list(range(os.cpu_count()))}
  results = {}
  for name, allowed in cores.items():
    output = tmp_path / f"{name}.npz"
    subprocess.run([sys.executable, "-c", _WEIGHT_GRADS_IN_A_CHILD, json.dumps(allowed),
                    str(output)], check=True, env={**os.environ, "XLA_FLAGS": ""},
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results[name] = dict(np.load(output))
  for case in ("partitions", "one_row"):
    assert np.abs(results["one"][case]).max() > 0
    np.testing.assert_array_equal(results["one"][case], results["all"][case], err_msg=case)


def conv_gradients(x, kernel, strides, padding):
  """conv2d's gradients and the text of their compiled program."""
  grad = sin_loss_gradient(conv2d, strides, padding)
  return grad.lower(x, kernel).compile().as_text(), grad(x, kernel)


def test_one_device_conv2d_takes_the_kernel_and_keeps_xla_gradients(one_device_process,
                                                                    kernel_available):
  x = random_normal(4, (4, 16, 16, 8))
  kernel = random_normal(5, (3, 3, 8, 64)) * 0.1
  padding = ((1, 1), (1, 1))
  compiled, (input_grad, kernel_grad) = conv_gradients(x, kernel, (1, 1), padding)
  assert len(TARGET_CALL.findall(compiled)) == 1
  assert " conditional(" not in compiled       # no transpose of x is needed
  want_input, want_kernel = loss_gradients(xla_convolution, x, kernel, (1, 1), padding)
  np.testing.assert_array_equal(np.asarray(input_grad), np.asarray(want_input))
  np.testing.assert_allclose(np.asarray(kernel_grad), np.asarray(want_kernel), rtol=0,
                             atol=2e-6 * float(jnp.abs(want_kernel).max()))


@pytest.mark.parametrize("reason,features,dtype", [
    ("32 output channels: not a whole block", 32, jnp.float32),
    ("bfloat16 compute: the kernel is float32", 64, jnp.bfloat16),
])
def test_one_device_conv2d_keeps_xla_outside_the_kernel_shapes(one_device_process, reason,
                                                                features, dtype):
  x = random_normal(4, (4, 16, 16, 8)).astype(dtype)
  kernel = random_normal(5, (3, 3, 8, features)).astype(dtype)
  compiled, _ = conv_gradients(x, kernel, (1, 1), ((1, 1), (1, 1)))
  assert not TARGET_CALL.search(compiled), reason


def test_accelerator_hosts_do_not_build_the_kernel(one_device_process, monkeypatch):
  """`platform_dependent` traces the CPU branch on a GPU host too (it lowers only the GPU one):
  there the kernel must not be asked for, so no compiler runs and no warning is given."""
  def must_not_build():
    raise AssertionError("the kernel was asked for on a GPU host")

  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(weight_grad_kernel, "available", must_not_build)
  x = random_normal(4, (4, 16, 16, 8))
  kernel = random_normal(5, (3, 3, 8, 64))
  compiled, _ = conv_gradients(x, kernel, (1, 1), ((1, 1), (1, 1)))
  assert not TARGET_CALL.search(compiled)


def test_several_devices_keep_xla_weight_gradient(kernel_available):
  """With the 8 forced host devices of the test run, x may be sharded: no custom call."""
  assert jax.device_count() == 8
  x = random_normal(4, (8, 16, 16, 8))
  kernel = random_normal(5, (3, 3, 8, 64))
  compiled, _ = conv_gradients(x, kernel, (1, 1), ((1, 1), (1, 1)))
  assert not TARGET_CALL.search(compiled)


def test_the_plain_backbone_never_asks_for_the_kernel(one_device_process, monkeypatch):
  """conv_impl='xla' (what evaluation and exported encoders build) is XLA's convolution alone:
  no kernel is built, no custom call is made, even where cpu_native would use the kernel."""
  def must_not_build():
    raise AssertionError("the kernel was asked for by the plain model")

  monkeypatch.setattr(weight_grad_kernel, "available", must_not_build)
  config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=64,
                                          dtype="float32"))
  model = models.build_backbone(config)
  x = random_normal(4, (2, 8, 8, 3))
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  loss = lambda params, batch_stats: jnp.sum(model.apply(
      {"params": params, "batch_stats": batch_stats}, x, train=False)["pooled"])
  compiled = jax.jit(jax.grad(loss)).lower(variables["params"],
                                           variables["batch_stats"]).compile().as_text()
  assert not TARGET_CALL.search(compiled)


@pytest.mark.parametrize("compiler,error", [("/nonexistent/c++", "No such file"),
                                            ("false", "false failed on conv_weight_grad_cpu.cc")])
def test_no_compiler_warns_and_keeps_xla(tmp_path, compiler, error):
  environ = {"CXX": compiler, weight_grad_kernel.CACHE_VARIABLE: str(tmp_path)}
  with pytest.warns(RuntimeWarning, match=f"kernel is unavailable.*{error}"):
    assert not weight_grad_kernel.register(environ)
  assert not list(tmp_path.glob("*.so"))   # nothing half-built is left to load


def test_build_is_cached_keyed_and_renamed_into_place(tmp_path, monkeypatch):
  """A build is reused; a changed source is built anew under another name; the compiler writes
  into a scratch directory and the library is renamed into the cache when it is whole."""
  compiled_into, commands = [], []

  def fake_compiler(command):
    commands.append(command)
    if command[-1] == "--version":
      return subprocess.CompletedProcess(command, 0, stdout="c++ 1.0\n", stderr="")
    output = command[command.index("-o") + 1]
    compiled_into.append(os.path.dirname(output))
    with open(output, "wb") as library:
      library.write(b"built")
    return subprocess.CompletedProcess(command, 0, stdout="", stderr="")

  monkeypatch.setattr(weight_grad_kernel, "_run", fake_compiler)
  environ = {weight_grad_kernel.CACHE_VARIABLE: str(tmp_path / "cache"), "CXX": "ccache c++"}
  library = weight_grad_kernel.build(environ)
  assert weight_grad_kernel.build(environ) == library and len(compiled_into) == 1
  assert all(command[:2] == ["ccache", "c++"] for command in commands)   # CXX split like a shell
  assert compiled_into[0] != str(library.parent)           # a scratch directory, not the cache
  assert [path.name for path in library.parent.iterdir()] == [library.name]   # scratch removed

  changed = tmp_path / "conv_weight_grad_cpu.cc"
  changed.write_text(weight_grad_kernel._SOURCE.read_text() + "\n// changed\n")
  monkeypatch.setattr(weight_grad_kernel, "_SOURCE", changed)
  rebuilt = weight_grad_kernel.build(environ)
  assert rebuilt != library and len(compiled_into) == 2


def test_empty_cache_variable_means_the_default(tmp_path):
  environ = {weight_grad_kernel.CACHE_VARIABLE: "", "XDG_CACHE_HOME": str(tmp_path)}
  assert weight_grad_kernel._cache_dir(environ) == tmp_path / "ssl_jax"
