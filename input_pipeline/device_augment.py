"""Photometric augmentation on the accelerator: colour jitter, grayscale, blur, solarize, normalise.

Runs inside the jitted train step on the uint8 views the host pipeline produced. Parameters are
drawn per image (the papers draw them per image; per-batch parameters would make all images of a
batch share one colour shift): one key gives a (views, batch, 13) block of uniforms, and a
per-image function is vmapped over (draws, images). Because an image's draws depend only on its
position in the global batch, the result does not depend on how the batch is sharded.

The individual operations take explicit parameters and follow torchvision's semantics on float
images in [0, 1] (each colour op clamps to [0, 1], as torchvision's blend does), so they can be
checked one by one against reference implementations.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

# ITU-R BT.601 luma, as PIL's convert('L') (torchvision rounds red to 0.2989).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
BLUR_SIGMA_RANGE = (0.1, 2.0)   # SimCLR / MoCo v2 / BYOL
SOLARIZE_THRESHOLD = 0.5
VIEW_NAMES = ("view1", "view2")


def luma(image: jax.Array) -> jax.Array:
  """(..., 3) RGB -> (...,) luma."""
  weights = jnp.asarray(LUMA_WEIGHTS, image.dtype)
  return image @ weights


def rgb_to_grayscale(image: jax.Array) -> jax.Array:
  """Luma replicated to 3 channels, so grayscale images keep the model's input shape."""
  return jnp.repeat(luma(image)[..., None], 3, axis=-1)


