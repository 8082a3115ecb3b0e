"""Where an encoder looks: occlusion and gradient saliency of its pooled features.

Occlusion (Zeiler & Fergus 2014, as used for SSL encoders by the intermediate-layers paper): a
square occluder (10 x 10 by default) filled with the encoder's mean colour, i.e. zero after input
normalisation, slides over the image; each position scores the normalised change of the feature
vector ||f(x) - f(x_occluded)|| / ||f(x)||, and a pixel's saliency is the mean score of the
positions whose occluder covers it.

Gradient (Simonyan et al. 2014): |d ||f(x)|| / dx|, the largest over colour channels.

Attentive diffusion: the percentage of a map's pixels above the map's mean; a small value means
the encoder attends to a compact region, a large one that its attention is diffuse.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

FeatureFn = Callable[[jax.Array], jax.Array]   # float images (B, H, W, 3) in [0, 1] -> (B, D)


def occluder_positions(size: int, patch: int, stride: int) -> list[int]:
  """Top-left offsets along one side; the last position touches the border so every pixel is
  covered."""
  if not 0 < patch <= size:
    raise ValueError(f"occluder size {patch} must be in [1, {size}] (the image side)")
  if stride < 1:
    raise ValueError(f"occluder stride must be >= 1, got {stride}")
  positions = list(range(0, size - patch + 1, stride))
  if positions[-1] != size - patch:
    positions.append(size - patch)
  return positions


def occlusion_saliency(feature_fn: FeatureFn, images: np.ndarray, *, patch: int = 10,
                       stride: int = 1, fill=(0.0, 0.0, 0.0), chunk: int = 256) -> np.ndarray:
  """(N, H, W) occlusion maps of float images (N, H, W, 3) in [0, 1]."""
  images = np.asarray(images, np.float32)
  count, height, width, _ = images.shape
  rows = occluder_positions(height, patch, stride)
  columns = occluder_positions(width, patch, stride)
  masks = np.zeros((len(rows) * len(columns), height, width), np.float32)
  for index, (top, left) in enumerate((r, c) for r in rows for c in columns):
    masks[index, top:top + patch, left:left + patch] = 1.0
  fill = jnp.asarray(fill, jnp.float32)

  @jax.jit
  def scores(image, masks):
    reference = feature_fn(image[None])[0]
    occluded = image[None] * (1.0 - masks[..., None]) + fill * masks[..., None]
    change = jnp.linalg.norm(feature_fn(occluded) - reference, axis=-1)
    return change / jnp.maximum(jnp.linalg.norm(reference), 1e-12)

  coverage = masks.sum(axis=0)
  maps = []
  for image in images:
    position_scores = np.concatenate([
        np.asarray(scores(jnp.asarray(image), jnp.asarray(masks[s:s + chunk])))
        for s in range(0, len(masks), chunk)])
    maps.append(np.tensordot(position_scores, masks, axes=1) / coverage)
  return np.stack(maps)


def gradient_saliency(feature_fn: FeatureFn, images: np.ndarray) -> np.ndarray:
  """(N, H, W): max over channels of |gradient of the feature norm| for every image."""
  def feature_norm(image):
    return jnp.linalg.norm(feature_fn(image[None])[0])
  gradients = jax.jit(jax.vmap(jax.grad(feature_norm)))(jnp.asarray(images, jnp.float32))
  return np.asarray(jnp.max(jnp.abs(gradients), axis=-1))


def attentive_diffusion(maps: np.ndarray) -> np.ndarray:
  """Percentage of each map's pixels above that map's mean."""
  maps = np.asarray(maps)
  flat = maps.reshape(maps.shape[0], -1)
  return 100.0 * np.mean(flat > flat.mean(axis=1, keepdims=True), axis=1)
