"""The CPU weight-gradient kernel (`conv_weight_grad_cpu.cc`): built on first use, called by XLA.

The C++ source ships with the package. The first process that needs it compiles it with the
machine's C++ compiler (`$CXX`, else g++) for the machine's own instruction set, into a cache
directory (`$SSL_JAX_CACHE_DIR`, else `$XDG_CACHE_HOME/ssl_jax` or `~/.cache/ssl_jax`) keyed by
the source, the compiler and its flags, the jaxlib version and the CPU; later processes load the
cached library. It is registered as an XLA FFI target for the CPU platform.

Without a compiler, or if the build fails, a warning says why and the caller keeps XLA's own
weight gradient, which is slower and differs from the kernel's by float32 rounding (so a run
resumed on a machine without a compiler does not continue bit for bit). Nothing is built unless
a training step asks for the kernel (`config.model.conv_impl`, see `ssl_jax.cpu.convolution`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shlex
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

CACHE_VARIABLE = "SSL_JAX_CACHE_DIR"
_SOURCE = pathlib.Path(__file__).with_name("conv_weight_grad_cpu.cc")
_SYMBOL = "SslJaxConvWeightGrad"
_TARGET = "ssl_jax_conv_weight_grad"
# The kernel's block of output channels (kOutputBlock in the source).
OUTPUT_CHANNEL_BLOCK = 64
# A compiler that has not finished by then is taken as failed (the build takes about 2 s).
_BUILD_TIMEOUT_S = 300


# /proc/cpuinfo fields that say what -march=native compiles for (x86, then ARM).
_CPU_FIELDS = ("model name", "flags", "CPU implementer", "CPU architecture", "CPU variant",
               "CPU part", "Features")


def _cpu_identity() -> str:
  """What -march=native compiles for: the architecture, CPU model and feature flags."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    lines = [platform.processor()]
  wanted = {line for line in lines if line.split(":")[0].strip() in _CPU_FIELDS}
  return "\n".join([platform.machine(), *sorted(wanted)])


def _run(command: list[str]) -> subprocess.CompletedProcess:
  """Runs a compiler command; a compiler that does not finish in time is a failed build."""
  try:
    return subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=_BUILD_TIMEOUT_S)
  except subprocess.TimeoutExpired as error:
    raise RuntimeError(f"{command[0]} did not finish in {_BUILD_TIMEOUT_S} s") from error


def _compile_command(compiler: list[str], output: pathlib.Path) -> list[str]:
  return [*compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
          f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", str(output)]


def _cache_dir(environ=os.environ) -> pathlib.Path:
  if environ.get(CACHE_VARIABLE):
    return pathlib.Path(environ[CACHE_VARIABLE])
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "ssl_jax"


def build(environ=os.environ) -> pathlib.Path:
  """The compiled library, built now unless the cache already holds this exact build."""
  compiler = shlex.split(environ.get("CXX") or "g++")   # CXX may carry a wrapper: "ccache g++"
  version = _run([*compiler, "--version"])
  key = hashlib.sha256()
  for part in (_SOURCE.read_bytes(), " ".join(_compile_command(compiler, pathlib.Path())),
               version.stdout, jaxlib.__version__, _cpu_identity()):
    key.update(part.encode() if isinstance(part, str) else part)
  directory = _cache_dir(environ)
  library = directory / f"conv_weight_grad_cpu-{key.hexdigest()[:16]}.so"
  if library.exists():
    return library
  directory.mkdir(parents=True, exist_ok=True)
  # Built under a temporary name and renamed: concurrent first uses (test workers) each build
  # their own and the rename is atomic, so no process loads a half-written library.
  with tempfile.TemporaryDirectory(dir=directory) as scratch:
    partial = pathlib.Path(scratch) / library.name
    result = _run(_compile_command(compiler, partial))
    if result.returncode != 0:
      raise RuntimeError(f"{shlex.join(compiler)} failed on {_SOURCE.name}:\n"
                         f"{result.stderr[-2000:]}")
    os.replace(partial, library)
  return library


def register(environ=os.environ) -> bool:
  """Builds (or finds) the library and registers its handler with XLA; False, with a warning
  saying why, when it cannot be built or loaded."""
  try:
    handler = getattr(ctypes.CDLL(str(build(environ))), _SYMBOL)
  # No compiler, a failed build, a library that does not load or lacks the handler.
  except (OSError, RuntimeError, AttributeError) as error:
    warnings.warn(f"ssl_jax: the CPU convolution weight-gradient kernel is unavailable, XLA's "
                  f"own is used (slower on CPU): {error}", RuntimeWarning, stacklevel=2)
    return False
  jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(handler), platform="cpu")
  return True


@functools.cache
def available() -> bool:
  """Whether the kernel is registered with XLA: decided (and built) once per process."""
  return register()


def weight_grad(x: jax.Array, output_grad: jax.Array, window: tuple[int, int],
                strides: tuple[int, ...], padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """dW (KH, KW, C, O) of a convolution of NHWC float32 `x` whose output gradient is the NHWC
  float32 `output_grad`; O must be a multiple of OUTPUT_CHANNEL_BLOCK."""
  if not available():
    raise RuntimeError("the native CPU weight-gradient kernel is unavailable (the warning given "
                       "when it was first asked for says why); use XLA's weight gradient")
  shape = (*window, x.shape[-1], output_grad.shape[-1])
  call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method="sequential")
  return call(x, output_grad, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
              pad_top=np.int64(padding[0][0]), pad_left=np.int64(padding[1][0]))
