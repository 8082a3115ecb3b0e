"""The median wall time of a call, for benchmarks run under either Python (ours or the peer's).

Standard library only, so the peer's interpreter (torch, no JAX) imports it too. The call must
return only when its work is done (`jax.block_until_ready` for ours).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(call: Callable[[], object], repeats: int, warmup: int = 3) -> float:
  """Milliseconds: the median of `repeats` timed calls after `warmup` untimed ones."""
  for _ in range(warmup):
    call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)
