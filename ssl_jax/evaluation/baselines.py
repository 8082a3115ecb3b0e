"""The encoders every results table shows beside the one under evaluation, defined once.

- 'random_init': the same architecture freshly initialised (BatchNorm statistics 0 / 1, so in
  evaluation mode an unnormalised random conv net), drawn from `config.seed`.
- 'random_init_data_bn': those weights with BatchNorm statistics measured on the training images
  (`bn_calibration`), as a trained encoder's are: the fair test of what the weights learned.
- 'pixels': the flattened pixels, centred with the training split's mean image (and scaled by
  one number), so the kNN is a cosine kNN on centred pixels and the linear probe (which
  standardises every feature) a logistic regression on standardised pixels. An encoder that
  does not beat its own input has learned nothing useful for the task.
- 'supervised': the encoder exported by a supervised-from-scratch run (configs/supervised.py) of
  the same preset and budget, given as `config.eval.supervised_encoder`; added whenever that is
  set (it is trained by its own run, not here).

The end of training and `--mode=eval` build them here, so the same encoder and seed give the same
baseline rows everywhere.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import pipeline as input_pipeline
from ssl_jax import export as export_lib
from ssl_jax.evaluation import bn_calibration
from ssl_jax.evaluation.data import EvalData

# Baselines without a network: only the evaluators of frozen features take them.
FEATURE_ONLY = ("pixels",)
# Images larger than this are area-downsampled to it for the pixel baseline, so its features
# stay a few thousand wide (32 px: 3,072); every small-image preset is used at its own size.
PIXELS_MAX_SIDE = 32


def random_init_encoder(encoder, seed: int):
  """The same architecture with freshly initialised variables. Drawn with the 'rbg' generator, as
  training's initialisation (the same initialiser maths; XLA compiles it about 10x faster on CPU
  than threefry)."""
  images = jnp.zeros((1, encoder.image_size, encoder.image_size, 3), jnp.float32)
  variables = jax.jit(lambda key: encoder.module.init(key, images, train=False))(
      jax.random.key(seed, impl="rbg"))
  return encoder.with_variables(variables)


def _area_downsample(images: jax.Array, side: int) -> jax.Array:
  """(N, H, W, C) float -> (N, s, s, C) with s = min(H, side), averaging whole blocks when H is a
  multiple of s (else antialiased resizing)."""
  height = images.shape[1]
  if height <= side:
    return images
  if height % side == 0:
    factor = height // side
    return images.reshape(images.shape[0], side, factor, side, factor, -1).mean(axis=(2, 4))
  return jax.image.resize(images, (images.shape[0], side, side, images.shape[-1]), "linear",
                          antialias=True)


class PixelEncoder:
  """Raw pixels as features: `pooled(uint8 images)` -> (N, s * s * 3) centred, scaled pixels."""

  def __init__(self, image_size: int, mean: np.ndarray, scale: float):
    self.image_size = image_size
    self.mean = jnp.asarray(mean, jnp.float32)
    self.scale = float(scale)
    self.feature_dim = int(self.mean.size)
    self._pooled = jax.jit(lambda images: (self.flat(images) - self.mean) / self.scale)

  @staticmethod
  def flat(images: jax.Array) -> jax.Array:
    pixels = _area_downsample(jnp.asarray(images, jnp.float32) / 255.0, PIXELS_MAX_SIDE)
    return pixels.reshape(pixels.shape[0], -1)

  @classmethod
  def fit(cls, data: EvalData) -> "PixelEncoder":
    """Mean image and scale measured on the training split (up to the evaluation cap)."""
    flat = jax.jit(cls.flat)
    total = total_squares = None
    count = 0
    for batch in input_pipeline.eval_batches(data.config, data.config.data.train_split,
                                             data.settings.batch_size,
                                             data.settings.max_examples):
      pixels = np.asarray(flat(batch["image"]), np.float64)
      total = pixels.sum(0) if total is None else total + pixels.sum(0)
      squares = (pixels ** 2).sum(0)
      total_squares = squares if total_squares is None else total_squares + squares
      count += pixels.shape[0]
    if count == 0:
      raise ValueError(f"the {data.config.data.train_split!r} split has no images")
    mean = total / count
    # One scale for all pixels, the root mean square of the centred values: per-pixel scales
    # would blow up the noise of near-constant pixels (a digit's empty border) in the kNN's
    # cosine; the linear probe standardises each feature itself.
    scale = np.sqrt(max(total_squares.sum() / count - np.sum(mean ** 2), 0.0) / mean.size)
    return cls(data.config.data.image_size, mean, max(scale, 1e-6))

  def device_pooled(self, images) -> jax.Array:
    """The standardised pixels (the `Encoder.device_pooled` the feature extraction calls)."""
    return self._pooled(images)


def _random_init(encoder, data: EvalData):
  return data.cached((id(encoder), "random_init"),
                      lambda: random_init_encoder(encoder, data.seed))


def _random_init_data_bn(encoder, data: EvalData):
  return bn_calibration.recompute_batch_stats(
      _random_init(encoder, data), data.config, batch_size=data.settings.batch_size,
      max_examples=data.settings.max_examples)


def _pixels(encoder, data: EvalData):
  del encoder
  return PixelEncoder.fit(data)


BASELINES: dict[str, Callable] = {
    "random_init": _random_init,
    "random_init_data_bn": _random_init_data_bn,
    "pixels": _pixels,
}


def check_names(names) -> None:
  unknown = [name for name in names if name not in BASELINES]
  if unknown:
    raise ValueError(f"unknown baselines {unknown}; allowed: {list(BASELINES)}")


def build(encoder, names, data: EvalData) -> dict:
  """{name: baseline encoder} for `names` (a subset of BASELINES), in that order, then
  'supervised' when config.eval.supervised_encoder names one."""
  check_names(names)
  built = {name: BASELINES[name](encoder, data) for name in names}
  if data.settings.get("supervised_encoder"):
    built["supervised"] = export_lib.load_encoder(data.settings.supervised_encoder)
  return built
