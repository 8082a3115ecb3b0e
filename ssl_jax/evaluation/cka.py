"""Centered kernel alignment (Kornblith, Norouzi, Lee, Hinton 2019) between representations.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), with HSIC(K, L) = tr(K H L H), H the
centring matrix, i.e. the inner product of the double-centred Gram matrices (the 1/(n-1)^2
normalisation of HSIC cancels in the ratio). Kernels:
  linear: K = X X^T (invariant to orthogonal transforms and isotropic scaling of X)
  rbf:    K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)), with either
          'fixed' sigma (0.8 by default, as Kaku et al. 2021) on l2-normalised rows, so that the
          bandwidth means the same whatever the scale of a layer's activations (distances lie
          in [0, 2]), or
          'median': sigma = factor x the median pairwise distance (Kornblith et al.'s heuristic).
Representations larger than the sample are compared through their n x n Gram matrices, so the
cost does not grow with the feature dimension beyond one matrix product. Following the
intermediate-layers paper, CKA is averaged over random subsets of examples.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

KERNELS = ("linear", "rbf")
RBF_SIGMA_MODES = ("fixed", "median")


def linear_gram(x: jax.Array) -> jax.Array:
  return x @ x.T


def _squared_distances(x: jax.Array) -> jax.Array:
  norms = jnp.sum(x * x, axis=1)
  return jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * (x @ x.T), 0.0)


def _off_diagonal(matrix: jax.Array) -> jax.Array:
  """The n (n - 1) off-diagonal entries of an (n, n) matrix, with static shapes (a boolean mask
  has a data-dependent size and fails inside jit): dropping the last entry of the flattened
  matrix leaves n - 1 rows of n + 1 that each start with a diagonal entry."""
  n = matrix.shape[0]
  return matrix.reshape(-1)[:-1].reshape(n - 1, n + 1)[:, 1:].reshape(-1)


def rbf_gram(x: jax.Array, sigma: float, sigma_mode: str = "fixed") -> jax.Array:
  if sigma_mode == "fixed":
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    squared = _squared_distances(x)
    bandwidth_squared = sigma ** 2
  elif sigma_mode == "median":
    squared = _squared_distances(x)
    # Median of distances = sqrt of the median of squared distances (monotone).
    bandwidth_squared = sigma ** 2 * jnp.median(_off_diagonal(squared))
  else:
    raise ValueError(f"unknown rbf sigma mode {sigma_mode!r}; allowed: {list(RBF_SIGMA_MODES)}")
  return jnp.exp(-squared / (2.0 * bandwidth_squared))


def center_gram(gram: jax.Array) -> jax.Array:
  """H K H with H = I - 11^T / n: rows and columns of K centred."""
  gram = gram - jnp.mean(gram, axis=0, keepdims=True)
  return gram - jnp.mean(gram, axis=1, keepdims=True)


def gram(x: jax.Array, kernel: str, sigma: float = 0.8, sigma_mode: str = "fixed") -> jax.Array:
  x = jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1)
  if kernel == "linear":
    return linear_gram(x)
  if kernel == "rbf":
    return rbf_gram(x, sigma, sigma_mode)
  raise ValueError(f"unknown CKA kernel {kernel!r}; allowed: {list(KERNELS)}")


def cka_from_grams(gram_x: jax.Array, gram_y: jax.Array) -> jax.Array:
  centred_x, centred_y = center_gram(gram_x), center_gram(gram_y)
  hsic_xy = jnp.sum(centred_x * centred_y)
  return hsic_xy / jnp.sqrt(jnp.sum(centred_x * centred_x) * jnp.sum(centred_y * centred_y))


def cka(x, y, kernel: str = "linear", sigma: float = 0.8, sigma_mode: str = "fixed") -> float:
  """CKA between two representations (n, ...) of the same n examples."""
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"CKA compares representations of the same examples; got {x.shape[0]} "
                     f"and {y.shape[0]} rows")
  return float(cka_from_grams(gram(x, kernel, sigma, sigma_mode),
                              gram(y, kernel, sigma, sigma_mode)))


@functools.partial(jax.jit, static_argnames=("kernel", "sigma", "sigma_mode"))
def _cka_matrix(rows: tuple, columns: tuple, kernel: str, sigma: float, sigma_mode: str):
  """(len(rows), len(columns)) CKA of every pair, on one subset of examples."""
  row_grams = [center_gram(gram(x, kernel, sigma, sigma_mode)) for x in rows]
  column_grams = [center_gram(gram(y, kernel, sigma, sigma_mode)) for y in columns]
  row_norms = jnp.stack([jnp.sqrt(jnp.sum(k * k)) for k in row_grams])
  column_norms = jnp.stack([jnp.sqrt(jnp.sum(k * k)) for k in column_grams])
  hsic = jnp.stack([jnp.stack([jnp.sum(k * l) for l in column_grams]) for k in row_grams])
  return hsic / (row_norms[:, None] * column_norms[None, :])


def subset_cka_matrix(rows: list[np.ndarray], columns: list[np.ndarray], *,
                      kernel: str = "linear", sigma: float = 0.8, sigma_mode: str = "fixed",
                      num_subsets: int = 50, subset_size: int = 1000, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray, int]:
  """CKA of every (row, column) representation pair averaged over `num_subsets` random subsets of
  `subset_size` examples (all examples, once, if there are no more than that).

  Returns (mean matrix, std over subsets, subset size used)."""
  if kernel not in KERNELS:
    raise ValueError(f"unknown CKA kernel {kernel!r}; allowed: {list(KERNELS)}")
  count = rows[0].shape[0]
  if any(r.shape[0] != count for r in list(rows) + list(columns)):
    raise ValueError("every representation must hold the same examples")
  rng = np.random.default_rng(seed)
  size = min(subset_size, count)
  subsets = 1 if size == count else num_subsets   # a full-data "subset" is the same every time
  matrices = []
  for _ in range(subsets):
    index = np.sort(rng.choice(count, size, replace=False))
    matrices.append(np.asarray(_cka_matrix(
        tuple(jnp.asarray(r[index]) for r in rows), tuple(jnp.asarray(c[index]) for c in columns),
        kernel, float(sigma), sigma_mode)))
  matrices = np.stack(matrices)
  return matrices.mean(axis=0), matrices.std(axis=0), size
