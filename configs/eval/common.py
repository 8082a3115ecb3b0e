"""Fields shared by every evaluation config: the encoder to load, the dataset, `eval`, the mesh.

An evaluation config is `eval_config(evaluator, arg)`: `config.eval` is the same section the
objective configs evaluate with at the end of training (configs/common.py
`evaluation_settings`), running the one evaluator the file is named after. Its argument picks
the dataset preset of configs/common.py and `tiny` shrinks the evaluation to a few seconds (for
tests and smoke runs): `configs/eval/linear.py:digits,tiny`. Override settings with
`--config.eval.<evaluator>.<field>=...`, the rows with `--config.eval.baselines=...`.
"""

from __future__ import annotations

import ml_collections

from configs import common


def eval_config(evaluator: str, arg: str | None, *,
                baselines: tuple[str, ...] = ("random_init", "random_init_data_bn", "pixels"),
                ) -> ml_collections.ConfigDict:
  """The config of `python main.py --mode=eval` running `evaluator` beside `baselines`."""
  dataset, tiny = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.name = f"eval_{evaluator}:{dataset}" + (",tiny" if tiny else "")
  config.encoder = ""                 # an exported encoder directory, e.g. RUN/encoder (required)
  config.seed = 0                     # baselines' initialisation, probe splits, episodes
  config.data = common.data_config(dataset)
  config.data.image_size = 0          # 0: the encoder's own input size
  config.eval = common.evaluation_settings(tiny)
  config.eval.evaluators = (evaluator,)
  config.eval.baselines = baselines
  config.eval.max_examples = 512 if tiny else -1
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**18))
  return config
