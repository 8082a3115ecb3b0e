"""ssl_jax/host_memory.py: after `import ssl_jax`, calls reuse XLA:CPU's block of temporaries
instead of faulting in fresh pages each time; SSL_JAX_KEEP_STEP_MEMORY=0 leaves glibc's default."""

import os
import subprocess
import sys
import textwrap

import pytest

from ssl_jax import host_memory

# One call with a 64 MiB block of temporaries (the sort's copy of its operand); prints the block's
# size and the minor page faults per call after two warm-up calls.
_PROBE = textwrap.dedent("""
    import resource
    import ssl_jax  # noqa: F401  (its import makes the settings under test)
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


def _temp_bytes_and_faults_per_call(tmp_path, **extra_environ) -> tuple[int, float]:
  script = tmp_path / "probe.py"
  script.write_text(_PROBE)
  environ = {key: value for key, value in os.environ.items()
             if key not in ("XLA_FLAGS", host_memory.OPT_OUT_VARIABLE)}
  environ.update(extra_environ)
  result = subprocess.run([sys.executable, str(script)], env=environ, capture_output=True,
                          text=True, check=True, timeout=300)
  temp_bytes, faults = result.stdout.split()
  return int(temp_bytes), float(faults)


def test_calls_reuse_their_temporaries_instead_of_faulting_in_fresh_pages(tmp_path):
  temp_bytes, faults = _temp_bytes_and_faults_per_call(tmp_path)
  pages = temp_bytes // 4096
  assert temp_bytes >= 64 * 2**20
  # Measured: 8 faults per call, against 16,394 (every page of the block) with glibc's default.
  assert faults < 0.02 * pages, (faults, pages)


def test_opting_out_keeps_glibcs_default_of_a_fresh_mapping_per_call(tmp_path):
  temp_bytes, faults = _temp_bytes_and_faults_per_call(
      tmp_path, **{host_memory.OPT_OUT_VARIABLE: "0"})
  assert faults > 0.9 * (temp_bytes // 4096)
  assert host_memory.apply({host_memory.OPT_OUT_VARIABLE: "0"}) is False


def test_an_unknown_opt_out_value_is_refused_with_the_allowed_ones():
  with pytest.raises(ValueError, match=r"SSL_JAX_KEEP_STEP_MEMORY='false': use 1 .* or 0"):
    host_memory.apply({host_memory.OPT_OUT_VARIABLE: "false"})
