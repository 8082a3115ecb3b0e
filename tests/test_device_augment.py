"""Tests for the on-device photometric augmentation.

Each operation is compared with an independent NumPy reference at fixed parameters (hue through
the standard library's `colorsys`, blur through `scipy.ndimage`); the random pipeline is checked
for per-image parameters, its probabilities, its output range, and sharding invariance.
"""

from __future__ import annotations

import colorsys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import ndimage

from configs import common
from input_pipeline import device_augment

LUMA = np.array([0.299, 0.587, 0.114])
MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def random_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).random(shape).astype(np.float32)


def augment_config(**overrides) -> ml_collections.ConfigDict:
  """The BYOL preset with every random op switched off unless overridden."""
  config = common.base_config("test", "digits").augment
  config.update(dict(common.AUGMENTATIONS["byol"]))
  config.update(dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=(0.0, 0.0),
                     solarize_prob=(0.0, 0.0)))
  config.update(overrides)
  return config


def run_augment(config, views: dict[str, np.ndarray], seed: int = 0):
  augment = jax.jit(lambda key, v: device_augment.augment_views(key, v, config, MEAN, STD))
  return [np.asarray(x) for x in augment(jax.random.key(seed), views)]


def denormalize(x: np.ndarray) -> np.ndarray:
  return x * np.array(STD) + np.array(MEAN)


def changed(output: np.ndarray, images_uint8: np.ndarray) -> np.ndarray:
  """Per image: does the augmented output differ from the plain normalised input?"""
  plain = np.asarray(device_augment.normalize(images_uint8, MEAN, STD))
  return np.abs(output - plain).reshape(len(output), -1).max(1) > 1e-5


# ---------------------------------------------------------- single ops vs NumPy references


def test_brightness_contrast_saturation_match_numpy():
  image = random_images((6, 5, 3))
  gray = image @ LUMA
  for factor in (0.3, 1.0, 1.7):
    np.testing.assert_allclose(device_augment.adjust_brightness(image, factor),
                               np.clip(factor * image, 0, 1), atol=1e-6)
    np.testing.assert_allclose(device_augment.adjust_contrast(image, factor),
                               np.clip(factor * image + (1 - factor) * gray.mean(), 0, 1),
                               atol=1e-6)
    np.testing.assert_allclose(device_augment.adjust_saturation(image, factor),
                               np.clip(factor * image + (1 - factor) * gray[..., None], 0, 1),
                               atol=1e-6)


def test_hue_matches_colorsys():
  image = random_images((5, 7, 3), seed=1)
  image[0, 0] = (0.4, 0.4, 0.4)   # gray pixel: hue undefined, must stay put
  image[0, 1] = (0.0, 0.0, 0.0)
  for shift in (-0.1, 0.05, 0.3):
    expected = np.empty_like(image)
    for index in np.ndindex(image.shape[:2]):
      hue, saturation, value = colorsys.rgb_to_hsv(*image[index])
      expected[index] = colorsys.hsv_to_rgb((hue + shift) % 1.0, saturation, value)
    np.testing.assert_allclose(device_augment.adjust_hue(image, shift), expected, atol=1e-5)


def test_grayscale_and_solarize_match_numpy():
  image = random_images((4, 4, 3), seed=2)
  gray = device_augment.rgb_to_grayscale(image)
  np.testing.assert_allclose(gray, np.repeat((image @ LUMA)[..., None], 3, -1), atol=1e-6)
  image[0, 0, 0] = 0.5   # the threshold itself is inverted (x >= 0.5)
  np.testing.assert_allclose(device_augment.solarize(image),
                             np.where(image >= 0.5, 1 - image, image), atol=0)


def test_gaussian_blur_matches_scipy_with_reflect_padding():
  image = random_images((9, 11, 3), seed=3)
  for sigma, kernel_size in ((0.7, 3), (1.5, 5), (2.0, 7)):
    radius = kernel_size // 2
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    weights /= weights.sum()
    # scipy's 'mirror' is numpy/torch 'reflect': the edge pixel is not repeated.
    expected = ndimage.convolve1d(image.astype(np.float64), weights, axis=0, mode="mirror")
    expected = ndimage.convolve1d(expected, weights, axis=1, mode="mirror")
    np.testing.assert_allclose(device_augment.gaussian_blur(image, sigma, kernel_size), expected,
                               atol=1e-5)