def _blend(image: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
  return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
  """(H, W, 3) image scaled by factor (blend with black)."""
  return _blend(image, jnp.zeros_like(image), factor)


def adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
  """(H, W, 3) image blended with the mean luma of the whole image."""
  return _blend(image, jnp.mean(luma(image)), factor)


def adjust_saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
  """(H, W, 3) image blended with its per-pixel luma."""
  return _blend(image, luma(image)[..., None], factor)


def _rgb_to_hsv(image: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  red, green, blue = image[..., 0], image[..., 1], image[..., 2]
  value = jnp.max(image, axis=-1)
  chroma = value - jnp.min(image, axis=-1)
  is_gray = chroma == 0
  # Safe denominators: on gray pixels hue and saturation are 0 and the ratios are unused.
  saturation = jnp.where(is_gray, 0.0, chroma / jnp.where(value == 0, 1.0, value))
  safe_chroma = jnp.where(is_gray, 1.0, chroma)
  hue_if_red = (green - blue) / safe_chroma
  hue_if_green = 2.0 + (blue - red) / safe_chroma
  hue_if_blue = 4.0 + (red - green) / safe_chroma
  hue = jnp.where(value == red, hue_if_red,
                  jnp.where(value == green, hue_if_green, hue_if_blue))
  hue = jnp.where(is_gray, 0.0, jnp.mod(hue / 6.0, 1.0))
  return hue, saturation, value


def _hsv_to_rgb(hue: jax.Array, saturation: jax.Array, value: jax.Array) -> jax.Array:
  # Each channel is value minus a piecewise-linear function of hue (the standard closed form):
  # channel n uses k = (n + 6 * hue) mod 6 with n = 5, 3, 1 for R, G, B.
  def channel(n: float) -> jax.Array:
    k = jnp.mod(n + 6.0 * hue, 6.0)
    return value - value * saturation * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
  return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def adjust_hue(image: jax.Array, shift: jax.Array) -> jax.Array:
  """(H, W, 3) image with its hue rotated by `shift` turns (shift in [-0.5, 0.5])."""
  hue, saturation, value = _rgb_to_hsv(image)
  return jnp.clip(_hsv_to_rgb(jnp.mod(hue + shift, 1.0), saturation, value), 0.0, 1.0)


def color_jitter(image: jax.Array, brightness_factor: jax.Array, contrast_factor: jax.Array,
                 saturation_factor: jax.Array, hue_shift: jax.Array, order: jax.Array
                 ) -> jax.Array:
  """Applies brightness, contrast, saturation, hue (ops 0..3) in the given order (a permutation)."""
  operations = (
      lambda x: adjust_brightness(x, brightness_factor),
      lambda x: adjust_contrast(x, contrast_factor),
      lambda x: adjust_saturation(x, saturation_factor),
      lambda x: adjust_hue(x, hue_shift),
  )
  for position in range(len(operations)):
    # Every candidate is computed and one selected: that is what a switch does under vmap anyway,
    # and lax.switch under vmap fails with explicitly sharded batch axes (jax 0.10).
    candidates = [operation(image) for operation in operations]
    image = jax.lax.select_n(order[position], *candidates)
  return image


def blur_kernel_size(image_side: int, fraction: float) -> int:
  """The odd kernel size nearest fraction * image_side, at least 3, at most the image side.

  E.g. 23 for 224 (as BYOL), 3 for 32. Capped so that reflect padding (kernel // 2) fits.
  """
  size = 2 * int(round((fraction * image_side - 1) / 2)) + 1
  largest = image_side if image_side % 2 else image_side - 1
  return max(3, min(size, largest))


def gaussian_blur(image: jax.Array, sigma: jax.Array, kernel_size: int) -> jax.Array:
  """(H, W, C) image blurred by a separable Gaussian of `sigma` pixels, reflect-padded."""
  radius = kernel_size // 2
  offsets = jnp.arange(-radius, radius + 1, dtype=image.dtype)
  weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  weights = weights / jnp.sum(weights)
  height, width = image.shape[:2]
  # A sum of shifted slices rather than a convolution op: the kernel differs per image (sigma is
  # drawn per image) and this stays a simple elementwise fusion under vmap.
  padded = jnp.pad(image, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
  image = sum(weights[t] * padded[:, t:t + width] for t in range(kernel_size))
  padded = jnp.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
  return sum(weights[t] * padded[t:t + height] for t in range(kernel_size))


def solarize(image: jax.Array, threshold: float = SOLARIZE_THRESHOLD) -> jax.Array:
  """Inverts pixels at or above threshold: x -> 1 - x where x >= threshold."""
  return jnp.where(image >= threshold, 1.0 - image, image)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """float32 (x - mean) / std per channel; uint8 input is scaled to [0, 1] first."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) / 255.0
  else:
    images = images.astype(jnp.float32)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images - mean) / std


@dataclasses.dataclass(frozen=True)
class PhotometricSettings:
  """The view-independent part of the photometric distribution, as plain floats (static)."""
  jitter_prob: float
  brightness: float
  contrast: float
  saturation: float
  hue: float
  grayscale_prob: float
  blur_kernel_fraction: float

  @classmethod
  def from_config(cls, augment_config: ml_collections.ConfigDict) -> PhotometricSettings:
    return cls(**{field.name: float(augment_config[field.name])
                  for field in dataclasses.fields(cls)})


def _factor(uniform: jax.Array, strength: float) -> jax.Array:
  """torchvision ColorJitter: factor ~ U[max(0, 1 - s), 1 + s]."""
  low, high = max(0.0, 1.0 - strength), 1.0 + strength
  return low + (high - low) * uniform


# Random numbers per image. All are drawn for the whole batch in one call rather than from one
# key per image: every random call site is a separate threefry kernel, and on CPU those dominated
# compile time. Layout: 0-3 jitter factors, 4 jitter on/off, 5 grayscale on/off, 6 blur sigma,
# 7 blur on/off, 8 solarize on/off, 9-12 jitter order.
NUM_DRAWS_PER_IMAGE = 13


def augment_image(draws: jax.Array, image: jax.Array, settings: PhotometricSettings,
                  blur_prob: jax.Array | float, solarize_prob: jax.Array | float,
                  use_blur: bool = True, use_solarize: bool = True) -> jax.Array:
  """One float (H, W, 3) image in [0, 1], with parameters from its own uniform `draws` (13,).

  An operation whose probability is statically zero is left out of the program: the uniform
  draws lie in [0, 1), so its `draw < 0` select would always keep the input, and computing the
  discarded result (the hue rotation above all) cost about a tenth of a tiny digits step, whose
  preset turns every photometric operation off. `use_blur` / `use_solarize` say whether any view
  has a non-zero blur / solarize probability (those two are per view, so traced here)."""
  if settings.jitter_prob > 0:
    jittered = color_jitter(
        image,
        brightness_factor=_factor(draws[0], settings.brightness),
        contrast_factor=_factor(draws[1], settings.contrast),
        saturation_factor=_factor(draws[2], settings.saturation),
        hue_shift=settings.hue * (2.0 * draws[3] - 1.0),
        order=jnp.argsort(draws[9:13]))   # argsort of iid uniforms: a uniformly random permutation
    image = jnp.where(draws[4] < settings.jitter_prob, jittered, image)
  if settings.grayscale_prob > 0:
    image = jnp.where(draws[5] < settings.grayscale_prob, rgb_to_grayscale(image), image)
  if use_blur:
    sigma = BLUR_SIGMA_RANGE[0] + (BLUR_SIGMA_RANGE[1] - BLUR_SIGMA_RANGE[0]) * draws[6]
    kernel_size = blur_kernel_size(min(image.shape[:2]), settings.blur_kernel_fraction)
    image = jnp.where(draws[7] < blur_prob, gaussian_blur(image, sigma, kernel_size), image)
  if use_solarize:
    image = jnp.where(draws[8] < solarize_prob, solarize(image), image)
  return jnp.clip(image, 0.0, 1.0)


def _per_view_probabilities(augment_config: ml_collections.ConfigDict, name: str) -> jax.Array:
  probabilities = tuple(augment_config[name])
  if len(probabilities) != len(VIEW_NAMES):
    raise ValueError(f"augment.{name} must give one probability per view "
                     f"({len(VIEW_NAMES)}), got {probabilities}")
  return jnp.asarray(probabilities, jnp.float32)


def _draws_sharding(images: jax.Array) -> jax.sharding.NamedSharding | None:
  """Under explicit mesh axes, the (views, batch, draws) sharding that matches the images.

  With explicit axes, vmap requires all mapped inputs to be sharded alike along the mapped axis;
  with auto axes (or no mesh) the types carry no sharding and XLA propagates it itself.
  """
  image_sharding = jax.typeof(images).sharding
  batch_spec = image_sharding.spec[1] if len(image_sharding.spec) > 1 else None
  if batch_spec is None:
    return None
  return jax.sharding.NamedSharding(image_sharding.mesh, P(None, batch_spec, None))


def augment_views(rng: jax.Array, views: Mapping[str, jax.Array],
                  augment_config: ml_collections.ConfigDict, mean: Sequence[float],
                  std: Sequence[float]) -> tuple[jax.Array, ...]:
  """Augments and normalises the uint8 (B, H, W, 3) views; returns float32 (view1, view2).

  Each image of each view gets its own parameters (its own row of uniform draws from `rng`);
  view i uses blur_prob[i] and solarize_prob[i]. With `augment_config.photometric` False the
  views are only normalised (the step benchmark's peer work has no augmentation).
  """
  missing = [name for name in VIEW_NAMES if name not in views]
  if missing:
    raise ValueError(f"views is missing {missing}; expected keys {list(VIEW_NAMES)}")
  shapes = {name: tuple(views[name].shape) for name in VIEW_NAMES}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"views must have equal shapes, got {shapes}")
  batch_size = shapes[VIEW_NAMES[0]][0]
  if not augment_config.photometric:
    return tuple(normalize(views[name], mean, std) for name in VIEW_NAMES)
  # Views stacked on a new leading axis (not concatenated along the batch) so the batch axis keeps
  # its device sharding, and one vmapped program serves both views.
  images = jnp.stack([normalize(views[name], (0.0,) * 3, (1.0,) * 3) for name in VIEW_NAMES])
  # Threefry is counter-based and partitionable: each image's draws are the same whatever the
  # sharding, so results do not depend on the device layout.
  draws = jax.random.uniform(rng, (len(VIEW_NAMES), batch_size, NUM_DRAWS_PER_IMAGE),
                             out_sharding=_draws_sharding(images))
  settings = PhotometricSettings.from_config(augment_config)
  blur_probs = _per_view_probabilities(augment_config, "blur_prob")
  solarize_probs = _per_view_probabilities(augment_config, "solarize_prob")
  use_blur = any(float(p) > 0 for p in augment_config.blur_prob)
  use_solarize = any(float(p) > 0 for p in augment_config.solarize_prob)
  per_view = jax.vmap(
      lambda image_draws, image, blur_prob, solarize_prob: augment_image(
          image_draws, image, settings, blur_prob, solarize_prob, use_blur, use_solarize),
      in_axes=(0, 0, None, None))
  augmented = jax.vmap(per_view)(draws, images, blur_probs, solarize_probs)
  return tuple(normalize(augmented[i], mean, std) for i in range(len(VIEW_NAMES)))
