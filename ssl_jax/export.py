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
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

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


# Calls on NumPy images run in batches of at most this many, each padded up to a power of two
# (from 8): a few compilations serve every batch size, and large arrays do not exhaust memory.
MAX_BATCH = 256
_MIN_PADDED_BATCH = 8


def _padded_size(count: int) -> int:
  return min(MAX_BATCH, max(_MIN_PADDED_BATCH, 1 << (count - 1).bit_length()))


class Encoder:
  """A loaded encoder: call it on images (N, H, W, 3) or gray (N, H, W), uint8 in [0, 255] or
  float in [0, 1], at the encoder's `image_size`.

  Returns {'pooled': (N, D) float32, 'stages': tuple of four (N, h, w, c) stage outputs}. The
  input normalisation the encoder expects is applied inside, so callers pass raw images. NumPy
  inputs run in padded batches of at most `MAX_BATCH` (one compilation serves many batch sizes);
  JAX arrays run as they are. Inside your own jit, or at another input size, use
  `apply_unjitted`."""

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
    self._pooled = jax.jit(
        lambda variables, images: self.apply_unjitted(variables, images)["pooled"])

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
    return self._batched(self._apply, self._checked(images))

  def pooled(self, images) -> jax.Array:
    """Only the pooled features (the stage outputs are not returned)."""
    return self._batched(self._pooled, self._checked(images))

  def device_pooled(self, images: jax.Array) -> jax.Array:
    """`pooled` without the checks and batching, for images already laid out on the devices in
    fixed-size batches at any input size (the evaluation's feature extraction)."""
    return self._pooled(self.variables, images)

  def _checked(self, images):
    """RGB images at the encoder's size: gray (N, H, W) or (N, H, W, 1) repeated to 3
    channels; any other shape or size is a ValueError naming it."""
    shape = tuple(images.shape)
    module = jnp if isinstance(images, jax.Array) else np
    if len(shape) == 3 or (len(shape) == 4 and shape[-1] == 1):
      images = module.repeat(images.reshape(shape[:3] + (1,)), 3, axis=-1)
    elif len(shape) != 4 or shape[-1] != 3:
      raise ValueError(f"images must be (N, H, W, 3) RGB or (N, H, W) gray; got shape {shape}")
    if images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(
          f"this encoder takes {self.image_size}x{self.image_size} images (its image_size); got "
          f"{images.shape[1]}x{images.shape[2]}. Resize them first, or call "
          "encoder.apply_unjitted(encoder.variables, images) to run it at another size")
    return images

  def _batched(self, jitted: Callable[[Any, Any], Any], images) -> Any:
    if isinstance(images, jax.Array):
      return jitted(self.variables, images)
    outputs = []
    for start in range(0, max(len(images), 1), MAX_BATCH):
      chunk = images[start:start + MAX_BATCH]
      padding = np.zeros((_padded_size(len(chunk)) - len(chunk),) + chunk.shape[1:], chunk.dtype)
      result = jitted(self.variables, np.concatenate([chunk, padding]))
      outputs.append(jax.tree.map(lambda leaf, count=len(chunk): leaf[:count], result))
    if len(outputs) == 1:
      return outputs[0]
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *outputs)


class InvalidEncoder(ValueError):
  """An encoder directory whose description or variables are not a loadable encoder."""


def _model_description(model: Any, where: str) -> ml_collections.ConfigDict:
  if not isinstance(model, dict):
    raise InvalidEncoder(f"{where}: 'model' must be an object with name, stem, width and dtype, "
                         f"got {model!r}")
  allowed = {"name": models.BACKBONE_NAMES, "stem": ("imagenet", "cifar"),
             "dtype": tuple(models.COMPUTE_DTYPES)}
  for field, values in allowed.items():
    if model.get(field) not in values:
      raise InvalidEncoder(f"{where}: model.{field} is {model.get(field)!r}; allowed: "
                           f"{list(values)}")
  width = model.get("width")
  if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
    raise InvalidEncoder(f"{where}: model.width must be a positive integer, got {width!r}")
  return ml_collections.ConfigDict({field: model[field] for field in ("name", "stem", "width",
                                                                      "dtype")})


def _channel_values(description: dict, field: str, where: str, *, positive: bool) -> list[float]:
  values = description.get(field)
  if (not isinstance(values, list) or len(values) != 3
      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
      or not all(math.isfinite(v) and (v > 0 or not positive) for v in values)):
    kind = "finite positive" if positive else "finite"
    raise InvalidEncoder(f"{where}: {field} must be a list of 3 {kind} numbers (one per RGB "
                         f"channel), got {values!r}")
  return [float(v) for v in values]


