"""Checks of a config's evaluation fields (`config.eval`), made before any device work."""

from __future__ import annotations

import os

import ml_collections

from ssl_jax import export
from ssl_jax.evaluation import baselines
from ssl_jax.evaluation.evaluators import EVALUATORS


def _quoting_hint(names) -> str:
  """ml_collections reads an unquoted tuple of names from the command line as one string."""
  if any("(" in name or "," in name for name in names):
    return (" (on the command line, quote each name: --config.eval.evaluators=\"('knn', "
            "'linear')\")")
  return ""


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad field of `config.eval` and what is allowed."""
  settings = config.eval
  unknown = [name for name in settings.evaluators if name not in EVALUATORS]
  if unknown:
    raise ValueError(f"config.eval.evaluators has {unknown}; allowed: {list(EVALUATORS)}"
                     f"{_quoting_hint(unknown)}")
  try:
    baselines.check_names(settings.baselines)
  except ValueError as error:
    raise ValueError(f"config.eval.baselines: {error}{_quoting_hint(settings.baselines)}") from None
  supervised = settings.get("supervised_encoder")
  if supervised and not os.path.isfile(os.path.join(supervised, export.ENCODER_FILE)):
    raise ValueError(f"config.eval.supervised_encoder={supervised!r} is not an exported encoder "
                     f"(it has no {export.ENCODER_FILE}); give the encoder directory of a "
                     "configs/supervised.py run, e.g. runs/supervised_digits/encoder")
  if settings.batch_size <= 0:
    raise ValueError(f"config.eval.batch_size={settings.batch_size} must be positive")
  # Every protocol's settings, run or not: a bad value is found now, not hours later.
  for name, evaluator in EVALUATORS.items():
    evaluator.check(settings[name])
  if config.data.get("label_type", "single") == "multi_label":
    single_label = [name for name in settings.evaluators if not EVALUATORS[name].multi_label]
    if single_label:
      raise ValueError(
          f"config.eval.evaluators {single_label} need one class per image, but "
          f"{config.data.name} labels are multi-label; evaluators for multi-label data: "
          f"{[name for name, e in EVALUATORS.items() if e.multi_label]}")
