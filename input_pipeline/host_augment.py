"""Geometric augmentation on the host, in uint8: random resized crop (or resize), rotation and
flips per view.

Crops change the image shape, so they must happen before batching (on the host); the photometric
part of the augmentation runs on the accelerator (`device_augment.py`). Every random parameter is
drawn per image and per view from the `np.random.Generator` grain hands to `random_map`, which
grain seeds from (pipeline seed, element position): the output is a pure function of both, so a
restored iterator replays exactly the crops of an uninterrupted run.

Order within a view: crop (or resize) to the output size, horizontal flip, vertical flip,
rotation. Parameters are drawn in that order and only for the enabled operations, so a config
without rotation or vertical flip draws exactly what it drew before those options existed.
Rotation runs after the resize because it is then done on size x size pixels rather than on the
full image (a 1024 px X-ray at 224 px is ~20x fewer pixels); corners it uncovers are black.
"""

from __future__ import annotations

import math
from typing import Any

import grain
import ml_collections
import numpy as np
from PIL import Image

# torchvision's RandomResizedCrop defaults, used by MoCo, SimCLR and BYOL alike.
CROP_ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_CROP_ATTEMPTS = 10


def sample_crop_box(height: int, width: int, scale: tuple[float, float],
                    ratio: tuple[float, float], rng: np.random.Generator
                    ) -> tuple[int, int, int, int]:
  """(top, left, crop_height, crop_width) by torchvision's RandomResizedCrop algorithm.

  Area fraction ~ U(scale), log aspect ratio ~ U(log ratio); up to 10 attempts to fit the box in
  the image, then a centre crop of the whole image clamped to the ratio range.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(_CROP_ATTEMPTS):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    crop_width = int(round(math.sqrt(target_area * aspect_ratio)))
    crop_height = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < crop_width <= width and 0 < crop_height <= height:
      top = int(rng.integers(0, height - crop_height + 1))
      left = int(rng.integers(0, width - crop_width + 1))
      return top, left, crop_height, crop_width
  in_ratio = width / height
  if in_ratio < min(ratio):
    crop_width, crop_height = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    crop_height, crop_width = height, int(round(height * max(ratio)))
  else:
    crop_height, crop_width = height, width
  return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def crop_and_resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
  """Crops box=(top, left, height, width) from a uint8 (H, W, 3) image and resizes to size^2."""
  top, left, crop_height, crop_width = box
  # PIL's bilinear filter widens its support when downscaling (antialiasing, like torchvision's
  # default), and resizing the box region directly avoids a separate crop copy. A full-image box
  # at the target size is returned unchanged by PIL.
  resized = Image.fromarray(image).resize(
      (size, size), Image.Resampling.BILINEAR,
      box=(left, top, left + crop_width, top + crop_height))
  return np.asarray(resized)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
  """uint8 (H, W, 3) rotated counter-clockwise by `degrees` about its centre, same size, bilinear,
  uncovered corners black."""
  rotated = Image.fromarray(np.ascontiguousarray(image)).rotate(
      degrees, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))
  return np.asarray(rotated)


def random_crop_flip(image: np.ndarray, size: int, crop_scale: tuple[float, float], flip: bool,
                     rng: np.random.Generator, *, random_resized_crop: bool = True,
                     vertical_flip: bool = False, rotation_degrees: float = 0.0) -> np.ndarray:
  """One augmented view: random resized crop to size x size (or the eval resize), a horizontal
  and a vertical flip each w.p. 0.5, and a rotation by U(-rotation_degrees, rotation_degrees)."""
  if random_resized_crop:
    height, width = image.shape[:2]
    box = sample_crop_box(height, width, crop_scale, CROP_ASPECT_RATIO, rng)
    view = crop_and_resize(image, box, size)
  else:
    view = eval_resize(image, size)
  if flip and rng.random() < 0.5:
    view = view[:, ::-1]
  if vertical_flip and rng.random() < 0.5:
    view = view[::-1]
  if rotation_degrees > 0:
    view = rotate(view, float(rng.uniform(-rotation_degrees, rotation_degrees)))
  return np.ascontiguousarray(view)


def eval_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Deterministic eval view: resize the shorter side to `size`, then centre-crop size x size."""
  height, width = image.shape[:2]
  if (height, width) == (size, size):
    return image
  scale = size / min(height, width)
  # The box is the centred region that maps onto size x size after scaling by `scale`.
  box_height, box_width = size / scale, size / scale
  top, left = (height - box_height) / 2, (width - box_width) / 2
  resized = Image.fromarray(image).resize(
      (size, size), Image.Resampling.BILINEAR,
      box=(left, top, left + box_width, top + box_height))
  return np.asarray(resized)


class TwoViewCrop(grain.transforms.RandomMap):
  """grain transform: {'image', 'label'} -> {'view1', 'view2', 'label'}, the views independently
  cropped/flipped; the label (int32: () or multi-hot (K,)) is carried for the supervised
  baseline.

  Holds plain values, not the ConfigDict, so it pickles cheaply into grain worker processes.
  """

  def __init__(self, image_size: int, crop_scale: tuple[float, float], flip: bool, *,
               random_resized_crop: bool = True, vertical_flip: bool = False,
               rotation_degrees: float = 0.0):
    if rotation_degrees < 0:
      raise ValueError(f"augment.rotation_degrees={rotation_degrees} must be >= 0")
    self.image_size = int(image_size)
    self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
    self.flip = bool(flip)
    self.random_resized_crop = bool(random_resized_crop)
    self.vertical_flip = bool(vertical_flip)
    self.rotation_degrees = float(rotation_degrees)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> TwoViewCrop:
    augment = config.augment
    return cls(config.data.image_size, tuple(augment.crop_scale), augment.flip,
               random_resized_crop=augment.get("random_resized_crop", True),
               vertical_flip=augment.get("vertical_flip", False),
               rotation_degrees=augment.get("rotation_degrees", 0.0))

  def _view(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return random_crop_flip(image, self.image_size, self.crop_scale, self.flip, rng,
                            random_resized_crop=self.random_resized_crop,
                            vertical_flip=self.vertical_flip,
                            rotation_degrees=self.rotation_degrees)

  def random_map(self, element: dict[str, Any], rng: np.random.Generator
                 ) -> dict[str, np.ndarray]:
    image = element["image"]
    return {"view1": self._view(image, rng), "view2": self._view(image, rng),
            "label": np.asarray(element["label"], np.int32)}


class EvalResize(grain.transforms.Map):
  """grain transform: {'image', 'label'} -> the same with the deterministic eval resize."""

  def __init__(self, image_size: int):
    self.image_size = int(image_size)

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    # Labels keep their shape: () for single and ordinal labels, (K,) for multi-hot ones.
    return {"image": eval_resize(element["image"], self.image_size),
            "label": np.asarray(element["label"], np.int32)}
