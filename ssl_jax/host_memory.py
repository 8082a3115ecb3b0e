"""Keeping XLA:CPU's per-call block of temporaries in the heap, so steps reuse it.

XLA:CPU allocates the temporaries of one call as one block (about 800 MB for the ResNet-18 CIFAR
train step of the peer benchmark at batch 64). glibc's malloc serves a block that large with a
fresh `mmap` and unmaps it when it is freed, so every step writes about 200,000 new 4 KiB pages
and the kernel faults in and zeroes each one: about 8 % of that step's CPU time on the project's
2-core machines (benchmarks/README.md). Two settings make malloc keep the block and hand the same
memory to the next step:

- `mallopt(M_MMAP_MAX, 0)` and `mallopt(M_TRIM_THRESHOLD, <max>)`: large blocks come from the
  heap, and freed heap memory is not returned to the kernel. The process keeps its high-water mark
  of memory, which a training process reaches at its first step anyway.
- `jax_cpu_enable_async_dispatch=False`: a single-device computation runs on the thread that
  calls it. The block is then allocated by the main thread, from glibc's main arena: the other
  threads' arenas map any block over 64 MB whatever M_MMAP_MAX says. JAX's flag leaves
  computations over several devices asynchronous, so those keep their page faults.

`apply()` makes both settings when `ssl_jax` is imported (next to `xla_cpu_flags`), unless
SSL_JAX_KEEP_STEP_MEMORY=0 (1, the default, makes them; other values are refused). The dispatch
setting must precede JAX's CPU backend, like the XLA flags; the malloc settings only act on glibc.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import MutableMapping

from ssl_jax.env_switch import switch_is_on

OPT_OUT_VARIABLE = "SSL_JAX_KEEP_STEP_MEMORY"
# glibc's malloc.h parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes a C int: the largest threshold means freed heap memory is never trimmed.
_LARGEST_TRIM_THRESHOLD = 2**31 - 1


def _is_glibc() -> bool:
  try:
    return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
  except (AttributeError, ValueError, OSError):
    return False


def _keep_large_blocks_in_heap() -> bool:
  libc = ctypes.CDLL(None)
  return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
      libc.mallopt(M_TRIM_THRESHOLD, _LARGEST_TRIM_THRESHOLD))


def _run_single_device_calls_inline() -> None:
  # A config flag without an environment variable; it is read when the CPU backend is created.
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_cpu_enable_async_dispatch", False)


def apply(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Makes both settings (see the module docstring); returns whether malloc accepted its own."""
  if not switch_is_on(environ, OPT_OUT_VARIABLE,
                      on="the default: keep each step's temporaries in the heap",
                      off="glibc's and JAX's defaults") or not _is_glibc():
    return False
  _run_single_device_calls_inline()
  return _keep_large_blocks_in_heap()
