"""`config.quick_compile`: XLA compiler options that trade step speed for compile time.

A run compiles its init and its train step once. On the 2-core CPU machines, the train step of a
ResNet-10 of width 4 (MoCo v2, 16 px, 1 device) compiled in 8.2 s and its init in 4.1 s; with
LLVM's optimisation off and XLA:CPU's older (non-MLIR) fusion emitters, 2.2 s and 2.4 s, while
each step ran 3-5x slower (measured). That is the better trade for runs of a few dozen steps
(debugging, the engine tests), not for training: a tiny digits job's 200 steps ran at 267
instead of 1,263 images/s, which more than ate the saved seconds.

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
