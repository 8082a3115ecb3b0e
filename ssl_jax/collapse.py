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


def singular_values(z: jax.Array) -> jax.Array:
  """The min(N, d) singular values of an (N, d) float32 matrix, to float32 accuracy.

  Not square roots of the eigenvalues of z z^T: the Gram matrix squares z's condition number, so
  in float32 the eigenvalues that should be 0 come out at ~1e-7 of the largest and their square
  roots at ~3e-4 of the largest singular value. That would put the RankMe of collapsed batches of
  256 x 2048 projections of rank 1 and 8 at 1.16 and 8.25, against 1.0004 and 7.96 from a float64
  SVD (the tests' batches). Householder QR is backward stable, so R has z's singular values to
  the accuracy of an SVD of z, and the SVD then runs on a min(N, d) square matrix, cheaper than
  an SVD of z itself. On GPUs, JAX's SVD switches from Jacobi to the much slower gesvd above 1024
  rows or columns, which a z of 2048 or 8192 dimensions would hit and its R (up to 1024) does
  not."""
  tall = z.T if z.shape[0] < z.shape[1] else z
  return jnp.linalg.svd(jnp.linalg.qr(tall, mode="r"), compute_uv=False)


def rankme(projections: jax.Array, eps: float = 1e-7) -> jax.Array:
  s = singular_values(projections.astype(jnp.float32))
  p = s / (jnp.sum(s) + eps) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))
