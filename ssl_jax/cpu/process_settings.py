"""Process-wide settings for fast training on a CPU host, made by `configure()` and nothing else.

Each setting answers a cost of XLA:CPU's defaults (the figures are in docs/performance.md):

- `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` in XLA_FLAGS: jaxlib hands
  convolutions to YNNPACK, whose weight gradient (the backward-filter convolution) is several
  times slower than XLA's own Eigen path. The flag takes convolutions out of YNNPACK's set and
  leaves its matmuls there. A YNNPACK setting the user already put in XLA_FLAGS is kept.
- glibc's `M_MMAP_MAX=0` and largest `M_TRIM_THRESHOLD`: XLA:CPU allocates the temporaries of a
  call as one block (hundreds of MB for a ResNet-18 step). glibc serves a block that large with
  a fresh `mmap` and unmaps it when it is freed, so every step faults in and zeroes each page
  again. These settings keep large blocks in the heap and freed heap memory in the process,
  which therefore keeps its high-water mark (training reaches it at its first step anyway).
- `jax_cpu_enable_async_dispatch=False`: the malloc settings only act on glibc's main arena;
  the other threads' arenas map any block over 64 MB whatever M_MMAP_MAX says. With this
  setting a single-device computation runs on the thread that calls it, the main thread, so its
  block comes from the main arena. Computations over several devices stay asynchronous.

They change the whole process, so the library never makes them by itself (no import has side
effects): the application does, `main.py` and the benchmarks, by calling `configure()`.
"""

from __future__ import annotations

import ctypes
import os

import jax
# Whether JAX has created its backends: no public accessor (jax.distributed checks it the same way).
from jax._src import xla_bridge

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# '-x' removes x from the default set of operations given to YNNPACK.
CPU_FLAGS = (f"{YNN_FUSION_FLAG}=-individual_convolution",)
ASYNC_DISPATCH_OPTION = "jax_cpu_enable_async_dispatch"
# glibc's malloc.h parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes a C int: the largest threshold means freed heap memory is never trimmed.
_LARGEST_TRIM_THRESHOLD = 2**31 - 1


def with_cpu_flags(xla_flags: str) -> str:
  """`xla_flags` (an XLA_FLAGS value) with CPU_FLAGS appended, unless it already chooses a
  YNNPACK setting of its own."""
  if YNN_FUSION_FLAG in xla_flags:
    return xla_flags
  return " ".join([xla_flags, *CPU_FLAGS]).strip()


def _is_glibc() -> bool:
  try:
    return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
  except (AttributeError, ValueError, OSError):
    return False


def _keep_large_blocks_in_heap() -> bool:
  libc = ctypes.CDLL(None)
  return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
      libc.mallopt(M_TRIM_THRESHOLD, _LARGEST_TRIM_THRESHOLD))


def configure() -> bool:
  """Makes the settings of the module docstring; returns whether the malloc settings were made
  (they are where the CPU is JAX's default backend and malloc is glibc's).

  Call it once at start-up, after `jax.distributed.initialize` (in a process that joins a job of
  several) and before anything else uses JAX: the XLA flag and the dispatch setting are read
  when JAX creates its CPU backend. `configure()` then creates JAX's backends itself, to see
  which one is the default: on an accelerator host the malloc settings would only keep host
  memory from going back to the system. RuntimeError if the backends exist already, since the
  settings would then not take effect.
  """
  if xla_bridge.backends_are_initialized():
    raise RuntimeError("ssl_jax.cpu.configure() must run before JAX creates its backends (before "
                       "the first computation, jax.devices() or jax.default_backend()): the XLA "
                       "flags and the dispatch setting are read then")
  os.environ["XLA_FLAGS"] = with_cpu_flags(os.environ.get("XLA_FLAGS", ""))
  jax.config.update(ASYNC_DISPATCH_OPTION, False)
  if jax.default_backend() != "cpu" or not _is_glibc():
    return False
  return _keep_large_blocks_in_heap()
