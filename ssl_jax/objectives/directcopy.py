"""DirectCopy (Wang, Chen, Du & Tian 2021, "Towards demystifying representation learning with
non-contrastive self-supervision").

DirectPred (ssl_jax/objectives/directpred.py) without the eigendecomposition: the predictor is set
to the normalised correlation of its inputs plus a ridge, W = F_hat + eps I, F_hat = F / ||F||.
Everything else is DirectPred's: the same EMA correlation F over the detached online projections
of both views (rho = 0.3, the first update takes the batch estimate), W set every `freq` steps
after the optimiser step and used from the next step on, the initial W of the first step drawn
like an nn.Linear, BYOL's networks, loss and EMA target. `objective_config.normalization` chooses
||F||: 'frobenius' (the default, see configs/directcopy.py), 'spectral' or 'none'.
"""

from __future__ import annotations

import jax
import ml_collections

from ssl_jax.objectives import predictor_from_correlation as correlation_lib
from ssl_jax.objectives.directpred import DirectPred


class DirectCopy(DirectPred):
  """DirectPred with W = F / ||F|| + eps I (see the module docstring)."""

  def _read_weight_rule_options(self, objective_config: ml_collections.ConfigDict) -> None:
    self.normalization = objective_config.normalization
    if self.normalization not in correlation_lib.DIRECTCOPY_NORMALIZATIONS:
      raise ValueError(f"unknown DirectCopy normalization {self.normalization!r}; allowed: "
                       f"{list(correlation_lib.DIRECTCOPY_NORMALIZATIONS)}")

  def predictor_weights(self, correlation: jax.Array) -> jax.Array:
    return correlation_lib.directcopy_weights(correlation, self.eps, self.normalization)
