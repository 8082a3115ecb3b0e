"""Checks of a config and a workdir that must fail before any device work, with clear messages.

ml_collections already rejects unknown keys and wrongly typed overrides of a locked config; this
module checks the values: names that must come from a fixed set, and divisibility rules.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

import ml_collections

from input_pipeline import sources
from ssl_jax import models
from ssl_jax.evaluation import settings as evaluation_settings
from ssl_jax.objectives import OBJECTIVES

ALLOWED = {
    # 'arrays' is not nameable: in-memory data is passed to the pipeline by code.
    "data.source": tuple(s for s in sources.SOURCES if s != "arrays"),
    "data.label_type": ("single", "multi_label", "ordinal"),
    "model.stem": ("imagenet", "cifar"),
    "model.dtype": tuple(models.COMPUTE_DTYPES),
    "model.name": models.BACKBONE_NAMES,
    "model.conv_impl": models.CONV_IMPLS,
    "model.conv_init": tuple(models.CONV_INITS),
    "optim.name": ("sgd", "lars", "adamw"),
    "optim.schedule": ("cosine", "constant"),
    "ema.schedule": ("constant", "cosine"),
    "wandb.mode": ("online", "offline", "disabled"),
}


class ConfigError(ValueError):
  """A config value or a workdir that cannot be used; the message says what is allowed."""


def _lookup(config: ml_collections.ConfigDict, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int,
                    process_count: int) -> None:
  if config.objective not in OBJECTIVES:
    raise ConfigError(f"unknown objective {config.objective!r}; allowed: {sorted(OBJECTIVES)}")
  for key, allowed in ALLOWED.items():
    value = _lookup(config, key)
    if value not in allowed:
      raise ConfigError(f"config.{key}={value!r} is not allowed; choose one of {list(allowed)}")
  if config.batch_size <= 0:
    raise ConfigError(f"config.batch_size={config.batch_size} must be positive")
  if config.batch_size % num_devices:
    raise ConfigError(
        f"config.batch_size={config.batch_size} must be divisible by the {num_devices} devices "
        f"(the global batch is split evenly); e.g. use {num_devices * max(1, config.batch_size // num_devices)}")
  if config.batch_size % process_count:
    raise ConfigError(f"config.batch_size={config.batch_size} must be divisible by the "
                      f"{process_count} processes")
  if config.num_steps <= 0 and config.num_epochs <= 0:
    raise ConfigError("set config.num_steps > 0 or config.num_epochs > 0")
  for key in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
              "max_nonfinite_steps"):
    if config[key] < 1:
      raise ConfigError(f"config.{key}={config[key]} must be at least 1")
  wandb = config.get("wandb")
  if wandb is not None and wandb.project and importlib.util.find_spec("wandb") is None:
    raise ConfigError(f"config.wandb.project={wandb.project!r} needs the wandb package, an "
                      "optional part of ssl-jax: pip install 'ssl-jax[wandb]'")
  validate_data_fields(config)
  _validate_evaluation_fields(config)


def _validate_evaluation_fields(config: ml_collections.ConfigDict) -> None:
  try:
    evaluation_settings.check(config)
  except ValueError as error:
    raise ConfigError(str(error)) from error


def validate_eval_config(config: ml_collections.ConfigDict) -> None:
  """An evaluation config (configs/eval/*.py): the encoder to load, the data and `config.eval`."""
  if not config.encoder:
    raise ConfigError("config.encoder is empty: give the exported encoder to evaluate, e.g. "
                      "--config.encoder=runs/default/encoder")
  if config.data.source not in sources.SOURCES:
    raise ConfigError(f"config.data.source={config.data.source!r} is not allowed; choose one of "
                      f"{list(sources.SOURCES)}")
  validate_data_fields(config)
  _validate_evaluation_fields(config)


def validate_data_fields(config: ml_collections.ConfigDict) -> None:
  """Ranges of the data and geometric augmentation fields (shared with the evaluation configs,
  which have no `augment` section)."""
  data = config.data
  if not 0.0 <= data.max_skipped_fraction < 1.0:
    raise ConfigError(f"config.data.max_skipped_fraction={data.max_skipped_fraction} must be in "
                      "[0, 1)")
  if not 0.0 < data.test_fraction < 1.0:
    raise ConfigError(f"config.data.test_fraction={data.test_fraction} must be in (0, 1)")
  if data.label_type == "multi_label" and data.num_classes < 1:
    raise ConfigError("config.data.label_type='multi_label' needs config.data.num_classes (the "
                      "length of the 0/1 label vector)")
  if "augment" in config and config.augment.rotation_degrees < 0:
    raise ConfigError(f"config.augment.rotation_degrees={config.augment.rotation_degrees} must "
                      "be >= 0")


def unknown_key_message(config: ml_collections.ConfigDict, dotted_key: str) -> str | None:
  """Why `--config.<dotted_key>` does not name a field, with the fields allowed there; None
  when the key exists."""
  node, path = config, []
  for part in dotted_key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = "config" + "".join(f".{p}" for p in path)
      allowed = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      return (f"unknown config key 'config.{dotted_key}': {where} has no field {part!r}; "
              f"allowed fields: {allowed}")
    node = node[part]
    path.append(part)
  return None


def prepare_workdir(workdir: str) -> str:
  """Absolute workdir, created if needed, and proven writable before any work starts."""
  if not workdir:
    raise ConfigError("--workdir is empty; give a directory to write checkpoints and results to")
  path = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
      pass
  except OSError as error:
    raise ConfigError(f"workdir {path} is not writable: {error.strerror or error}") from error
  return path
