"""The objectives, in one explicit dict: adding an objective adds one line here (no registry)."""

from __future__ import annotations

import ml_collections

from ssl_jax.objectives.barlow_twins import BarlowTwins
from ssl_jax.objectives.base import LossInputs, LossOutput, Objective
from ssl_jax.objectives.byol import Byol
from ssl_jax.objectives.directcopy import DirectCopy
from ssl_jax.objectives.directpred import DirectPred
from ssl_jax.objectives.moco_ft import MocoFT
from ssl_jax.objectives.moco_intermediate import MocoBarlowTwins, MocoMse
from ssl_jax.objectives.moco_v1 import MocoV1
from ssl_jax.objectives.moco_v2 import MocoV2
from ssl_jax.objectives.simclr import SimClr
from ssl_jax.objectives.simsiam import SimSiam
from ssl_jax.objectives.supervised import Supervised
from ssl_jax.objectives.vicreg import VicReg

OBJECTIVES: dict[str, type[Objective]] = {
    "moco_v2": MocoV2,
    "moco_v1": MocoV1,
    "moco_mse": MocoMse,
    "moco_bt": MocoBarlowTwins,
    "moco_ft": MocoFT,
    "byol": Byol,
    "simsiam": SimSiam,
    "directpred": DirectPred,
    "directcopy": DirectCopy,
    "barlow_twins": BarlowTwins,
    "simclr": SimClr,
    "vicreg": VicReg,
    "supervised": Supervised,
}


def build_objective(config: ml_collections.ConfigDict, num_batch_shards: int) -> Objective:
  """Instantiates `OBJECTIVES[config.objective]`; unknown names fail with the allowed list."""
  name = config.objective
  if name not in OBJECTIVES:
    raise ValueError(f"unknown objective {name!r}; allowed objectives: {sorted(OBJECTIVES)}")
  return OBJECTIVES[name](config, num_batch_shards)


__all__ = ["LossInputs", "LossOutput", "OBJECTIVES", "Objective", "build_objective"]
