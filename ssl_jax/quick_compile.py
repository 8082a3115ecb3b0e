"""`config.quick_compile`: XLA compiler options that trade step speed for compile time.

A run compiles its init and its train step once. With LLVM's optimisation off and XLA:CPU's
older (non-MLIR) fusion emitters, both compile several times faster and each step runs several
times slower (docs/performance.md#compile-time). That is the better trade for runs of a few
dozen steps (debugging, the engine tests), not for training, where the slower steps soon cost
more than the compile time saved.

The options are passed to `jax.jit` of those two programs only, so they override XLA_FLAGS there
and leave every other program of the process as it was. The results differ from a full compile
in the last bits (about 1e-7 after init), not in what is computed.
"""

from __future__ import annotations

QUICK_COMPILE_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
}


def compiler_options(quick: bool) -> dict | None:
  """The `compiler_options` for `jax.jit` of the init and the train step (None: XLA's defaults)."""
  return dict(QUICK_COMPILE_OPTIONS) if quick else None
