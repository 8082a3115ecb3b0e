"""Importing the library changes nothing in the process.

A fresh interpreter imports jax (the baseline), then `ssl_jax` and every module of the packages
ssl_jax and input_pipeline, and reports what changed: environment variables (XLA_FLAGS above
all), JAX's config values (jax_cpu_enable_async_dispatch among them), whether JAX created its
backends, and malloc's behaviour, seen through glibc's `mallinfo2()`: a 64 MiB block must still
be served by its own mmap (`hblks` grows), as glibc does by default. The settings that make CPU
training fast belong to the application (`ssl_jax.cpu.configure()`,
tests/test_cpu_process_settings.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ssl_jax.cpu import process_settings

_IMPORT_EVERYTHING = textwrap.dedent("""
    import ctypes, importlib, json, os, pkgutil, sys

    class Mallinfo2(ctypes.Structure):
      _fields_ = [(name, ctypes.c_size_t) for name in (
          "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
          "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def mmapped_blocks_of_a_64_mib_malloc():
      before = libc.mallinfo2().hblks
      block = libc.malloc(64 * 2**20)
      added = libc.mallinfo2().hblks - before
      libc.free(block)
      return added

    import jax
    from jax._src import xla_bridge
    environ_before = dict(os.environ)
    config_before = {name: repr(value) for name, value in jax.config.values.items()}
    mmapped_before = mmapped_blocks_of_a_64_mib_malloc()

    imported = []
    for package_name in ("ssl_jax", "input_pipeline"):
      package = importlib.import_module(package_name)
      imported.append(package_name)
      for module in pkgutil.walk_packages(package.__path__, package_name + "."):
        importlib.import_module(module.name)
        imported.append(module.name)

    environ_after = dict(os.environ)
    print(json.dumps(dict(
        imported=imported,
        environ_changed={name: [environ_before.get(name), environ_after.get(name)]
                         for name in set(environ_before) | set(environ_after)
                         if environ_before.get(name) != environ_after.get(name)},
        config_changed={name: [config_before.get(name), repr(value)]
                        for name, value in jax.config.values.items()
                        if config_before.get(name) != repr(value)},
        backends_created=xla_bridge.backends_are_initialized(),
        mmapped_before=mmapped_before,
        mmapped_after=mmapped_blocks_of_a_64_mib_malloc())))
""")


_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def import_report():
  environ = dict(os.environ)
  environ["PYTHONPATH"] = os.pathsep.join(
      [_REPOSITORY, *filter(None, [environ.get("PYTHONPATH")])])
  # The session's own XLA_FLAGS carry the CPU flag (conftest configures this process); the child
  # starts without it, as a user's process would.
  environ["XLA_FLAGS"] = " ".join(
      flag for flag in environ.get("XLA_FLAGS", "").split()
      if not flag.startswith(process_settings.YNN_FUSION_FLAG))
  result = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING], env=environ,
                          capture_output=True, text=True, timeout=600, cwd=_REPOSITORY)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_module_was_imported(import_report):
  imported = set(import_report["imported"])
  for module in ("ssl_jax", "ssl_jax.cpu", "ssl_jax.cpu.convolution",
                 "ssl_jax.cpu.weight_grad_kernel", "ssl_jax.cpu.process_settings",
                 "ssl_jax.models.resnet", "ssl_jax.train", "ssl_jax.export",
                 "input_pipeline.pipeline"):
    assert module in imported, module


def test_imports_leave_the_environment_and_jax_config_alone(import_report):
  assert import_report["environ_changed"] == {}
  assert import_report["config_changed"] == {}
  assert not import_report["backends_created"]


@pytest.mark.skipif(not process_settings._is_glibc(), reason="mallinfo2 is glibc's")
def test_imports_leave_malloc_alone(import_report):
  assert import_report["mmapped_before"] == 1
  assert import_report["mmapped_after"] == 1
