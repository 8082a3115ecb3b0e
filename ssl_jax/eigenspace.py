"""Eigenspace tracking of a linear predictor W against its input correlation F (host side, NumPy).

Tian, Chen & Ganguli (ICML 2021) show, in theory and in BYOL runs with a linear predictor, that
the trained predictor becomes symmetric and that its eigenspace aligns with that of the
correlation F = E[f f^T] of its inputs; DirectPred builds W from that observation. This record
makes the claim checkable on any run with a linear predictor (BYOL / SimSiam with
`objective_config.predictor = 'linear'`, DirectPred, DirectCopy):

- `predictor_asymmetry` = ||W - W^T||_F / ||W||_F (0 for a symmetric W);
- `correlation_eigenvalues`: the eigenvalues of F, largest first;
- `predictor_eigenvalues`: the eigenvalues of the symmetric part (W + W^T) / 2, largest first. A
  non-symmetric W can have complex eigenvalues and non-orthogonal eigenvectors; its symmetric part
  has real ones and an orthonormal basis, and is W itself once W is symmetric (DirectPred,
  DirectCopy, or the symmetry regulariser), so it is what we decompose;
- `eigenvector_alignment`: |<u_i, v_i>| for the i-th eigenvectors of F and of the symmetric part
  of W in that same order (1 when they coincide up to sign), plus its mean and first entry as
  scalars for TensorBoard.

Directions with (nearly) equal eigenvalues have no well-defined individual eigenvectors, so
alignment of such directions can read low even when the eigenspaces agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Keys of the record; the plot (ssl_jax/plots/eigenspace.py) finds eigenspace records by ASYMMETRY.
ASYMMETRY = "predictor_asymmetry"
CORRELATION_EIGENVALUES = "correlation_eigenvalues"
PREDICTOR_EIGENVALUES = "predictor_eigenvalues"
ALIGNMENT = "eigenvector_alignment"
MEAN_ALIGNMENT = "mean_eigenvector_alignment"
TOP_ALIGNMENT = "top_eigenvector_alignment"


def _descending_eigh(symmetric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
  return eigenvalues[::-1], eigenvectors[:, ::-1]


def eigenspace_record(predictor_weights: np.ndarray, correlation: np.ndarray) -> dict[str, Any]:
  """The analysis record of W (d, d, acting as p = W f) and F (d, d); JSON-able values."""
  weights = np.asarray(predictor_weights, np.float64)
  correlation = np.asarray(correlation, np.float64)
  if weights.shape != correlation.shape or weights.shape[0] != weights.shape[1]:
    raise ValueError(f"eigenspace tracking needs square W and F of one shape, got "
                     f"{weights.shape} and {correlation.shape}")
  asymmetry = np.linalg.norm(weights - weights.T) / max(np.linalg.norm(weights), 1e-30)
  correlation_values, correlation_vectors = _descending_eigh(0.5 * (correlation + correlation.T))
  predictor_values, predictor_vectors = _descending_eigh(0.5 * (weights + weights.T))
  alignment = np.abs(np.sum(correlation_vectors * predictor_vectors, axis=0))
  return {
      ASYMMETRY: float(asymmetry),
      MEAN_ALIGNMENT: float(np.mean(alignment)),
      TOP_ALIGNMENT: float(alignment[0]),
      CORRELATION_EIGENVALUES: correlation_values.tolist(),
      PREDICTOR_EIGENVALUES: predictor_values.tolist(),
      ALIGNMENT: alignment.tolist(),
  }
