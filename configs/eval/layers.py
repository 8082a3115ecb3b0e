r"""Per-layer probing: the linear probe of configs/eval/linear.py on each of the four stage
outputs (globally average-pooled; `eval.layers.spatial_size=S` also probes each stage pooled
onto an S x S grid) and on the final pooled features.

Run:
  python main.py --mode=eval --config=configs/eval/layers.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/layers
  python main.py --mode=eval --config=configs/eval/layers.py:digits \
      --config.eval.layers.spatial_size=2 --config.encoder=runs/default/encoder \
      --workdir=runs/default/eval/layers_s2
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  # Raw pixels have no stages.
  return common.eval_config("layers", arg, baselines=("random_init", "random_init_data_bn"))
