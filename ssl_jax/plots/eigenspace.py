"""Eigenspace tracking of a linear predictor W against its input correlation F over training.

Reads the records of ssl_jax/eigenspace.py (BYOL / SimSiam with a linear predictor, DirectPred,
DirectCopy, with `config.analysis_every_steps > 0`) and draws, in one figure:
- the leading eigenvalues of F and of (the symmetric part of) W, each direction one line (log
  scale: F's top eigenvalue is often orders of magnitude above the rest);
- the alignment |<u_i, v_i>| of the leading eigenvectors of F and W, with the mean over all
  directions (directions of nearly equal eigenvalues, such as DirectPred's flat tail at eps, have
  no individual eigenvectors, which pulls that mean below 1 even when W is built from F);
- the asymmetry ||W - W^T|| / ||W||.
"""

from __future__ import annotations

import os

import numpy as np

from ssl_jax import eigenspace
from ssl_jax.plots._figure import plt, save, series

LEADING_DIRECTIONS = 6   # eigen-directions drawn one by one


def _matrix(records: list[dict], key: str) -> np.ndarray:
  """(records, directions) array of a per-direction list, truncated to the leading ones."""
  return np.array([record[key][:LEADING_DIRECTIONS] for record in records], np.float64)


def plot(metrics: list[dict], analysis: list[dict], out_dir: str,
         run_config: dict | None = None) -> list[str]:
  del run_config
  del metrics
  records = sorted((record for record in analysis if eigenspace.ASYMMETRY in record),
                   key=lambda record: record["step"])
  if not records:
    return []
  steps = [record["step"] for record in records]
  correlation_values = _matrix(records, eigenspace.CORRELATION_EIGENVALUES)
  predictor_values = _matrix(records, eigenspace.PREDICTOR_EIGENVALUES)
  alignment = _matrix(records, eigenspace.ALIGNMENT)
  colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, correlation_values.shape[1]))

  figure, axes = plt.subplots(1, 4, figsize=(17, 3.6))
  for axis, values, title in ((axes[0], correlation_values, "eigenvalues of F"),
                              (axes[1], predictor_values, "eigenvalues of W (symmetric part)")):
    for index in range(values.shape[1]):
      # Eigenvalues of F are >= 0 but may round to tiny negatives; W's are clamped >= 1e-4 in
      # DirectPred but a learned W can have negative ones: symlog keeps both readable.
      axis.plot(steps, values[:, index], color=colors[index], label=f"#{index + 1}")
    axis.set_yscale("symlog", linthresh=1e-3)
    axis.set_title(title)
    axis.set_xlabel("step")
  axes[0].legend(fontsize=7, title="eigen-direction", title_fontsize=7)

  for index in range(alignment.shape[1]):
    axes[2].plot(steps, alignment[:, index], color=colors[index], label=f"#{index + 1}")
  steps_with_mean, mean_alignment = series(records, eigenspace.MEAN_ALIGNMENT)
  axes[2].plot(steps_with_mean, mean_alignment, color="black", linestyle="--",
               label="mean, all directions")
  axes[2].set_ylim(-0.02, 1.02)
  axes[2].set_title("eigenvector alignment |<u_i, v_i>|")
  axes[2].set_xlabel("step")
  axes[2].legend(fontsize=7)

  steps_with_asymmetry, asymmetry = series(records, eigenspace.ASYMMETRY)
  axes[3].plot(steps_with_asymmetry, asymmetry, color="tab:red")
  axes[3].set_ylim(0.0, max(max(asymmetry) * 1.1, 0.05))
  axes[3].set_title("asymmetry ||W - W^T|| / ||W||")
  axes[3].set_xlabel("step")
  return [save(figure, os.path.join(out_dir, "eigenspace.png"))]
