"""Invariance of an encoder's pooled features to image transforms.

For each transform family and each strength of a sweep, the cosine similarity between f(x) and
f(T(x)) averaged over a sample of images: 1 means the features ignore the transform. Transforms
act on float images in [0, 1] (the photometric ones reuse the training augmentations of
input_pipeline/device_augment.py):
  rotation    degrees, bilinear, about the centre, zero outside the image
  hue         hue rotation in turns
  grayscale   blend towards the luma image (0: none, 1: full grayscale)
  crop_scale  central crop of this fraction of the area, resized back to full size
  flip        1: horizontal flip
  blur        Gaussian sigma in pixels

A cosine near 1 is only meaningful next to the cosine between *different* images
(`different_images_cosine`): features that all point one way (e.g. a random-init network's)
score high on every transform without being invariant in any useful sense.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import device_augment

FeatureFn = Callable[[jax.Array], jax.Array]


def rotate(images: jax.Array, degrees: float) -> jax.Array:
  _, height, width, _ = images.shape
  angle = jnp.deg2rad(degrees)
  rows, columns = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                               jnp.arange(width, dtype=jnp.float32), indexing="ij")
  centre_row, centre_column = (height - 1) / 2.0, (width - 1) / 2.0
  # Each output pixel reads the input at the inversely rotated position.
  source_rows = (jnp.cos(angle) * (rows - centre_row) - jnp.sin(angle) * (columns - centre_column)
                 + centre_row)
  source_columns = (jnp.sin(angle) * (rows - centre_row) + jnp.cos(angle) * (columns - centre_column)
                    + centre_column)

  def one_channel(channel):
    return jax.scipy.ndimage.map_coordinates(channel, [source_rows, source_columns], order=1,
                                             mode="constant", cval=0.0)
  per_image = jax.vmap(one_channel, in_axes=2, out_axes=2)
  return jax.vmap(per_image)(images)


def adjust_hue(images: jax.Array, shift: float) -> jax.Array:
  return jax.vmap(lambda image: device_augment.adjust_hue(image, shift))(images)


def grayscale(images: jax.Array, strength: float) -> jax.Array:
  return (1.0 - strength) * images + strength * device_augment.rgb_to_grayscale(images)


def central_crop(images: jax.Array, area_fraction: float) -> jax.Array:
  batch, height, width, channels = images.shape
  side = np.sqrt(area_fraction)
  crop_height, crop_width = max(1, int(round(side * height))), max(1, int(round(side * width)))
  top, left = (height - crop_height) // 2, (width - crop_width) // 2
  crop = images[:, top:top + crop_height, left:left + crop_width]
  return jax.image.resize(crop, (batch, height, width, channels), "linear")


def flip(images: jax.Array, amount: float) -> jax.Array:
  return images[:, :, ::-1] if amount >= 0.5 else images


def blur(images: jax.Array, sigma: float) -> jax.Array:
  if sigma <= 0:
    return images
  side = images.shape[1]
  kernel = min(2 * int(np.ceil(3 * sigma)) + 1, side if side % 2 else side - 1)
  return jax.vmap(lambda image: device_augment.gaussian_blur(image, sigma, kernel))(images)


TRANSFORMS: dict[str, Callable[[jax.Array, float], jax.Array]] = {
    "rotation": rotate,
    "hue": adjust_hue,
    "grayscale": grayscale,
    "crop_scale": central_crop,
    "flip": flip,
    "blur": blur,
}


def mean_cosine(feature_fn: FeatureFn, images: jax.Array, transformed: jax.Array) -> float:
  def normalised(x):
    features = feature_fn(x)
    return features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
  return float(jnp.mean(jnp.sum(normalised(images) * normalised(transformed), axis=-1)))


def different_images_cosine(feature_fn: FeatureFn, images: np.ndarray) -> float:
  """Mean cosine between the features of different images (each image against the next)."""
  images = jnp.asarray(images, jnp.float32)
  return mean_cosine(feature_fn, images, jnp.roll(images, 1, axis=0))


def invariance_sweeps(feature_fn: FeatureFn, images: np.ndarray,
                      sweeps: dict[str, list[float]]) -> dict[str, dict[str, list[float]]]:
  """{transform: {'params': sweep, 'cosine': mean cosine(f(x), f(T_p(x))) for each p}}."""
  images = jnp.asarray(images, jnp.float32)
  results = {}
  for name, parameters in sweeps.items():
    if name not in TRANSFORMS:
      raise ValueError(f"unknown invariance transform {name!r}; allowed: {list(TRANSFORMS)}")
    results[name] = {
        "params": [float(p) for p in parameters],
        "cosine": [mean_cosine(feature_fn, images, TRANSFORMS[name](images, float(p)))
                   for p in parameters]}
  return results
