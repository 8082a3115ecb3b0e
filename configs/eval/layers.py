r"""Per-layer probing: the linear probe of configs/eval/linear.py on each of the four stage
outputs (globally average-pooled; `layers.spatial_size=S` also probes each stage pooled onto an
S x S grid) and on the final pooled features.

Run:
  python main.py --mode=eval --config=configs/eval/layers.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/layers
  python main.py --mode=eval --config=configs/eval/layers.py:digits --config.layers.spatial_size=2 \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/layers_s2
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, tiny = common.eval_config("layers", arg)
  config.linear = common.linear_probe_section(tiny)
  config.layers = ml_collections.ConfigDict(dict(spatial_size=0))
  return config
