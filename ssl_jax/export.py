"""Exported encoders: a directory any evaluation can load with `load_encoder(path)`.

Layout of an encoder directory:
  encoder.json   architecture (the model config), input size and the normalisation the encoder
                 expects, plus free-form provenance (objective, step, config name)
  variables/     the backbone's flax variables ('params', 'batch_stats'), written by orbax

A run's `WORKDIR/encoder/` and a converted public checkpoint share this layout, so both are
probed the same way.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from input_pipeline import device_augment
from ssl_jax import checkpointing
from ssl_jax import distributed
from ssl_jax import models

ENCODER_FILE = "encoder.json"
VARIABLES_DIR = "variables"
FORMAT_VERSION = 1


def export_encoder(path: str, *, model_config: ml_collections.ConfigDict, variables: Any,
                   image_size: int, mean, std, metadata: dict | None = None) -> str:
  """Writes the backbone `variables` and its description to `path`; returns the path.

  In a multi-process job every process calls this (the variables are gathered and orbax writes
  collectively); only process 0 writes files."""
  path = os.path.abspath(path)
  os.makedirs(path, exist_ok=True)
  host_variables = distributed.to_host(variables)
  checkpointing.save_pytree(os.path.join(path, VARIABLES_DIR), host_variables)
  description = {
      "format_version": FORMAT_VERSION,
      "model": {key: model_config[key] for key in ("name", "stem", "width", "dtype")},
      "image_size": int(image_size),
      "mean": [float(m) for m in mean],
      "std": [float(s) for s in std],
      "metadata": metadata or {},
  }
  if not distributed.is_lead_process():
    return path
  # Written last: a directory with encoder.json is a complete export.
  with open(os.path.join(path, ENCODER_FILE), "w") as f:
    json.dump(description, f, indent=2)
  return path


class Encoder:
  """A loaded encoder: call it on images (N, H, W, 3), uint8 in [0, 255] or float in [0, 1].

  Returns {'pooled': (N, D) float32, 'stages': tuple of four (N, h, w, c) stage outputs}. The
  input normalisation the encoder expects is applied inside, so callers pass raw images."""

  def __init__(self, model_config: ml_collections.ConfigDict, variables: Any, image_size: int,
               mean, std, metadata: dict):
    self.model_config = model_config
    # The plain model whatever convolution trained the variables (model_config.conv_impl is a
    # training-time choice that leaves the params unchanged).
    self.module = models.build_backbone(model_config)
    self.variables = variables
    self.image_size = image_size
    self.mean = tuple(mean)
    self.std = tuple(std)
    self.metadata = metadata
    self.feature_dim = models.feature_dim(model_config.name, model_config.width)
    self._apply = jax.jit(self.apply_unjitted)
    self._pooled = jax.jit(lambda variables, images: self.apply_unjitted(variables, images)["pooled"])

  def with_variables(self, variables: Any) -> "Encoder":
    """The same architecture with other variables, sharing the compiled functions (online
    evaluation during training re-uses one compilation)."""
    other = copy.copy(self)
    other.variables = variables
    return other

  def apply_unjitted(self, variables: Any, images: jax.Array) -> dict[str, Any]:
    """Pure function of (variables, images), for use inside a caller's own jit."""
    inputs = device_augment.normalize(images, self.mean, self.std)
    return self.module.apply(variables, inputs, train=False)

  def __call__(self, images) -> dict[str, Any]:
    return self._apply(self.variables, images)

  def pooled(self, images) -> jax.Array:
    """Only the pooled features (the stage outputs are not returned)."""
    return self._pooled(self.variables, images)


def load_encoder(path: str) -> Encoder:
  """Loads an encoder directory written by `export_encoder` (or by a checkpoint converter)."""
  path = os.path.abspath(path)
  description_file = os.path.join(path, ENCODER_FILE)
  if not os.path.isfile(description_file):
    raise FileNotFoundError(
        f"{path} is not an exported encoder: it has no {ENCODER_FILE} (export one with "
        f"`python main.py --mode=export --config=... --workdir=...`, or point at WORKDIR/encoder)")
  with open(description_file) as f:
    description = json.load(f)
  if description.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{description_file}: unsupported format_version "
                     f"{description.get('format_version')!r} (this ssl-jax reads {FORMAT_VERSION})")
  model_config = ml_collections.ConfigDict(description["model"])
  variables = checkpointing.restore_pytree(os.path.join(path, VARIABLES_DIR))
  variables = jax.tree.map(jnp.asarray, variables)
  return Encoder(model_config, variables, description["image_size"], description["mean"],
                 description["std"], description.get("metadata", {}))
