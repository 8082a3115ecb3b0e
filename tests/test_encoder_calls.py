"""Calling a loaded encoder as a user does: shapes and sizes checked, gray accepted, NumPy inputs
batched and padded so that new batch sizes do not recompile (issue 29, item 4)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import export, models

IMAGE_SIZE = 16


@pytest.fixture(scope="module")
def encoder():
  model_config = ml_collections.ConfigDict(dict(name="resnet10", stem="cifar", width=4,
                                                dtype="float32"))
  module = models.build_backbone(model_config)
  variables = module.init(jax.random.key(0), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)),
                          train=False)
  return export.Encoder(model_config, variables, IMAGE_SIZE, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3),
                        metadata={})


def _images(count, size=IMAGE_SIZE, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _reference(encoder, images):
  """One image at a time, through the pure function (an independent path)."""
  return np.concatenate([np.asarray(encoder.apply_unjitted(encoder.variables, image[None])
                                    ["pooled"]) for image in images])


def test_images_of_another_size_are_refused_naming_both_sizes(encoder):
  with pytest.raises(ValueError, match=r"takes 16x16 images .*got 32x32"):
    encoder.pooled(_images(2, size=32))
  with pytest.raises(ValueError, match=r"\(N, H, W, 3\) RGB or \(N, H, W\) gray; got shape "
                                       r"\(2, 16, 16, 4\)"):
    encoder(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 4), np.uint8))


def test_gray_images_are_the_rgb_images_with_equal_channels(encoder):
  gray = _images(3)[..., 0]
  expected = _reference(encoder, np.repeat(gray[..., None], 3, axis=-1))
  np.testing.assert_allclose(np.asarray(encoder.pooled(gray)), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(encoder.pooled(gray[..., None])), expected, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(encoder(jnp.asarray(gray))["pooled"]), expected,
                             rtol=1e-5, atol=1e-5)


def test_new_batch_sizes_reuse_one_compilation_and_large_arrays_run_in_batches(encoder):
  fresh = encoder.with_variables(encoder.variables)
  fresh._pooled = jax.jit(lambda variables, images:
                          fresh.apply_unjitted(variables, images)["pooled"])
  for count in (3, 5, 7):
    features = fresh.pooled(_images(count, seed=count))
    assert features.shape == (count, fresh.feature_dim)
  assert fresh._pooled._cache_size() == 1   # all padded to 8
  images = _images(export.MAX_BATCH + 44, seed=1)
  features = np.asarray(fresh.pooled(images))
  np.testing.assert_allclose(features, _reference(fresh, images), rtol=1e-4, atol=1e-5)
  # Two more shapes (the full batch and the last one padded to 64), not one per call.
  assert fresh._pooled._cache_size() == 3
  stages = fresh(images)["stages"]
  assert [stage.shape[0] for stage in stages] == [len(images)] * 4