def read_description(path: str) -> dict:
  """The checked contents of `path`/encoder.json: format version, model (name, stem, width,
  dtype from the allowed values), image_size (a positive integer), mean and std (three finite
  numbers each; std positive), metadata (an object). Raises `InvalidEncoder` naming the file and
  the field."""
  description_file = os.path.join(path, ENCODER_FILE)
  if not os.path.isfile(description_file):
    raise FileNotFoundError(
        f"{path} is not an exported encoder: it has no {ENCODER_FILE} (export one with "
        f"`python main.py --mode=export --config=... --workdir=...`, or point at WORKDIR/encoder)")
  try:
    with open(description_file) as f:
      description = json.load(f)
  except ValueError as error:
    raise InvalidEncoder(f"{description_file} is not valid JSON: {error}") from None
  if not isinstance(description, dict):
    raise InvalidEncoder(f"{description_file}: expected a JSON object, got "
                         f"{type(description).__name__}")
  if description.get("format_version") != FORMAT_VERSION:
    raise InvalidEncoder(f"{description_file}: unsupported format_version "
                         f"{description.get('format_version')!r} (this ssl-jax reads "
                         f"{FORMAT_VERSION})")
  image_size = description.get("image_size")
  if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
    raise InvalidEncoder(f"{description_file}: image_size must be a positive integer, got "
                         f"{image_size!r}")
  metadata = description.get("metadata", {})
  if not isinstance(metadata, dict):
    raise InvalidEncoder(f"{description_file}: metadata must be an object, got {metadata!r}")
  return {"model": _model_description(description.get("model"), description_file),
          "image_size": image_size,
          "mean": _channel_values(description, "mean", description_file, positive=False),
          "std": _channel_values(description, "std", description_file, positive=True),
          "metadata": metadata}


def _check_variable_shapes(variables: Any, model_config: ml_collections.ConfigDict,
                           image_size: int, where: str) -> None:
  """Every variable the declared architecture has, with its shape, and no other."""
  module = models.build_backbone(model_config)
  expected = jax.eval_shape(
      lambda: module.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
                          train=False))
  expected_shapes = {jax.tree_util.keystr(key): leaf.shape
                     for key, leaf in jax.tree_util.tree_leaves_with_path(expected)}
  stored_shapes = {jax.tree_util.keystr(key): tuple(leaf.shape)
                   for key, leaf in jax.tree_util.tree_leaves_with_path(variables)}
  missing = sorted(set(expected_shapes) - set(stored_shapes))
  extra = sorted(set(stored_shapes) - set(expected_shapes))
  wrong = sorted(key for key in set(expected_shapes) & set(stored_shapes)
                 if expected_shapes[key] != stored_shapes[key])
  if missing or extra or wrong:
    described = model_config.to_dict()
    details = []
    if wrong:
      details.append("shape differs: " + ", ".join(
          f"{key} {stored_shapes[key]} (expected {expected_shapes[key]})" for key in wrong[:3]))
    if missing:
      details.append(f"missing: {', '.join(missing[:3])}")
    if extra:
      details.append(f"not in the architecture: {', '.join(extra[:3])}")
    count = len(missing) + len(extra) + len(wrong)
    raise InvalidEncoder(f"{where} does not hold the variables of the declared model {described} "
                         f"({count} variables disagree; {'; '.join(details)})")


def load_encoder(path: str) -> Encoder:
  """Loads an encoder directory written by `export_encoder` (or by a checkpoint converter).

  The description and the variables are checked first (`read_description`; every variable's
  shape against the declared architecture): a damaged or mismatched directory is an
  `InvalidEncoder` naming the file and the field, never a wrong number later."""
  path = os.path.abspath(path)
  description = read_description(path)
  variables_dir = os.path.join(path, VARIABLES_DIR)
  if not os.path.isdir(variables_dir):
    raise InvalidEncoder(f"{path}: the variables directory {VARIABLES_DIR}/ is missing")
  try:
    variables = checkpointing.restore_pytree(variables_dir)
  except Exception as error:  # orbax raises many types (and pages of log) for damaged files
    raise InvalidEncoder(f"{variables_dir} cannot be read ({checkpointing.short_reason(error)}); "
                         "re-export the encoder") from None
  _check_variable_shapes(variables, description["model"], description["image_size"],
                         variables_dir)
  variables = jax.tree.map(jnp.asarray, variables)
  return Encoder(description["model"], variables, description["image_size"],
                 description["mean"], description["std"], description["metadata"])
