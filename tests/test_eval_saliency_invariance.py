"""Saliency finds the region a constructed encoder looks at; invariance of constructed invariant
encoders is 1 and of a sensitive one is not."""

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.evaluation import invariance, saliency

TOP, LEFT, SIZE = 3, 9, 4   # the region the region-encoder reads: rows 3..6, columns 9..12


def _region_encoder(images):
  """Features depend only on the pixels of one known 4 x 4 region."""
  region = images[:, TOP:TOP + SIZE, LEFT:LEFT + SIZE, :]
  return jnp.concatenate([region.reshape(images.shape[0], -1), jnp.ones((images.shape[0], 1))],
                         axis=1)


def _images(count=3, seed=0):
  return np.random.default_rng(seed).uniform(0.2, 1.0, (count, 16, 16, 3)).astype(np.float32)


def test_occlusion_saliency_lies_on_the_region_the_features_read():
  patch = 3
  maps = saliency.occlusion_saliency(_region_encoder, _images(), patch=patch, stride=1)
  assert maps.shape == (3, 16, 16)
  rows, columns = np.indices((16, 16))
  # An occluder changes the features only if it overlaps the region, so pixels farther than the
  # occluder from the region have exactly zero saliency, and the peak lies inside the region.
  near = ((rows > TOP - patch) & (rows < TOP + SIZE + patch - 1)
          & (columns > LEFT - patch) & (columns < LEFT + SIZE + patch - 1))
  for saliency_map in maps:
    assert np.all(saliency_map[~near] == 0.0)
    peak_row, peak_column = np.unravel_index(np.argmax(saliency_map), saliency_map.shape)
    assert TOP <= peak_row < TOP + SIZE and LEFT <= peak_column < LEFT + SIZE
  diffusion = saliency.attentive_diffusion(maps)
  assert np.all(diffusion <= 100.0 * near.sum() / near.size)


def test_gradient_saliency_is_the_region_exactly():
  maps = saliency.gradient_saliency(_region_encoder, _images())
  inside = np.zeros((16, 16), bool)
  inside[TOP:TOP + SIZE, LEFT:LEFT + SIZE] = True
  assert np.all(maps[:, ~inside] == 0.0) and np.all(maps[:, inside] > 0.0)
  # Every pixel above the mean is in the region: 16 of 256 pixels = 6.25 % at most.
  assert np.all(saliency.attentive_diffusion(maps) <= 6.25)


def test_attentive_diffusion_counts_pixels_above_the_mean():
  maps = np.zeros((1, 10, 10))
  maps[0, :3, :] = 1.0   # 30 pixels above the mean 0.3
  assert saliency.attentive_diffusion(maps)[0] == pytest.approx(30.0)


def test_occluder_larger_than_the_image_is_named():
  with pytest.raises(ValueError, match=r"occluder size 20 must be in \[1, 16\]"):
    saliency.occlusion_saliency(_region_encoder, _images(), patch=20)


def _luma_statistics_encoder(images):
  """Spatial means of functions of each pixel's luma: blind to where pixels are (flip, 90-degree
  rotations) and to colour beyond luma (grayscale)."""
  luma = images @ jnp.asarray([0.299, 0.587, 0.114])
  return jnp.stack([luma.mean((1, 2)), (luma ** 2).mean((1, 2)), jnp.sqrt(luma).mean((1, 2))],
                   axis=1)


def _flatten_encoder(images):
  return images.reshape(images.shape[0], -1) - 0.5


def test_an_invariant_encoder_has_invariance_one():
  images = _images(8)
  sweeps = {"flip": [0.0, 1.0], "grayscale": [0.0, 0.5, 1.0], "rotation": [0.0, 90.0, 180.0]}
  results = invariance.invariance_sweeps(_luma_statistics_encoder, images, sweeps)
  for transform, sweep in results.items():
    assert sweep["params"] == sweeps[transform]
    np.testing.assert_allclose(sweep["cosine"], 1.0, atol=1e-5)
  # A pixel-wise encoder is not invariant to a flip, and both see 'flip 0' as the identity.
  sensitive = invariance.invariance_sweeps(_flatten_encoder, images, {"flip": [0.0, 1.0]})
  assert sensitive["flip"]["cosine"][0] == pytest.approx(1.0, abs=1e-6)
  assert sensitive["flip"]["cosine"][1] < 0.5


def test_different_images_cosine_is_the_mean_over_shifted_pairs():
  images = _images(5)
  features = np.array(_flatten_encoder(jnp.asarray(images)))
  features = features / np.linalg.norm(features, axis=1, keepdims=True)
  expected = np.mean([features[i] @ features[i - 1] for i in range(5)])
  assert invariance.different_images_cosine(_flatten_encoder, images) == pytest.approx(
      expected, abs=1e-5)


def test_transforms_at_zero_strength_are_the_identity():
  images = jnp.asarray(_images(2))
  for name, identity in [("rotation", 0.0), ("hue", 0.0), ("grayscale", 0.0),
                         ("crop_scale", 1.0), ("flip", 0.0), ("blur", 0.0)]:
    np.testing.assert_allclose(invariance.TRANSFORMS[name](images, identity), images, atol=1e-5)
  rotated = invariance.rotate(images, 90.0)
  np.testing.assert_allclose(rotated, np.rot90(np.asarray(images), k=-1, axes=(1, 2)), atol=1e-5)
