"""Fields shared by every evaluation config: the encoder to load, the dataset, batching, mesh.

An evaluation config is `eval_config(name, arg)` plus its own section `config.<name>`; its
argument picks the dataset preset of configs/common.py and `tiny` shrinks the evaluation to a
few seconds (for tests and smoke runs): `configs/eval/linear.py:digits,tiny`.
"""

from __future__ import annotations

import ml_collections

from configs import common


def eval_config(evaluation: str, arg: str | None) -> tuple[ml_collections.ConfigDict, bool]:
  """(config, tiny) with the shared fields; the caller adds `config.<evaluation>`."""
  dataset, tiny = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.name = f"eval_{evaluation}:{dataset}" + (",tiny" if tiny else "")
  config.evaluation = evaluation
  config.encoder = ""                 # an exported encoder directory, e.g. RUN/encoder (required)
  # Also evaluate the same architecture at random initialisation (a freshly initialised copy of
  # the encoder, seeded by config.seed), so every table says what training bought.
  config.random_init_baseline = True
  config.seed = 0
  config.data = common.data_config(dataset)
  config.data.image_size = 0          # 0: the encoder's own input size
  config.batch_size = 512             # feature-extraction batch (padded to the device count)
  config.max_examples = 512 if tiny else -1    # per split (-1: all)
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**18))
  return config, tiny


def linear_probe_section(tiny: bool) -> ml_collections.ConfigDict:
  """The probe protocol (shared by the linear and per-layer evaluations)."""
  return ml_collections.ConfigDict(dict(
      # Log-spaced L2 grid (strength of 0.5 ||w||^2 next to the mean loss): the transfer study
      # (Kornblith et al. 2019) chose among 45 values from 1e-6 to 1e5 on a validation split.
      l2_min=1e-6,
      l2_max=1e5,
      l2_num=12 if tiny else 45,
      holdout_fraction=0.2,           # validation split held out of the training split
      select_by="top1",               # 'top1' | 'mean_per_class' (validation metric)
      iterations=100 if tiny else 300,   # L-BFGS iterations per fit
  ))