def test_blur_kernel_size_is_odd_and_about_a_tenth_of_the_side():
  assert device_augment.blur_kernel_size(224, 0.1) == 23   # BYOL / SimCLR on ImageNet
  assert device_augment.blur_kernel_size(96, 0.1) == 9
  assert device_augment.blur_kernel_size(32, 0.1) == 3
  assert device_augment.blur_kernel_size(8, 0.1) == 3      # at least 3
  assert device_augment.blur_kernel_size(4, 0.9) == 3      # reflect padding must fit


def test_color_jitter_applies_ops_in_the_given_order():
  image = random_images((4, 6, 3), seed=4)
  references = [
      lambda x: np.clip(1.3 * x, 0, 1),
      lambda x: np.clip(0.6 * x + 0.4 * (x @ LUMA).mean(), 0, 1),
      lambda x: np.clip(1.5 * x + (1 - 1.5) * (x @ LUMA)[..., None], 0, 1),
      lambda x: np.asarray(device_augment.adjust_hue(x, 0.2)),   # checked against colorsys above
  ]
  outputs = []
  for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
    expected = image
    for op in order:
      expected = references[op](expected)
    actual = device_augment.color_jitter(image, 1.3, 0.6, 1.5, 0.2, jnp.array(order))
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    outputs.append(np.asarray(actual))
  assert not np.allclose(outputs[0], outputs[1], atol=1e-3)   # the order matters


def test_normalize_accepts_uint8_and_float():
  images = np.array([[[[0, 255, 51]]]], np.uint8)
  as_float = images.astype(np.float32) / 255
  expected = (as_float - np.array(MEAN)) / np.array(STD)
  for x in (images, as_float):
    out = device_augment.normalize(x, MEAN, STD)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


# ------------------------------------------------------------------------ random pipeline


def test_parameters_are_per_image_and_sharding_does_not_change_results():
  config = augment_config(jitter_prob=1.0, grayscale_prob=0.2, blur_prob=(1.0, 0.1),
                          solarize_prob=(0.0, 0.2))
  one_image = (random_images((16, 16, 3), seed=5) * 255).astype(np.uint8)
  views = {"view1": np.repeat(one_image[None], 16, 0), "view2": np.repeat(one_image[None], 16, 0)}
  view1, view2 = run_augment(config, views)
  assert view1.shape == (16, 16, 16, 3) and view1.dtype == np.float32
  for output in (view1, view2):
    assert np.isfinite(output).all()
    pixels = denormalize(output)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    # Identical inputs, jitter always on: every image got its own parameters.
    assert len({np.round(x, 4).tobytes() for x in output}) == 16
  assert not np.allclose(view1, view2)

  # Results must not depend on how the batch is laid out over the 8 devices. Explicit axes are the
  # strict case: vmap then needs keys and images sharded alike (auto axes were checked by hand;
  # one compile fewer keeps the suite fast).
  augment = jax.jit(lambda key, v: device_augment.augment_views(key, v, config, MEAN, STD))
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  batch_sharding = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    sharded = augment(jax.random.key(0), jax.device_put(views, batch_sharding))
  assert sharded[0].sharding.is_equivalent_to(batch_sharding, 4)
  np.testing.assert_allclose(np.asarray(sharded[0]), view1, atol=1e-5)
  np.testing.assert_allclose(np.asarray(sharded[1]), view2, atol=1e-5)


def test_blur_probability_zero_versus_one():
  images = (random_images((500, 8, 8, 3), seed=6) * 255).astype(np.uint8)
  view1, view2 = run_augment(augment_config(blur_prob=(0.0, 1.0)), {"view1": images,
                                                                     "view2": images})
  assert not changed(view1, images).any()
  # sigma ~ U[0.1, 2]: below ~0.2 a 3-tap Gaussian is the identity in float32, so a few percent
  # of "blurred" images are unchanged.
  assert changed(view2, images).mean() > 0.9
  # The blurred view is smoother: differences between neighbouring pixels shrink.
  assert np.abs(np.diff(view2, axis=1)).mean() < 0.8 * np.abs(np.diff(view1, axis=1)).mean()


