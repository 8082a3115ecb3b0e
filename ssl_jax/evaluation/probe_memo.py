"""Linear-probe results remembered by the content of what they were computed from.

A results protocol evaluates many encoders beside the same baselines: every CIFAR-10 run of
docs/results.md probes the same raw pixels and the same random-init encoders, and the probe on
50,000 x 3,072 pixels alone takes tens of minutes on a CPU. With `config.eval.linear.memo_dir`
set, each probe's results are stored under a hash of its exact inputs (the feature and label
arrays, byte for byte, and every probe setting), so a later run that hands the probe identical
inputs reads the answer instead of solving it again. Different features, labels or settings give
a different key, so a remembered result is always the one the solve would give; `PROBE_VERSION`
is part of the key so that a change to the probe's algorithm retires every stored answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

import numpy as np

from ssl_jax import run_records

# Raise when linear_probe's algorithm or its results change: stored results then stop matching.
PROBE_VERSION = 1


def _hash_array(digest, array) -> None:
  array = np.ascontiguousarray(np.asarray(array))
  digest.update(f"{array.dtype.str}{array.shape}".encode())
  digest.update(memoryview(array).cast("B"))


def _json_value(value: Any) -> Any:
  """Settings' numpy values as JSON ones (json.dumps calls this for what it cannot write)."""
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"a probe setting of type {type(value).__name__} cannot be part of its key")


def probe_key(kind: str, arrays: tuple, settings: dict[str, Any]) -> str:
  """Hex digest naming one probe: its kind, the version, every array's bytes and the settings."""
  digest = hashlib.sha256(f"{kind}/{PROBE_VERSION}/".encode())
  for array in arrays:
    _hash_array(digest, array)
  digest.update(json.dumps(settings, sort_keys=True, default=_json_value).encode())
  return digest.hexdigest()


def remembered(memo_dir: str, key: str, compute: Callable[[], dict]) -> dict:
  """compute()'s results, read from `memo_dir` when a probe with this key has been solved before
  (and stored there after solving otherwise)."""
  path = os.path.join(memo_dir, f"{key}.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  results = compute()
  os.makedirs(memo_dir, exist_ok=True)
  # Plain json (NaN stays NaN, e.g. the validation score when nothing is held out), so a
  # remembered result is the computed one value for value.
  run_records.write_text_atomically(path, json.dumps(results))
  return results
