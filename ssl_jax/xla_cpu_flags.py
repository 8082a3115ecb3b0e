"""XLA:CPU flags that make the train step fast on CPU hosts, set before JAX starts its backend.

jaxlib 0.10+ hands convolutions to YNNPACK by default. YNNPACK runs the forward convolution and
the input gradient well, but the weight gradient (the "backward-filter" convolution, whose kernel
is the whole output map) 7-10x slower than XLA's own Eigen path: 1.13 s against 0.11 s of CPU
time for a 64-channel 3x3 layer at 32 px, batch 64, where the forward pass takes 0.09 s
(measured on this project's 2-core CI machines; benchmarks/README.md). Taking convolutions out of
YNNPACK's set (and leaving its matmuls in) brings the weight gradient to forward speed.

The flags only affect the CPU backend. They are appended to XLA_FLAGS when `ssl_jax` is imported,
unless the user already chose a YNNPACK setting; they take effect only if JAX has not yet
created its CPU backend (as in `main.py`, the tests and the benchmarks, which import ssl_jax
before running anything on a device).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# '-x' removes x from the default set of operations given to YNNPACK.
CPU_FLAGS = (f"{YNN_FUSION_FLAG}=-individual_convolution",)


def apply(environ: MutableMapping[str, str] = os.environ) -> str:
  """Appends CPU_FLAGS to environ['XLA_FLAGS'] (keeping the user's own); returns the result."""
  current = environ.get("XLA_FLAGS", "")
  if YNN_FUSION_FLAG in current:
    return current
  environ["XLA_FLAGS"] = " ".join([current, *CPU_FLAGS]).strip()
  return environ["XLA_FLAGS"]
