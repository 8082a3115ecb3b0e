"""Collapse monitors computed on a batch of projections inside the train step.

- `normalized_std`: std over the batch of l2-normalised projections, averaged over dimensions
  (SimSiam, sec. 4.1). A collapsed output gives 0; a well-spread one about 1/sqrt(d).
- `rankme`: effective rank exp(entropy of the normalised singular values) (Garrido et al. 2023);
  1 for a collapsed (rank-one) batch, up to min(N, d).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalized_std(projections: jax.Array) -> jax.Array:
  z = projections.astype(jnp.float32)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return jnp.mean(jnp.std(z, axis=0))


def rankme(projections: jax.Array, eps: float = 1e-7) -> jax.Array:
  z = projections.astype(jnp.float32)
  # Singular values via the eigenvalues of the smaller Gram matrix: cheaper than an SVD when the
  # batch is much smaller than the projection dimension (SimSiam's 2048) or vice versa.
  gram = z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z
  singular_values = jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(gram), 0.0, None))
  p = singular_values / (jnp.sum(singular_values) + eps) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))
