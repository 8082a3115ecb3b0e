"""The config a workdir's checkpoints were trained with, and the check before resuming into it.

A run writes WORKDIR/config.json when it starts from step 0. A later launch on a workdir with
checkpoints compares its config with that one first: a different objective, model, batch or
augmentation is another run, refused with the fields that differ, before orbax fails on it with
a long traceback (or, worse, restores a state that fits but means something else). The fields
in `CHANGEABLE_ON_RESUME` may differ: they say how long to train, how often to log, evaluate and
save, where the data lies, or how to compute, not what is learnt.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from ssl_jax import run_records
from ssl_jax.config_validation import ConfigError

CONFIG_FILE = "config.json"
# Fields (or prefixes, ending in '.') that a resume may change; docs/launching.md lists them.
CHANGEABLE_ON_RESUME = (
    "name", "num_steps", "num_epochs", "eval.", "knn_every_steps", "log_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "analysis_every_steps", "max_nonfinite_steps",
    "tensorboard", "wandb.", "quick_compile", "mesh.", "model.conv_impl", "data.root",
    "data.data_dir", "data.num_workers", "data.max_skipped_fraction",
)


class ForeignWorkdir(ConfigError):
  """The workdir's checkpoints belong to a run with another config."""


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """{"a.b": value} for every leaf of a nested dict."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _as_stored(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as config.json holds it (tuples become lists, non-finite numbers null)."""
  return json.loads(json.dumps(run_records.strict_json(config.to_dict())))


def changeable_on_resume(field: str) -> bool:
  return any(field == allowed or (allowed.endswith(".") and field.startswith(allowed))
             for allowed in CHANGEABLE_ON_RESUME)


def record(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes WORKDIR/config.json (a run starting from step 0)."""
  run_records.write_json_atomically(os.path.join(workdir, CONFIG_FILE), _as_stored(config))


def check_same_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises `ForeignWorkdir` naming each field outside `CHANGEABLE_ON_RESUME` in which `config`
  differs from the one WORKDIR/config.json recorded (a workdir without one is not checked)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      stored = flatten(json.load(f))
  except ValueError as error:
    raise ForeignWorkdir(f"{path} is not valid JSON ({error}); it records the config of the "
                         "checkpoints in this workdir: restore it or use a new --workdir") from None
  requested = flatten(_as_stored(config))
  missing = object()
  differing = sorted(field for field in set(stored) | set(requested)
                     if stored.get(field, missing) != requested.get(field, missing)
                     and not changeable_on_resume(field))
  if differing:
    shown = "; ".join(f"{field}: {stored.get(field, '(absent)')!r} in the workdir, "
                      f"{requested.get(field, '(absent)')!r} requested" for field in differing[:8])
    more = f" (and {len(differing) - 8} more)" if len(differing) > 8 else ""
    raise ForeignWorkdir(
        f"{workdir} holds checkpoints of another run; its config ({path}) differs in "
        f"{len(differing)} field(s) that a resume cannot change: {shown}{more}. Use a new "
        f"--workdir, or the workdir's own config. Fields a resume may change: "
        f"{', '.join(CHANGEABLE_ON_RESUME)}")
