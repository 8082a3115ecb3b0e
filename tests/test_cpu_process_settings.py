"""ssl_jax.cpu.configure(): the process settings of fast CPU training, made when asked.

Fresh interpreters check each setting: XLA_FLAGS gains the YNNPACK flag, CPU async dispatch is
off and malloc serves a 64 MiB block from the heap (glibc's `mallinfo2`: no mmapped block is
added). The effect that matters: calls reuse XLA:CPU's block of temporaries instead of faulting
in fresh pages each time, while a process that only imports the library keeps glibc's default
(one fresh mapping per call).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ssl_jax.cpu import process_settings

# One call with a 64 MiB block of temporaries (the sort's copy of its operand); prints the block's
# size and the minor page faults per call after two warm-up calls. With the argument 'configure'
# the process settings are made first; without, the library is only imported.
_PROBE = textwrap.dedent("""
    import resource, sys
    import ssl_jax.train  # noqa: F401  (importing the library must not make the settings)
    if sys.argv[1] == "configure":
      from ssl_jax import cpu
      cpu.configure()
    import jax, jax.numpy as jnp
    x = jnp.ones((2048, 8192), jnp.float32)
    compiled = jax.jit(lambda x: jnp.sort(x * 2.0, axis=1)[:, :4].sum()).lower(x).compile()
    for _ in range(2):
      compiled(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
      compiled(x).block_until_ready()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
    print(compiled.memory_analysis().temp_size_in_bytes, faults)
    """)

_SETTINGS = textwrap.dedent("""
    import ctypes, json, os

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
    from ssl_jax import cpu
    before = dict(xla_flags=os.environ.get("XLA_FLAGS", ""),
                  async_dispatch=jax.config.values["jax_cpu_enable_async_dispatch"],
                  mmapped=mmapped_blocks_of_a_64_mib_malloc())
    made_malloc_settings = cpu.configure()
    after = dict(xla_flags=os.environ.get("XLA_FLAGS", ""),
                 async_dispatch=jax.config.values["jax_cpu_enable_async_dispatch"],
                 mmapped=mmapped_blocks_of_a_64_mib_malloc())
    print(json.dumps(dict(before=before, after=after, made_malloc_settings=made_malloc_settings,
                          backend=jax.default_backend())))
    """)


_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_environment() -> dict[str, str]:
  """This session's environment without the settings conftest made for it, importing this
  checkout's ssl_jax."""
  environ = dict(os.environ)
  environ["PYTHONPATH"] = os.pathsep.join(
      [_REPOSITORY, *filter(None, [environ.get("PYTHONPATH")])])
  environ["XLA_FLAGS"] = " ".join(
      flag for flag in environ.get("XLA_FLAGS", "").split()
      if not flag.startswith(process_settings.YNN_FUSION_FLAG))
  return environ


def _temp_bytes_and_faults_per_call(tmp_path, mode: str) -> tuple[int, float]:
  script = tmp_path / "probe.py"
  script.write_text(_PROBE)
  result = subprocess.run([sys.executable, str(script), mode], env=_child_environment(),
                          capture_output=True, text=True, check=True, timeout=300)
  temp_bytes, faults = result.stdout.split()
  return int(temp_bytes), float(faults)


@pytest.mark.skipif(not process_settings._is_glibc(), reason="the malloc settings are glibc's")
def test_configure_makes_every_setting():
  result = subprocess.run([sys.executable, "-c", _SETTINGS], env=_child_environment(),
                          capture_output=True, text=True, check=True, timeout=300)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  before, after = report["before"], report["after"]
  assert process_settings.YNN_FUSION_FLAG not in before["xla_flags"]
  assert after["xla_flags"] == process_settings.with_cpu_flags(before["xla_flags"])
  assert before["async_dispatch"] is True and after["async_dispatch"] is False
  assert before["mmapped"] == 1 and after["mmapped"] == 0
  assert report["made_malloc_settings"] is True and report["backend"] == "cpu"


def test_calls_reuse_their_temporaries_instead_of_faulting_in_fresh_pages(tmp_path):
  temp_bytes, faults = _temp_bytes_and_faults_per_call(tmp_path, "configure")
  pages = temp_bytes // 4096
  assert temp_bytes >= 64 * 2**20
  # Measured: 8 faults per call, against 16,394 (every page of the block) with glibc's default.
  assert faults < 0.02 * pages, (faults, pages)


def test_the_library_alone_keeps_glibcs_fresh_mapping_per_call(tmp_path):
  temp_bytes, faults = _temp_bytes_and_faults_per_call(tmp_path, "import_only")
  assert faults > 0.9 * (temp_bytes // 4096)


def test_configure_refuses_to_run_after_the_backends_exist():
  """This session's backends exist (conftest configured it): a late call would change nothing."""
  with pytest.raises(RuntimeError, match="before JAX creates its backends"):
    process_settings.configure()


def test_cpu_flags_keep_the_users_own_ynnpack_setting_and_append_otherwise():
  assert process_settings.with_cpu_flags("--xla_force_host_platform_device_count=8") == (
      "--xla_force_host_platform_device_count=8 "
      "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
  users_own = "--xla_cpu_experimental_ynn_fusion_type="
  assert process_settings.with_cpu_flags(users_own) == users_own
  assert process_settings.with_cpu_flags("") == (
      "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