def test_jitter_probability():
  images = (random_images((1000, 8, 8, 3), seed=8) * 255).astype(np.uint8)
  # Brightness only: any factor != 1 changes a random image, so "changed" means "jittered".
  config = augment_config(jitter_prob=0.8, brightness=0.4, contrast=0.0, saturation=0.0,
                          hue=0.0)
  for output in run_augment(config, {"view1": images, "view2": images}):
    assert abs(changed(output, images).mean() - 0.8) < 0.05


def test_grayscale_and_solarize_probabilities():
  num_images = 1000
  images = (random_images((num_images, 8, 8, 3), seed=7) * 255).astype(np.uint8)
  config = augment_config(grayscale_prob=0.2, solarize_prob=(0.0, 0.2))
  outputs = run_augment(config, {"view1": images, "view2": images}, seed=1)
  as_float = images.astype(np.float32) / 255
  gray = np.repeat((as_float @ LUMA)[..., None], 3, -1)
  solarize_fractions = []
  for output in outputs:
    pixels = denormalize(output)
    is_gray = np.abs(pixels - pixels[..., :1]).reshape(num_images, -1).max(1) < 1e-4
    assert abs(is_gray.mean() - 0.2) < 0.05   # 4 standard deviations
    before_solarize = np.where(is_gray[:, None, None, None], gray, as_float)
    solarized = np.abs(pixels - before_solarize).reshape(num_images, -1).max(1) > 1e-4
    np.testing.assert_allclose(pixels[solarized],
                               np.where(before_solarize >= 0.5, 1 - before_solarize,
                                        before_solarize)[solarized], atol=1e-4)
    solarize_fractions.append(solarized.mean())
  assert solarize_fractions[0] == 0.0
  assert abs(solarize_fractions[1] - 0.2) < 0.05


def test_operations_with_zero_probability_are_left_out_without_changing_the_result():
  """The digits preset turns every photometric op off: the step must then neither compute them
  (the jitter's order is the only sort, its hue rotation the costliest part) nor change a pixel."""
  images = (random_images((32, 8, 8, 3), seed=9) * 255).astype(np.uint8)
  views = {"view1": images, "view2": images[::-1]}
  all_off = augment_config()
  for output, name in zip(run_augment(all_off, views), device_augment.VIEW_NAMES):
    np.testing.assert_array_equal(output,
                                  np.asarray(device_augment.normalize(views[name], MEAN, STD)))

  def sorts(config):
    program = jax.make_jaxpr(lambda v: device_augment.augment_views(jax.random.key(0), v, config,
                                                                   MEAN, STD))(views)
    return str(program).count(" sort[")
  assert sorts(all_off) == 0 and sorts(augment_config(jitter_prob=0.1)) > 0

  # A per-view probability of zero next to a non-zero one still computes both views' way.
  settings = device_augment.PhotometricSettings.from_config(all_off)
  draws = jax.random.uniform(jax.random.key(1), (device_augment.NUM_DRAWS_PER_IMAGE,))
  image = jnp.asarray(random_images((8, 8, 3), seed=10))
  skipped = device_augment.augment_image(draws, image, settings, 0.0, 0.0, use_blur=False,
                                         use_solarize=False)
  computed = device_augment.augment_image(draws, image, settings, 0.0, 0.0)
  np.testing.assert_array_equal(np.asarray(skipped), np.asarray(computed))


def test_missing_view_or_wrong_probability_count_is_an_error():
  images = np.zeros((2, 8, 8, 3), np.uint8)
  with pytest.raises(ValueError, match="view2"):
    device_augment.augment_views(jax.random.key(0), {"view1": images}, augment_config(), MEAN,
                                 STD)
  with pytest.raises(ValueError, match="blur_prob"):
    device_augment.augment_views(jax.random.key(0), {"view1": images, "view2": images},
                                 augment_config(blur_prob=(0.5,)), MEAN, STD)
