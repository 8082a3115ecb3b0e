"""Linear predictors set from the correlation of their inputs (DirectPred, DirectCopy).

Tian, Chen & Ganguli (ICML 2021, "Understanding self-supervised learning dynamics without
contrastive pairs") show that a gradient-trained linear predictor W aligns its eigenspace with that
of the correlation F = E[f f^T] of its inputs f (the online projections), and propose DirectPred,
which skips the training and sets W from F directly. Wang et al. (2021, "Towards demystifying
representation learning with non-contrastive self-supervision") drop the eigendecomposition:
DirectCopy copies (a normalised) F into W.

Conventions: W maps a column vector, p = W f, so a batch of row vectors is predicted by
`projections @ W.T` (a torch `nn.Linear` weight, as in the official code; a flax Dense kernel is
W.T). Everything here is float32, pure, and traced inside the train step.

The correlation estimate (Tian et al. eq. 19, the official `Accumulator` with `dyn_lambda`):
  F <- rho F + (1 - rho) F_batch,  F_batch = mean over the 2N rows of both views of f f^T,
over the *detached* projections, with the first update taking F_batch alone. The state starts at
F = 0, and F stays exactly 0 only until the first update (a correlation of real features is never
exactly zero, and if every feature were zero the two rules agree), so "F is all zeros" marks the
first update without a step counter, and a first step skipped for a non-finite loss leaves the
next one still first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DIRECTCOPY_NORMALIZATIONS = ("none", "frobenius", "spectral")
# Floor of p in DirectPred (the official code's clamp(1e-4)): keeps every direction predicted.
MIN_PREDICTOR_EIGENVALUE = 1e-4
# Guards the divisions by the largest eigenvalue / norm of F when F is (numerically) zero.
_TINY = 1e-12


def batch_correlation(projections: tuple[jax.Array, ...]) -> jax.Array:
  """E[f f^T] over the rows of all given (N, d) arrays (both views), without gradient."""
  rows = jax.lax.stop_gradient(jnp.concatenate(projections, axis=0).astype(jnp.float32))
  return rows.T @ rows / rows.shape[0]


def update_correlation(correlation: jax.Array, batch: jax.Array, rho: float) -> jax.Array:
  """rho F + (1 - rho) F_batch, or F_batch for the first update (F still all zeros)."""
  first = jnp.all(correlation == 0)
  return jnp.where(first, batch, rho * correlation + (1.0 - rho) * batch)


def symmetric_eigh(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Eigenvalues (ascending) and eigenvectors of a symmetric matrix, in float32.

  The matrix is symmetrised first, (M + M^T) / 2, so rounding asymmetry of an accumulated F
  cannot leak into `eigh` (which reads only one triangle)."""
  matrix = matrix.astype(jnp.float32)
  return jnp.linalg.eigh(0.5 * (matrix + matrix.T))


def directpred_weights(correlation: jax.Array, eps: float, eps_inside: bool) -> jax.Array:
  """DirectPred's W = Q diag(p) Q^T from F = Q diag(s) Q^T (Tian et al. eq. 18).

  s is clamped at 0 and divided by its largest value; then, as the official `boost_scale`
  branch with `dyn_convert = 2`:
    eps outside (default): p = max(sqrt(s) + eps, 1e-4);
    eps inside:            p = sqrt(max(s + eps, 1e-4)).
  W is symmetric PSD (exactly symmetric, see below). For F = 0 (no signal at all) s is taken
  as 0, so W = p I.
  """
  eigenvalues, eigenvectors = symmetric_eigh(correlation)
  eigenvalues = jnp.maximum(eigenvalues, 0.0)
  eigenvalues = eigenvalues / jnp.maximum(jnp.max(eigenvalues), _TINY)
  if eps_inside:
    predictor_eigenvalues = jnp.sqrt(jnp.maximum(eigenvalues + eps, MIN_PREDICTOR_EIGENVALUE))
  else:
    predictor_eigenvalues = jnp.maximum(jnp.sqrt(eigenvalues) + eps, MIN_PREDICTOR_EIGENVALUE)
  weights = (eigenvectors * predictor_eigenvalues) @ eigenvectors.T
  # Q diag(p) Q^T is symmetric only up to rounding; averaging with the transpose makes it exactly
  # so (a + b and b + a round alike), so W stays symmetric through the state and the analysis.
  return 0.5 * (weights + weights.T)


def directcopy_weights(correlation: jax.Array, eps: float, normalization: str) -> jax.Array:
  """DirectCopy's W = F_hat + eps I, F_hat = F / ||F|| for the chosen norm ('none': F itself;
  'frobenius': ||F||_F; 'spectral': the largest singular value, = the largest eigenvalue of the
  PSD F). No eigendecomposition unless 'spectral' asks for the top singular value."""
  correlation = correlation.astype(jnp.float32)
  if normalization == "none":
    normalized = correlation
  elif normalization == "frobenius":
    normalized = correlation / jnp.maximum(jnp.linalg.norm(correlation), _TINY)
  elif normalization == "spectral":
    normalized = correlation / jnp.maximum(jnp.linalg.norm(correlation, ord=2), _TINY)
  else:
    raise ValueError(f"unknown DirectCopy normalization {normalization!r}; allowed: "
                     f"{list(DIRECTCOPY_NORMALIZATIONS)}")
  return normalized + eps * jnp.eye(correlation.shape[0], dtype=jnp.float32)


def predict(projections: jax.Array, predictor_weights: jax.Array) -> jax.Array:
  """p = W f for each row f; W is set, not learned, so no gradient flows into it."""
  return projections.astype(jnp.float32) @ jax.lax.stop_gradient(predictor_weights).T
