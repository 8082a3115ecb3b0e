"""The SSL network: backbone -> projector [-> predictor], as one flax module.

Submodule names are fixed to 'backbone', 'projector' and 'predictor' because the rest of the
engine addresses the params / batch_stats trees by these top-level keys (the EMA target holds only
'backbone' and 'projector').
"""

from __future__ import annotations

import flax.linen as nn
import jax


class SSLNetwork(nn.Module):
  """Backbone plus heads.

  Attributes:
    backbone: maps (images, train=) to a dict with 'pooled' (N, D) and 'stages'.
    projector: maps (pooled, train=) to the projection (N, d).
    predictor: optional; maps (projection, train=) to the prediction (BYOL, SimSiam, ...).
  """

  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, use_predictor: bool = True) -> dict:
    """Returns {'pooled', 'stages', 'projection'} and 'prediction' when the predictor runs.

    use_predictor=False skips the predictor entirely, so the call works with variables that have
    no 'predictor' entry: that is how the EMA target network (backbone + projector) is applied.
    """
    features = self.backbone(x, train=train)
    projection = self.projector(features["pooled"], train=train)
    outputs = {"pooled": features["pooled"], "stages": features["stages"],
               "projection": projection}
    if self.predictor is not None and use_predictor:
      outputs["prediction"] = self.predictor(projection, train=train)
    return outputs
