r"""Invariance of the pooled features to rotation, hue, grayscale, crop scale, flip and blur:
for each strength of each sweep, the cosine similarity of f(x) and f(T(x)) averaged over
`eval.invariance.num_images` test images; results.json plus invariance.png (one panel per
transform).

Run:
  python main.py --mode=eval --config=configs/eval/invariance.py:digits \
      --config.encoder=runs/default/encoder --workdir=runs/default/eval/invariance
"""

import ml_collections

from configs.eval import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.eval_config("invariance", arg, baselines=("random_init",))
