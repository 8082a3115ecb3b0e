"""The interface of an evaluation protocol (one module per protocol in this package)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections

from ssl_jax.evaluation.data import EvalData
from ssl_jax.evaluation.report import Report

# evaluate({name: encoder}, data, settings) -> Report, where settings is config.eval.<protocol>.
Evaluate = Callable[[dict, EvalData, ml_collections.ConfigDict], Report]


def _no_checks(settings: ml_collections.ConfigDict) -> None:
  del settings


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One protocol: how it evaluates, which settings it refuses, what data and encoders it takes.

  Attributes:
    evaluate: runs the protocol on every encoder given.
    check: raises ValueError naming a bad setting and the allowed values, before any work.
    multi_label: handles multi-hot labels (scored by mean AUC over labels).
    frozen_features: needs only each encoder's pooled features, so it also takes the baselines
      without a network (raw pixels).
  """

  evaluate: Evaluate
  check: Callable[[ml_collections.ConfigDict], None] = _no_checks
  multi_label: bool = False
  frozen_features: bool = False
